"""Best-of-N with a process reward model: exact selection, the verify step's model and inputs,
the verifier's memory. Facts from the model cards (Qwen/Qwen2.5-Math-PRM-7B, sail/ActPRM-X) and
vLLM's Qwen2ForProcessRewardModel (vllm/model_executor/models/qwen2_rm.py): the checkpoint holds
``model.*`` (a Qwen2 decoder, no lm_head) and ``score.0``/``score.2`` (Linear(h, h) -> ReLU ->
Linear(h, 2), with biases); a step's reward is softmax(logits)[1] at its ``<extra_0>``."""

import itertools
import json
import random
from fractions import Fraction

import pytest

from notallbits import UserError
from notallbits.scoring import best_of_n_accuracy, score_job

# ---------------------------------------------------------------- exact Best-of-N


def brute_best_of_n(scores, correct, n):
    """Every N-subset, the pick uniform among its top-scored samples."""
    total, count = Fraction(0), 0
    for subset in itertools.combinations(range(len(scores)), n):
        top = max(scores[i] for i in subset)
        tied = [i for i in subset if scores[i] == top]
        total += Fraction(sum(correct[i] for i in tied), len(tied))
        count += 1
    return total / count


def realistic_question(rng, samples=12):
    """Min-step PRM scores as a 7B PRM gives them: right answers mostly score high, wrong ones
    spread low, a few confident wrong ones; scores rounded to 1 decimal, so ties (right and
    wrong samples at one score) happen."""
    scores, correct = [], []
    for _ in range(samples):
        ok = rng.random() < 0.4
        score = rng.betavariate(6, 2) if ok else (rng.betavariate(6, 2) if rng.random() < 0.15 else rng.betavariate(2, 5))
        scores.append(round(score, 1))
        correct.append(ok)
    return scores, correct


@pytest.mark.parametrize("seed", range(6))
def test_best_of_n_equals_enumeration_of_all_subsets(seed):
    rng = random.Random(seed)
    scores, correct = realistic_question(rng)
    for n in range(1, len(scores) + 1):
        assert best_of_n_accuracy(scores, correct, n) == brute_best_of_n(scores, correct, n)


def test_best_of_n_by_hand():
    # 4 samples, the best-scored one right: N = 4 always picks it; N = 1 is pass@1 = 1/4;
    # N = 2 picks it whenever it is drawn: 3 of the 6 pairs
    scores, correct = [0.9, 0.2, 0.3, 0.1], [True, False, False, False]
    assert best_of_n_accuracy(scores, correct, 4) == 1
    assert best_of_n_accuracy(scores, correct, 1) == Fraction(1, 4)
    assert best_of_n_accuracy(scores, correct, 2) == Fraction(1, 2)
    # a tie at the top between a right and a wrong sample: half
    assert best_of_n_accuracy([0.5, 0.5, 0.1], [True, False, False], 3) == Fraction(1, 2)
    with pytest.raises(UserError):
        best_of_n_accuracy(scores, correct, 5)


def _records(answers_per_question):
    """Generation records of one budget: question -> answers per sample (gold '7')."""
    recs = []
    for qid, answers in answers_per_question.items():
        for i, a in enumerate(answers):
            recs.append({"question_id": qid, "sample": i, "budget_tokens": 64, "thinking_tokens": 64,
                         "answer_tokens": 4, "answer_text": f"\\boxed{{{a}}}"})
    return recs


def test_selection_follows_the_verifier_scores():
    """Majority picks the common wrong answer; Best-of-N picks what the verifier scores highest,
    and a different scoring picks differently: selection that ignored the scores fails here."""
    questions = [{"id": "q", "task": "math", "answer": "7"}]
    recs = _records({"q": ["3", "3", "3", "7"]})
    good = {"verifier_bytes": 100}, [{"question_id": "q", "sample": i, "budget_tokens": 64, "score": s}
                                     for i, s in enumerate([0.1, 0.2, 0.3, 0.9])]
    bad = {"verifier_bytes": 100}, [{**r, "score": 1 - r["score"]} for r in good[1]]
    for data, expected in ((good, 1.0), (bad, 0.0)):
        rows, _ = score_job(questions, recs, [4], {"prm": (data, "v.jsonl")})
        by = {r["selection"]: r for r in rows}
        assert by["majority"]["accuracy"] == 0.0
        assert by["prm_best_of_n"]["accuracy"] == expected and by["prm_best_of_n"]["verifier_bytes"] == 100
        assert by["majority"]["verifier_bytes"] == 0


