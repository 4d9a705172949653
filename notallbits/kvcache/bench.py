"""Decode speed of each KV method relative to the full cache, same model and trace length.

    python -m notallbits.kvcache.bench MODEL_DIR [--tokens 512] [--batch 4] [--budget 128]
"""

from __future__ import annotations

import argparse
import time


def decode_seconds(model, settings: dict, tokens: int, batch: int, repeats: int = 3) -> float:
    import torch

    from notallbits.kvcache import make_cache

    ids = torch.randint(10, model.config.vocab_size, (batch, tokens + 16), generator=torch.Generator().manual_seed(0))
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            cache = make_cache(settings, model)
            model(input_ids=ids[:, :16], past_key_values=cache, position_ids=torch.arange(16)[None])
            t0 = time.perf_counter()
            for t in range(16, 16 + tokens):
                model(input_ids=ids[:, t : t + 1], past_key_values=cache, position_ids=torch.tensor([[t]]),
                      logits_to_keep=1)
            best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--budget", type=int, default=128)
    args = p.parse_args(argv)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).eval()
    methods = {"full": {"method": "full"}, "streamingllm": {"method": "streamingllm", "budget": args.budget},
               "rkv": {"method": "rkv", "budget": args.budget}, "hqq-4bit": {"method": "hqq", "nbits": 4}}
    base = decode_seconds(model, methods["full"], args.tokens, args.batch)
    print(f"full: {args.tokens * args.batch / base:.0f} tok/s")
    for name, settings in methods.items():
        if name != "full":
            s = decode_seconds(model, settings, args.tokens, args.batch)
            print(f"{name}: {args.tokens * args.batch / s:.0f} tok/s, {s / base:.2f}x the full cache's time")


if __name__ == "__main__":
    main()
