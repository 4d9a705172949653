"""The summary table from score files of different ages, against hand-computed rows."""

import json

import pandas as pd
import pytest

# a SMALL_QWEN3-shaped job: 2 layers x 2 KV heads x head_dim 64 -> 2 (K, V) x 2 x 2 x 64 x 2 B = 1024 B per token
JOB = {"dataset": "aime25", "model": "small", "backend": "transformers", "weight_bytes": 1041152, "layers": 2,
       "kv_heads": 2, "head_dim": 64, "job_wall_seconds": 12.0, "job_generated_tokens": 100,
       "job_tokens_per_second": 8.0, "questions": 3, "samples": 4, "parsed_rate": 1.0, "budget_tokens": 4096,
       "k": 1, "accuracy": 0.5, "mean_thinking_tokens": 4000.0, "mean_answer_tokens": 20.0}


def test_summary_fills_what_older_score_files_lack_and_counts_each_rows_memory(tmp_path):
    from notallbits.aggregate import summarize

    old = pd.DataFrame([  # written before the weight-method, selection, verifier and sandbox columns
        {**JOB, "bits": 4, "kv": "sl", "kv_settings": json.dumps({"method": "streamingllm", "budget": 2048, "sink": 4})},
        {**JOB, "bits": 4, "kv": "full", "kv_settings": "{}"},
    ])
    new = pd.DataFrame([
        {**JOB, "bits": 4, "kv": "full", "kv_settings": json.dumps({"method": "full"}), "weight_method": "awq",
         "selection": "majority", "verifier": "", "verifier_bytes": None, "code_sandbox": "bwrap",
         "verifier_seconds": 5.0},
        {**JOB, "bits": 16, "kv": "full", "kv_settings": json.dumps({"method": "full"}), "weight_method": None,
         "selection": "prm_best_of_n", "verifier": "prm", "verifier_bytes": 2**30, "code_sandbox": None,
         "verifier_seconds": 2.0},
    ])
    old.to_csv(tmp_path / "old.csv", index=False)
    new.to_csv(tmp_path / "new.csv", index=False)
    df = summarize([str(tmp_path / "old.csv"), str(tmp_path / "new.csv")])
    got = {(r.weight_method, r.kv, r.selection): r for r in df.itertuples()}
    assert set(got) == {("gptq", "sl", "majority"), ("gptq", "full", "majority"), ("awq", "full", "majority"),
                        ("bf16", "full", "prm_best_of_n")}  # 4 bits alone mean GPTQ, 16 bf16
    sl, full_old, awq, bon = (got[k] for k in [("gptq", "sl", "majority"), ("gptq", "full", "majority"),
                                                ("awq", "full", "majority"), ("bf16", "full", "prm_best_of_n")])
    assert (sl.kv_method, full_old.kv_method, awq.kv_method) == ("streamingllm", "full", "full")
    assert sl.kv_bytes == 2048 * 1024 and full_old.kv_bytes == awq.kv_bytes == bon.kv_bytes == 4096 * 1024
    assert df["kv_bytes"].dtype == "int64" and df["verifier_bytes"].dtype == "int64"
    assert (sl.verifier_bytes, awq.verifier_bytes, bon.verifier_bytes) == (0, 0, 2**30)
    assert bon.total_gib == pytest.approx(1041152 / 2**30 + 4096 * 1024 / 2**30 + 1)
    assert (sl.code_sandbox, awq.code_sandbox, bon.code_sandbox) == ("", "bwrap", "")
    assert (sl.verifier, bon.verifier) == ("", "prm")
    # Maj@K needs no verifier: its seconds are 0 whatever the file says; Best-of-N adds its own
    assert (sl.verifier_seconds, awq.verifier_seconds, bon.verifier_seconds) == (0.0, 0.0, 2.0)
    # one row per job here, so each uses its whole trace: 12 s / 3 questions, + the verifier's 2 s
    assert awq.latency_seconds == pytest.approx(4.0) and bon.latency_seconds == pytest.approx(6.0)


def test_no_score_files_is_an_error():
    from notallbits.aggregate import summarize

    with pytest.raises(ValueError, match="no score files to aggregate"):
        summarize([])


def test_best_of_n_rows_from_files_without_verifier_timing_keep_their_generation_latency(tmp_path):
    from notallbits.aggregate import summarize

    pd.DataFrame([{**JOB, "bits": 16, "kv": "full", "kv_settings": json.dumps({"method": "full"}),
                   "selection": "prm_best_of_n", "verifier": "prm", "verifier_bytes": 2**30}]
                 ).to_csv(tmp_path / "s.csv", index=False)
    (row,) = summarize([str(tmp_path / "s.csv")]).itertuples()
    assert row.verifier_seconds == 0.0 and row.latency_seconds == pytest.approx(4.0)


