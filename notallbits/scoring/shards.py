"""Gathering one generation job's question shards into one header and one list of records."""

from __future__ import annotations

from notallbits import UserError

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
