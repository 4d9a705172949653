"""Per-question progress kept outside Snakemake's outputs, so a killed or re-parameterised
generation job resumes: finished questions are reused, new (smaller) budgets are forced
from stored traces, and extra samples are generated alone.

Stored under a key that hashes everything that determines a trace (model content, bits,
KV settings, sampling, forcing settings, format version) but NOT the budget list.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from notallbits.generation.forcing import SampleResult
from notallbits.io import write_text


def model_fingerprint(path: str) -> str:
    """Cheap content identity: file names, sizes and mtimes of a local checkpoint."""
    p = Path(path)
    if not p.is_dir():
        return path  # a hub id: its revision is the id
    parts = []
    for f in sorted(p.iterdir()):
        if f.is_file():
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def trace_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class ProgressStore:
    def __init__(self, root: str | os.PathLike, identity: dict):
        self.dir = Path(root) / trace_key(identity)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_text(self.dir / "identity.json", json.dumps(identity, indent=1, sort_keys=True) + "\n")

    def _path(self, question_id: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in question_id)
        return self.dir / f"{safe}.json"

    def load(self, question_id: str) -> dict[int, SampleResult]:
        path = self._path(question_id)
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:  # written atomically, so only a foreign file lands here
            return {}
        out = {}
        for d in data["samples"]:
            d["answers"] = {int(k): v for k, v in d["answers"].items()}
            out[d["sample"]] = SampleResult(**d)
        return out

    def save(self, question_id: str, results: dict[int, SampleResult]) -> None:
        data = {"question_id": question_id, "samples": [asdict(results[i]) for i in sorted(results)]}
        write_text(self._path(question_id), json.dumps(data, separators=(",", ":")))