def test_write_summary_writes_the_csv_and_parquet_tables(tmp_path):
    from notallbits.aggregate import write_summary

    pd.DataFrame([{**JOB, "bits": 4, "kv": "sl", "k": k,
                   "kv_settings": json.dumps({"method": "streamingllm", "budget": 2048, "sink": 4})} for k in (1, 4)]
                 ).to_csv(tmp_path / "s.csv", index=False)
    write_summary([str(tmp_path / "s.csv")], str(tmp_path / "summary.csv"), str(tmp_path / "summary.parquet"))
    for table in (pd.read_csv(tmp_path / "summary.csv"), pd.read_parquet(tmp_path / "summary.parquet")):
        assert table["k"].tolist() == [1, 4] and table["kv_bytes"].tolist() == [2048 * 1024, 4 * 2048 * 1024]
        assert table["weight_method"].tolist() == ["gptq", "gptq"]
    write_summary([str(tmp_path / "s.csv")], str(tmp_path / "only.csv"))
    assert pd.read_csv(tmp_path / "only.csv")["kv_method"].tolist() == ["streamingllm"] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["only.csv", "s.csv", "summary.csv", "summary.parquet"]


def test_summary_with_question_scores_and_generation_headers_carries_the_interval_and_the_jobs_provenance(tmp_path):
    import argparse

    from notallbits.aggregate import COLUMNS, run, write_summary
    from notallbits.provenance import ROW_COLUMNS
    from notallbits.stats import SE_COLUMNS

    # 1000 B of weights: 1000 / 2**30 GiB = 9.31323e-07 in the CSV's %.6g
    pd.DataFrame([{**JOB, "bits": 4, "kv": "full", "kv_settings": "{}", "questions": 4, "accuracy": 0.75,
                   "weight_bytes": 1000}]).to_csv(tmp_path / "s.csv", index=False)
    # 3 of 4 questions right, one sample each
    pd.DataFrame([{"dataset": "aime25", "model": "small", "weight_method": "gptq", "bits": 4, "kv": "full",
                   "budget_tokens": 4096, "k": 1, "selection": "majority", "verifier": "", "task": "math",
                   "question_id": str(i), "score": s} for i, s in enumerate([1.0, 0.0, 1.0, 1.0])]
                 ).to_csv(tmp_path / "q.csv", index=False)
    header = {"dataset": "aime25", "model": "small", "bits": 4, "kv": "full", "format_version": 3,
              "sampling": {"temperature": 0.6, "top_p": 0.95, "seed": 7},
              "environment": {"device": "cpu", "gpus": [], "libraries": {"torch": "2.5.1"}}}
    (tmp_path / "g.jsonl").write_text(json.dumps({"_header": header}) + "\n")
    write_summary([str(tmp_path / "s.csv")], str(tmp_path / "summary.csv"), question_paths=[str(tmp_path / "q.csv")],
                  generation_paths=[str(tmp_path / "g.jsonl")], questions_out=str(tmp_path / "questions.parquet"),
                  config_hash="c0ffee")
    table = pd.read_csv(tmp_path / "summary.csv", keep_default_na=False)
    at = COLUMNS.index("accuracy") + 1  # the interval right after the accuracy, then the task, then provenance
    assert table.columns.tolist() == COLUMNS[:at] + SE_COLUMNS + COLUMNS[at:] + ["task"] + ROW_COLUMNS
    (row,) = table.itertuples()
    # sample standard deviation of (1, 0, 1, 1) is 0.5, over sqrt(4) questions; Wilson's 95% interval of 3/4
    assert row.accuracy_se == pytest.approx(0.25)
    assert (row.accuracy_ci95_low, row.accuracy_ci95_high) == (pytest.approx(0.3006, abs=1e-4),
                                                               pytest.approx(0.9544, abs=1e-4))
    assert row.task == "math"
    assert (row.temperature, row.top_p, row.seed, row.generation_format_version) == (0.6, 0.95, 7, 3)
    assert (row.device, row.gpus, row.job_libraries, row.config_sha256) == ("cpu", "", "torch=2.5.1", "c0ffee")
    assert "9.31323e-07" in (tmp_path / "summary.csv").read_text().splitlines()[1].split(",")
    assert pd.read_parquet(tmp_path / "questions.parquet")["score"].tolist() == [1.0, 0.0, 1.0, 1.0]
    # the CLI entry: score files, --csv and --parquet
    run(argparse.Namespace(scores=[str(tmp_path / "s.csv")], csv=str(tmp_path / "cli.csv"),
                           parquet=str(tmp_path / "cli.parquet")))
    assert pd.read_csv(tmp_path / "cli.csv")["weight_bytes"].tolist() == [1000]
    assert pd.read_parquet(tmp_path / "cli.parquet")["weight_bytes"].tolist() == [1000]


