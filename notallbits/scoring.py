"""Scoring: answer extraction, correctness, pass@1 and exact Maj@K.

Unparsable answers are wrong and never vote (no default letter, no default number).
Maj@K is the exact expectation over all K-subsets of the n samples, ties split evenly,
computed by a small dynamic programme instead of enumerating C(n, K) subsets.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from fractions import Fraction
from math import comb

from notallbits import UserError
from notallbits.data.choices import LETTERS

BOX = "\\boxed{"


def boxed_contents(text: str) -> list[str]:
    """Every \\boxed{...} content with balanced braces; an unclosed last box runs to the
    end of its line (a forced answer cut at the token limit)."""
    out, i = [], 0
    while (start := text.find(BOX, i)) != -1:
        j, depth = start + len(BOX), 1
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth == 0:
            out.append(text[start + len(BOX): j - 1])
        else:
            out.append(text[start + len(BOX):].split("\n")[0])
        i = j
    return [c.strip() for c in out]


_INT = re.compile(r"^[+-]?\d+$")


def normalize_integer(content: str) -> str | None:
    s = content.strip().strip("$").strip()
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|\\%|%|\\!|\\,|,|\s", "", s)
    s = s.rstrip(".")
    if _INT.match(s):
        return str(int(s))
    return None


# what may stand between boxes that together give one answer ("\\boxed{2} and \\boxed{3}")
_BOX_JOINER = re.compile(r"^(?:\s|,|;|\$|\\quad|\\qquad|\\text\{\s*(?:and|or)\s*\}|and|or)*$")


def extract_math(text: str) -> str | None:
    """The last boxed answer; boxes that follow each other with only separators between them
    ("\\boxed{2} and \\boxed{3}", a multi-part answer) are one answer, joined with commas."""
    boxes = boxed_contents(text)
    if not boxes:
        return None
    starts = [m.start() for m in re.finditer(re.escape(BOX), text)]
    group = [len(boxes) - 1]
    while group[0] > 0:
        i = group[0]
        between = text[_box_end(text, starts[i - 1]): starts[i]]
        if not _BOX_JOINER.match(between):
            break
        group.insert(0, i - 1)
    last = ", ".join(boxes[i] for i in group if boxes[i]) if len(group) > 1 else boxes[-1]
    return normalize_integer(last) or (last if last else None)


def _box_end(text: str, start: int) -> int:
    j, depth = start + len(BOX), 1
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return j


def math_correct(pred: str | None, gold: str) -> bool:
    if pred is None:
        return False
    gold_int = normalize_integer(gold)
    if gold_int is not None and normalize_integer(pred) is not None:
        return int(gold_int) == int(normalize_integer(pred))
    from math_verify import parse, verify  # symbolic fallback for non-integer golds

    try:
        return bool(verify(parse(f"${gold}$"), parse(f"\\boxed{{{pred}}}")))
    except Exception:  # noqa: BLE001 - a checker crash on garbage is a wrong answer
        return False


def extract_letter(text: str, n_choices: int) -> str | None:
    letters = LETTERS[:n_choices]
    letter = rf"([{letters}])"
    for content in reversed(boxed_contents(text)):
        content = re.sub(r"\\text(?:bf)?\{([^}]*)\}", r"\1", content).strip()
        m = re.match(rf"^\(?{letter}(?:\)|\.|:|\s|$)", content + " ")
        if m:
            return m.group(1)
    phrases = [rf"answer\s*(?:is|:)\s*\**\s*\(?{letter}\b", rf"\boption\s+\(?{letter}\)?\s*(?:is\s+correct)",
               rf"^\s*\(?{letter}\)\s*$"]
    found = []
    for pat in phrases:
        found += [(m.start(), m.group(1)) for m in re.finditer(pat, text, flags=re.IGNORECASE | re.MULTILINE)]
    if found:
        return max(found)[1].upper()
    return None


def parse_answer(record: dict, question: dict) -> str | None:
    if question["task"] == "choice":
        return extract_letter(record["answer_text"], len(question["choices"]))
    if question["task"] == "code":
        from notallbits.codegrade import extract_program

        return extract_program(record["answer_text"])
    return extract_math(record["answer_text"])


def is_correct(pred: str | None, question: dict) -> bool:
    if question["task"] == "choice":
        return pred is not None and question["permutation"][LETTERS.index(pred)] == 0
    if question["task"] == "code":
        from notallbits.codegrade import run_program

        return run_program(pred, question["tests"], question.get("fn_name")).passed
    return math_correct(pred, question["answer"])


def same_math_answer(a: str, b: str) -> bool:
    """Two extracted answers that are the same value (\\frac12 and 0.5): one vote class."""
    if a == b:
        return True
    ia, ib = normalize_integer(a), normalize_integer(b)
    if ia is not None and ib is not None:
        return int(ia) == int(ib)
    from math_verify import parse, verify

    try:
        return bool(verify(parse(f"\\boxed{{{a}}}"), parse(f"\\boxed{{{b}}}")))
    except Exception:  # noqa: BLE001
        return False


def judge(records: list[dict], by_id: dict, code_sandbox: str = "bubblewrap") -> list[tuple[str | None, bool]]:
    """(vote, correct) per record. Votes are what Maj@K counts: a math answer's first equivalent
    form among the question's answers (so equal values in different notation vote together), a
    letter, or a program's behaviour on the tests (its outputs: see codegrade). Programs are run in
    the sandbox, in parallel, each distinct program once."""
    out: list[tuple[str | None, bool] | None] = [None] * len(records)
    code = []
    representatives: dict[str, list[str]] = {}
    for i, rec in enumerate(records):
        q = by_id.get(rec["question_id"])
        if q is None:
            raise UserError(f"generation record for unknown question {rec['question_id']!r}")
        pred = parse_answer(rec, q)
        if q["task"] == "code":
            code.append((i, pred, q))
            continue
        if q["task"] == "math" and pred is not None and normalize_integer(pred) is None:
            reps = representatives.setdefault(q["id"], [])
            same = [r for r in reps if same_math_answer(pred, r)]
            if same:
                pred = same[0]
            else:
                reps.append(pred)
        out[i] = (pred, is_correct(pred, q))
    if code:
        from notallbits.codegrade import grade_many

        graded = grade_many([(pred, q["tests"], q.get("fn_name")) for _, pred, q in code], sandbox_name=code_sandbox)
        for (i, _, _), result in zip(code, graded):
            out[i] = (result.signature, result.passed)
    return out


def majority_accuracy(votes: list[str | None], correct: set[str], k: int) -> Fraction:
    """Exact E[majority vote over a uniform K-subset is correct]; ties split evenly.

    ``votes`` holds each sample's normalized answer (None = unparsable, abstains);
    ``correct`` is the set of vote values that are right.
    """
    n = len(votes)
    if not 1 <= k <= n:
        raise UserError(f"Maj@K needs 1 <= K <= n samples, got K={k}, n={n}")
    counts = Counter(v for v in votes if v is not None)
    c = sum(cnt for v, cnt in counts.items() if v in correct)  # right answers form one class
    others = [cnt for v, cnt in counts.items() if v not in correct]
    abstain = n - c - sum(others)
    total = Fraction(0)
    for j in range(1, min(c, k) + 1):
        # states: (picked from other classes, classes tied at j) -> number of ways
        states = {(0, 0): 1}
        for o in others:
            nxt: dict[tuple[int, int], int] = {}
            for (s, t), ways in states.items():
                for x in range(0, min(o, j, k - j - s) + 1):
                    key = (s + x, t + (x == j))
                    nxt[key] = nxt.get(key, 0) + ways * comb(o, x)
            states = nxt
        for (s, t), ways in states.items():
            rest = k - j - s
            if 0 <= rest <= abstain:
                total += Fraction(comb(c, j) * ways * comb(abstain, rest), 1 + t)
    return total / comb(n, k)


def best_of_n_accuracy(scores: list[float], correct: list[bool], n: int) -> Fraction:
    """Exact E[the best-scored sample of a uniform N-subset is correct].

    Ties at the top are split evenly (the pick is uniform among the subset's best-scored
    samples). For a score level L with m_L samples, c_L of them correct, and a_L samples
    below it, the subsets whose best level is L number C(a_L + m_L, N) - C(a_L, N), and in
    each the pick is correct with probability c_L / m_L (by symmetry within the level), so

        E = sum_L (c_L / m_L) (C(a_L + m_L, N) - C(a_L, N)) / C(S, N).
    """
    s = len(scores)
    if len(correct) != s:
        raise ValueError("scores and correct differ in length")
    if not 1 <= n <= s:
        raise UserError(f"Best-of-N needs 1 <= N <= n samples, got N={n}, n={s}")
    levels: dict[float, list[bool]] = {}
    for score, ok in zip(scores, correct):
        levels.setdefault(score, []).append(bool(ok))
    total, below = Fraction(0), 0
    for level in sorted(levels):
        members = levels[level]
        m, c = len(members), sum(members)
        total += Fraction(c, m) * (comb(below + m, n) - comb(below, n))
        below += m
    return total / comb(s, n)


def join_verifications(sample_rows: list[dict], verification: tuple[dict, list[dict]], name: str) -> dict:
    """(question_id, sample, budget_tokens) -> PRM score; the verify file must hold exactly the
    job's records (a file of another run of the job would select with the wrong scores)."""
    _, rows = verification
    scores = {(r["question_id"], r["sample"], r["budget_tokens"]): r["score"] for r in rows}
    keys = {(r["question_id"], r["sample"], r["budget_tokens"]) for r in sample_rows}
    if len(scores) != len(rows) or scores.keys() != keys:
        missing = sorted(keys - scores.keys(), key=str)
        extra = sorted(scores.keys() - keys, key=str)
        what = (f"lacks {missing[0]}" if missing else f"has {extra[0]}, which the generations lack" if extra
                else "repeats a (question, sample, budget)")
        raise UserError(f"{name}: verifier scores do not match the job's samples: it {what} "
                        "(rerun its verify job: snakemake -R verify)")
    return scores


