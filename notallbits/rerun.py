"""Why would a job rerun? The keys of its params that changed since it ran, as a diff.

Snakemake (9.x, the default file persistence) keeps a record per output file under
``.snakemake/metadata/``: the file name is the output path, URL-safe base64 encoded (split into
folders of ``@``-prefixed pieces when longer than a file name may be), the content JSON with the
rule, ``params`` (the sorted ``repr`` of each parameter not derived from input or output), ``code``
(a shell rule's command), ``input`` and the record format. A job reruns when its params, input
set, code or software stack differ from the record. Our expensive rules carry everything that
changes their results as one canonical JSON param (rules/common.smk ``generation_spec`` and
friends), so the difference reads as keys: ``budgets: [16, 64] → [32, 64]``.

This command loads the workflow for a config, computes each recorded job's params now exactly
as Snakemake does (the rule's own param functions on the wildcards of the recorded output) and
prints what changed, one group of jobs per distinct change.
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import os
from pathlib import Path

from notallbits import UserError

ARROW = "→"


# ---------------------------------------------------------------- reading Snakemake's records
def decode_record_path(relative: str) -> str:
    """The output path a metadata record file stands for (its path below .snakemake/metadata)."""
    parts = Path(relative).parts
    pieces = [p[1:] if p.startswith("@") else p for p in parts[:-1]] + [parts[-1]]
    return base64.urlsafe_b64decode("".join(pieces).encode()).decode()


def read_records(workdir: str | Path) -> dict[str, dict]:
    """Output path -> its metadata record, for every record Snakemake keeps in ``workdir``."""
    root = Path(workdir) / ".snakemake" / "metadata"
    records = {}
    if not root.is_dir():
        return records
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            try:
                output = decode_record_path(str(path.relative_to(root)))
                records[output] = json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError, json.JSONDecodeError):
                continue  # a record being written, or not one of Snakemake's
    return records


def param_value(serialized: str):
    """A recorded param (its ``repr``) as a value: a JSON object param as a dict."""
    try:
        value = ast.literal_eval(serialized)
    except (ValueError, SyntaxError):
        return serialized
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


# ---------------------------------------------------------------- diffing
def _show(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": ")) if not isinstance(value, str) \
        else json.dumps(value, ensure_ascii=False)


def diff_values(old, new, prefix: str = "") -> list[str]:
    """Changed keys of two JSON values as lines ``key: old → new`` (``+ key: value`` added,
    ``- key: value`` removed), nested keys dotted."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in new:
                lines.append(f"- {name}: {_show(old[key])}")
            elif key not in old:
                lines.append(f"+ {name}: {_show(new[key])}")
            elif old[key] != new[key]:
                lines.extend(diff_values(old[key], new[key], name))
        return lines
    if old == new:
        return []
    return [f"{prefix or 'value'}: {_show(old)} {ARROW} {_show(new)}"]


def _likeness(a, b) -> float:
    """How alike two param values look (same type, same length, common prefix): pairs an old
    value with the new one that replaced it, since Snakemake records params without names."""
    if type(a) is not type(b):
        return 0.0
    sa, sb = str(a), str(b)
    prefix = next((i for i, (x, y) in enumerate(zip(sa, sb)) if x != y), min(len(sa), len(sb)))
    return 1 + (len(sa) == len(sb)) + prefix / max(len(sa), len(sb), 1)


def diff_params(recorded: list[str], current: list[str], names: dict[str, str] | None = None) -> list[str]:
    """The difference of two param lists (each the sorted reprs Snakemake records): JSON object
    params key by key, other params as a whole (``names``: a current repr -> its param name)."""
    names = names or {}
    old_only = [param_value(p) for p in sorted(set(recorded) - set(current))]
    new_only = [param_value(p) for p in sorted(set(current) - set(recorded))]
    old_json = [p for p in old_only if isinstance(p, dict)]
    new_json = [p for p in new_only if isinstance(p, dict)]
    lines = []
    # pair JSON params by the keys they share most (a rule has one such spec, at most a few)
    while old_json and new_json:
        a, b = max(((a, b) for a in old_json for b in new_json),
                   key=lambda ab: len(set(ab[0]) & set(ab[1])) + sum(ab[0].get(k) == v for k, v in ab[1].items()))
        lines.extend(diff_values(a, b))
        old_json.remove(a)
        new_json.remove(b)
    new_names = {id(v): names.get(r, "param") for r in sorted(set(current) - set(recorded))
                 for v in new_only if repr(v) == r or (isinstance(v, dict) and repr(json.dumps(v, sort_keys=True)) == r)}
    rest_old = [p for p in old_only if not isinstance(p, dict)] + old_json
    rest_new = [p for p in new_only if not isinstance(p, dict)] + new_json
    while rest_old and rest_new:  # pair each replaced value with its likeliest successor
        a, b = max(((a, b) for a in rest_old for b in rest_new), key=lambda ab: _likeness(*ab))
        if _likeness(a, b) == 0:
            break
        lines.append(f"{new_names.get(id(b), 'param')}: {_show(a)} {ARROW} {_show(b)}")
        rest_old.remove(a)
        rest_new.remove(b)
    lines += [f"- param: {_show(p)}" for p in rest_old]
    lines += [f"+ {new_names.get(id(p), 'param')}: {_show(p)}" for p in rest_new]
    return lines


