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


def current_umask() -> int:
    """The process umask (reading it means setting it; set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 less the
    umask), not mkstemp's private 0600: results on a shared project folder stay readable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # after the writer: some (transformers' safetensors) replace the file with their own 0600 one
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; swap it into place only on success.

    The folder and everything in it get the permissions of a plain ``mkdir``/``open()``
    (0777/0666 less the umask), not mkdtemp's private 0700 nor the 0600 of the temporary
    files some writers (transformers' safetensors shards) rename into place.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        _plain_permissions(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _plain_permissions(root: Path) -> None:
    mask = current_umask()
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            f = os.path.join(dirpath, name)
            if not os.path.islink(f):
                executable = os.stat(f).st_mode & 0o111
                os.chmod(f, (0o777 if executable else 0o666) & ~mask)


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


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A UTF-8 text file's content; one line naming the file if it is missing or binary."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} does not exist")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a {what}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at line {line})") from None


def read_framed_jsonl(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """Return (header, records); raise UserError naming the file if it is not whole."""
    path = Path(path)
    lines = read_text(path).splitlines()
    if not lines:
        raise UserError(f"{path}: empty file")
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: truncated or corrupt (bad JSON at line {i}: {exc.msg}): "
                            "delete it and rerun the step that writes it") from None
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
    out = []
    for i, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{i}: bad JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise UserError(f"{path}:{i}: expected a JSON object per line, got {type(rec).__name__}")
        out.append(rec)
    return out


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            for rec in records:
                fh.write(json.dumps(rec) + "\n")
