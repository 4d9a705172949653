"""What a run fetches from the Hugging Face hub, fetching it, and the disk it all takes.

Workflow jobs run with the hub offline (notallbits.cluster.job_shell_prefix). What they read
from the hub is fetched first, where Snakemake runs (rules/download.smk, local rules): the bf16
checkpoints and verifiers (``notallbits download checkpoint``: the hub cache, plus a small
manifest that the GPU jobs take as input), the calibration corpus (``notallbits download
calibration``: its documents as a local JSONL file, whose GPTQ windows equal the hub's), and
the datasets (prepare_data writes each as JSONL).

:func:`startup_problems` checks at workflow start-up and in ``notallbits plan`` what cannot be
fetched: on a machine whose hub is offline, anything not in the cache; a gated dataset without
a saved token. :func:`disk_plan` sizes what the run writes, next to the free space where it goes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from notallbits import UserError, grid, hfcache, weights
from notallbits.calibration import HUB_CORPORA, source_kind

RESULTS = "results"
# hub datasets behind a licence click-through: the loader needs a token of an account that accepted it
GATED_DATASETS = {"gpqa_diamond": "Idavidrein/gpqa"}
# bytes of the calibration corpora's documents as JSONL (WikiText-2 raw train: 36,718 lines,
# 10.9 MB of text; C4 en shard 00000: 356,317 documents, ~0.8 GB of text)
CORPUS_BYTES = {"wikitext2": 11.5e6, "c4": 0.85e9}


def fetch_command(what: str) -> str:
    return f"fetch it where the network is: snakemake download (same config), or {what}"


# ---------------------------------------------------------------- what a config fetches
def hub_checkpoints(config: dict) -> dict[str, tuple[str, str]]:
    """(kind, name) -> hub id of every checkpoint the grid reads from the hub."""
    out = {}
    used_models = {m for s in config["sweeps"] for m in s["models"]}
    for name, spec in config["models"].items():
        if name in used_models and not spec.get("build") and not Path(spec["source"]).exists():
            out[("models", name)] = spec["source"]
    used_verifiers = {v for spec in grid.jobs(config).values() for v in spec.verifiers}
    for name in sorted(used_verifiers):
        spec = config["verifiers"][name]
        if not spec.get("build") and not Path(spec["source"]).exists():
            out[("verifiers", name)] = spec["source"]
    return out


def needs_calibration_corpus(config: dict) -> str | None:
    """The hub corpus GPTQ/AWQ calibrate on, when the grid quantizes with one."""
    source = config["quantization"]["calibration"]["source"]
    if source_kind(source) not in HUB_CORPORA:
        return None
    calibrated = any(weights.get(b).calibrated for s in config["sweeps"] for b in s["bits"])
    return source if calibrated else None


def checkpoint_manifest(kind: str, name: str) -> str:
    return f"{RESULTS}/downloads/{kind}/{name}.json"


def corpus_file(source: str) -> str:
    return f"{RESULTS}/downloads/calibration/{source}.jsonl"


def job_environment(config: dict, environ=None) -> dict:
    """The environment a job sees, as far as the hub cache goes: hub.cache becomes HF_HOME."""
    env = dict(os.environ if environ is None else environ)
    if config.get("hub", {}).get("cache"):
        env["HF_HOME"] = os.path.abspath(os.path.expanduser(config["hub"]["cache"]))
    return env


def startup_problems(config: dict, environ=None, fetches: dict | None = None) -> list[str]:
    """What a run would need from the hub and could not get, one line each: on a machine whose
    hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set), every checkpoint not in the cache
    and every hub dataset or corpus not fetched yet; anywhere, a gated dataset without a token.
    ``fetches``: what this run's DAG fetches ({"checkpoints": {(kind, name)}, "corpora": {...},
    "datasets": {...}}, the download and prepare_data jobs it runs); None = all the config needs."""
    env = job_environment(config, environ)
    problems = []
    offline = hfcache.is_offline(env)

    def wanted(part, key):
        return fetches is None or key in fetches.get(part, ())

    if offline:
        for (kind, name), repo in hub_checkpoints(config).items():
            problem = hfcache.model_cache_problem(repo, environ=env)
            if problem and not Path(checkpoint_manifest(kind, name)).exists() and wanted("checkpoints", (kind, name)):
                problems.append(f"{kind}.{name}: {problem}; {fetch_command(f'hf download {repo}')}")
        corpus = needs_calibration_corpus(config)
        if corpus and not Path(corpus_file(corpus)).exists() and wanted("corpora", corpus):
            problems.append(f"quantization.calibration.source: {corpus} is not fetched ({corpus_file(corpus)}); "
                            + fetch_command(f"snakemake {corpus_file(corpus)}"))
    hub_loaders = {"aime25", "gpqa_diamond", "math500", "livecodebench"}
    for name, spec in config["datasets"].items():
        data = Path(f"{RESULTS}/data/{name}.jsonl")
        if (spec["loader"] not in hub_loaders or data.exists() or not _evaluated_or_calibration(config, name)
                or not wanted("datasets", name)):
            continue
        if offline:
            problems.append(f"datasets.{name}: not prepared ({data}) and the hub is offline here; "
                            + fetch_command(f"snakemake {data}"))
        elif spec["loader"] in GATED_DATASETS and not hub_token(env):
            repo = spec.get("hf_id") or GATED_DATASETS[spec["loader"]]
            problems.append(f"datasets.{name}: {repo} is gated: accept its terms at https://huggingface.co/"
                            f"datasets/{repo} and log in (hf auth login) or set HF_TOKEN")
    return problems


def _evaluated_or_calibration(config: dict, name: str) -> bool:
    return (any(name in s["datasets"] for s in config["sweeps"])
            or config["quantization"]["calibration"].get("dataset") == name)


def hub_token(environ=None) -> bool:
    """Whether huggingface_hub would find a token (HF_TOKEN, or the file `hf auth login` saves)."""
    env = os.environ if environ is None else environ
    if env.get("HF_TOKEN"):
        return True
    home = hfcache.user_cache_locations(env)["HF_HOME"]
    path = env.get("HF_TOKEN_PATH") or os.path.join(home, "token")
    return os.path.isfile(path) and bool(Path(path).read_text(encoding="utf-8").strip())


# ---------------------------------------------------------------- disk
GIB = 1024 ** 3


def _free_gib(path: str) -> float:
    p = Path(os.path.abspath(path))
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free / GIB


def disk_plan(config: dict, tokens: int, environ=None) -> list[dict]:
    """What the run writes and where, in GiB, with the free space of each target folder:
    hub downloads (bf16 checkpoints, verifiers, calibration corpus), the quantized checkpoints,
    the progress records (every generated token id as JSON text: at most as many bytes as the
    vocabulary's largest id has digits, plus a comma), and the scratch of the largest quantize
    (GPTQModel offloads the model's bf16 layers to disk beside the output)."""
    from notallbits.memory import format_weight_bytes, prm_weight_bytes
    from notallbits.plan import model_arch

    hub = hfcache.user_cache_locations(job_environment(config, environ))["HF_HUB_CACHE"]
    rows = []
    checkpoints = hub_checkpoints(config)
    model_bytes = sum(format_weight_bytes(model_arch(config, n), "bf16") for (k, n) in checkpoints if k == "models")
    verifier_bytes = 0
    for (kind, name), repo in checkpoints.items():
        if kind == "verifiers":
            from notallbits.memory import Arch

            try:
                verifier_bytes += prm_weight_bytes(Arch.named(repo))
            except UserError:
                verifier_bytes += 15 * GIB  # an unknown 7B PRM
    rows.append({"part": "hub downloads: bf16 checkpoints", "gib": model_bytes / GIB, "where": hub,
                 "count": sum(k == "models" for k, _ in checkpoints)})
    rows.append({"part": "hub downloads: verifiers", "gib": verifier_bytes / GIB, "where": hub,
                 "count": sum(k == "verifiers" for k, _ in checkpoints)})
    corpus = needs_calibration_corpus(config)
    rows.append({"part": "calibration corpus", "gib": CORPUS_BYTES.get(corpus, 0) * 2 / GIB,  # hub copy + JSONL
                 "where": f"{RESULTS}/downloads", "count": int(corpus is not None)})
    quantized = sorted({(j.model, j.weights.name) for j in grid.jobs(config) if j.weights.quantized})
    q_bytes = sum(format_weight_bytes(model_arch(config, m), f, config["quantization"]) for m, f in quantized)
    rows.append({"part": "quantized checkpoints", "gib": q_bytes / GIB, "where": f"{RESULTS}/models",
                 "count": len(quantized)})
    vocab = max((model_arch(config, m).vocab for m in config["models"]), default=151936) or 151936
    rows.append({"part": "progress records", "gib": tokens * (len(str(vocab - 1)) + 1) / GIB,
                 "where": f"{RESULTS}/progress", "count": len(grid.jobs(config))})
    scratch = max((format_weight_bytes(model_arch(config, m), "bf16") for m, _ in quantized), default=0)
    rows.append({"part": "scratch of the largest quantize (bf16 offload)", "gib": scratch / GIB,
                 "where": f"{RESULTS}/models", "count": int(bool(quantized))})
    for row in rows:
        row["free_gib"] = _free_gib(row["where"])
    return rows


def print_disk_plan(rows: list[dict]) -> None:
    print("disk (GiB needed, and free where it goes):")
    for r in rows:
        print(f"  {r['part']:<48} {r['gib']:8.2f}  ({r['count']})  {r['where']}: {r['free_gib']:.0f} free")
    by_device: dict[int, list] = {}  # folders on one filesystem share its free space
    for r in rows:
        p = Path(os.path.abspath(r["where"]))
        while not p.exists():
            p = p.parent
        entry = by_device.setdefault(p.stat().st_dev, [0.0, r["free_gib"], []])
        entry[0] += r["gib"]
        if r["where"] not in entry[2]:
            entry[2].append(r["where"])
    for need, free, folders in by_device.values():
        if need > free:
            print(f"  warning: {' + '.join(folders)} need {need:.0f} GiB on one filesystem, {free:.0f} GiB free")


# ---------------------------------------------------------------- fetching (the download rules)
CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.py", "*.jinja"]


def download_checkpoint(repo: str, out: str) -> dict:
    """The checkpoint's files into the hub cache (huggingface_hub's snapshot_download; with the
    hub offline it returns the cached snapshot or fails), checked complete; a manifest to ``out``."""
    hfcache.online()
    hfcache.pin_user_cache()
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo, allow_patterns=CHECKPOINT_FILES)
    except Exception as exc:  # noqa: BLE001 - network, auth, a missing repo: one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"could not fetch {repo}: {type(exc).__name__}: {first}") from None
    missing = hfcache.missing_model_files(folder)
    if missing:
        raise UserError(f"{repo}: the snapshot lacks {', '.join(missing)}")
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    record = {"repo": repo, "snapshot": str(folder), "commit": Path(folder).name,
              "bytes": sum(p.stat().st_size for p in files), "files": [p.name for p in files]}
    from notallbits.io import write_text

    write_text(out, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def download_corpus(source: str, out: str) -> int:
    """A hub calibration corpus's documents as JSONL ({"text": ...} per document, in order):
    the quantizer's windows from this file equal those from the hub (calibration.py)."""
    hfcache.online()
    hfcache.pin_user_cache()
    from notallbits.calibration import load_corpus
    from notallbits.io import write_text

    docs = load_corpus(source)
    write_text(out, "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs))
    return len(docs)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["checkpoint", "calibration"],
                   help="checkpoint: a model or verifier into the hub cache; calibration: a corpus as JSONL")
    p.add_argument("--source", required=True, help="hub id of the checkpoint, or the corpus (wikitext2, c4)")
    p.add_argument("--out", required=True, help="the manifest (checkpoint) or the JSONL file (calibration)")


def run(args: argparse.Namespace) -> None:
    if args.what == "checkpoint":
        record = download_checkpoint(args.source, args.out)
        print(f"{args.source}: {record['bytes'] / GIB:.2f} GiB in {record['snapshot']}")
    else:
        n = download_corpus(args.source, args.out)
        print(f"{args.source}: {n} documents -> {args.out}")
