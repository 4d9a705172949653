"""Question shards: how many a job gets (grid.shard_count, plan.shards_needed, plan.job_shards),
which questions each holds (grid.shard_questions), and gathering them back into one job
(scoring.gather_shards)."""

import copy
from math import ceil

import pytest

from notallbits import UserError, grid
from notallbits.plan import job_shards, shards_needed
from notallbits.scoring import gather_shards
from tests.conftest import ROOT


def fewest_shards_by_scan(minutes_for, questions, cap):
    """The definition, by a scan: the fewest shard counts s whose largest shard (ceil(Q/s)
    questions) fits; one per question when even one question does not fit."""
    return next((s for s in range(1, questions + 1) if minutes_for(ceil(questions / s)) <= cap), questions)


def test_shards_needed_by_hand():
    # 10 minutes a question, 100 questions, at most 95 minutes: a shard holds at most 9
    # questions; 11 shards leave one of 10 (100 = 10 x 10), 12 shards hold at most 9 (ceil(100/12))
    assert shards_needed(lambda q: 10 * q, 100, 95) == 12
    assert shards_needed(lambda q: 10 * q, 100, 1000) == 1  # fits whole
    assert shards_needed(lambda q: 10 * q, 100, 999) == 2  # 50 + 50 questions, 500 minutes each
    assert shards_needed(lambda q: 10 * q, 100, 100) == 10  # exactly at the limit fits
    assert shards_needed(lambda q: 15 + 10 * q, 100, 20) == 100  # one question alone does not fit
    assert shards_needed(lambda q: 15 + 10 * q, 100, 25) == 100  # one question just fits: one each
    assert shards_needed(lambda q: 15 + 10 * q, 7, 35) == 4  # 2 questions (35 min) per shard: 7 / 2 -> 4
    assert shards_needed(lambda q: 10 * q, 1, 5) == 1
    # a runtime that steps (sequences go through in waves of 4, as job_minutes' decode does):
    # one question exactly at the limit, and so are 2-4; 30 questions need shards of at most 4 -> 8
    waves = lambda q: 15 + 10 * ceil(q / 4)  # noqa: E731
    assert shards_needed(waves, 30, 25) == 8 == fewest_shards_by_scan(waves, 30, 25)
    assert shards_needed(waves, 30, 24.9) == 30


@pytest.mark.parametrize("questions", [1, 2, 3, 7, 30, 198, 500])
@pytest.mark.parametrize("per_question,overhead", [(10, 0), (3.5, 15), (61, 15), (0.01, 15)])
def test_shards_needed_is_the_fewest_that_fit(questions, per_question, overhead):
    """The bisection agrees with a scan of every shard count, at every limit that changes the answer."""
    def minutes_for(q):
        return overhead + per_question * q

    caps = sorted({minutes_for(q) for q in range(1, questions + 1)} | {minutes_for(q) - 0.5 for q in (1, questions)})
    for cap in caps:
        assert shards_needed(minutes_for, questions, cap) == fewest_shards_by_scan(minutes_for, questions, cap), cap


