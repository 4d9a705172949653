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
