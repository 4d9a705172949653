"""The ``verify`` step: a process reward model (PRM) scores every stored sample, for Best-of-N.

The model, its prompt and its reward rule are its family's (``families.py``); this module
chooses the steps, fits them into the verifier's context, and writes the verify file.
Our choices, where the references leave them open:

* steps: a budget's thinking text (``thinking_texts``) split at blank lines (the Qwen PRM cards
  recommend "\\n\\n" between steps), empty pieces dropped, and the forced or natural answer
  (``answer_text``) as the last step;
* context: a PRM has a fixed context (4,096 positions for the 7B PRMs), shorter than a
  2k-30k-token trace. The question and the *last* steps that fit are kept (the conclusion the
  selected answer rests on); the earliest steps are dropped and counted (``steps_dropped``),
  and the room left takes the tail of the last dropped step (scored as a step). An answer
  step that alone does not fit keeps its last tokens;
* a sample's score: the minimum step reward by default (``aggregation``: ``min``, the reading of
  the Best-of-N code ActivePRM ships (PRMBench's bon_eval, ``--reward-integration min``);
  ``product`` of the step rewards as in Lightman et al.'s "Let's Verify Step by Step"; the
  ``last`` step's; or their ``mean``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from notallbits import UserError
from notallbits.verify import FORMAT_VERSION

SEPARATOR = "<extra_0>"  # both families' separator in their published checkpoints: never inside a step
AGGREGATIONS = {
    "min": min,
    "product": math.prod,
    "last": lambda rewards: rewards[-1],
    "mean": lambda rewards: sum(rewards) / len(rewards),
}


def split_steps(thinking: str, answer: str) -> list[str]:
    """A sample's steps: thinking paragraphs (split at blank lines), then the answer."""
    parts = [p.strip() for p in thinking.replace(SEPARATOR, "").split("\n\n")]
    steps = [p for p in parts if p]
    answer = answer.replace(SEPARATOR, "").strip()
    return steps + [answer or "(no answer)"]


def aggregate(rewards: list[float], how: str) -> float:
    if how not in AGGREGATIONS:
        raise UserError(f"unknown PRM aggregation {how!r} (known: {', '.join(AGGREGATIONS)})")
    if not rewards:
        raise UserError("a sample has no step rewards (its input held no separator)")
    return float(AGGREGATIONS[how](rewards))


def fit(verifier, question: str, steps: list[str], max_tokens: int) -> tuple[list[int], int]:
    """(token ids, steps dropped): the question and the last steps that fit in ``max_tokens``,
    rendered as the verifier's family renders them."""
    tokenizer, render = verifier.tokenizer, verifier.render
    ids = render(question, steps)
    if len(ids) <= max_tokens:
        return ids, 0
    # drop from the front: each step costs about its own tokens + the separator's
    lengths = [len(tokenizer(s + verifier.separator, add_special_tokens=False)["input_ids"]) for s in steps]
    excess, drop = len(ids) - max_tokens, 0
    while drop < len(steps) - 1 and excess > 0:
        excess -= lengths[drop]
        drop += 1
    while True:
        ids = render(question, steps[drop:])
        if len(ids) <= max_tokens or drop == len(steps) - 1:
            break
        drop += 1
    kept = steps[drop:]
    if len(ids) > max_tokens:  # the answer step alone is too long: only its tail is scored
        return _with_tail(verifier, question, steps[-1], [], max_tokens), drop
    if drop and max_tokens - len(ids) > 8:  # room left: the tail of the last dropped step
        ids = _with_tail(verifier, question, steps[drop - 1], kept, max_tokens, strict=False) or ids
    return ids, drop


