"""Train the toy reasoner family on CPU, deterministically (``notallbits train-toy``)."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from notallbits import UserError, manifest
from notallbits.io import atomic_dir
from notallbits.toy.task import TRAIN_SEED_OFFSET, draw_training_problem, worked_answer

# Widths are multiples of 128 so GPTQ's group size divides every linear input.
SIZES = {
    "toy-s": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, steps=600),
    "toy-m": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, steps=600),
    "toy-l": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, steps=600),
}
ANSWER_PREFIX = "\n\n**Final Answer**\n\\boxed{"
__all__ = ["TRAIN_SEED_OFFSET", "train"]  # the offset lives in toy.task beside the draw that uses it


def char_tokenizer():
    """One token per byte (no merges): digits stay digits, so arithmetic is learnable."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from notallbits.tinymodel import CHAT_TEMPLATE, SPECIAL_TOKENS

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL_TOKENS[1:])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def training_example(tokenizer, rng: random.Random) -> tuple[list[int], int]:
    """(token ids, index where the assistant's part starts: the loss covers only that)."""
    record = draw_training_problem(rng)
    from notallbits.generation.prompts import build_prompt

    prompt = build_prompt(tokenizer, record, style="toy")
    thinking, final = worked_answer(record, rng)
    completion = f"{thinking}</think>{ANSWER_PREFIX}{final}}}<|im_end|>"
    p_ids = tokenizer.encode(prompt, add_special_tokens=False)
    return p_ids + tokenizer.encode(completion, add_special_tokens=False), len(p_ids)


def train(size: str, out_dir: str, seed: int = 0, steps: int | None = None, batch: int = 24,
          threads: int = 2) -> dict:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    if size not in SIZES:
        raise UserError(f"unknown toy size {size!r} (known: {', '.join(SIZES)})")
    shape = dict(SIZES[size])
    steps = steps or shape.pop("steps")
    shape.pop("steps", None)
    lr = shape.pop("lr", 2e-3)  # wider models want a smaller step
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = char_tokenizer()
    im_end, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id
    config = Qwen3Config(vocab_size=len(tok), max_position_embeddings=4096, rope_theta=10000.0,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=im_end, pad_token_id=pad,
                         dtype="float32", **shape)
    model = Qwen3ForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps + 1, pct_start=0.1)
    t0, losses = time.perf_counter(), []
    model.train()
    torch.set_grad_enabled(True)  # a caller may have turned autograd off
    for step in range(steps):
        examples = [training_example(tok, rng) for _ in range(batch)]
        width = max(len(ids) for ids, _ in examples)
        input_ids = torch.full((batch, width), pad)
        labels = torch.full((batch, width), -100)
        for i, (ids, start) in enumerate(examples):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, start: len(ids)] = torch.tensor(ids[start:])
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step}/{steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    seconds = time.perf_counter() - t0
    model.eval()
    model = model.to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    model.generation_config = GenerationConfig(eos_token_id=[im_end, pad], pad_token_id=pad, do_sample=True,
                                               temperature=0.6, top_p=0.95)
    stats = {"size": size, "seed": seed, "steps": steps, "batch": batch, "lr": lr, "train_seconds": round(seconds, 1),
             "params": sum(p.numel() for p in model.parameters()), "first_loss": round(losses[0], 4),
             "final_loss": round(sum(losses[-20:]) / min(20, len(losses)), 4), **shape}
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        # no wall time in the folder: a rebuild (make toys) is then bit for bit, manifest included
        facts = {k: v for k, v in stats.items() if k != "train_seconds"}
        (tmp / "notallbits.json").write_text(json.dumps({"built_by": "notallbits.toy.train", **facts}, indent=1) + "\n")
        manifest.write(tmp)
    return stats


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", required=True, choices=sorted(SIZES), help="which toy reasoner")
    p.add_argument("--out", required=True, help="folder to write the checkpoint to")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the training problems")
    p.add_argument("--steps", type=int, help="override the size's training steps")


def run(args: argparse.Namespace) -> None:
    import sys

    stats = train(args.size, args.out, args.seed, args.steps)
    print(json.dumps(stats), file=sys.stderr)
