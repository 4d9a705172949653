"""GPTQ calibration data, as GPTQ users make it.

Sources (``quantization.calibration.source``):

- ``wikitext2`` (default) / ``c4``: ``samples`` random windows of ``seq_len`` tokens of a
  general corpus, drawn exactly as the GPTQ authors' ``datautils.py`` (``get_wikitext2``,
  ``get_c4``) draws them, with ``random.seed(seed)``: WikiText-2 raw train joined by blank
  lines, one window anywhere in it; C4 en (first shard of the train split), a random document
  longer than ``seq_len`` tokens, one window inside it.
- a path to a local ``.txt`` file (its text) or ``.jsonl`` file (the ``text`` field of each
  record, joined by blank lines): windows as for WikiText-2. For offline use and tests.
- ``traces``: the bf16 model's own reasoning traces (prompt + what it generates, sampled with
  the config's temperature/top_p) on the questions of ``calibration.dataset``, a configured
  dataset that no sweep evaluates; each trace is one sample, cut at ``seq_len`` tokens.
  Studies of quantized reasoning models calibrate on reasoning text like this.

Config validation (:func:`check_config`) refuses calibration data that is also evaluated.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from notallbits import UserError

HUB_CORPORA = ("wikitext2", "c4")
KINDS = (*HUB_CORPORA, "traces")


def source_kind(source: str) -> str:
    """'wikitext2', 'c4', 'traces' or 'file' (a local .txt/.jsonl path)."""
    return source if source in KINDS else "file"


# ---------------------------------------------------------------- corpora
def load_corpus(source: str) -> list[str]:
    """Documents of a hub corpus (through ``datasets``) or of a local .txt/.jsonl file."""
    if source == "wikitext2":
        return list(_load_hub("wikitext", "wikitext-2-raw-v1", split="train")["text"])
    if source == "c4":
        # the shard the GPTQ authors (and GPTQModel's examples) use: 356k documents, not all of C4
        data = _load_hub("allenai/c4", data_files={"train": "en/c4-train.00000-of-01024.json.gz"}, split="train")
        return list(data["text"])
    return read_text_file(source)


def _load_hub(name: str, config: str | None = None, **kwargs):
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - environment problem
        raise UserError(f"the 'datasets' package is needed to load the calibration corpus {name}") from exc
    try:
        return datasets.load_dataset(name, config, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any hub failure is a one-line user error
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(f"could not load calibration corpus {name}: {type(exc).__name__}: {first} "
                        f"(offline: set quantization.calibration.source to a local .txt or .jsonl file)") from None


def read_text_file(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"calibration file {path} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"calibration file {path}: not UTF-8 (byte {exc.start})") from None
    if p.suffix == ".jsonl":
        docs = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"calibration file {path} line {i}: bad JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise UserError(f"calibration file {path} line {i}: needs a string field 'text'")
            docs.append(rec["text"])
        return docs
    return [text]


# ---------------------------------------------------------------- samples
def concat_windows(tokenizer, docs: list[str], samples: int, seq_len: int, seed: int,
                   where: str = "calibration text") -> list[list[int]]:
    """GPTQ's get_wikitext2: tokenize the documents joined by blank lines, then ``samples``
    windows [i, i + seq_len) with i = random.randint(0, n - seq_len - 1) after random.seed(seed)."""
    ids = tokenizer("\n\n".join(docs))["input_ids"]
    if len(ids) <= seq_len:
        raise UserError(f"{where} has {len(ids)} tokens, not more than seq_len={seq_len}: "
                        f"lower quantization.calibration.seq_len or use a longer text")
    rng = random.Random(seed)
    out = []
    for _ in range(samples):
        i = rng.randint(0, len(ids) - seq_len - 1)
        out.append(list(ids[i:i + seq_len]))
    return out


def document_windows(tokenizer, docs: list[str], samples: int, seq_len: int, seed: int) -> list[list[int]]:
    """GPTQ's get_c4: a random document longer than seq_len tokens, then a random window in it."""
    rng = random.Random(seed)
    out = []
    for _ in range(samples):
        for _attempt in range(100_000):
            ids = tokenizer(docs[rng.randint(0, len(docs) - 1)])["input_ids"]
            if len(ids) > seq_len:
                break
        else:
            raise UserError(f"no calibration document is longer than seq_len={seq_len} tokens")
        i = rng.randint(0, len(ids) - seq_len - 1)
        out.append(list(ids[i:i + seq_len]))
    return out