def _with_tail(verifier, question: str, step: str, rest: list[str], max_tokens: int, strict: bool = True):
    """Ids of (the last tokens of ``step`` that fit, then ``rest``) within ``max_tokens``."""
    tokenizer = verifier.tokenizer
    tokens = tokenizer(step, add_special_tokens=False)["input_ids"]
    base = len(verifier.render(question, ["", *rest]))
    keep = min(len(tokens), max_tokens - base)
    while keep > 0:
        ids = verifier.render(question, [tokenizer.decode(tokens[len(tokens) - keep:]), *rest])
        if len(ids) <= max_tokens:
            return ids
        keep -= max(1, len(ids) - max_tokens)
    if strict:
        raise UserError(f"the question alone takes {base} tokens, more than the verifier's "
                        f"{max_tokens}-token context (verifiers.<name>.max_tokens)")
    return None


def verify(questions_path: str, generation_paths: list[str], spec: dict, out_path: str) -> dict:
    """Score every (question, sample, budget) record of one generation job (all its shards)."""
    from tqdm import tqdm

    from notallbits.data.prepare import read_questions
    from notallbits.generation.prompts import user_message
    from notallbits.generation.run import thinking_texts
    from notallbits.generation.torch_device import resolve_device
    from notallbits.io import read_framed_jsonl, write_framed_jsonl
    from notallbits.memory import checkpoint_bytes
    from notallbits.scoring.shards import gather_shards
    from notallbits.verify.families import load

    how = spec["aggregation"]
    aggregate([1.0], how)  # an unknown aggregation fails before the model loads
    questions = {q["id"]: q for q in read_questions(questions_path)}
    header, records = gather_shards([read_framed_jsonl(p) for p in generation_paths], list(generation_paths))
    try:
        texts = thinking_texts(records)
    except UserError as exc:
        raise UserError(f"{generation_paths[0]}: {exc}") from None
    device = resolve_device(spec.get("device", "auto"))
    verifier = load(spec["source"], spec.get("dtype", "bfloat16"), device)
    limit = spec.get("max_tokens") or verifier.context_tokens
    style = spec.get("prompt_style", "default")
    inputs = []
    for r in records:
        q = questions.get(r["question_id"])
        if q is None:
            raise UserError(f"{generation_paths[0]}: record for question {r['question_id']!r}, "
                            f"which {questions_path} lacks")
        steps = split_steps(texts[(r["question_id"], r["sample"], r["budget_tokens"])], r["answer_text"])
        ids, dropped = fit(verifier, user_message(q, style), steps, limit)
        inputs.append((ids, len(steps), dropped))
    # longest first, batches of similar length: little padding
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i][0]))
    rewards: list[list[float] | None] = [None] * len(inputs)
    size = spec.get("batch_size", 8)
    t0 = time.perf_counter()
    for start in tqdm(range(0, len(order), size), desc="verify batches", file=sys.stderr, mininterval=5):
        chunk = order[start: start + size]
        for i, out in zip(chunk, verifier.step_rewards([inputs[i][0] for i in chunk], device)):
            rewards[i] = out
    verify_seconds = time.perf_counter() - t0
    rows = []
    for r, (ids, n_steps, dropped), got in zip(records, inputs, rewards):
        rows.append({"question_id": r["question_id"], "sample": r["sample"], "budget_tokens": r["budget_tokens"],
                     "score": aggregate(got, how), "step_rewards": [round(x, 6) for x in got],
                     "steps": n_steps, "steps_dropped": dropped, "input_tokens": len(ids)})
    folder = Path(spec["source"])
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(spec["source"], local_files_only=True))
    out_header = {"format_version": FORMAT_VERSION, "verifier": spec["verifier"], "source": spec["source"],
                  "family": verifier.family.name,
                  "aggregation": how, "max_tokens": limit, "dtype": spec.get("dtype", "bfloat16"),
                  "verifier_bytes": checkpoint_bytes(folder),
                  "job": {k: header.get(k) for k in ("dataset", "model", "bits", "kv", "budgets", "samples")},
                  "records": len(rows), "device": device,
                  # the PRM's forward passes over every record (model loading excluded): scoring charges
                  # a Best-of-N row its share (by input tokens) in latency
                  "seconds": round(verify_seconds, 3)}
    write_framed_jsonl(out_path, out_header, rows)
    return out_header


