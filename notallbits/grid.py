"""Config loading, validation and the cell grid.

A *cell* is one point of the paper's scenario space: (dataset, model, bits, kv, budget, K).
A *generation job* is (dataset, model, bits, kv): one trace per sample, generated to the
largest budget of the job, serves every budget and every K of that job. This keeps the
DAG small (one GPU job per model/bits/KV setting) and never regenerates a prefix.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from notallbits import UserError, weights
from notallbits.kvcache.settings import needs_transformers, normalize

HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True, order=True)
class Job:
    dataset: str
    model: str
    bits: int
    kv: str
    weight_method: str = ""  # "": what the bits alone mean (4/8 GPTQ, 16 bf16; weights.py)

    def __post_init__(self):
        if not self.weight_method:
            object.__setattr__(self, "weight_method", weights.default_method(self.bits))

    @property
    def weights(self) -> weights.WeightFormat:
        return weights.of(self.weight_method, self.bits)

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.model}/w{self.weights.tag}/kv-{self.kv}"


@dataclass
class JobSpec:
    """Everything a generation job needs; budgets and n are the union over its sweeps."""

    job: Job
    budgets: list[int] = field(default_factory=list)
    samples: int = 0
    ks: list[int] = field(default_factory=list)
    backend: str = "transformers"
    verifiers: list[str] = field(default_factory=list)  # PRMs that score this job's samples (Best-of-N)


def schema() -> dict:
    text = resources.files("notallbits").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _fill_defaults(instance, sch):
    """Set schema defaults recursively (like snakemake.utils.validate(set_default=True))."""
    if not isinstance(instance, dict) or sch.get("type") != "object":
        return
    for key, sub in sch.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            if sub.get("type") == "object":
                _fill_defaults(instance[key], sub)
            elif sub.get("type") == "array" and isinstance(instance[key], list):
                for item in instance[key]:
                    _fill_defaults(item, sub.get("items", {}))
    extra = sch.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in sch.get("properties", {}):
                _fill_defaults(value, extra)


# JSON types a YAML scalar written as text can stand for
_SCALAR_TYPES = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def _types(sch: dict) -> set[str]:
    t = sch.get("type", [])
    return {t} if isinstance(t, str) else set(t)


def coerce_strings(instance, sch: dict):
    """Read text where the schema wants a number, a boolean or null, as YAML reads it.

    ``snakemake --config key=VALUE`` parses a nested VALUE with YAML's BaseLoader
    (snakemake/cli.py ``parse_config``), which keeps every scalar inside it as text:
    ``hardware="{max_runtime_minutes: 1440}"`` arrives as ``{"max_runtime_minutes": "1440"}``.
    Keys the schema types as text stay text."""
    if isinstance(instance, dict):
        props = sch.get("properties", {})
        extra = sch.get("additionalProperties")
        return {k: coerce_strings(v, props.get(k, extra if isinstance(extra, dict) else {}))
                for k, v in instance.items()}
    if isinstance(instance, list):
        return [coerce_strings(v, sch.get("items", {})) for v in instance]
    if not isinstance(instance, str):
        return instance
    types = _types(sch)
    enum = sch.get("enum")
    wants_text = "string" in types or (enum is not None and instance in enum)
    wants_scalar = types & set(_SCALAR_TYPES) or (enum is not None and any(not isinstance(e, str) for e in enum))
    if wants_text or not wants_scalar:
        return instance
    try:
        value = yaml.safe_load(instance)
    except yaml.YAMLError:
        return instance
    if isinstance(value, bool) and "boolean" not in types and enum is None:
        return instance
    if enum is not None:
        return value if value in enum else instance
    return value if any(isinstance(value, _SCALAR_TYPES[t]) for t in types if t in _SCALAR_TYPES) else instance


def _where(path) -> str:
    parts = [str(p) if not isinstance(p, int) else f"[{p}]" for p in path]
    return ".".join(parts).replace(".[", "[") or "<top level>"


def validate(config: dict) -> dict:
    """Validate against the schema, fill defaults and check cross references.

    Raises UserError with one line that names the offending key.
    """
    import jsonschema

    sch = schema()
    config = coerce_strings(copy.deepcopy(config), sch) if config is not None else {}
    validator = jsonschema.Draft202012Validator(sch)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        err = errors[0]
        # additionalProperties: name the unknown key itself
        if err.validator == "additionalProperties":
            known = set(err.schema.get("properties", {}))
            unknown = sorted(k for k in err.instance if k not in known)
            raise UserError(f"config: unknown key {_where(list(err.path) + unknown[:1])!r}"
                            f" (allowed: {', '.join(sorted(known))})")
        raise UserError(f"config: {_where(err.path)}: {err.message}")
    _fill_defaults(config, sch)
    _check_references(config)
    return config


def _check_references(config: dict) -> None:
    kv_names = set(config.get("kv_methods", {})) | {"full"}
    for i, sweep in enumerate(config["sweeps"]):
        for axis, known in (("datasets", config["datasets"]), ("models", config["models"]), ("kv", kv_names)):
            for name in sweep.get(axis, []):
                if name not in known:
                    raise UserError(f"config: sweeps[{i}].{axis}: unknown name {name!r} "
                                    f"(defined: {', '.join(sorted(known))})")
        if "prm_best_of_n" in sweep["selection"]:
            name = sweep.get("verifier")
            if not name:
                raise UserError(f"config: sweeps[{i}].verifier: required for selection prm_best_of_n "
                                f"(a name under verifiers)")
            if name not in config["verifiers"]:
                raise UserError(f"config: sweeps[{i}].verifier: unknown name {name!r} "
                                f"(defined: {', '.join(sorted(config['verifiers'])) or 'none'})")
        bad_k = [k for k in sweep["k"] if k > sweep["samples"]]
        if bad_k:
            raise UserError(f"config: sweeps[{i}].k: K={bad_k[0]} exceeds samples={sweep['samples']}")
    for name, spec in config["models"].items():
        src = spec["source"]
        if spec.get("build") == "toy" and src != f"models/toy/{name}":
            raise UserError(f"config: models.{name}.source: a toy model is built at 'models/toy/{name}'")
        if spec.get("build"):
            continue
        problem = model_source_problem(src)
        if problem:
            raise UserError(f"config: models.{name}.source: {problem}")
    from notallbits.modelarch import arch_of

    for name, spec in config["models"].items():
        arch_of(name, spec)  # what sizes its jobs: facts, a config.json, or one line saying what to fetch
    for name, spec in config["verifiers"].items():
        if spec.get("build"):
            if spec["source"] != f"results/verifiers/{name}":
                raise UserError(f"config: verifiers.{name}.source: a tiny verifier is built at 'results/verifiers/{name}'")
            continue
        problem = model_source_problem(spec["source"])
        if problem:
            raise UserError(f"config: verifiers.{name}.source: {problem}")
    for name, spec in config["datasets"].items():
        if spec["loader"] == "jsonl" and not spec.get("path"):
            raise UserError(f"config: datasets.{name}.path: required for loader 'jsonl'")
        if spec["loader"] == "jsonl":
            from notallbits.data.registry import check_unique_ids, jsonl

            try:  # missing, not UTF-8, bad JSON, a bad record, duplicate ids: now, not at the first job
                check_unique_ids(jsonl(spec), spec["path"])
            except UserError as exc:
                raise UserError(f"config: datasets.{name}.path: {exc}") from None
    for name, spec in config.get("kv_methods", {}).items():
        try:
            kv_settings(config, name)
        except UserError as exc:
            raise UserError(f"config: kv_methods.{name}: {exc}") from None
    from notallbits.calibration import check_config as check_calibration

    check_calibration(config)


def model_source_problem(src: str) -> str | None:
    """Why a model source can be neither a local folder nor a hub id, or None if it can be one.

    A path that exists is a folder. One written as a path (``./x/y``, ``/x``, two slashes),
    or whose first part is an existing folder (``models/mine`` beside ``models/``), is a
    folder that is missing. Only the rest (``Qwen/Qwen3-8B``) is taken for a hub id.
    """
    if Path(src).exists():
        return None
    if src.startswith(("./", "../", "/", "~")):
        return f"model path {src!r} does not exist"
    if not HF_ID.match(src):
        return f"{src!r} is neither a local folder nor a hub id (owner/name)"
    first = src.split("/")[0]
    if Path(first).is_dir():
        return (f"model path {src!r} does not exist (read as a local path, not a hub id, "
                f"because {first}/ is a folder here)")
    return None


def load_yaml(path: str | Path) -> dict:
    """A YAML file's content; one line with the file and line on a syntax error."""
    from notallbits.io import read_text

    path = Path(path)
    text = read_text(path, "config file")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        raise UserError(f"{where}: not valid YAML ({what}{', ' + context if context else ''})") from None


