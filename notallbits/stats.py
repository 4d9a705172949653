"""Uncertainty over questions: each summary row's per-question scores, its standard error and 95%
interval, and a bootstrap over questions of the memory-accuracy frontier and the threshold.

The estimator (docs/results.md says the same with an example):

* A row's ``accuracy`` is the mean over its Q questions of a per-question score s_i in [0, 1]:
  pass@1 (the share of the question's n samples that are right), exact Maj@K (the probability
  that the majority vote of a uniform K-subset of the n samples is right: the average over all
  C(n, K) subsets) or exact Best-of-N (likewise over N-subsets). Questions are the sampling unit.
* ``accuracy_se`` = sd(s_1..s_Q) / sqrt(Q), sd with Q - 1 in the denominator. Each s_i depends on
  question i's own samples only, so the s_i are independent across questions and their spread is
  the spread of the questions' true scores *plus* the noise of estimating each from n samples
  (law of total variance). The sample-level variance of a Maj@K or Best-of-N row is therefore
  carried once, through its s_i; no separate term is added (adding one would count it twice).
  The exact Maj@K over all vote subsets is the lowest-variance unbiased estimate of a question's
  Maj@K from its n samples (a U-statistic), so it carries less of that noise than one drawn vote.
* ``accuracy_ci95_low``/``_high``: the Wilson score interval at the effective number of questions
  n_eff = Q p(1 - p) / v (v = the s_i's variance with Q in the denominator), kept within
  [Q, Q n]. With 0/1 scores v = p(1 - p), so n_eff = Q and this is the plain Wilson interval of
  "right on X of Q questions" (Newcombe 1998); fractional scores (averages over samples) have
  v < p(1 - p) and a narrower interval. Unlike mean +- 1.96 SE it stays within [0, 1] and is not
  empty when every question scored 0 (0 of 30 AIME questions: [0, 11.4%]).
* The bootstrap resamples questions with replacement (the same draw for every row of a dataset,
  so rows stay paired) and recomputes each row's accuracy, frontier and threshold.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal
ROW_KEYS = ["dataset", "model", "weight_method", "bits", "kv", "budget_tokens", "k", "selection", "verifier"]
QUESTION_COLUMNS = ROW_KEYS + ["task", "question_id", "score"]
SE_COLUMNS = ["accuracy_se", "accuracy_ci95_low", "accuracy_ci95_high"]


def wilson_interval(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion p observed over n trials (n may be fractional)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_interval(scores, samples: int = 1) -> dict:
    """Mean, standard error over questions and 95% interval of per-question scores in [0, 1]
    (``samples``: the n each score is an average over, which bounds the effective count)."""
    q = len(scores)
    if q == 0:
        raise ValueError("no per-question scores")
    p = sum(scores) / q
    p = min(1.0, max(0.0, p))
    var0 = sum((s - p) ** 2 for s in scores) / q
    se = math.sqrt(var0 * q / (q - 1) / q) if q > 1 else float("nan")
    if p in (0.0, 1.0) or var0 <= 0 and p * (1 - p) <= 0:
        n_eff = q
    elif var0 <= 0:
        n_eff = q * max(samples, 1)
    else:
        n_eff = min(max(q * p * (1 - p) / var0, q), q * max(samples, 1))
    low, high = wilson_interval(p, n_eff)
    low, high = (0.0 if p == 0 else low), (1.0 if p == 1 else high)  # exact at the ends, not 1e-17 off
    return {"accuracy": p, "accuracy_se": se, "accuracy_ci95_low": low, "accuracy_ci95_high": high,
            "effective_questions": n_eff}


# ---------------------------------------------------------------- per-question scores of a job
def question_scores(questions_path: str, samples_path: str, scores_path: str, ks: list[int],
                    verify_paths: list[str] = ()):
    """One row per (summary row of the job, question): its score s_i, recomputed from the score
    step's per-sample table (and the verify files, for Best-of-N) with the score step's own
    voting functions, and checked against the job's accuracies (their mean)."""
    import csv

    import pandas as pd

    from notallbits import UserError
    from notallbits.data.prepare import read_questions
    from notallbits.io import read_framed_jsonl
    from notallbits.scoring import best_of_n_accuracy, join_verifications, majority_accuracy

    tasks = {q["id"]: q["task"] for q in read_questions(questions_path)}
    with open(samples_path, newline="") as f:
        samples = [{"question_id": r["question_id"], "sample": int(r["sample"]),
                    "budget_tokens": int(r["budget_tokens"]), "parsed": r["parsed"] if r["parsed"] != "" else None,
                    "correct": r["correct"] == "True"} for r in csv.DictReader(f)]
    scores = pd.read_csv(scores_path, keep_default_na=False)
    if scores.empty:
        raise UserError(f"{scores_path}: no rows")
    meta = scores.iloc[0]
    from notallbits.weights import default_method

    job = {"dataset": meta["dataset"], "model": meta["model"],
           "weight_method": (meta.get("weight_method") or default_method(int(meta["bits"]))),
           "bits": int(meta["bits"]), "kv": meta["kv"]}
    verifier_scores = {}
    for path in verify_paths:
        data = read_framed_jsonl(path)
        verifier_scores[data[0]["verifier"]] = join_verifications(samples, data, str(path))
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in samples:
        groups.setdefault((r["budget_tokens"], r["question_id"]), []).append(r)
    rows = []
    for (budget, qid), g in sorted(groups.items()):
        votes = [r["parsed"] for r in g]
        right = {r["parsed"] for r in g if r["correct"]}
        for k in ks:
            base = {**job, "budget_tokens": budget, "k": k, "task": tasks.get(qid, ""), "question_id": qid}
            rows.append({**base, "selection": "majority", "verifier": "",
                         "score": float(majority_accuracy(votes, right, k))})
            for name, vs in sorted(verifier_scores.items()):
                best = best_of_n_accuracy([vs[(r["question_id"], r["sample"], budget)] for r in g],
                                          [r["correct"] for r in g], k)
                rows.append({**base, "selection": "prm_best_of_n", "verifier": name, "score": float(best)})
    table = pd.DataFrame(rows, columns=QUESTION_COLUMNS)
    means = table.groupby(["budget_tokens", "k", "selection", "verifier"])["score"].mean()
    for r in scores.itertuples():
        key = (int(r.budget_tokens), int(r.k), getattr(r, "selection", "majority") or "majority",
               getattr(r, "verifier", "") or "")
        if key not in means or abs(means[key] - float(r.accuracy)) > 1e-9:
            raise ValueError(f"{scores_path}: per-question scores of {key} average to {means.get(key)}, "
                             f"the score file says {r.accuracy} (rerun: snakemake -R score)")
    return table