def trace_samples(tokenizer, path: str, samples: int, seq_len: int) -> list[list[int]]:
    """One sample per stored trace, cut at seq_len tokens."""
    docs = read_text_file(path)
    if len(docs) < samples:
        raise UserError(f"{path}: {len(docs)} traces, fewer than quantization.calibration.samples={samples}")
    return [tokenizer(d, add_special_tokens=False)["input_ids"][:seq_len] for d in docs[:samples]]


def calibration_samples(settings: dict, tokenizer, file: str | None = None) -> list[list[int]]:
    """Token-id samples for GPTQ from the normalized ``quantization.calibration`` settings;
    ``file`` is the local text/JSONL file or the traces file the workflow made."""
    source, n, seq_len, seed = settings["source"], settings["samples"], settings["seq_len"], settings["seed"]
    kind = source_kind(source)
    if kind == "traces":
        if not file:
            raise UserError("calibration source 'traces' needs the traces file (--calibration-file)")
        return trace_samples(tokenizer, file, n, seq_len)
    docs = load_corpus(file or source)
    if kind == "c4":
        return document_windows(tokenizer, docs, n, seq_len, seed)
    return concat_windows(tokenizer, docs, n, seq_len, seed, where=f"calibration source {file or source}")


# ---------------------------------------------------------------- traces
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


# ---------------------------------------------------------------- config check
def check_config(config: dict) -> None:
    """At start-up: the source exists, and no sweep evaluates the calibration data (test
    leakage). One line naming the key otherwise."""
    from notallbits.data.registry import question_identity

    cal = config.get("quantization", {}).get("calibration", {})
    kind = source_kind(cal.get("source", "wikitext2"))
    if cal.get("dataset") and kind != "traces":
        raise UserError("config: quantization.calibration.dataset: only read with source 'traces' "
                        f"(source is {cal['source']!r})")
    if kind == "file" and not Path(cal["source"]).is_file():
        raise UserError(f"config: quantization.calibration.source: {cal['source']!r} is neither wikitext2, c4, "
                        f"traces nor an existing .txt/.jsonl file")
    evaluated = {}
    for i, sweep in enumerate(config.get("sweeps", [])):
        for name in sweep.get("datasets", []):
            evaluated.setdefault(name, f"sweeps[{i}]" + (f" ({sweep['name']})" if sweep.get("name") else ""))
    if kind == "traces":
        name = cal.get("dataset")
        if not name:
            raise UserError("config: quantization.calibration.dataset: required for source 'traces' "
                            "(a dataset under datasets: that no sweep evaluates)")
        if name not in config["datasets"]:
            raise UserError(f"config: quantization.calibration.dataset: unknown dataset {name!r}")
        if name in evaluated:
            raise UserError(f"config: quantization.calibration.dataset: {name!r} is evaluated in {evaluated[name]}; "
                            f"calibrating on it leaks the test questions into the quantized model")
        mine = question_identity(config["datasets"][name])
        for other, where in evaluated.items():
            if question_identity(config["datasets"][other]) == mine:
                raise UserError(f"config: quantization.calibration.dataset: {name!r} holds the same questions as "
                                f"{other!r}, evaluated in {where}; calibrating on it leaks the test questions")
    elif kind == "file":
        path = Path(cal["source"]).resolve()
        for other, where in evaluated.items():
            spec = config["datasets"][other]
            paths = {Path(f"results/data/{other}.jsonl").resolve()}
            if spec.get("path"):
                paths.add(Path(spec["path"]).resolve())
            if path in paths:
                raise UserError(f"config: quantization.calibration.source: {cal['source']} is dataset {other!r}, "
                                f"evaluated in {where}; calibrating on it leaks the test questions")


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
