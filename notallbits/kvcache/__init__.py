"""KV caches for decode-time compression (full only until the compression methods land)."""

from __future__ import annotations

from notallbits import UserError


def make_cache(settings: dict, model_config):
    from transformers import DynamicCache

    if settings.get("method", "full") != "full":
        raise UserError(f"KV method {settings.get('method')!r} is not available")
    return DynamicCache(config=model_config)
