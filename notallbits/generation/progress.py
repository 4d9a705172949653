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
import sys
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


def prompt_digest(prompt_ids: list[int]) -> str:
    """Identity of the exact prompt a trace continues (token ids, so template changes count)."""
    return hashlib.sha256(json.dumps(list(prompt_ids)).encode()).hexdigest()[:16]


def progress_name(question_id: str) -> str:
    """A file name per question id: readable, and distinct for distinct ids.

    The readable part keeps letters, digits, '-', '_' and '.', so ids such as ``x y`` and
    ``x_y`` look alike there; the hash of the exact id that follows keeps them apart (also
    on case-insensitive file systems, and for ids too long for a file name).
    """
    slug = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in question_id)[:60]
    return f"{slug.lstrip('.') or 'q'}.{hashlib.sha256(question_id.encode()).hexdigest()[:12]}.json"


def _log(message: str) -> None:
    print(f"progress: {message}", file=sys.stderr, flush=True)


class ProgressStore:
    def __init__(self, root: str | os.PathLike, identity: dict):
        self.dir = Path(root) / trace_key(identity)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_text(self.dir / "identity.json", json.dumps(identity, indent=1, sort_keys=True) + "\n")

    def _path(self, question_id: str) -> Path:
        return self.dir / progress_name(question_id)

    def load(self, question_id: str, prompt_ids: list[int]) -> dict[int, SampleResult]:
        """Stored samples of this question, or {} (with a log line) when the file is absent,
        unreadable, or was written for another question id or another prompt.

        An unreadable file is a cache miss, not an error: progress is only a cache of
        traces (written atomically, so damage comes from outside), and regenerating it
        is always correct, whereas stopping would leave the user to find and delete it.
        """
        path = self._path(question_id)
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            stored_id, stored_prompt = data["question_id"], data.get("prompt_sha256")
            out = {}
            for d in data["samples"]:
                d["answers"] = {int(k): v for k, v in d["answers"].items()}
                out[d["sample"]] = SampleResult(**d)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # UnicodeDecodeError is a ValueError
            _log(f"{path}: unreadable ({type(exc).__name__}), not reused: regenerating question {question_id!r}")
            return {}
        if stored_id != question_id:
            _log(f"{path}: holds question {stored_id!r}, not {question_id!r}: regenerating")
            return {}
        if stored_prompt != prompt_digest(prompt_ids):
            _log(f"{path}: written for a different prompt of question {question_id!r}: regenerating")
            return {}
        return out

    def save(self, question_id: str, results: dict[int, SampleResult], prompt_ids: list[int]) -> None:
        data = {"question_id": question_id, "prompt_sha256": prompt_digest(prompt_ids),
                "samples": [asdict(results[i]) for i in sorted(results)]}
        write_text(self._path(question_id), json.dumps(data, separators=(",", ":")))
