"""The disk a run writes, part by part, next to the free space where each part goes
(``notallbits plan``): hub downloads, quantized checkpoints, progress records, quantize scratch."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from notallbits import UserError, grid, hfcache
from notallbits.downloads import RESULTS
from notallbits.hubcheck import CORPUS_BYTES, hub_checkpoints, job_environment, needs_calibration_corpus

GIB = 1024 ** 3


def _free_gib(path: str) -> float:
    p = Path(os.path.abspath(path))
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free / GIB


def disk_plan(config: dict, tokens: int, environ=None) -> list[dict]:
    """What the run writes and where, in GiB, with the free space of each target folder:
    hub downloads (bf16 checkpoints, verifiers, calibration corpus), the quantized checkpoints,
    the progress records (every generated token id as JSON text: at most as many bytes as the
    vocabulary's largest id has digits, plus a comma), and the scratch of the largest quantize
    (GPTQModel offloads the model's bf16 layers to disk beside the output)."""
    from notallbits.memory import format_weight_bytes, prm_weight_bytes
    from notallbits.plan import model_arch

    hub = hfcache.user_cache_locations(job_environment(config, environ))["HF_HUB_CACHE"]
    rows = []
    checkpoints = hub_checkpoints(config)
    model_bytes = sum(format_weight_bytes(model_arch(config, n), "bf16") for (k, n) in checkpoints if k == "models")
    verifier_bytes = 0
    for (kind, name), repo in checkpoints.items():
        if kind == "verifiers":
            try:
                verifier_bytes += prm_weight_bytes(repo)
            except UserError:
                verifier_bytes += 15 * GIB  # an unknown 7B PRM
    rows.append({"part": "hub downloads: bf16 checkpoints", "gib": model_bytes / GIB, "where": hub,
                 "count": sum(k == "models" for k, _ in checkpoints)})
    rows.append({"part": "hub downloads: verifiers", "gib": verifier_bytes / GIB, "where": hub,
                 "count": sum(k == "verifiers" for k, _ in checkpoints)})
    corpus = needs_calibration_corpus(config)
    rows.append({"part": "calibration corpus", "gib": CORPUS_BYTES.get(corpus, 0) * 2 / GIB,  # hub copy + JSONL
                 "where": f"{RESULTS}/downloads", "count": int(corpus is not None)})
    quantized = sorted({(j.model, j.weights.name) for j in grid.jobs(config) if j.weights.quantized})
    q_bytes = sum(format_weight_bytes(model_arch(config, m), f, config["quantization"]) for m, f in quantized)
    rows.append({"part": "quantized checkpoints", "gib": q_bytes / GIB, "where": f"{RESULTS}/models",
                 "count": len(quantized)})
    vocab = max((model_arch(config, m).vocab for m in config["models"]), default=151936) or 151936
    rows.append({"part": "progress records", "gib": tokens * (len(str(vocab - 1)) + 1) / GIB,
                 "where": f"{RESULTS}/progress", "count": len(grid.jobs(config))})
    scratch = max((format_weight_bytes(model_arch(config, m), "bf16") for m, _ in quantized), default=0)
    rows.append({"part": "scratch of the largest quantize (bf16 offload)", "gib": scratch / GIB,
                 "where": f"{RESULTS}/models", "count": int(bool(quantized))})
    for row in rows:
        row["free_gib"] = _free_gib(row["where"])
    return rows


def print_disk_plan(rows: list[dict]) -> None:
    print("disk (GiB needed, and free where it goes):")
    for r in rows:
        print(f"  {r['part']:<48} {r['gib']:8.2f}  ({r['count']})  {r['where']}: {r['free_gib']:.0f} free")
    by_device: dict[int, list] = {}  # folders on one filesystem share its free space
    for r in rows:
        p = Path(os.path.abspath(r["where"]))
        while not p.exists():
            p = p.parent
        entry = by_device.setdefault(p.stat().st_dev, [0.0, r["free_gib"], []])
        entry[0] += r["gib"]
        if r["where"] not in entry[2]:
            entry[2].append(r["where"])
    for need, free, folders in by_device.values():
        if need > free:
            print(f"  warning: {' + '.join(folders)} need {need:.0f} GiB on one filesystem, {free:.0f} GiB free")