def verify_seconds_by_budget(verification: tuple[dict, list[dict]]) -> dict[int, float]:
    """A verify job's PRM seconds split over the budgets it scored, in proportion to the input
    tokens of each budget's records (a forward pass costs about its tokens); empty when the
    file does not say how long it took."""
    header, rows = verification
    if header.get("seconds") is None:
        return {}
    tokens: dict[int, int] = {}
    for r in rows:
        tokens[r["budget_tokens"]] = tokens.get(r["budget_tokens"], 0) + r["input_tokens"]
    total = sum(tokens.values())
    return {b: header["seconds"] * t / total for b, t in tokens.items()} if total else {}


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


def gather_shards(parts: list[tuple[dict, list[dict]]], names: list[str]) -> tuple[dict, list[dict]]:
    """One job's header and records from its question shards (generation.run ``shard``).

    Every shard 1..n must be there, for the same job and settings, with disjoint questions.
    Stats add up (tokens, engine seconds and steps); tokens per second and the mean sequences
    in flight are recomputed from the sums, the max is the largest."""
    if len(parts) == 1 and "shard" not in parts[0][0]:
        return parts[0]
    same = ("dataset", "model", "bits", "weight_method", "kv", "backend", "budgets", "samples", "sampling",
            "generation")
    first = parts[0][0]
    count = (first.get("shard") or [1, 1])[1]
    got = sorted((h.get("shard") or [0, 0])[0] for h, _ in parts)
    if got != list(range(1, count + 1)) or any((h.get("shard") or [0, 0])[1] != count for h, _ in parts):
        raise UserError(f"{names[0]}: expected question shards 1..{count} of one job, got {got} "
                        "(delete the generation files of this job and rerun)")
    for (h, _), name in zip(parts, names):
        bad = [k for k in same if h.get(k) != first.get(k)]
        if bad:
            raise UserError(f"{name}: shard differs from {names[0]} in {bad[0]!r} (rerun the job's shards)")
    seen: dict[str, str] = {}
    for (_, recs), name in zip(parts, names):
        for qid in {r["question_id"] for r in recs}:
            if qid in seen:
                raise UserError(f"{name}: question {qid!r} is also in {seen[qid]} (rerun the job's shards)")
            seen[qid] = name
    stats = [h.get("stats", {}) for h, _ in parts]

    def total(key):
        values = [s.get(key) for s in stats]
        return None if any(v is None for v in values) else sum(values)

    merged = {k: total(k) for k in ("trace_tokens", "answer_tokens", "generated_tokens", "wall_seconds",
                                     "engine_steps", "reused_samples", "generated_samples")}
    wall, tokens, steps = merged["wall_seconds"], merged["generated_tokens"], merged["engine_steps"]
    merged["tokens_per_second"] = round(tokens / wall, 2) if wall and tokens is not None else None
    if steps and all(s.get("mean_sequences_in_flight") is not None for s in stats):
        merged["mean_sequences_in_flight"] = round(
            sum(s["mean_sequences_in_flight"] * s["engine_steps"] for s in stats) / steps, 2)
        merged["max_sequences_in_flight"] = max(s["max_sequences_in_flight"] for s in stats)
    header = {**first, "questions": sum(h["questions"] for h, _ in parts), "stats": merged, "shard": [0, count]}
    return header, [r for _, recs in parts for r in recs]


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
    p.add_argument("--questions", required=True)
    p.add_argument("--generations", required=True, nargs="+", help="a job's generation file, or all its question shards")
    p.add_argument("--k", type=int, nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--samples-out")
    p.add_argument("--verifications", nargs="*", default=[], help="verify files of this job (Best-of-N rows)")
    p.add_argument("--code-sandbox", default="bubblewrap", choices=["bubblewrap", "process"],
                   help="where generated programs run (docs/code-grading.md)")


def run(args: argparse.Namespace) -> None:
    score_file(args.questions, list(args.generations), args.k, args.out, args.samples_out, args.verifications,
               args.code_sandbox)
