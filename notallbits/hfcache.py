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
