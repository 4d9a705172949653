"""The user's Hugging Face cache, pinned before anything can move it.

Importing GPTQModel imports ``tokenicer``, which sets ``HF_HOME=/tmp/tokenicer_hf_home`` (and
``HF_HUB_CACHE``, ``TRANSFORMERS_CACHE``, ``HF_MODULES_CACHE`` under it) whenever ``HF_HOME`` is
unset, the usual case. A job that imported it would then download models into /tmp instead of
``~/.cache/huggingface`` and would not find the user's saved hub token. Every path that can
import gptqmodel (the quantizer; the transformers backend, which loads GPTQ checkpoints through
optimum) calls :func:`pin_user_cache` first: it writes into the environment the locations
huggingface_hub itself would use, so tokenicer's ``setdefault`` finds them set.
"""

from __future__ import annotations

import os


def user_cache_locations(environ=None) -> dict[str, str]:
    """Where huggingface_hub and transformers look, by their own rules (huggingface_hub
    ``constants.py``; transformers ``utils/hub.py``): variables the user set win, then
    ``$XDG_CACHE_HOME/huggingface``, then ``~/.cache/huggingface``."""
    env = os.environ if environ is None else environ

    def resolve(path: str) -> str:
        return os.path.expandvars(os.path.expanduser(path))

    home = resolve(env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"))
    hub = resolve(env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub"))
    modules = resolve(env.get("HF_MODULES_CACHE") or os.path.join(home, "modules"))
    return {"HF_HOME": home, "HF_HUB_CACHE": hub, "HF_MODULES_CACHE": modules}


def pin_user_cache() -> dict[str, str]:
    """Set the cache variables that are unset to the user's defaults (never overrides one)."""
    locations = user_cache_locations()
    for key, value in locations.items():
        os.environ.setdefault(key, value)
    return locations


# ---------------------------------------------------------------- the hub, offline and online
# Workflow jobs run with the hub offline (notallbits.cluster.job_shell_prefix); the steps that
# fetch (download, prepare-data) run where Snakemake runs and turn it back on.
def online() -> None:
    """Undo the workflow's offline switch for this process (before huggingface_hub or datasets
    is imported): the user's own HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, if any, come back."""
    from notallbits.cluster import OFFLINE_VARIABLES

    for var in OFFLINE_VARIABLES:
        saved = os.environ.pop(f"NOTALLBITS_USER_{var}", None)
        if saved is None:
            continue  # not under the workflow: leave the user's environment alone
        if saved:
            os.environ[var] = saved
        else:
            os.environ.pop(var, None)


def is_offline(environ=None) -> bool:
    env = os.environ if environ is None else environ
    return any(env.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


# ---------------------------------------------------------------- what the cache holds
# huggingface_hub's cache layout (file_download.py, _snapshot_download.py): a repo lives in
# <HF_HUB_CACHE>/<type>s--<owner>--<name>/ with refs/<revision> holding a commit hash and
# snapshots/<commit>/ the files; read here without importing huggingface_hub, so the check
# runs in any Python that runs Snakemake.
def repo_folder(repo_id: str, repo_type: str = "model", environ=None) -> str:
    hub = user_cache_locations(environ)["HF_HUB_CACHE"]
    return os.path.join(hub, f"{repo_type}s--" + repo_id.replace("/", "--"))


def cached_snapshot(repo_id: str, revision: str = "main", repo_type: str = "model", environ=None) -> str | None:
    """The snapshot folder of ``repo_id`` at ``revision`` in the cache, or None."""
    folder = repo_folder(repo_id, repo_type, environ)
    ref = os.path.join(folder, "refs", revision)
    commit = revision
    if os.path.isfile(ref):
        with open(ref, encoding="utf-8") as fh:
            commit = fh.read().strip()
    snapshot = os.path.join(folder, "snapshots", commit)
    return snapshot if os.path.isdir(snapshot) else None


def missing_model_files(snapshot: str) -> list[str]:
    """Files a checkpoint snapshot lacks to load offline: config.json, a tokenizer, and every
    weight file (the shards its safetensors index lists, or model.safetensors)."""
    import json

    def present(name):  # a link into blobs/ that points at nothing is a download cut short
        return os.path.exists(os.path.join(snapshot, name))

    missing = [f for f in ("config.json",) if not present(f)]
    if not (present("tokenizer.json") or present("tokenizer.model") or present("vocab.json")):
        missing.append("tokenizer.json")
    index = os.path.join(snapshot, "model.safetensors.index.json")
    if os.path.exists(index):
        try:
            with open(index, encoding="utf-8") as fh:
                shards = sorted(set(json.load(fh)["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):  # not JSON, no map, not a dict
            return missing + ["model.safetensors.index.json (unreadable)"]
        missing += [s for s in shards if not present(s)]
    elif not present("model.safetensors"):
        missing.append("model.safetensors")
    return missing


def model_cache_problem(repo_id: str, environ=None) -> str | None:
    """Why a hub checkpoint cannot load offline from the cache, or None when it can."""
    snapshot = cached_snapshot(repo_id, environ=environ)
    if snapshot is None:
        return f"{repo_id} is not in the hub cache ({repo_folder(repo_id, environ=environ)})"
    missing = missing_model_files(snapshot)
    if missing:
        return f"{repo_id}: the cached snapshot lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
    return None
