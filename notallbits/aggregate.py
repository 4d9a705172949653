"""The summary table: one tidy row per cell (dataset, model, weight method and bits, kv, budget, K, selection).

Weight bytes are measured (tensor bytes of the checkpoint that ran); KV bytes follow the
memory model for the cell's KV method with G = K parallel samples and T = the budget.
``latency_seconds`` is an estimate (see below; a Best-of-N row's includes its verifier's
``verifier_seconds``); ``job_tokens_per_second`` is measured.

Given the per-question scores of each row (notallbits.stats), the accuracy comes with its
standard error over questions and a 95% interval (``accuracy_se``, ``accuracy_ci95_low``,
``accuracy_ci95_high``) and the dataset's ``task``; given the generation files, each row carries
the provenance of the job that made it (notallbits.provenance.ROW_COLUMNS: sampling settings and
seed, record format, device, GPUs, library versions, the config's hash).
"""

from __future__ import annotations

import argparse
import json

GIB = 2**30

COLUMNS = ["dataset", "model", "weight_method", "bits", "kv", "kv_method", "backend", "budget_tokens", "k", "selection",
           "verifier", "accuracy", "questions", "samples", "parsed_rate", "weight_bytes", "kv_bytes", "verifier_bytes",
           "weight_gib", "kv_gib", "verifier_gib", "total_gib",
           "mean_thinking_tokens", "mean_answer_tokens", "latency_seconds", "verifier_seconds", "job_generated_tokens",
           "job_wall_seconds", "job_tokens_per_second", "quant_settings", "code_sandbox"]


def summarize(score_paths: list[str], questions=None, generation_paths: list[str] | None = None,
              config_hash: str = ""):
    """The summary table of the score files; ``questions``: their per-question scores (a table,
    notallbits.stats) for the uncertainty columns; ``generation_paths``: for the provenance columns."""
    import pandas as pd

    from notallbits.memory import Arch, kv_bytes

    if not score_paths:
        raise ValueError("no score files to aggregate")
    df = pd.concat([pd.read_csv(p) for p in score_paths], ignore_index=True)
    # GPTQ settings + calibration as JSON ("" for bf16, and for files written before the column)
    df["quant_settings"] = df["quant_settings"].astype(object).fillna("") if "quant_settings" in df else ""
    # gptq/awq/fp8/bf16 (notallbits/weights.py); score files written before the column: their bits' meaning
    from notallbits.weights import default_method

    given = df["weight_method"] if "weight_method" in df else pd.Series([None] * len(df), dtype=object)
    df["weight_method"] = [m if isinstance(m, str) and m else default_method(b) for m, b in zip(given, df["bits"])]
    kv = []
    for row in df.itertuples():
        arch = Arch(int(row.layers), int(row.kv_heads), int(row.head_dim))
        kv.append(kv_bytes(arch, json.loads(row.kv_settings), int(row.budget_tokens), int(row.k)))
    df["kv_bytes"] = pd.Series(kv, dtype="int64")
    df["kv_method"] = [json.loads(s).get("method", "full") for s in df["kv_settings"]]
    # how the answer of K samples is chosen (scoring.voting): Maj@K, or Best-of-N by a verifier whose
    # weights (measured bytes of its checkpoint) sit in memory beside the model's; score files
    # written before the column are majority rows
    df["selection"] = df["selection"].astype(object).fillna("majority") if "selection" in df else "majority"
    df["verifier"] = df["verifier"].astype(object).fillna("") if "verifier" in df else ""
    df["verifier_bytes"] = df["verifier_bytes"].fillna(0).astype("int64") if "verifier_bytes" in df else 0
    # the sandbox code was graded in ("" for other tasks, and for files written before the column)
    df["code_sandbox"] = df["code_sandbox"].astype(object).fillna("") if "code_sandbox" in df else ""
    df["weight_gib"] = df["weight_bytes"] / GIB
    df["kv_gib"] = df["kv_bytes"] / GIB
    df["verifier_gib"] = df["verifier_bytes"] / GIB
    df["total_gib"] = df["weight_gib"] + df["kv_gib"] + df["verifier_gib"]
    # One trace serves every budget of a job, so a cell's own time is not measured apart:
    # estimate it as the job's seconds per question scaled by the share of the trace it uses.
    job = ["dataset", "model", "weight_method", "bits", "kv", "selection", "verifier"]
    per_token = df["mean_thinking_tokens"] + df["mean_answer_tokens"]
    # A Best-of-N row adds the PRM's seconds for the question's N samples at that budget (the verify
    # job's forward time shared by input tokens, scoring.voting.verify_seconds_by_budget); NaN when unknown
    df["verifier_seconds"] = (pd.to_numeric(df["verifier_seconds"], errors="coerce") if "verifier_seconds" in df
                              else 0.0)
    df.loc[df["selection"] == "majority", "verifier_seconds"] = 0.0
    df["latency_seconds"] = (df["job_wall_seconds"] / df["questions"]
                             * per_token / per_token.groupby([df[c] for c in job]).transform("max")
                             + df["verifier_seconds"])
    df = df[COLUMNS].astype({"bits": "int64", "budget_tokens": "int64", "k": "int64", "weight_bytes": "int64",
                             "verifier_bytes": "int64"})
    if questions is not None:
        from notallbits.stats import SE_COLUMNS, add_uncertainty

        df = add_uncertainty(df, questions)
        at = COLUMNS.index("accuracy") + 1
        df = df[COLUMNS[:at] + SE_COLUMNS + COLUMNS[at:] + ["task"]]
    if generation_paths is not None:
        from notallbits.provenance import add_row_provenance

        df = add_row_provenance(df, generation_paths, config_hash)
    return df.sort_values(["dataset", "model", "bits", "weight_method", "kv", "budget_tokens", "k", "selection", "verifier"]
                          ).reset_index(drop=True)


def write_summary(score_paths: list[str], csv_path: str, parquet_path: str | None = None, *,
                  question_paths: list[str] | None = None, generation_paths: list[str] | None = None,
                  questions_out: str | None = None, config_hash: str = "") -> None:
    """The summary (CSV, and Parquet); with ``question_paths`` also the run's per-question scores
    in one table (``questions_out``, Parquet), which the bootstrap reads."""
    from notallbits.io import atomic_path

    questions = None
    if question_paths is not None:
        from notallbits.stats import read_question_scores

        questions = read_question_scores(question_paths)
        if questions_out:
            with atomic_path(questions_out, suffix=".parquet") as tmp:
                questions.to_parquet(tmp, index=False)
    df = summarize(score_paths, questions, generation_paths, config_hash)
    with atomic_path(csv_path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    if parquet_path:
        with atomic_path(parquet_path, suffix=".parquet") as tmp:
            df.to_parquet(tmp, index=False)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scores", nargs="+", help="score files of the jobs (the score step's CSVs)")
    p.add_argument("--csv", required=True, help="summary CSV to write")
    p.add_argument("--parquet", help="also write the summary as Parquet here")


def run(args: argparse.Namespace) -> None:
    write_summary(args.scores, args.csv, args.parquet)