def test_verifier_scores_must_match_the_jobs_samples():
    questions = [{"id": "q", "task": "math", "answer": "7"}]
    recs = _records({"q": ["3", "7"]})
    rows = [{"question_id": "q", "sample": 0, "budget_tokens": 64, "score": 0.5}]
    with pytest.raises(UserError, match=r"^v\.jsonl: .*lacks \('q', 1, 64\)"):
        score_job(questions, recs, [1], {"prm": (({"verifier_bytes": 1}, rows), "v.jsonl")})
    rows += [{"question_id": "q", "sample": 1, "budget_tokens": 64, "score": 0.5},
             {"question_id": "other", "sample": 0, "budget_tokens": 64, "score": 0.5}]
    with pytest.raises(UserError, match=r"^v\.jsonl: .*other"):
        score_job(questions, recs, [1], {"prm": (({"verifier_bytes": 1}, rows), "v.jsonl")})


# ---------------------------------------------------------------- steps, context, aggregation


def test_each_budgets_thinking_text_is_rebuilt_from_the_records(tiny_prm):
    """The verifier reads a budget's whole thinking: decode(thinking ids[:budget]) (its whole
    characters where a budget cuts a multi-byte one), stored once per sample."""
    from transformers import AutoTokenizer

    from notallbits.generation.forcing import SampleResult
    from notallbits.generation.run import records_for, thinking_texts

    tok = AutoTokenizer.from_pretrained(tiny_prm)
    ids = tok.encode("First 2 + 3 = 5 — café ✓.\n\nWait, 5 × 1 = 5 ✓ done", add_special_tokens=False)
    budgets = list(range(1, len(ids) + 1))
    res = SampleResult(sample=0, seed=1, thinking_ids=ids, wait_positions=[], natural_end=None, natural_answer=[],
                       answers={b: [] for b in budgets})

    class Spec:
        answer_prefix_ids = [0]
        end_think_id = -1

    records = records_for("q", res, budgets, Spec, tok, thinking_text=True)
    texts = thinking_texts(records)
    cut = 0
    for b in budgets:
        expected = tok.decode(ids[:b], skip_special_tokens=True)
        if expected.endswith("\ufffd"):  # a cut character: the whole ones before it
            expected, cut = expected.rstrip("\ufffd"), cut + 1
        assert texts[("q", 0, b)] == expected
    assert cut > 0  # the text does have cut characters
    assert sum(len(r.get("thinking_text", "")) for r in records) == len(texts[("q", 0, budgets[-1])])
    # a budget added below the largest changes no other record
    fewer = sorted(set(budgets[::3]) | {budgets[-1]})
    assert records_for("q", res, fewer, Spec, tok, thinking_text=True) == [records[budgets.index(b)] for b in fewer]
    assert not any("thinking_text" in r or "thinking_chars" in r for r in records_for("q", res, budgets, Spec, tok))
    with pytest.raises(UserError, match="thinking"):
        thinking_texts([{k: v for k, v in r.items() if k != "thinking_chars"} for r in records])


def test_steps_are_paragraphs_then_the_answer():
    from notallbits.verify import SEPARATOR, aggregate, split_steps

    steps = split_steps("First, 2+3.\n\nThat is 5.\n\n\n\nWait, check: 5." + SEPARATOR, "\n\n**Final Answer**\n\\boxed{5}")
    assert steps == ["First, 2+3.", "That is 5.", "Wait, check: 5.", "**Final Answer**\n\\boxed{5}"]
    assert aggregate([0.9, 0.2, 0.8], "min") == 0.2 and aggregate([0.5, 0.5], "product") == 0.25
    assert aggregate([0.9, 0.2, 0.8], "last") == 0.8


@pytest.fixture(scope="module")
def tiny_prm(tmp_path_factory):
    from notallbits.verify import build_tiny

    return build_tiny(tmp_path_factory.mktemp("prm") / "tiny-prm")


def test_long_traces_keep_the_question_and_the_last_steps(tiny_prm):
    from transformers import AutoTokenizer

    from notallbits.verify import SEPARATOR, fit, render

    tok = AutoTokenizer.from_pretrained(tiny_prm)
    sep = tok.convert_tokens_to_ids(SEPARATOR)
    steps = [f"step {i}: add {i} to the sum" for i in range(60)] + ["\\boxed{5}"]
    full = render(tok, "What is 2+3?", steps)
    for limit in (80, 120, 200):
        ids, dropped = fit(tok, "What is 2+3?", steps, limit)
        text = tok.decode(ids)
        assert len(ids) <= limit < len(full) and dropped > 0
        assert "What is 2+3?" in text and text.rstrip().endswith(f"\\boxed{{5}}{SEPARATOR}<|im_end|>")
        assert "step 59: add 59" in text and "step 0:" not in text
        assert ids.count(sep) >= len(steps) - dropped  # every kept step (and a cut one) is scored
    assert fit(tok, "What is 2+3?", steps, 10_000) == (full, 0)