def build_tiny(out_dir: str | Path, family: str = "ensemble-prm", seed: int = 0, max_position_embeddings: int = 192,
               num_ensemble: int = 4) -> Path:
    """A random tiny PRM of a family, as a normal HF folder with that family's exact state-dict
    layout: the tiny model's tokenizer plus the separator token, config.json naming the family's
    architecture. ``ensemble-prm`` (ActPRM-X's, the default) stores float32 heads and the
    ``score.reg_model`` copy as the authors' checkpoints do. Its short context makes the demo's
    traces overflow it, so truncation runs too."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2Config

    from notallbits import manifest
    from notallbits.io import atomic_dir
    from notallbits.tinymodel import build_tokenizer
    from notallbits.verify.families import BY_NAME

    if family not in BY_NAME:
        raise UserError(f"unknown verifier family {family!r} (known: {', '.join(BY_NAME)})")
    fam = BY_NAME[family]
    tokenizer = build_tokenizer()
    tokenizer.add_tokens([SEPARATOR], special_tokens=True)
    extra = {"num_labels": 2} if family == "qwen2-prm" else {"num_ensemble": num_ensemble, "rr_token": SEPARATOR}
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_position_embeddings,
                         tie_word_embeddings=False, architectures=[fam.architecture],
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), dtype="bfloat16", **extra)
    torch.manual_seed(seed)
    model = fam.model_class()(config).to(torch.bfloat16)
    with torch.no_grad():  # heads wide enough that an untrained PRM's rewards differ from step to step
        for name, param in model.score.named_parameters():
            fan_in = param.shape[-2] if param.dim() == 3 else param.shape[-1]  # ensemble weight [E, in, out]
            param.normal_(0.0, 2.0 / fan_in**0.5 if name.endswith("weight") else 0.1)
    if family == "ensemble-prm":
        model.score.float()
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if family == "ensemble-prm":  # the frozen training copy the authors' checkpoints carry
            tensors = load_file(tmp / "model.safetensors")
            tensors.update({k.replace("score.model.", "score.reg_model.", 1): v + 0.01 * torch.randn_like(v)
                            for k, v in tensors.items() if k.startswith("score.model.")})
            save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        (tmp / "notallbits.json").write_text(json.dumps({"built_by": "notallbits.verify", "family": family,
                                                         "seed": seed}) + "\n")
        manifest.write(tmp)
    return out_dir


# ---------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--questions", help="normalized dataset JSONL")
    p.add_argument("--generations", nargs="+", help="a job's generation file, or all its question shards")
    p.add_argument("--spec", help="verifier settings as JSON (see rules/verify.smk)")
    p.add_argument("--out", help="framed JSONL of per-sample step rewards")
    p.add_argument("--build-tiny", metavar="DIR", help="instead: write a tiny random PRM to DIR")
    p.add_argument("--family", default="ensemble-prm", help="with --build-tiny: the verifier family (default ActPRM-X's)")


def gpus_needed(args: argparse.Namespace) -> int:
    if args.build_tiny:
        return 0
    try:
        spec = json.loads(args.spec or "{}")
    except json.JSONDecodeError:
        return 1
    return 0 if str(spec.get("device", "auto")) == "cpu" else 1


def run(args: argparse.Namespace) -> None:
    if args.build_tiny:
        build_tiny(args.build_tiny, args.family)
        return
    if not (args.questions and args.generations and args.spec and args.out):
        raise UserError("--questions, --generations, --spec and --out are required (or --build-tiny DIR)")
    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as exc:
        raise UserError(f"--spec is not valid JSON: {exc.msg}") from None
    header = verify(args.questions, list(args.generations), spec, args.out)
    print(f"{header['records']} records scored by {header['verifier']} ({header['aggregation']}, "
          f"context {header['max_tokens']} tokens) on {header['device']}", file=sys.stderr)
