"""The bf16 model's own reasoning traces as GPTQ calibration text (``quantization.calibration.source:
traces``): the ``calibration-traces`` step, run in the generation env. The quantize step reads the
file these write through ``notallbits.calibration``, which never imports a generation backend.
"""

from __future__ import annotations

import json
import sys

from notallbits import UserError


def generate_traces(model_path: str, questions_path: str, out_path: str, samples: int, seq_len: int,
                    seed: int, temperature: float, top_p: float, prompt_style: str = "default",
                    dtype: str = "bfloat16", device: str = "auto", batch_size: int = 16) -> dict:
    """The bf16 model's own traces on the first ``samples`` questions (cycled when fewer):
    prompt + sampled continuation up to seq_len tokens in all, one JSONL record each."""
    import time

    import torch

    from notallbits.data.prepare import read_questions
    from notallbits.generation.hf_backend import load_model
    from notallbits.generation.prompts import build_prompt
    from notallbits.io import write_jsonl

    questions = read_questions(questions_path)
    model, tok = load_model(model_path, dtype, device)
    t0 = time.perf_counter()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prompts = [tok.encode(build_prompt(tok, questions[i % len(questions)], prompt_style), add_special_tokens=False)
               for i in range(samples)]
    if max(len(p) for p in prompts) >= seq_len:
        raise UserError(f"a calibration prompt is {max(len(p) for p in prompts)} tokens, not less than "
                        f"seq_len={seq_len}: raise quantization.calibration.seq_len")
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [tok.eos_token_id])
    records, tokens = [], 0
    with torch.inference_mode():
        for start in range(0, samples, batch_size):
            batch = prompts[start:start + batch_size]
            width = max(len(p) for p in batch)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=model.device)  # left padding
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=model.device)
            torch.manual_seed(seed + start)  # per batch: a rerun with another batch size differs, by design
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature,
                                 top_p=top_p, top_k=0, max_new_tokens=seq_len - width, pad_token_id=pad)
            for j, p in enumerate(batch):
                gen = out[j, width:].tolist()
                cut = next((k + 1 for k, t in enumerate(gen) if t in eos), len(gen))
                gen = gen[:cut]
                tokens += len(gen)
                q = questions[(start + j) % len(questions)]
                records.append({"id": f"{q['id']}#{start + j}", "text": tok.decode(p + gen), "prompt_tokens": len(p),
                                "generated_tokens": len(gen)})
    write_jsonl(out_path, records)
    stats = {"traces": len(records), "generated_tokens": tokens, "seconds": round(time.perf_counter() - t0, 2)}
    print(json.dumps(stats), file=sys.stderr)
    return stats


# ---------------------------------------------------------------- command
def add_arguments(p) -> None:
    p.add_argument("--questions", required=True, help="normalized dataset JSONL (not an evaluated one)")
    p.add_argument("--spec", required=True, help="JSON: model_path, samples, seq_len, seed, temperature, top_p, "
                                                 "prompt_style, dtype, device, batch_size")
    p.add_argument("--out", required=True, help="JSONL of traces (a 'text' field each)")


def gpus_needed(args) -> int:
    """Devices the job's slot holds (cli.py): none when the spec asks for CPU."""
    try:
        return 0 if json.loads(args.spec).get("device") == "cpu" else 1
    except (json.JSONDecodeError, AttributeError):
        return 1


def run(args) -> None:
    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as exc:
        raise UserError(f"--spec is not valid JSON: {exc.msg}") from None
    generate_traces(spec["model_path"], args.questions, args.out, spec["samples"], spec["seq_len"], spec["seed"],
                    spec["temperature"], spec["top_p"], spec.get("prompt_style", "default"),
                    spec.get("dtype", "bfloat16"), spec.get("device", "auto"), spec.get("batch_size", 16))