# ---------------------------------------------------------------- the model


def test_tiny_prm_has_the_real_checkpoints_names_and_loads_without_remote_code(tiny_prm):
    from safetensors import safe_open

    from notallbits.verify import load

    cfg = json.loads((tiny_prm / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForProcessRewardModel"] and cfg["model_type"] == "qwen2"
    assert "auto_map" not in cfg
    with safe_open(tiny_prm / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        h = cfg["hidden_size"]
        assert f.get_slice("score.0.weight").get_shape() == [h, h] and f.get_slice("score.2.weight").get_shape() == [2, h]
        assert f.get_slice("score.0.bias").get_shape() == [h] and f.get_slice("score.2.bias").get_shape() == [2]
    assert {k for k in keys if not k.startswith("model.layers.")} == {
        "model.embed_tokens.weight", "model.norm.weight", "score.0.weight", "score.0.bias", "score.2.weight",
        "score.2.bias"}
    model, tok, sep = load(str(tiny_prm), "bfloat16", "cpu")
    assert tok.decode([sep]) == "<extra_0>"


def test_step_rewards_are_the_positive_class_at_each_separator(tiny_prm):
    """As the model card's make_step_rewards computes them, from the model's logits."""
    import torch

    from notallbits.verify import load, render, step_rewards

    model, tok, sep = load(str(tiny_prm), "float32", "cpu")
    a = render(tok, "What is 2+3?", ["2 plus 3", "is 5", "\\boxed{5}"])
    b = render(tok, "What is 1+1?", ["\\boxed{2}"])
    got = step_rewards(model, [a, b], sep, tok.pad_token_id, "cpu")
    for ids, rewards in zip((a, b), got):
        logits = model(torch.tensor([ids]))  # alone, unpadded
        probs = torch.softmax(logits.float(), dim=-1)[0]
        mask = torch.tensor(ids) == sep
        expected = probs[mask][:, 1].tolist()
        assert len(rewards) == ids.count(sep) and rewards == pytest.approx(expected, abs=1e-5)


def test_a_checkpoint_without_the_head_fails_in_one_line(tiny_prm, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from notallbits.verify import load

    broken = tmp_path / "broken"
    shutil.copytree(tiny_prm, broken)
    tensors = {k: v for k, v in load_file(broken / "model.safetensors").items() if not k.startswith("score.")}
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match="lacks 4 weights"):
        load(str(broken), "float32", "cpu")


# ---------------------------------------------------------------- memory


def test_verifier_bytes_measured_equal_the_memory_model(tiny_prm):
    from notallbits.memory import Arch, checkpoint_bytes, prm_weight_bytes

    assert checkpoint_bytes(tiny_prm) == prm_weight_bytes(Arch.named(str(tiny_prm)))


def test_actprm_x_weights_from_its_config():
    """Qwen2.5-Math-PRM-7B's config (ActPRM-X keeps it): hidden 3584, MLP 18944, 28 layers, 28
    heads, 4 KV heads of 128, vocab 152064, q/k/v biases, no lm_head; + the 2-label head.
    The paper counts 13.28 GB for ActPRM-X; the bf16 tensors are 13.19 GiB (14.17 GB)."""
    from notallbits.memory import GIB, Arch, prm_weight_bytes

    h, i, layers, kv, vocab = 3584, 18944, 28, 4 * 128, 152064
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h
    params = vocab * h + layers * per_layer + h + (h * h + h + 2 * h + 2)
    assert params == 7_083_474_946
    assert prm_weight_bytes(Arch.named("sail/ActPRM-X")) == 2 * params
    assert round(2 * params / GIB, 2) == 13.19


def test_summary_analysis_and_advice_count_the_verifier(tmp_path):
    """A Best-of-N row's total memory holds the verifier's bytes; the advisor, given more memory,
    names the Best-of-N pick with them; the paper's threshold stays on Maj@K rows."""
    import pandas as pd

    from notallbits.advisor import advise, format_advice
    from notallbits.aggregate import summarize
    from notallbits.analysis import selection_comparison

    questions = [{"id": "q", "task": "math", "answer": "7"}]
    verifier = ({"verifier_bytes": 2**30}, [{"question_id": "q", "sample": i, "budget_tokens": 64, "score": s}
                                            for i, s in enumerate([0.1, 0.2, 0.3, 0.9])])
    rows, _ = score_job(questions, _records({"q": ["3", "3", "3", "7"]}), [1, 4], {"prm": (verifier, "v.jsonl")})
    meta = {"dataset": "d", "model": "m", "bits": 16, "kv": "full", "backend": "transformers",
            "kv_settings": json.dumps({"method": "full"}), "weight_bytes": 2 * 2**30, "layers": 2, "kv_heads": 2,
            "head_dim": 32, "quant_settings": "", "job_wall_seconds": 1.0, "job_generated_tokens": 10,
            "job_tokens_per_second": 10.0}
    pd.DataFrame([{**meta, **r} for r in rows]).to_csv(tmp_path / "s.csv", index=False)
    df = summarize([str(tmp_path / "s.csv")])
    kv = 64 * 512 / 2**30  # K x T x 2 x layers x KV heads x head_dim x 2 B, K = 1
    prm = df[df["selection"] == "prm_best_of_n"].set_index("k")
    maj = df[df["selection"] == "majority"].set_index("k")
    assert prm.loc[4, "total_gib"] == pytest.approx(2 + 4 * kv + 1) and maj.loc[4, "total_gib"] == pytest.approx(2 + 4 * kv)
    assert prm.loc[4, "accuracy"] == 1 and maj.loc[4, "accuracy"] == 0 and prm.loc[1, "accuracy"] == maj.loc[1, "accuracy"]
    comparison = selection_comparison(df)
    best_prm = comparison[comparison["selection_rule"] == "prm_best_of_n:prm"].iloc[-1]
    assert best_prm["accuracy"] == 1 and best_prm["majority_accuracy_at_memory"] == 0.25
    best = format_advice(advise(df, 2.5, "d")).splitlines()[1]  # the verifier does not fit in 2.5 GiB
    assert best.startswith("  best:") and "Maj@" in best
    best = format_advice(advise(df, 3.5, "d")).splitlines()[1]
    assert "Best-of-4 by prm" in best and "verifier 1" in best


def test_best_of_n_latency_adds_the_verifiers_seconds_for_its_n_samples(tmp_path):
    """A verify job that took 3 s over records of 100 input tokens at T = 32 and 200 at T = 64
    spent 1 s on T = 32 and 2 s on T = 64; Best-of-N over K of a question's 4 samples costs
    K/4 of that per question on top of the generation latency (Maj@K rows add nothing)."""
    import pandas as pd

    from notallbits.aggregate import summarize

    questions = [{"id": "q", "task": "math", "answer": "7"}]
    recs = _records({"q": ["3", "3", "3", "7"]})
    recs += [{**r, "budget_tokens": 32, "thinking_tokens": 32} for r in recs]
    verifier = ({"verifier_bytes": 2**20, "seconds": 3.0},
                [{"question_id": "q", "sample": i, "budget_tokens": b, "score": s, "input_tokens": b * 100 // 32}
                 for b in (32, 64) for i, s in enumerate([0.1, 0.2, 0.3, 0.9])])
    rows, _ = score_job(questions, recs, [1, 4], {"prm": (verifier, "v.jsonl")})
    meta = {"dataset": "d", "model": "m", "bits": 16, "kv": "full", "backend": "transformers",
            "kv_settings": json.dumps({"method": "full"}), "weight_bytes": 2**30, "layers": 2, "kv_heads": 2,
            "head_dim": 32, "quant_settings": "", "job_wall_seconds": 10.0, "job_generated_tokens": 10,
            "job_tokens_per_second": 1.0}
    pd.DataFrame([{**meta, **r} for r in rows]).to_csv(tmp_path / "s.csv", index=False)
    df = summarize([str(tmp_path / "s.csv")]).set_index(["selection", "budget_tokens", "k"])
    generation = {64: 10.0, 32: 10.0 * 36 / 68}  # the job's seconds per question x the trace share used
    for budget, verify_s in ((32, 1.0), (64, 2.0)):
        for k in (1, 4):
            assert df.loc[("majority", budget, k), "latency_seconds"] == pytest.approx(generation[budget])
            assert df.loc[("prm_best_of_n", budget, k), "verifier_seconds"] == pytest.approx(verify_s * k / 4)
            assert df.loc[("prm_best_of_n", budget, k), "latency_seconds"] == pytest.approx(
                generation[budget] + verify_s * k / 4)