def test_quantizer_record_and_empty_cells_of_old_and_new_score_files(tmp_path):
    """A GPTQ row's quantizer record (the canonical JSON the generation job read from its
    checkpoint) reaches the summary as it is and a bf16 row's empty cell stays empty; a score
    file older than the quant_settings/code_sandbox/selection columns, alone, gives empty cells
    and Maj@K (not NaN), as the summary CSV and its Parquet hold them."""
    from notallbits.aggregate import summarize, write_summary

    record = json.dumps({"calibration": {"dataset": "c4", "samples": 128},
                         "quantizer": {"bits": 4, "group_size": 128, "sym": True}}, sort_keys=True)
    pd.DataFrame([{**JOB, "bits": 4, "kv": "full", "kv_settings": "{}", "quant_settings": record},
                  {**JOB, "bits": 16, "kv": "full", "kv_settings": "{}", "quant_settings": None}]
                 ).to_csv(tmp_path / "new.csv", index=False)
    by_bits = summarize([str(tmp_path / "new.csv")]).set_index("bits")["quant_settings"]
    assert (by_bits[4], by_bits[16]) == (record, "")
    pd.DataFrame([{**JOB, "bits": 4, "kv": "full", "kv_settings": "{}"}]).to_csv(tmp_path / "old.csv", index=False)
    (row,) = summarize([str(tmp_path / "old.csv")]).itertuples()
    assert (row.quant_settings, row.code_sandbox, row.selection, row.verifier, row.verifier_bytes) == (
        "", "", "majority", "", 0)
    write_summary([str(tmp_path / "old.csv")], str(tmp_path / "s.csv"), str(tmp_path / "s.parquet"))
    for table in (pd.read_csv(tmp_path / "s.csv", keep_default_na=False), pd.read_parquet(tmp_path / "s.parquet")):
        assert table[["quant_settings", "code_sandbox", "verifier"]].values.tolist() == [["", "", ""]]


def test_parquet_tables_hold_only_their_columns_and_no_hash_is_an_empty_cell(tmp_path):
    """The Parquet files carry the table's columns and no index column (pyarrow's schema, what
    a reader other than pandas sees); a run that passes no config hash has an empty
    config_sha256, not a made-up one; no score files is the one error line."""
    import pyarrow.parquet as pq

    from notallbits.aggregate import COLUMNS, summarize, write_summary

    pd.DataFrame([{**JOB, "bits": 4, "kv": "full", "kv_settings": "{}"}]).to_csv(tmp_path / "s.csv", index=False)
    questions = [{"dataset": "aime25", "model": "small", "weight_method": "gptq", "bits": 4, "kv": "full",
                  "budget_tokens": 4096, "k": 1, "selection": "majority", "verifier": "", "task": "math",
                  "question_id": str(i), "score": s} for i, s in enumerate([1.0, 0.0, 1.0])]
    pd.DataFrame(questions).to_csv(tmp_path / "q.csv", index=False)
    header = {"dataset": "aime25", "model": "small", "bits": 4, "kv": "full", "format_version": 3,
              "sampling": {"temperature": 0.6, "top_p": 0.95, "seed": 7}}
    (tmp_path / "g.jsonl").write_text(json.dumps({"_header": header}) + "\n")
    write_summary([str(tmp_path / "s.csv")], str(tmp_path / "summary.csv"), str(tmp_path / "summary.parquet"),
                  question_paths=[str(tmp_path / "q.csv")], generation_paths=[str(tmp_path / "g.jsonl")],
                  questions_out=str(tmp_path / "questions.parquet"))
    csv = pd.read_csv(tmp_path / "summary.csv", keep_default_na=False)
    assert pq.read_schema(tmp_path / "summary.parquet").names == csv.columns.tolist()
    assert pq.read_schema(tmp_path / "questions.parquet").names == list(questions[0])
    assert csv["config_sha256"].tolist() == [""]
    (row,) = summarize([str(tmp_path / "s.csv")], generation_paths=[str(tmp_path / "g.jsonl")]).itertuples()
    assert row.config_sha256 == "" and COLUMNS[0] == "dataset"
    with pytest.raises(ValueError, match=r"^no score files to aggregate$"):
        summarize([])