def test_shard_questions_are_contiguous_blocks_differing_by_at_most_one():
    qs = list(range(10))
    assert [grid.shard_questions(qs, i, 3) for i in (1, 2, 3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert [grid.shard_questions(qs, i, 4) for i in (1, 2, 3, 4)] == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]
    assert grid.shard_questions(qs, 1, 1) == qs
    for count in range(1, 11):
        parts = [grid.shard_questions(qs, i, count) for i in range(1, count + 1)]
        assert sum(parts, []) == qs and max(map(len, parts)) - min(map(len, parts)) <= 1
    for bad in ((0, 3), (4, 3), (1, 0)):
        with pytest.raises(UserError, match=f"shard {bad[0]} of {bad[1]} does not exist"):
            grid.shard_questions(qs, *bad)


def paper_config(**hardware):
    config = grid.load(ROOT / "config.yaml")
    config["hardware"].update(hardware)
    return config


def test_job_shards_takes_the_larger_of_the_config_and_the_runtime_limit():
    """Qwen3-0.6B bf16 on GPQA Diamond (198 questions x 32 samples to 30,000 tokens): the runtime
    limit alone, datasets.<name>.shards alone, and both (the larger wins; never more shards
    than questions)."""
    from notallbits.plan import job_minutes

    config = paper_config(max_runtime_minutes=None)
    spec = grid.jobs(config)[grid.Job("gpqa_diamond", "Qwen3-0.6B", 16, "full")]
    assert job_shards(config, spec, 198) == 1
    config["datasets"]["gpqa_diamond"]["shards"] = 5
    assert job_shards(config, spec, 198) == 5 and job_shards(config, spec, 3) == 3
    config = paper_config(max_runtime_minutes=1440)
    spec = grid.jobs(config)[grid.Job("gpqa_diamond", "Qwen3-0.6B", 16, "full")]

    def minutes(q):
        return job_minutes(config, spec.job, spec, q)

    by_runtime = job_shards(config, spec, 198)
    assert by_runtime == fewest_shards_by_scan(minutes, 198, 1440) > 1
    assert minutes(ceil(198 / by_runtime)) <= 1440 < minutes(ceil(198 / (by_runtime - 1)))
    config["datasets"]["gpqa_diamond"]["shards"] = by_runtime + 3
    assert job_shards(config, spec, 198) == by_runtime + 3
    config["datasets"]["gpqa_diamond"]["shards"] = max(1, by_runtime - 1)
    assert job_shards(config, spec, 198) == by_runtime


def test_shard_count_rounds_tokens_up_and_keeps_one_question_per_shard():
    """generation.shard_tokens: ceil(job tokens / target) shards; 30 questions x 4 samples x
    (1000 + 2 budgets x 50 answer tokens) = 132,000 tokens."""
    spec = grid.JobSpec(grid.Job("d", "m", 16, "full"), budgets=[500, 1000], samples=4)
    config = {"datasets": {"d": {"loader": "aime25"}}, "generation": {"answer_max_tokens": 50, "shard_tokens": 132_000}}
    assert grid.job_tokens(config, spec, 30) == 132_000
    assert grid.shard_count(config, spec, 30) == 1
    config["generation"]["shard_tokens"] = 131_999
    assert grid.shard_count(config, spec, 30) == 2
    config["generation"]["shard_tokens"] = 44_000
    assert grid.shard_count(config, spec, 30) == 3
    config["generation"]["shard_tokens"] = 1
    assert grid.shard_count(config, spec, 30) == 30  # never more than one per question
    config["datasets"]["d"]["answer_max_tokens"] = 100  # a dataset's own answer length counts
    config["generation"]["shard_tokens"] = 132_000
    assert grid.job_tokens(config, spec, 30) == 30 * 4 * 1200 and grid.shard_count(config, spec, 30) == 2
    assert grid.shard_count(config, spec, 0) == 1


# ---------------------------------------------------------------- gathering
HEADER = {"dataset": "gpqa_diamond", "model": "Qwen3-8B", "bits": 4, "weight_method": "gptq", "kv": "full",
          "backend": "vllm", "budgets": [1000, 2000], "samples": 2, "sampling": {"temperature": 0.6},
          "generation": {"answer_max_tokens": 32}}


def shard(index, count, qids, **stats):
    header = {**copy.deepcopy(HEADER), "shard": [index, count], "questions": len(qids), "stats": stats}
    return header, [{"question_id": q, "sample": s} for q in qids for s in range(2)]


def test_gathered_shards_add_up_to_one_job():
    """Three shards given out of order: sums of the counts, tokens/s and the mean sequences in
    flight recomputed from the sums (steps-weighted), the max the largest, by hand:
    tokens 300 + 500 + 200 = 1000 over 10 + 20 + 20 = 50 s -> 20 tok/s; in flight
    (4 x 100 + 2 x 50 + 3 x 50) / 200 steps = 3.25."""
    s1 = shard(1, 3, ["a", "b"], trace_tokens=200, answer_tokens=100, generated_tokens=300, wall_seconds=10,
               engine_steps=100, reused_samples=0, generated_samples=4, mean_sequences_in_flight=4,
               max_sequences_in_flight=4, tokens_per_second=30)
    s2 = shard(2, 3, ["c"], trace_tokens=400, answer_tokens=100, generated_tokens=500, wall_seconds=20,
               engine_steps=50, reused_samples=2, generated_samples=0, mean_sequences_in_flight=2,
               max_sequences_in_flight=6, tokens_per_second=25)
    s3 = shard(3, 3, ["d", "e"], trace_tokens=150, answer_tokens=50, generated_tokens=200, wall_seconds=20,
               engine_steps=50, reused_samples=1, generated_samples=3, mean_sequences_in_flight=3,
               max_sequences_in_flight=3, tokens_per_second=10)
    header, records = gather_shards([s2, s3, s1], ["s2", "s3", "s1"])
    assert header["stats"] == {"trace_tokens": 750, "answer_tokens": 250, "generated_tokens": 1000,
                               "wall_seconds": 50, "engine_steps": 200, "reused_samples": 3, "generated_samples": 7,
                               "tokens_per_second": 20.0, "mean_sequences_in_flight": 3.25,
                               "max_sequences_in_flight": 6}
    assert header["questions"] == 5 and header["shard"] == [0, 3]
    assert {k: header[k] for k in HEADER} == HEADER
    assert sorted((r["question_id"], r["sample"]) for r in records) == [(q, s) for q in "abcde" for s in (0, 1)]


def test_gathered_stats_unknown_in_one_shard_are_unknown():
    """A stat one shard lacks (an engine that does not count steps) is unknown for the job, not
    the sum of the others; without steps there is no mean in flight."""
    s1 = shard(1, 2, ["a"], generated_tokens=300, wall_seconds=10, engine_steps=None)
    s2 = shard(2, 2, ["b"], generated_tokens=100, wall_seconds=10, engine_steps=None)
    stats = gather_shards([s1, s2], ["s1", "s2"])[0]["stats"]
    assert stats["generated_tokens"] == 400 and stats["wall_seconds"] == 20 and stats["tokens_per_second"] == 20.0
    assert stats["engine_steps"] is None and stats["trace_tokens"] is None
    assert "mean_sequences_in_flight" not in stats
    s2[0]["stats"]["wall_seconds"] = None
    assert gather_shards([s1, s2], ["s1", "s2"])[0]["stats"]["tokens_per_second"] is None
    s1[0]["stats"].update(wall_seconds=0)
    s2[0]["stats"].update(wall_seconds=0)
    assert gather_shards([s1, s2], ["s1", "s2"])[0]["stats"]["tokens_per_second"] is None  # no time measured


def test_an_unsharded_job_is_its_own_file():
    whole = ({**HEADER, "questions": 2, "stats": {"generated_tokens": 5}}, [{"question_id": "a", "sample": 0}])
    assert gather_shards([whole], ["g.jsonl"]) is whole


@pytest.mark.parametrize("given,message", [
    ([(1, 3), (2, 3)], r"s1: expected question shards 1\.\.3 of one job, got \[1, 2\]"),
    ([(1, 2), (2, 2), (2, 2)], r"got \[1, 2, 2\]"),
    ([(1, 2), (2, 3)], r"expected question shards 1\.\.2 of one job, got \[1, 2\]"),  # counts disagree
    ([(2, 2), (3, 3)], r"got \[2, 3\]"),
    ([(0, 0), (1, 2)], r"got \[0, 1\]"),
])
def test_a_missing_or_foreign_shard_is_refused(given, message):
    parts = [shard(i, n, [f"q{k}"]) for k, (i, n) in enumerate(given)]
    with pytest.raises(UserError, match=message):
        gather_shards(parts, [f"s{k + 1}" for k in range(len(parts))])


def test_an_unsharded_file_among_shards_is_refused():
    whole = ({**HEADER, "questions": 1, "stats": {}}, [{"question_id": "x", "sample": 0}])
    with pytest.raises(UserError, match=r"expected question shards 1\.\.1 of one job, got \[0, 1\]"):
        gather_shards([whole, shard(1, 1, ["a"])], ["g", "s1"])
    with pytest.raises(UserError, match=r"expected question shards 1\.\.2 of one job, got \[0, 1, 2\]"):
        gather_shards([shard(1, 2, ["a"]), whole, shard(2, 2, ["b"])], ["s1", "g", "s2"])


@pytest.mark.parametrize("key", ["dataset", "model", "bits", "weight_method", "kv", "backend", "budgets", "samples",
                                 "sampling", "generation"])
def test_shards_of_different_settings_are_refused(key):
    s1, s2 = shard(1, 2, ["a"]), shard(2, 2, ["b"])
    s2[0][key] = {"changed": True}
    with pytest.raises(UserError, match=f"s2: shard differs from s1 in '{key}'"):
        gather_shards([s1, s2], ["s1", "s2"])
    del s2[0][key]
    with pytest.raises(UserError, match=f"s2: shard differs from s1 in '{key}'"):
        gather_shards([s1, s2], ["s1", "s2"])


def test_a_question_in_two_shards_is_refused():
    parts = [shard(1, 3, ["a", "b"]), shard(2, 3, ["c"]), shard(3, 3, ["d", "b"])]
    with pytest.raises(UserError, match="s3: question 'b' is also in s1"):
        gather_shards(parts, ["s1", "s2", "s3"])
    # stats that differ only in what was measured are not settings
    s1, s2 = shard(1, 2, ["a"], wall_seconds=3), shard(2, 2, ["b"], wall_seconds=4)
    s2[0]["questions"] = 7
    assert gather_shards([s1, s2], ["s1", "s2"])[0]["questions"] == 8


@pytest.mark.parametrize("spec,count", [
    ({"loader": "aime25"}, 30), ({"loader": "gpqa_diamond"}, 198), ({"loader": "math500"}, 500),
    ({"loader": "aime25", "limit": 7}, 7), ({"loader": "math500", "limit": 900}, 500),
    ({"loader": "livecodebench", "version": "release_v1"}, 400), ({"loader": "livecodebench"}, 880),
    ({"loader": "livecodebench", "version": "release_v6"}, 1055),
])
def test_question_count_of_the_hub_sets_is_their_published_size(spec, count):
    """AIME 2025 I+II: 30 problems; GPQA Diamond: 198; MATH-500: 500; LiveCodeBench
    code_generation_lite: 400 / 880 / 1055 problems in releases v1 / v5 (the default) / v6."""
    from notallbits.plan import question_count

    assert question_count(spec) == count


@pytest.mark.parametrize("spec", [{"loader": "demo_code"}, {"loader": "demo_code", "limit": 2},
                                  {"loader": "demo_arith"}, {"loader": "demo_choice", "limit": 5},
                                  {"loader": "toy_math"}, {"loader": "toy_choice", "limit": 16},
                                  {"loader": "toy_train"}])
def test_question_count_of_a_generated_set_is_what_its_loader_makes(spec):
    """The planner's count (shards, runtime resources, token totals) of the sets made here is the
    number of questions the job will read, not a stand-in: demo_code has 4 problems, the toy
    sets 32 questions (training: 128) unless limited."""
    from notallbits.data.registry import load
    from notallbits.plan import question_count

    assert question_count(spec) == len(load(spec))
    assert question_count({"loader": "demo_code"}) == 4 and question_count({"loader": "toy_math"}) == 32


def test_question_count_of_a_jsonl_set_counts_its_records(tmp_path):
    from notallbits.plan import question_count

    path = tmp_path / "q.jsonl"
    path.write_text("".join(f'{{"id": "q{i}", "question": "1+{i}?", "answer": "{i + 1}"}}\n\n' for i in range(6)))
    assert question_count({"loader": "jsonl", "path": str(path)}) == 6
    assert question_count({"loader": "jsonl", "path": str(path), "limit": 4}) == 4


def test_generation_settings_leave_out_what_is_chosen_per_job():
    """The backend and shard_tokens are decided per job (and a shard count is no setting of a
    trace), so they are not in the settings a job runs with; a dataset's answer settings win."""
    config = {"generation": {"backend": "vllm", "shard_tokens": 1000, "answer_max_tokens": 32, "temperature": 0.6},
              "datasets": {"code": {"loader": "demo_code", "answer_max_tokens": 1024, "answer_prefix": "```"}}}
    assert grid.generation_settings(config, "code") == {"answer_max_tokens": 1024, "temperature": 0.6,
                                                        "answer_prefix": "```"}


def test_a_lone_shard_is_gathered_or_refused_like_any_other():
    """One file that is a shard is still checked: shard 1 of 1 becomes the job (shard [0, 1]),
    shard 1 of 2 without its sibling is refused."""
    header, _ = gather_shards([shard(1, 1, ["a"], generated_tokens=10, wall_seconds=4)], ["s1"])
    assert header["shard"] == [0, 1] and header["stats"]["tokens_per_second"] == 2.5
    with pytest.raises(UserError, match=r"s1: expected question shards 1\.\.2 of one job, got \[1\]"):
        gather_shards([shard(1, 2, ["a"])], ["s1"])


def test_gathered_rates_keep_two_decimals():
    """1000 tokens in 30 s: 33.33 tok/s; in flight (1 x 100 + 2 x 200) / 300 steps = 1.67."""
    s1 = shard(1, 2, ["a"], generated_tokens=400, wall_seconds=10, engine_steps=100, mean_sequences_in_flight=1,
               max_sequences_in_flight=1)
    s2 = shard(2, 2, ["b"], generated_tokens=600, wall_seconds=20, engine_steps=200, mean_sequences_in_flight=2,
               max_sequences_in_flight=2)
    stats = gather_shards([s1, s2], ["s1", "s2"])[0]["stats"]
    assert (stats["tokens_per_second"], stats["mean_sequences_in_flight"]) == (33.33, 1.67)


def test_no_mean_in_flight_without_steps_or_a_shards_mean():
    """The mean in flight is weighted by steps: unknown when the steps are, or when one shard has
    no mean; shards written without stats gather to unknown stats."""
    s1 = shard(1, 2, ["a"], engine_steps=None, mean_sequences_in_flight=2, max_sequences_in_flight=2)
    s2 = shard(2, 2, ["b"], engine_steps=None, mean_sequences_in_flight=3, max_sequences_in_flight=3)
    assert "mean_sequences_in_flight" not in gather_shards([s1, s2], ["s1", "s2"])[0]["stats"]
    s1 = shard(1, 2, ["a"], engine_steps=10, mean_sequences_in_flight=2, max_sequences_in_flight=2)
    s2 = shard(2, 2, ["b"], engine_steps=10)
    assert "mean_sequences_in_flight" not in gather_shards([s1, s2], ["s1", "s2"])[0]["stats"]
    for s in (s1, s2):
        del s[0]["stats"]
    stats = gather_shards([s1, s2], ["s1", "s2"])[0]["stats"]
    assert stats["generated_tokens"] is None and stats["tokens_per_second"] is None
