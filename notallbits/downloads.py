"""Fetching from the Hugging Face hub: the download rules' command (rules/download.smk).

Workflow jobs run with the hub offline (notallbits.cluster.job_shell_prefix). What they read
from the hub is fetched first, where Snakemake runs (local rules): the bf16 checkpoints and
verifiers (``notallbits download checkpoint``: the hub cache, plus a small manifest that the GPU
jobs take as input) and the calibration corpus (``notallbits download calibration``: its
documents as a local JSONL file, whose GPTQ windows equal the hub's); the datasets are fetched
by prepare_data. What a config needs and whether the hub can give it: notallbits.hubcheck.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from notallbits import UserError, hfcache

RESULTS = "results"


def checkpoint_manifest(kind: str, name: str) -> str:
    return f"{RESULTS}/downloads/{kind}/{name}.json"


def corpus_file(source: str) -> str:
    return f"{RESULTS}/downloads/calibration/{source}.jsonl"


GIB = 1024 ** 3


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
