"""``notallbits verify``: a process reward model (PRM) scores every stored sample, for Best-of-N.

The paper's verifier is ActPRM-X (``sail/ActPRM-X``), a fine-tune of
``Qwen/Qwen2.5-Math-PRM-7B`` that keeps its interface (both model cards):

* architecture ``Qwen2ForProcessRewardModel``: a Qwen2 decoder (``model.*``, no lm_head) and a
  token-classification head ``score`` = Linear(hidden, hidden) -> ReLU -> Linear(hidden, 2),
  both with biases (``score.0.*``, ``score.2.*``; the checkpoint's own modeling_qwen2_rm.py and
  vLLM's ``qwen2_rm.py`` agree). The hub folder loads it through remote code; this module
  defines the same module names on transformers' own ``Qwen2Model``, so the real weights
  load here without ``trust_remote_code`` and a tiny random PRM built here
  (:func:`build_tiny`) runs through exactly the same code;
* input: the chat template with the system prompt ``SYSTEM``, the question as the user turn and
  the solution as the assistant turn, its steps each followed by the separator ``<extra_0>``;
* a step's reward: softmax over the head's 2 logits at that step's separator, class 1 (the
  probability that the step is correct), in [0, 1]. (vLLM's and SGLang's copies of the model
  agree on the head; vLLM's STEP pooler defaults its step token to id 151651, ``<extra_0>`` in
  the Qwen2.5 tokenizer: :func:`load` takes the id from the checkpoint's own tokenizer.)

Our choices, where the cards leave them open:

* steps: a budget's thinking text (``thinking_texts``) split at blank lines (the cards
  recommend "\\n\\n" between steps), empty pieces dropped, and the forced or natural answer
  (``answer_text``) as the last step;
* context: a PRM has a fixed context (Qwen2.5-Math-PRM-7B: 4,096 positions), shorter than a
  2k-30k-token trace. The question and the *last* steps that fit are kept (the conclusion the
  selected answer rests on); the earliest steps are dropped and counted (``steps_dropped``),
  and the room left takes the tail of the last dropped step (scored as a step). An answer
  step that alone does not fit keeps its last tokens;
* a sample's score: the minimum step reward by default (``aggregation``: ``min``, ``product``
  of the step rewards as in Lightman et al.'s "Let's Verify Step by Step", or the ``last``
  step's); min is the weakest-step reading of a PRM: one wrong step makes a wrong solution.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from notallbits import UserError

SEPARATOR = "<extra_0>"
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
ARCHITECTURE = "Qwen2ForProcessRewardModel"
AGGREGATIONS = {
    "min": min,
    "product": math.prod,
    "last": lambda rewards: rewards[-1],
}
FORMAT_VERSION = 1  # of the verify files; a rule param


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


def render(tokenizer, question: str, steps: list[str]) -> list[int]:
    """Token ids of (system, question, steps joined and closed by the separator), as the cards build them."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
                {"role": "assistant", "content": SEPARATOR.join(steps) + SEPARATOR}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fit(tokenizer, question: str, steps: list[str], max_tokens: int) -> tuple[list[int], int]:
    """(token ids, steps dropped): the question and the last steps that fit in ``max_tokens``."""
    ids = render(tokenizer, question, steps)
    if len(ids) <= max_tokens:
        return ids, 0
    # drop from the front: each step costs about its own tokens + the separator's
    lengths = [len(tokenizer(s + SEPARATOR, add_special_tokens=False)["input_ids"]) for s in steps]
    excess, drop = len(ids) - max_tokens, 0
    while drop < len(steps) - 1 and excess > 0:
        excess -= lengths[drop]
        drop += 1
    while True:
        ids = render(tokenizer, question, steps[drop:])
        if len(ids) <= max_tokens or drop == len(steps) - 1:
            break
        drop += 1
    kept = steps[drop:]
    if len(ids) > max_tokens:  # the answer step alone is too long: only its tail is scored
        return _with_tail(tokenizer, question, steps[-1], [], max_tokens), drop
    if drop and max_tokens - len(ids) > 8:  # room left: the tail of the last dropped step
        ids = _with_tail(tokenizer, question, steps[drop - 1], kept, max_tokens, strict=False) or ids
    return ids, drop


def _with_tail(tokenizer, question: str, step: str, rest: list[str], max_tokens: int, strict: bool = True):
    """Ids of (the last tokens of ``step`` that fit, then ``rest``) within ``max_tokens``."""
    tokens = tokenizer(step, add_special_tokens=False)["input_ids"]
    base = len(render(tokenizer, question, ["", *rest]))
    keep = min(len(tokens), max_tokens - base)
    while keep > 0:
        ids = render(tokenizer, question, [tokenizer.decode(tokens[len(tokens) - keep:]), *rest])
        if len(ids) <= max_tokens:
            return ids
        keep -= max(1, len(ids) - max_tokens)
    if strict:
        raise UserError(f"the question alone takes {base} tokens, more than the verifier's "
                        f"{max_tokens}-token context (verifiers.<name>.max_tokens)")
    return None


# ---------------------------------------------------------------- the model (torch from here on)
def model_class():
    """``Qwen2ForProcessRewardModel`` with the checkpoint's module names, on transformers' Qwen2Model."""
    import torch
    from torch import nn
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel

    class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.num_labels = getattr(config, "num_labels", 2)
            self.model = Qwen2Model(config)
            self.score = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(),
                                       nn.Linear(config.hidden_size, self.num_labels))
            self.post_init()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            return self.score(hidden)  # (batch, seq, num_labels)

    return Qwen2ForProcessRewardModel


