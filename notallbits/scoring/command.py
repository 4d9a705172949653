"""The score step: one generation job (and its verify files) to rows per (budget, K, selection),
as a function (``score_file``) and as ``notallbits score``."""

from __future__ import annotations

import argparse
import json

from notallbits import UserError
from notallbits.scoring.answers import judge
from notallbits.scoring.shards import gather_shards
from notallbits.scoring.voting import (best_of_n_accuracy, join_verifications, majority_accuracy,
                                       verify_seconds_by_budget)

def score_job(questions: list[dict], records: list[dict], ks: list[int],
              verifications: dict[str, tuple[tuple[dict, list[dict]], str]] | None = None,
              code_sandbox: str = "bubblewrap") -> tuple[list[dict], list[dict]]:
    """(rows per (budget, K, selection), per-sample rows) for one generation job.

    ``verifications``: verifier name -> ((header, rows) of its verify file, file name); each
    adds prm_best_of_n rows (Best-of-N with N = K) beside the majority rows. ``code_sandbox``: where
    programs run (codegrade.SANDBOXES); rows of a job with code questions record it."""
    by_id = {q["id"]: q for q in questions}
    groups: dict[tuple[int, str], list[dict]] = {}
    sample_rows = []
    for rec, (pred, ok) in zip(records, judge(records, by_id, code_sandbox)):
        sample_rows.append({"question_id": rec["question_id"], "sample": rec["sample"],
                            "budget_tokens": rec["budget_tokens"], "parsed": pred, "correct": ok,
                            "thinking_tokens": rec["thinking_tokens"], "answer_tokens": rec["answer_tokens"]})
        groups.setdefault((rec["budget_tokens"], rec["question_id"]), []).append(sample_rows[-1])
    budgets = sorted({b for b, _ in groups})
    verifications = verifications or {}
    verifier_scores = {name: join_verifications(sample_rows, data, path)
                       for name, (data, path) in sorted(verifications.items())}
    verifier_seconds = {name: verify_seconds_by_budget(data) for name, (data, _) in verifications.items()}
    rows = []
    for budget in budgets:
        per_q = [(by_id[qid], g) for (b, qid), g in groups.items() if b == budget]
        n = min(len(g) for _, g in per_q)
        for k in ks:
            if k > n:
                raise UserError(f"K={k} exceeds the {n} samples per question of this job")
            acc = sum(majority_accuracy([r["parsed"] for r in g],
                                        {r["parsed"] for r in g if r["correct"]}, k) for _, g in per_q)
            acc /= len(per_q)
            flat = [r for _, g in per_q for r in g]
            common = {"questions": len(per_q), "samples": n,
                      "parsed_rate": sum(r["parsed"] is not None for r in flat) / len(flat),
                      "mean_thinking_tokens": sum(r["thinking_tokens"] for r in flat) / len(flat),
                      "mean_answer_tokens": sum(r["answer_tokens"] for r in flat) / len(flat),
                      "code_sandbox": code_sandbox if any(q["task"] == "code" for q, _ in per_q) else ""}
            rows.append({"budget_tokens": budget, "k": k, "selection": "majority", "verifier": "",
                         "verifier_bytes": 0, "verifier_seconds": 0.0, "accuracy": float(acc), **common})
            for name, scores in verifier_scores.items():
                best = sum(best_of_n_accuracy([scores[(r["question_id"], r["sample"], budget)] for r in g],
                                              [r["correct"] for r in g], k) for _, g in per_q) / len(per_q)
                seconds = verifier_seconds[name].get(budget)
                rows.append({"budget_tokens": budget, "k": k, "selection": "prm_best_of_n", "verifier": name,
                             "verifier_bytes": int(verifications[name][0][0]["verifier_bytes"]),
                             # the PRM reads the N = K chosen-from samples of a question at this budget
                             "verifier_seconds": None if seconds is None else seconds / len(per_q) * k / n,
                             "accuracy": float(best), **common})
    return rows, sample_rows


def score_file(questions_path: str, generations_path: str | list[str], ks: list[int], out_path: str,
               samples_out: str | None = None, verification_paths: list[str] | None = None,
               code_sandbox: str = "bubblewrap") -> list[dict]:
    """Score one generation job: its file, or all its question shards' files; each verify file
    (``verification_paths``) adds that verifier's Best-of-N rows."""
    import csv
    import io

    from notallbits.data.prepare import read_questions
    from notallbits.io import read_framed_jsonl, write_text

    questions = read_questions(questions_path)
    names = [generations_path] if isinstance(generations_path, (str, bytes)) or hasattr(generations_path, "__fspath__") \
        else [str(p) for p in generations_path]
    header, records = gather_shards([read_framed_jsonl(p) for p in names], names)
    verifications = {}
    for path in verification_paths or []:
        data = read_framed_jsonl(path)
        name = data[0]["verifier"]
        if name in verifications:
            raise UserError(f"{path}: a second verify file of verifier {name!r} for this job")
        verifications[name] = (data, str(path))
    rows, sample_rows = score_job(questions, records, ks, verifications, code_sandbox)
    stats = header.get("stats", {})
    meta = {k: header[k] for k in ("dataset", "model", "bits", "kv", "backend")}
    from notallbits.weights import default_method  # files written before the key: what their bits meant

    meta["weight_method"] = header.get("weight_method") or default_method(header["bits"])
    meta["kv_settings"] = json.dumps(header["kv_settings"], sort_keys=True)
    meta.update(header["model_facts"])
    meta.update(job_wall_seconds=stats.get("wall_seconds"), job_generated_tokens=stats.get("generated_tokens"),
                job_tokens_per_second=stats.get("tokens_per_second"))
    rows = [{**meta, **r} for r in rows]

    def to_csv(table):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
        return buf.getvalue()

    write_text(out_path, to_csv(rows))
    if samples_out:
        write_text(samples_out, to_csv(sample_rows))
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--questions", required=True, help="the dataset's normalized JSONL (prepare-data's output)")
    p.add_argument("--generations", required=True, nargs="+", help="a job's generation file, or all its question shards")
    p.add_argument("--k", type=int, nargs="+", required=True, help="vote counts K of the Maj@K (and Best-of-N) rows")
    p.add_argument("--out", required=True, help="the scores CSV to write (one row per budget, K and selection)")
    p.add_argument("--samples-out", help="also write the per-sample verdicts here (CSV)")
    p.add_argument("--verifications", nargs="*", default=[], help="verify files of this job (Best-of-N rows)")
    p.add_argument("--code-sandbox", default="bubblewrap", choices=["bubblewrap", "process"],
                   help="where generated programs run (docs/code-grading.md)")


def run(args: argparse.Namespace) -> None:
    score_file(args.questions, list(args.generations), args.k, args.out, args.samples_out, args.verifications,
               args.code_sandbox)