def write_question_scores(questions_path: str, samples_path: str, scores_path: str, ks: list[int], out_path: str,
                          verify_paths: list[str] = ()) -> None:
    from notallbits.io import atomic_path

    table = question_scores(questions_path, samples_path, scores_path, ks, verify_paths)
    with atomic_path(out_path, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.10g")


def score_with_questions(questions_path: str, generations, ks: list[int], scores_out: str, samples_out: str,
                         questions_out: str, verify_paths: list[str] = (), code_sandbox: str = "bubblewrap") -> None:
    """The score step (notallbits.scoring.score_file), then its rows' per-question scores."""
    from notallbits.scoring import score_file

    score_file(questions_path, generations, ks, scores_out, samples_out, list(verify_paths), code_sandbox)
    write_question_scores(questions_path, samples_out, scores_out, ks, questions_out, verify_paths)


def read_question_scores(paths: list[str]):
    import pandas as pd

    frames = [pd.read_parquet(p) if str(p).endswith(".parquet")
              else pd.read_csv(p, keep_default_na=False, dtype={"question_id": str}) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=QUESTION_COLUMNS)


def add_uncertainty(summary, questions):
    """The summary with :data:`SE_COLUMNS` (and ``task``) from the per-question scores of each row."""
    import pandas as pd

    out = []
    samples = dict(zip(map(tuple, summary[ROW_KEYS].astype(str).values.tolist()), summary["samples"]))
    for key, group in questions.groupby(ROW_KEYS, sort=False):
        key = tuple(str(v) for v in key)
        r = accuracy_interval(group["score"].tolist(), int(samples.get(key, 1)))
        out.append({**dict(zip(ROW_KEYS, key)), **{c: r[c] for c in SE_COLUMNS}, "task": group["task"].iloc[0]})
    extra = pd.DataFrame(out, columns=ROW_KEYS + SE_COLUMNS + ["task"])
    left = summary.copy()
    left["_key"] = list(map(tuple, summary[ROW_KEYS].astype(str).values.tolist()))
    extra["_key"] = list(map(tuple, extra[ROW_KEYS].astype(str).values.tolist()))
    merged = left.merge(extra[["_key"] + SE_COLUMNS + ["task"]], on="_key", how="left").drop(columns="_key")
    missing = merged["accuracy_se"].isna() & merged[SE_COLUMNS[1]].isna()
    if missing.any():
        r = merged[missing].iloc[0]
        raise ValueError(f"no per-question scores for the summary row {tuple(r[c] for c in ROW_KEYS)}")
    return merged


# ---------------------------------------------------------------- bootstrap over questions
def score_matrix(summary, questions, dataset: str):
    """(row indices of ``summary`` for ``dataset``, question ids, rows x questions score matrix;
    NaN where a row lacks a question)."""
    import numpy as np
    import pandas as pd

    rows = summary.index[summary["dataset"] == dataset]
    sub = questions[questions["dataset"] == dataset]
    qids = sorted(sub["question_id"].unique())
    matrix = np.full((len(rows), len(qids)), np.nan)
    if len(rows) == 0 or sub.empty:
        return rows, qids, matrix
    keys = summary.loc[rows, ROW_KEYS].astype(str).assign(_pos=np.arange(len(rows)))
    found = sub[ROW_KEYS].astype(str).assign(_q=sub["question_id"].to_numpy(), _score=sub["score"].to_numpy())
    found = found.merge(keys, on=ROW_KEYS, how="inner")
    col = pd.Index(qids).get_indexer(found["_q"])
    matrix[found["_pos"].to_numpy(), col] = found["_score"].to_numpy(dtype=float)
    return rows, qids, matrix


def resampled_accuracy(matrix, replicates: int, rng):
    """replicates x rows accuracies, each over one resample (with replacement) of the questions,
    the same resample for every row."""
    import numpy as np

    q = matrix.shape[1]
    counts = rng.multinomial(q, np.full(q, 1.0 / q), size=replicates).astype(float)
    present = ~np.isnan(matrix)
    values = np.where(present, matrix, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ values.T) / (counts @ present.T.astype(float))


def bootstrap_accuracies(summary, questions, replicates: int, seed: int):
    """replicates x len(summary) resampled accuracies (each dataset's questions drawn apart)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.full((replicates, len(summary)), np.nan)
    positions = {i: p for p, i in enumerate(summary.index)}
    for dataset in sorted(summary["dataset"].unique()):
        rows, _, matrix = score_matrix(summary, questions, dataset)
        if matrix.shape[1] == 0:
            continue
        acc = resampled_accuracy(matrix, replicates, rng)
        out[:, [positions[i] for i in rows]] = acc
    return out


def pareto_masks(memory, accuracy):
    """Per replicate (row of ``accuracy``), the points on the frontier, as
    notallbits.analysis.pareto_mask decides it: sorted by memory (ties: most accurate first, then
    the earlier point), a point is on it when it beats every point before it."""
    import numpy as np

    memory = np.asarray(memory, dtype=float)
    acc = np.atleast_2d(np.asarray(accuracy, dtype=float))
    reps, n = acc.shape
    mask = np.zeros((reps, n), dtype=bool)
    if n == 0:
        return mask
    order = np.argsort(memory, kind="stable")
    _, starts = np.unique(memory[order], return_index=True)
    ordered = np.where(np.isnan(acc[:, order]), -np.inf, acc[:, order])
    top = np.maximum.reduceat(ordered, starts, axis=1)  # each memory level's best accuracy
    before = np.concatenate([np.full((reps, 1), -np.inf), np.maximum.accumulate(top, axis=1)[:, :-1]], axis=1)
    win = top > before
    sizes = np.diff(np.append(starts, n))
    for g in np.nonzero(sizes == 1)[0]:
        mask[:, order[starts[g]]] = win[:, g]
    for g in np.nonzero(sizes > 1)[0]:  # a tie in memory: the earliest of the level's most accurate
        members = order[starts[g]:starts[g] + sizes[g]]
        first = members[np.argmax(ordered[:, starts[g]:starts[g] + sizes[g]], axis=1)]
        rows = np.nonzero(win[:, g])[0]
        mask[rows, first[rows]] = True
    return mask
