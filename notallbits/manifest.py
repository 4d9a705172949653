"""Checkpoint manifests: the size and sha256 of every file of a model folder this project
builds (tiny model, toy reasoners, GPTQ checkpoints), written inside the folder before it
is swapped into place, and checked before a job loads the folder.

A truncated or half-copied ``model.safetensors`` otherwise loads as far as it can and
fails with a ``SafetensorError`` that names no file (or, worse, is never noticed by a
rerun, because the folder exists). ``verify`` turns that into one line naming the folder,
the file and what to do.

Cost: sizes are checked on every load (a ``stat`` per file). Hashing reads every byte
(~1-2 GB/s, so 15-30 s for a 32B bf16 checkpoint), so each file is hashed at most once
per version: a file whose (size, mtime, inode) matches a previous successful check is
not hashed again. Those checks are remembered in a sidecar *beside* the folder
(``.<folder>.verified.json``), never inside it: Snakemake dates a directory output by its
contents, and the progress store fingerprints the folder's files, so writing into the
folder would make every downstream job look out of date. Where the parent folder is not
writable the hashes are simply checked on every load.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from notallbits import UserError

MANIFEST = "notallbits-manifest.json"
VERSION = 1


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def build(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    return {"manifest_version": VERSION,
            "files": {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256(p)}
                      for p in _files(folder)}}


def write(folder: str | os.PathLike) -> Path:
    """Write the manifest of ``folder``'s current files (call it last, inside ``atomic_dir``)."""
    from notallbits.io import write_text

    folder = Path(folder)
    write_text(folder / MANIFEST, json.dumps(build(folder), indent=1, sort_keys=True) + "\n")
    return folder / MANIFEST


def _sidecar(folder: Path) -> Path:
    folder = folder.resolve()
    return folder.parent / f".{folder.name}.verified.json"


def _version(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _corrupt(folder: Path, name: str, why: str) -> UserError:
    return UserError(f"{folder}: file {name} is corrupt or incomplete ({why}): delete this folder and rerun")


def verify(folder: str | os.PathLike, hashes: bool = True) -> bool:
    """Check ``folder`` against its manifest; raise one clear UserError if it differs.

    Returns False when the folder has no manifest (a checkpoint made elsewhere: nothing to
    check against), True when it matched. Files not in the manifest are ignored.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir() or not path.exists():
        return False
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        entries = manifest["files"]
        if not isinstance(entries, dict) or not all(  # each {"bytes": int, "sha256": str}
                isinstance(e, dict) and isinstance(e.get("bytes"), int) and isinstance(e.get("sha256"), str)
                for e in entries.values()):
            raise TypeError("files")
    except (ValueError, KeyError, TypeError):
        raise _corrupt(folder, MANIFEST, "not a readable manifest") from None
    stats = {}
    for name, entry in sorted(entries.items()):
        f = folder / name
        if not f.is_file():
            raise _corrupt(folder, name, "missing, but listed in its manifest")
        stats[name] = f.stat()
        if stats[name].st_size != entry["bytes"]:
            raise _corrupt(folder, name, f"size differs from its manifest: {stats[name].st_size} bytes, "
                                         f"not {entry['bytes']}")
    if not hashes:
        return True
    sidecar = _sidecar(folder)
    try:
        seen = json.loads(sidecar.read_text())
        seen = seen if isinstance(seen, dict) else {}
    except (OSError, ValueError):
        seen = {}
    checked = {}
    for name, entry in sorted(entries.items()):
        version = _version(stats[name])
        if seen.get(name) == [*version, entry["sha256"]]:
            checked[name] = seen[name]
            continue
        if sha256(folder / name) != entry["sha256"]:
            raise _corrupt(folder, name, "size/hash differ from its manifest")
        checked[name] = [*version, entry["sha256"]]
    if checked != seen:
        try:
            from notallbits.io import write_text

            write_text(sidecar, json.dumps(checked, sort_keys=True) + "\n")
        except OSError:  # a read-only model store: check the hashes again next time
            pass
    return True
