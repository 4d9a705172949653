"""``notallbits list``: what a config can name, read from the registries that own each concept
(dataset loaders: data/registry.py; model families: families.py and archs/*.json; KV methods:
kvcache/settings.py; weight formats: weights.py; verifiers: verify/families.py and archs/prm.json)."""

from __future__ import annotations

import argparse
import importlib
import json

KINDS = ("loaders", "families", "kv-methods", "weight-formats", "verifiers")


def _first_line(obj) -> str:
    """The first sentence of a docstring, on one line."""
    paragraph = " ".join((getattr(obj, "__doc__", None) or "").strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".").replace("``", "")


def loaders() -> list[dict]:
    from notallbits.data import registry

    out = []
    for name, target in registry.LOADERS.items():
        if isinstance(target, str):  # "module:function", defined elsewhere
            module, function = target.split(":")
            target = getattr(importlib.import_module(module), function)
        described = target if target.__doc__ else getattr(registry, name, None)
        out.append({"name": name, "about": _first_line(described)})
    return out


def families() -> list[dict]:
    from notallbits.families import FAMILIES
    from notallbits.memory import known_archs

    facts = known_archs()
    return [{"name": f.model_type, "config_class": f.config_class, "qk_norm": f.qk_norm,
             "qkv_bias": f.qkv_bias, "offline_facts": sorted(n for n, c in facts.items()
                                                              if c.get("model_type", "qwen3") == f.model_type
                                                              and "ProcessRewardModel" not in str(c.get("architectures")))}
            for f in FAMILIES.values()]


def kv_methods() -> list[dict]:
    from notallbits.kvcache.settings import METHODS

    return [{"name": m.name, "defaults": m.defaults, "backend": "transformers" if m.needs_transformers else "any"}
            for m in METHODS.values()]


def weight_formats() -> list[dict]:
    from notallbits.weights import BY_BITS, FORMATS

    bare = {name: bits for bits, name in BY_BITS.items()}
    return [{"name": f.name, "method": f.method, "bits": f.bits, "also_written": bare.get(f.name, ""),
             "path_tag": f"w{f.tag}", "layout": f.layout, "calibrated": f.calibrated} for f in FORMATS.values()]


def verifiers() -> list[dict]:
    from notallbits.memory import known_archs
    from notallbits.verify import AGGREGATIONS
    from notallbits.verify.families import FAMILIES

    archs = known_archs()
    return [{"name": f.name, "architecture": f.architecture, "aggregations": list(AGGREGATIONS),
             "offline_facts": sorted(n for n, c in archs.items() if f.architecture in (c.get("architectures") or []))}
            for f in FAMILIES.values()]


TABLES = {"loaders": loaders, "families": families, "kv-methods": kv_methods, "weight-formats": weight_formats,
          "verifiers": verifiers}
TITLES = {"loaders": "dataset loaders (datasets.<name>.loader)",
          "families": "model families (model_type of a checkpoint's config.json; offline facts in notallbits/archs)",
          "kv-methods": "KV-cache methods (kv_methods.<name>.method, with their defaults)",
          "weight-formats": "weight formats (a sweep's bits)",
          "verifiers": "verifier architectures (verifiers.<name>; aggregation of step rewards)"}


def _line(kind: str, row: dict) -> str:
    if kind == "loaders":
        return f"{row['name']:<14} {row['about']}"
    if kind == "families":
        bias = row["qkv_bias"] if isinstance(row["qkv_bias"], bool) else f"when {row['qkv_bias']}"
        return (f"{row['name']:<8} {row['config_class']:<12} q/k norm: {str(row['qk_norm']).lower():<5} "
                f"q/k/v bias: {str(bias).lower():<22} facts: {', '.join(row['offline_facts']) or 'none'}")
    if kind == "kv-methods":
        defaults = ", ".join(f"{k}={v}" for k, v in row["defaults"].items()) or "no settings"
        return f"{row['name']:<13} backend {row['backend']:<13} {defaults}"
    if kind == "weight-formats":
        also = f" (or {row['also_written']})" if row["also_written"] != "" else ""
        return (f"{row['name'] + also:<16} {row['method']:<5} {row['bits']:>2}-bit  path {row['path_tag']:<7} "
                f"layout {row['layout']:<10} {'calibrated' if row['calibrated'] else ''}".rstrip())
    return f"{row['name']}  aggregations: {', '.join(row['aggregations'])}  facts: {', '.join(row['offline_facts'])}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", choices=KINDS, help="list only these (default: all)")
    p.add_argument("--json", action="store_true", help="print as JSON")


def run(args: argparse.Namespace) -> None:
    kinds = [args.kind] if args.kind else list(KINDS)
    tables = {kind: TABLES[kind]() for kind in kinds}
    if args.json:
        print(json.dumps(tables, indent=1))
        return
    for i, kind in enumerate(kinds):
        print(("\n" if i else "") + TITLES[kind] + ":")
        for row in tables[kind]:
            print("  " + _line(kind, row))
