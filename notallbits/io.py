"""Atomic file writing and the framed JSONL format shared by every step.

A framed JSONL file starts with a header line ``{"_header": {...}}`` and ends with a footer
``{"_footer": {"records": N}}``. A file without its footer, or with a different record count,
was cut short (a killed job, a full disk) and is rejected with one clear line.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from notallbits import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; swap it into place only on success."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_framed_jsonl(path: str | os.PathLike, header: dict, records: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write(json.dumps({"_header": header}) + "\n")
            for rec in records:
                fh.write(json.dumps(rec) + "\n")
                n += 1
            fh.write(json.dumps({"_footer": {"records": n}}) + "\n")
    return n


def read_framed_jsonl(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """Return (header, records); raise UserError naming the file if it is not whole."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file does not exist")
    lines = path.read_text().splitlines()
    if not lines:
        raise UserError(f"{path}: empty file")
    try:
        rows = [json.loads(line) for line in lines]
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: truncated or corrupt (bad JSON at line {exc.lineno}: {exc.msg})") from None
    if not isinstance(rows[0], dict) or "_header" not in rows[0]:
        raise UserError(f"{path}: missing header line (not a notallbits file?)")
    if not isinstance(rows[-1], dict) or "_footer" not in rows[-1]:
        raise UserError(f"{path}: truncated (no footer line; the job that wrote it did not finish)")
    records = rows[1:-1]
    expected = rows[-1]["_footer"].get("records")
    if expected != len(records):
        raise UserError(f"{path}: truncated ({len(records)} records, footer says {expected})")
    return rows[0]["_header"], records


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file does not exist")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{i}: bad JSON ({exc.msg})") from None
    return out


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            for rec in records:
                fh.write(json.dumps(rec) + "\n")