def load(source: str, dtype: str, device: str):
    """(model, tokenizer, separator id) from a folder or hub id; every weight must load."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(source)
    if ARCHITECTURE not in (getattr(config, "architectures", None) or []) or config.model_type != "qwen2":
        raise UserError(f"{source}: not a {ARCHITECTURE} (config.json architectures "
                        f"{getattr(config, 'architectures', None)}, model_type {config.model_type!r})")
    model, info = model_class().from_pretrained(source, dtype=getattr(torch, dtype), output_loading_info=True)
    missing = [k for k in info.get("missing_keys", []) if k]
    if missing:
        raise UserError(f"{source}: checkpoint lacks {len(missing)} weights of {ARCHITECTURE} "
                        f"(first: {sorted(missing)[0]!r}); random weights would score nothing")
    tokenizer = AutoTokenizer.from_pretrained(source)
    sep = tokenizer.encode(SEPARATOR, add_special_tokens=False)
    if len(sep) != 1:
        raise UserError(f"{source}: its tokenizer splits the step separator {SEPARATOR!r} into {len(sep)} tokens")
    return model.to(device).eval(), tokenizer, sep[0]


def step_rewards(model, batch: list[list[int]], sep_id: int, pad_id: int, device: str) -> list[list[float]]:
    """Per sequence: P(class 1) at each separator position (right-padded batch, causal, so the
    padding never reaches a real position)."""
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ids in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    with torch.inference_mode():
        probs = model(input_ids, attention_mask=mask).float().softmax(dim=-1)[..., 1]
    at_sep = (input_ids == sep_id) & mask.bool()
    return [probs[i][at_sep[i]].tolist() for i in range(len(batch))]


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

    how = spec["aggregation"]
    aggregate([1.0], how)  # an unknown aggregation fails before the model loads
    questions = {q["id"]: q for q in read_questions(questions_path)}
    header, records = gather_shards([read_framed_jsonl(p) for p in generation_paths], list(generation_paths))
    try:
        texts = thinking_texts(records)
    except UserError as exc:
        raise UserError(f"{generation_paths[0]}: {exc}") from None
    device = resolve_device(spec.get("device", "auto"))
    model, tokenizer, sep_id = load(spec["source"], spec.get("dtype", "bfloat16"), device)
    limit = spec.get("max_tokens") or model.config.max_position_embeddings
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    style = spec.get("prompt_style", "default")
    inputs = []
    for r in records:
        q = questions.get(r["question_id"])
        if q is None:
            raise UserError(f"{generation_paths[0]}: record for question {r['question_id']!r}, "
                            f"which {questions_path} lacks")
        steps = split_steps(texts[(r["question_id"], r["sample"], r["budget_tokens"])], r["answer_text"])
        ids, dropped = fit(tokenizer, user_message(q, style), steps, limit)
        inputs.append((ids, len(steps), dropped))
    # longest first, batches of similar length: little padding
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i][0]))
    rewards: list[list[float] | None] = [None] * len(inputs)
    size = spec.get("batch_size", 8)
    t0 = time.perf_counter()
    for start in tqdm(range(0, len(order), size), desc="verify batches", file=sys.stderr, mininterval=5):
        chunk = order[start: start + size]
        for i, out in zip(chunk, step_rewards(model, [inputs[i][0] for i in chunk], sep_id, pad_id, device)):
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
                  "aggregation": how, "max_tokens": limit, "dtype": spec.get("dtype", "bfloat16"),
                  "verifier_bytes": checkpoint_bytes(folder),
                  "job": {k: header.get(k) for k in ("dataset", "model", "bits", "kv", "budgets", "samples")},
                  "records": len(rows), "device": device,
                  # the PRM's forward passes over every record (model loading excluded): scoring charges
                  # a Best-of-N row its share (by input tokens) in latency
                  "seconds": round(verify_seconds, 3)}
    write_framed_jsonl(out_path, out_header, rows)
    return out_header


def build_tiny(out_dir: str | Path, seed: int = 0, max_position_embeddings: int = 192) -> Path:
    """A random tiny PRM of the real one's architecture and head, as a normal HF folder: the
    tiny model's tokenizer plus the separator token, config.json naming
    ``Qwen2ForProcessRewardModel``. Its short context makes the demo's traces overflow it, so
    truncation runs too."""
    import torch
    from transformers import Qwen2Config

    from notallbits import manifest
    from notallbits.io import atomic_dir
    from notallbits.tinymodel import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.add_tokens([SEPARATOR], special_tokens=True)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_position_embeddings,
                         tie_word_embeddings=False, num_labels=2, architectures=[ARCHITECTURE],
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), dtype="bfloat16")
    torch.manual_seed(seed)
    model = model_class()(config).to(torch.bfloat16)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "notallbits.json").write_text(json.dumps({"built_by": "notallbits.verify", "seed": seed}) + "\n")
        manifest.write(tmp)
    return out_dir


# ---------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--questions", help="normalized dataset JSONL")
    p.add_argument("--generations", nargs="+", help="a job's generation file, or all its question shards")
    p.add_argument("--spec", help="verifier settings as JSON (see rules/verify.smk)")
    p.add_argument("--out", help="framed JSONL of per-sample step rewards")
    p.add_argument("--build-tiny", metavar="DIR", help="instead: write a tiny random PRM to DIR")


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
        build_tiny(args.build_tiny)
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
