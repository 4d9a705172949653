"""What a config needs from the Hugging Face hub, and whether this machine can get it.

:func:`startup_problems` runs at workflow start-up (rules/common.smk, onstart) and in
``notallbits plan``: on a machine whose hub is offline, anything not in the cache; a gated
dataset without a saved token. One line each, naming the config key and how to fetch it.
"""

from __future__ import annotations

import os
from pathlib import Path

from notallbits import grid, hfcache, weights
from notallbits.calibration import HUB_CORPORA, source_kind
from notallbits.downloads import RESULTS, checkpoint_manifest, corpus_file

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