def exit_on_bad_yaml(path: str | Path) -> None:
    """For the Snakefile: Snakemake's own YAML error names neither the file nor the line."""
    import sys

    if Path(path).exists():
        try:
            load_yaml(path)
        except UserError as exc:
            sys.exit(f"error: {exc}")


def load(path: str | Path) -> dict:
    return validate(load_yaml(path))


def cells(config: dict) -> list[tuple]:
    """The union of all sweeps: sorted (dataset, model, weight format, kv, budget, K) tuples."""
    out = set()
    for sweep in config["sweeps"]:
        out.update(itertools.product(sweep["datasets"], sweep["models"], [weights.get(b).name for b in sweep["bits"]],
                                     sweep.get("kv", ["full"]), sweep["budgets"], sweep["k"]))
    return sorted(out)


def jobs(config: dict) -> dict[Job, JobSpec]:
    """Generation jobs, each with the union of budgets/K and the largest n of its sweeps."""
    specs: dict[Job, JobSpec] = {}
    default_backend = config["generation"]["backend"]
    for sweep in config["sweeps"]:
        for d, m, b, kv in itertools.product(sweep["datasets"], sweep["models"], sweep["bits"],
                                             sweep.get("kv", ["full"])):
            fmt = weights.get(b)
            job = Job(d, m, fmt.bits, kv, fmt.method)
            spec = specs.setdefault(job, JobSpec(job))
            spec.budgets = sorted(set(spec.budgets) | set(sweep["budgets"]))
            spec.ks = sorted(set(spec.ks) | set(sweep["k"]))
            spec.samples = max(spec.samples, sweep["samples"])
            if "prm_best_of_n" in sweep["selection"] and sweep["verifier"] not in spec.verifiers:
                spec.verifiers = sorted(spec.verifiers + [sweep["verifier"]])
            # vLLM has no decode-time eviction and only FP8 KV: compressed caches need transformers
            spec.backend = "transformers" if needs_transformers(kv_settings(config, kv)) \
                else sweep.get("backend", default_backend)
    return dict(sorted(specs.items()))