# ---------------------------------------------------------------- the workflow's params now
def load_workflow(snakefile: str, configfiles: list[str], workdir: str):
    """The parsed workflow (rules, params functions) for a config, as ``snakemake`` would parse it."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        api = SnakemakeApi(OutputSettings(quiet={"all"}))
        api.__enter__()
        try:
            return api, api.workflow(resource_settings=ResourceSettings(cores=1),
                                     config_settings=ConfigSettings(configfiles=[Path(c) for c in configfiles]),
                                     snakefile=Path(snakefile), workdir=Path(workdir))._workflow
        except BaseException:
            api.__exit__(None, None, None)
            raise
    finally:
        os.chdir(cwd)


class _Job:  # what a param function may ask of its job: resources, threads
    resources = None


def current_state(rule, output: str) -> dict | None:
    """The params (reprs, as Snakemake records them), input files and shell command of the job
    of ``rule`` that writes ``output``, per the workflow now; None when the config no longer has
    that job (its wildcards are not allowed, or an input function refuses them)."""
    from snakemake.persistence import UNREPRESENTABLE

    try:
        if not rule.is_producer(output):
            return None
        wildcards = rule.get_wildcards(output)
        inputs = rule.expand_input(wildcards)[0]
        outputs = rule.expand_output(wildcards)[0]
        expanded, non_derived = rule.expand_params(wildcards, inputs, outputs, _Job())
    except Exception:  # noqa: BLE001 - any refusal means: not a job of this config
        return None
    names = {}
    for name in getattr(expanded, "_names", {}):
        try:
            names[repr(getattr(expanded, name))] = name
        except Exception:  # noqa: BLE001 - an unrepresentable param has no name to show
            continue
    params = []
    for value in non_derived:
        serialized = repr(value) if isinstance(value, (type(None), int, float, bool, str, list, tuple, dict, set)) \
            else UNREPRESENTABLE
        if serialized is not UNREPRESENTABLE:
            params.append(serialized)
    shell = rule.shellcmd
    return {"params": sorted(params), "input": sorted(str(f) for f in inputs), "shell": shell, "names": names,
            "job": (rule.name, tuple(sorted(wildcards.items())))}


def explain(workdir: str, snakefile: str, configfiles: list[str], rules: list[str] | None = None) -> list[dict]:
    """One entry per recorded output whose job would rerun for params, input set or code: its
    rule, output and the changed keys (outputs no job of the config writes any more are left out)."""
    records = read_records(workdir)
    if not records:
        raise UserError(f"{Path(workdir) / '.snakemake/metadata'}: no job records (nothing has run here yet)")
    api, workflow = load_workflow(snakefile, configfiles, workdir)
    try:
        by_name = {r.name: r for r in workflow.rules}
        out = []
        cwd = os.getcwd()
        os.chdir(workdir)
        try:
            for output, rec in sorted(records.items()):
                rule = by_name.get(rec.get("rule"))
                if rule is None or (rules and rule.name not in rules) or rec.get("incomplete"):
                    continue
                now = current_state(rule, output)
                if now is None:
                    continue
                lines = []
                if (rec.get("record_format_version") or 0) >= 6 and rec.get("params") is not None:
                    lines += diff_params(rec["params"], now["params"], now["names"])
                old_inputs, new_inputs = set(rec.get("input") or []), set(now["input"])
                if rec.get("input") is not None and old_inputs != new_inputs:
                    lines += [f"- input: {f}" for f in sorted(old_inputs - new_inputs)]
                    lines += [f"+ input: {f}" for f in sorted(new_inputs - old_inputs)]
                if now["shell"] is not None and rec.get("code") not in (None, now["shell"]):
                    lines.append("code: the rule's shell command changed")
                if not Path(output).exists():
                    lines.append("output: missing")
                if lines:
                    out.append({"rule": rule.name, "output": output, "changes": lines, "job": now["job"]})
        finally:
            os.chdir(cwd)
        return out
    finally:
        api.__exit__(None, None, None)


def format_report(entries: list[dict], examples: int = 3) -> str:
    """Jobs grouped by identical changes: ``rule (N jobs): first outputs`` then the changed keys."""
    if not entries:
        return "no recorded job would rerun for changed params, inputs or code"
    groups: dict[tuple, list[dict]] = {}
    seen = set()
    for e in entries:  # one entry per job (a job with several outputs has a record for each)
        if e.get("job") in seen:
            continue
        seen.add(e.get("job"))
        groups.setdefault((e["rule"], tuple(e["changes"])), []).append(e)
    lines = []
    for (rule, changes), members in sorted(groups.items(), key=lambda g: (g[0][0], -len(g[1]))):
        shown = ", ".join(m["output"] for m in members[:examples])
        more = f", ... ({len(members) - examples} more)" if len(members) > examples else ""
        jobs = f"{len(members)} job{'s' if len(members) > 1 else ''}"
        lines.append(f"{rule} ({jobs}): {shown}{more}")
        lines += [f"    {c}" for c in changes]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("configfile", nargs="?", default="config.yaml",
                   help="the config the next run would use (default: %(default)s)")
    p.add_argument("--directory", "-d", default=".", help="the working directory of the runs (default: %(default)s)")
    p.add_argument("--snakefile", "-s", default=None,
                   help="the workflow (default: ./Snakefile, else the one of this installation)")
    p.add_argument("--rule", action="append", help="only jobs of this rule (repeatable), e.g. generate")
    p.add_argument("--examples", type=int, default=3, help="outputs named per group of jobs (default: %(default)s)")


def run(args: argparse.Namespace) -> None:
    workdir = os.path.abspath(args.directory)
    snakefile = args.snakefile or next(
        (str(p) for p in (Path(workdir) / "Snakefile", Path(__file__).resolve().parents[1] / "Snakefile")
         if p.exists()), None)
    if snakefile is None:
        raise UserError("no Snakefile here: pass --snakefile")
    if not Path(args.configfile).exists():
        raise UserError(f"{args.configfile}: config file does not exist")
    entries = explain(workdir, os.path.abspath(snakefile), [os.path.abspath(args.configfile)], args.rule)
    print(format_report(entries, args.examples))
