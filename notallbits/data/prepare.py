"""``notallbits prepare-data``: write one dataset as normalized JSONL."""

from __future__ import annotations

import argparse
import json

from notallbits.data.registry import check_record, check_unique_ids, load
from notallbits.io import read_jsonl, write_jsonl


def prepare(spec: dict, out_path: str) -> int:
    records = load(spec)
    write_jsonl(out_path, records)
    return len(records)


def read_questions(path: str) -> list[dict]:
    """Read a normalized dataset file, failing with one line on a missing field."""
    records = [check_record(r, f"{path} record {i + 1}") for i, r in enumerate(read_jsonl(path))]
    return check_unique_ids(records, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", required=True, help="dataset entry of the config, as JSON")
    p.add_argument("--out", required=True, help="normalized JSONL to write")


def run(args: argparse.Namespace) -> None:
    from notallbits.hfcache import online

    online()  # the dataset loaders fetch from the hub: they run where Snakemake runs (local rules)
    n = prepare(json.loads(args.spec), args.out)
    print(f"wrote {n} questions to {args.out}")