# dataset keys that override generation settings for that dataset's jobs (a program needs a
# code fence and more answer tokens than a boxed number)
DATASET_GENERATION_OVERRIDES = ("answer_prefix", "answer_max_tokens")


def generation_settings(config: dict, dataset: str) -> dict:
    """The generation settings a job on ``dataset`` runs with (the backend is chosen per job)."""
    gen = {k: v for k, v in config["generation"].items() if k not in ("backend", "shard_tokens")}
    spec = config["datasets"][dataset]
    gen.update({k: spec[k] for k in DATASET_GENERATION_OVERRIDES if k in spec})
    return gen


def job_tokens(config: dict, spec: JobSpec, questions: int) -> int:
    """Tokens a generation job generates at most: one trace per sample to the largest budget
    and a forced answer at each budget."""
    answer = generation_settings(config, spec.job.dataset)["answer_max_tokens"]
    return questions * spec.samples * (max(spec.budgets) + len(spec.budgets) * answer)


def shard_count(config: dict, spec: JobSpec, questions: int) -> int:
    """Question shards of a generation job: datasets.<name>.shards, raised to keep each shard
    under generation.shard_tokens, never more than one per question."""
    shards = config["datasets"][spec.job.dataset].get("shards", 1)
    target = config["generation"].get("shard_tokens")
    if target:
        shards = max(shards, -(-job_tokens(config, spec, questions) // target))
    return max(1, min(shards, questions))


def shard_questions(questions: list, index: int, count: int) -> list:
    """Shard ``index`` (1-based) of ``count``: contiguous blocks whose sizes differ by at most one."""
    if not 1 <= index <= count:
        raise UserError(f"shard {index} of {count} does not exist")
    n = len(questions)
    return questions[(index - 1) * n // count: index * n // count]


def kv_settings(config: dict, kv: str) -> dict:
    """The KV method's full settings (defaults filled), as the generation job receives them."""
    return normalize({"method": "full"} if kv == "full" else dict(config["kv_methods"][kv]))


# ---------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default="config.yaml", help="config YAML")
    p.add_argument("--json", action="store_true", help="print the job list as JSON")


def run(args: argparse.Namespace) -> None:
    config = load(args.config)
    specs = jobs(config)
    if args.json:
        print(json.dumps([{**vars(s.job), "budgets": s.budgets, "samples": s.samples, "k": s.ks,
                           "backend": s.backend, "verifiers": s.verifiers} for s in specs.values()], indent=1))
        return
    n_cells = len(cells(config))
    print(f"{n_cells} cells, {len(specs)} generation jobs")
    for spec in specs.values():
        print(f"  {spec.job.key}: budgets={spec.budgets} n={spec.samples} K={spec.ks} backend={spec.backend}"
              + (f" verifiers={spec.verifiers}" if spec.verifiers else ""))
