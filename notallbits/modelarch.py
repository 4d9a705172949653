"""The architecture facts a config's model is sized by (plan, the rules' memory and runtime
requests), found before anything runs, or one line saying what is missing. Never a guess.

In order, for a ``models:`` entry:

1. ``architecture:``: a name in ``notallbits/archs/*.json`` (offline facts), or a folder with a
   config.json;
2. a model built here (``build: tiny`` / ``toy``): its folder's config.json once built, before
   that the recipe it is built from;
3. a local folder ``source:``: its own config.json;
4. a hub id whose config.json is in the Hugging Face cache (``hf download ORG/NAME config.json``):
   the checkpoint's own facts win over shipped copies of them;
5. shipped offline facts under the source's or the entry's name (``Qwen/Qwen3-8B``, ``Qwen3-8B``).

A config.json read here must be of a known family (``notallbits/families.py``). Torch-free and
standard library only: the Snakemake driver (also the SLURM one) imports it.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from notallbits import UserError
from notallbits.memory import Arch, known_archs

TINY_VOCAB = 512  # notallbits.tinymodel.build_tokenizer's vocabulary


def arch_of(name: str, spec: dict) -> Arch:
    """The facts that size model ``name`` (its ``models:`` entry ``spec``); a UserError naming
    the key and what to do when there are none."""
    from notallbits.hfcache import user_cache_locations

    return _arch_of(name, spec.get("architecture"), spec["source"], spec.get("build"), spec.get("family", "qwen3"),
                    os.getcwd(), user_cache_locations()["HF_HUB_CACHE"])


@lru_cache(maxsize=None)  # the DAG asks for every job; paths are read from cwd and the hub cache
def _arch_of(name: str, architecture: str | None, source: str, build: str | None, family: str, cwd: str,
             hub_cache: str) -> Arch:
    where = f"config: models.{name}"
    if architecture:
        folder = Path(architecture)
        if (folder / "config.json").exists():
            return _from_config(folder / "config.json", f"{where}.architecture")
        if architecture.split("/")[-1] not in known_archs():
            raise UserError(f"{where}.architecture: no offline facts named {architecture!r} "
                            f"(known: {', '.join(known_archs())}; or a folder with config.json)")
        return Arch.named(architecture)
    if build:
        if (Path(source) / "config.json").exists():
            return _from_config(Path(source) / "config.json", f"{where}.source")
        return _recipe(name, build, family)
    folder = Path(source)
    if folder.is_dir():
        if not (folder / "config.json").exists():
            raise UserError(f"{where}.source: folder {source!r} has no config.json (a Hugging Face checkpoint "
                            "folder is needed)")
        return _from_config(folder / "config.json", f"{where}.source")
    cached = cached_config(source, hub_cache)
    if cached is not None:
        return _from_config(cached, f"{where}.source (Hugging Face cache)")
    for key in (source, name):
        if key.split("/")[-1] in known_archs():
            return Arch.named(key)
    raise UserError(f"{where}: no architecture facts for {source!r} to size its jobs: download its config first "
                    f"(hf download {source} config.json), give a local folder as source, or set "
                    f"models.{name}.architecture to a name in notallbits/archs")


def _from_config(path: Path, where: str) -> Arch:
    from notallbits.families import family_of

    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{where}: cannot read {path}: {exc}") from None
    cfg = cfg.get("text_config", cfg)
    family_of(cfg, f"{where}: {path}")
    try:
        return Arch.from_hf_config(cfg)
    except KeyError as exc:
        raise UserError(f"{where}: {path} lacks {exc.args[0]!r}") from None


def _recipe(name: str, build: str, family: str) -> Arch:
    """A model built here, before it is: sized by what it will be built from."""
    from notallbits.families import FAMILIES

    if build == "toy":
        from notallbits.tinymodel import SPECIAL_TOKENS
        from notallbits.toy.train import SIZES

        shape = {k: v for k, v in SIZES[name].items() if k != "steps"} if name in SIZES else None
        vocab = 256 + len(SPECIAL_TOKENS)  # toy.train.char_tokenizer: one token per byte, plus specials
    else:
        from notallbits.tinymodel import TINY_ARCH

        shape, vocab = dict(TINY_ARCH), TINY_VOCAB
    if shape is None:
        raise UserError(f"config: models.{name}: no toy reasoner named {name!r}")
    return Arch.from_hf_config({**shape, "model_type": family if family in FAMILIES else "qwen3",
                                "vocab_size": vocab, "tie_word_embeddings": True})


def cached_config(repo_id: str, hub_cache: str) -> Path | None:
    """A hub model's config.json in the Hugging Face cache folder ``hub_cache`` (huggingface_hub's
    layout: ``models--ORG--NAME/refs/main`` names the snapshot), or None."""
    if repo_id.count("/") != 1:
        return None
    root = Path(hub_cache) / f"models--{repo_id.replace('/', '--')}"
    ref = root / "refs" / "main"
    snapshots = [root / "snapshots" / ref.read_text().strip()] if ref.exists() else []
    snapshots += sorted((root / "snapshots").glob("*")) if (root / "snapshots").is_dir() else []
    for snap in snapshots:
        if (snap / "config.json").exists():
            return snap / "config.json"
    return None
