"""Best-of-N with a process reward model: exact selection, the verify step's model and inputs,
the verifier's memory. Each verifier family is checked against its authors' scoring, written
here from their code: the ensemble PRM (ActPRM, ActPRM-X) from sail-sg/ActivePRM's
``EnsemblePRMWorker`` (examples/py_scripts/test_actprm_on_processbench.py), ``Qwen2ForEnsemblePRM``
and ``EnsembleModel``/``EnsembleFC`` (src/active_prm/models/); the Qwen2.5-Math-PRM head from its
model card's usage code (``make_step_rewards``) and its checkpoint's layout (``score.0``/``score.2``)."""

import itertools
import json
import random
import time
from pathlib import Path
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


def prmbench_steps(response):
    """How ActivePRM's Best-of-N evaluation cuts a response into steps (src/active_prm/eval/PRMBench/
    mr_eval/tasks/prmbench_bon/task.py, load_data_function): split at "\\n\\n", strip, drop empties."""
    steps = []
    for raw_step in response.split("\n\n"):
        step = raw_step.strip()
        if step and len(step) > 0:
            steps.append(step)
    return steps


# a thinking trace as a reasoner writes it: paragraphs, a single newline inside one, runs of blank
# lines, a blank line holding spaces, indentation, a paragraph that is only whitespace and a tab
TRACE = ("  Okay, let me see. We need $2^{10} \\bmod 7$.\n\nFirst: $2^3 = 8 \\equiv 1$,\nso cycles of 3."
         "\n\n\n\nWait, check $1024 = 7 \\cdot 146 + 2$.\n \n\t\n\n   \n\n  So the remainder is 2.\n\n")


def test_steps_are_cut_as_activeprms_best_of_n_cuts_a_response():
    from notallbits.verify import SEPARATOR, split_steps

    answer = "\n\n**Final Answer**\n\\[\n\\boxed{2}\n\\]  \n"
    steps = split_steps(TRACE, answer)
    assert steps[:-1] == prmbench_steps(TRACE)
    assert len(steps) == 5 and steps[1] == "First: $2^3 = 8 \\equiv 1$,\nso cycles of 3."  # counted by hand
    assert steps[-1] == answer.strip()  # the answer is one step, its own blank lines kept
    # the separator inside a text would add a reward position: it is taken out, nothing else changes
    marked = TRACE.replace("Wait,", "Wait" + SEPARATOR + ",").replace("So", SEPARATOR + "So")
    steps = split_steps(marked, SEPARATOR + "\\boxed{2}" + SEPARATOR)
    assert steps == prmbench_steps(TRACE) + ["\\boxed{2}"]
    # no answer (a budget cut before it): the thinking is scored, closed by a non-empty last step
    for empty in ("", "  \n\n ", SEPARATOR):
        steps = split_steps(TRACE, empty)
        assert steps[:-1] == prmbench_steps(TRACE) and steps[-1].strip() and SEPARATOR not in steps[-1]
    assert len(split_steps("", "")) == 1


@pytest.fixture(scope="module")
def tiny_prms(tmp_path_factory):
    """One tiny checkpoint per family, with the family's exact state-dict layout."""
    from notallbits.verify import build_tiny

    root = tmp_path_factory.mktemp("prm")
    return {family: build_tiny(root / family, family, max_position_embeddings=1024)
            for family in ("ensemble-prm", "qwen2-prm")}


@pytest.fixture(scope="module")
def tiny_prm(tiny_prms):
    return tiny_prms["ensemble-prm"]


def test_long_traces_keep_the_question_and_the_last_steps(tiny_prms):
    from notallbits.verify import fit
    from notallbits.verify.families import load

    for family, folder in tiny_prms.items():
        verifier = load(str(folder), "float32", "cpu")
        tok, sep = verifier.tokenizer, verifier.separator_id
        steps = [f"step {i}: add {i} to the sum" for i in range(60)] + ["\\boxed{5}"]
        full = verifier.render("What is 2+3?", steps)
        for limit in (120, 160, 240):
            ids, dropped = fit(verifier, "What is 2+3?", steps, limit)
            text = tok.decode(ids)
            assert len(ids) <= limit < len(full) and dropped > 0
            end = "\\boxed{5}<extra_0>" + ("" if family == "ensemble-prm" else "<|im_end|>")
            assert "What is 2+3?" in text and text.rstrip().endswith(end)
            assert "step 59: add 59" in text and "step 0:" not in text
            assert ids.count(sep) >= len(steps) - dropped  # every kept step (and a cut one) is scored
        assert fit(verifier, "What is 2+3?", steps, 10_000) == (full, 0)


def test_the_context_keeps_the_longest_run_of_last_steps_that_fits(tiny_prms):
    from notallbits.verify import fit
    from notallbits.verify.families import load

    question = "What is 2+3?"
    steps = [f"step {i}: add {i} to the sum" for i in range(30)] + ["\\boxed{5}"]
    for family, folder in tiny_prms.items():
        verifier = load(str(folder), "float32", "cpu")
        size = [len(verifier.render(question, steps[k:])) for k in range(len(steps))]  # k first steps dropped
        for k in (1, 12, 29):
            # a context of exactly the last steps' size: those steps, whole, nothing cut in front
            assert fit(verifier, question, steps, size[k]) == (verifier.render(question, steps[k:]), k)
            # one token short of holding step k-1 too: the same steps, and step k-1's tail scored before them
            ids, dropped = fit(verifier, question, steps, size[k - 1] - 1)
            text = verifier.tokenizer.decode(ids)
            assert dropped == k and size[k] < len(ids) <= size[k - 1] - 1
            assert ids.count(verifier.separator_id) == len(steps) - k + 1
            assert f"step {k - 1}:" not in text and f"to the sum{verifier.separator}step {k}:" in text
        for k in (1, 12):  # this tokenizer's steps cost what they cost alone: the room is filled to the token
            assert len(fit(verifier, question, steps, size[k - 1] - 1)[0]) == size[k - 1] - 1
            # 8 tokens of room or fewer take no tail (docs/verifiers.md); 9 do
            assert fit(verifier, question, steps, size[k] + 8) == (verifier.render(question, steps[k:]), k)
            assert len(fit(verifier, question, steps, size[k] + 9)[0]) == size[k] + 9
        # an answer step that alone overflows the context: its last tokens, and every other step dropped
        long_answer = steps[:-1] + ["so " * 400 + "the answer is \\boxed{5}"]
        ids, dropped = fit(verifier, question, long_answer, 120)
        assert dropped == len(steps) - 1 and len(ids) <= 120 and ids.count(verifier.separator_id) == 1
        # ... the longest tail of its tokens that fits, found by trying every length; down to one token
        tokens = verifier.tokenizer(long_answer[-1], add_special_tokens=False)["input_ids"]
        base = len(verifier.render(question, [""]))
        tails = [verifier.render(question, [verifier.tokenizer.decode(tokens[-n:])]) for n in range(1, 130)]
        for limit in (base + 1, base + 2, 120):
            assert fit(verifier, question, long_answer, limit) == ([t for t in tails if len(t) <= limit][-1], len(steps) - 1)
        with pytest.raises(UserError, match=r"verifiers\.<name>\.max_tokens"):  # no room for one token of it
            fit(verifier, question, long_answer, base)
        assert question in verifier.tokenizer.decode(ids) and "the answer is \\boxed{5}" in verifier.tokenizer.decode(ids)
        # a question that alone overflows it: one line naming the setting
        with pytest.raises(UserError, match=r"verifiers\.<name>\.max_tokens"):
            fit(verifier, "How many? " * 300, steps, 120)


def test_a_cut_through_multibyte_characters_still_fits_and_is_scored(tiny_prms):
    """LaTeX-free traces are not all ASCII: a cut that lands inside a character decodes to U+FFFD,
    which takes more tokens than it replaced; the tail shrinks until it fits, and is still scored."""
    from notallbits.verify import fit
    from notallbits.verify.families import load

    question = "Is √2 irrational?"
    steps = [f"Schritt {i}: √2 ≈ 1.41421 — daß p² = 2·q² ⇒ 2 | p ✓" for i in range(12)] + ["∴ \\boxed{\\text{ja}}"]
    verifier = load(str(tiny_prms["ensemble-prm"]), "float32", "cpu")
    size = [len(verifier.render(question, steps[k:])) for k in range(len(steps))]
    for limit in range(size[6] + 9, size[5]):  # every cut point of step 5 (this tokenizer splits ², ≈, ✓ ...)
        ids, dropped = fit(verifier, question, steps, limit)
        assert dropped == 6 and limit - 4 <= len(ids) <= limit  # filled but for the bytes of a cut character
        assert ids.count(verifier.separator_id) == len(steps) - dropped + 1  # the cut step is scored too


# ---------------------------------------------------------------- the families against their authors' scoring
ACTIVEPRM_SYSTEM = ("You are a helpful and harmless assistant. You should think step-by-step and put your final "
                    "answer within \\boxed{}.")
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

# solutions shaped like the traces the verify step reads: LaTeX, a "Wait", a boxed answer
SOLUTIONS = [
    ("Find the remainder when $2^{10}$ is divided by 7.",
     ["We have $2^3 = 8 \\equiv 1 \\pmod 7$.", "So $2^{10} = (2^3)^3 \\cdot 2 \\equiv 2$.",
      "Wait, check: $1024 = 7 \\cdot 146 + 2$.", "The answer is $\\boxed{2}$."]),
    ("What is $\\frac{1}{2} + \\frac{1}{3}$?", ["Common denominator 6: $\\frac{3}{6} + \\frac{2}{6}$.",
                                                "$= \\frac{5}{6}$, so \\boxed{\\frac{5}{6}}"]),
    ("Solve $x^2 = 9$.", ["x = 3 or x = -3", "\\boxed{-3, 3}"]),
]


def authors_ensemble_rewards(folder, prompts):
    """EnsemblePRMWorker.generate(prompts, reduce="mean") with the model's own inference: left
    padding with eos, the worker's system prompt, the generation prompt then the steps joined by
    rr_token plus one; per head sigmoid(nn_out(relu(nn2(relu(nn1(h)))))) at rr_token, mean over heads."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, Qwen2Model

    cfg = json.loads((folder / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    tok.pad_token = tok.eos_token
    rr_token = cfg.get("rr_token") or " \n\n"
    rr_token_id = tok(rr_token).input_ids[0]
    texts = []
    for question, steps in prompts:
        messages = [{"role": "system", "content": ACTIVEPRM_SYSTEM}, {"role": "user", "content": question}]
        texts.append(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                     + rr_token.join(steps) + rr_token)
    inputs = tok(texts, return_tensors="pt", padding=True)
    body = Qwen2Model.from_pretrained(folder, dtype=torch.float32).eval()
    w = load_file(folder / "model.safetensors")
    with torch.no_grad():
        hidden = body(**inputs).last_hidden_state
        x = hidden[None].repeat(cfg["num_ensemble"], 1, 1, 1)
        for layer in ("nn1", "nn2", "nn_out"):
            x = torch.einsum("eblh,ehm->eblm", x.float(), w[f"score.model.{layer}.weight"].float())
            x = x + w[f"score.model.{layer}.bias"].float()[:, None, None, :]
            if layer != "nn_out":
                x = torch.relu(x)
        probs = torch.sigmoid(x.squeeze(-1))  # (heads, batch, seq)
    mask = inputs["input_ids"] == rr_token_id
    return [probs[:, j, mask[j]].mean(dim=0).tolist() for j in range(len(prompts))]


def card_qwen_prm_rewards(folder, question, steps):
    """Qwen2.5-Math-PRM-7B's model card: the conversation with <extra_0> after each step, one
    unpadded sequence, make_step_rewards = softmax of the 2-label head, class 1, at <extra_0>."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, Qwen2Model

    tok = AutoTokenizer.from_pretrained(folder)
    messages = [{"role": "system", "content": QWEN_PRM_SYSTEM}, {"role": "user", "content": question},
                {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]
    conversation = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    input_ids = tok.encode(conversation, return_tensors="pt")
    body = Qwen2Model.from_pretrained(folder, dtype=torch.float32).eval()
    w = {k: v.float() for k, v in load_file(folder / "model.safetensors").items()}
    with torch.no_grad():
        hidden = body(input_ids=input_ids).last_hidden_state
        logits = torch.relu(hidden @ w["score.0.weight"].T + w["score.0.bias"]) @ w["score.2.weight"].T + w["score.2.bias"]
    token_masks = input_ids == tok.encode("<extra_0>")[0]
    probabilities = torch.softmax(logits, dim=-1) * token_masks.unsqueeze(-1)
    sample = probabilities[0]
    return sample[sample != 0].view(-1, 2)[:, 1].tolist()


def test_tiny_checkpoints_have_each_familys_exact_layout(tiny_prms):
    from safetensors import safe_open

    ens = tiny_prms["ensemble-prm"]
    cfg = json.loads((ens / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForEnsemblePRM"] and cfg["rr_token"] == "<extra_0>" and "auto_map" not in cfg
    e, h = cfg["num_ensemble"], cfg["hidden_size"]
    with safe_open(ens / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        for copy in ("model", "reg_model"):
            for layer, (fan_in, fan_out) in {"nn1": (h, 128), "nn2": (128, 128), "nn_out": (128, 1)}.items():
                assert f.get_slice(f"score.{copy}.{layer}.weight").get_shape() == [e, fan_in, fan_out]
                assert f.get_slice(f"score.{copy}.{layer}.bias").get_shape() == [e, fan_out]
                assert f.get_slice(f"score.{copy}.{layer}.weight").get_dtype() == "F32"
    assert {k for k in keys if not k.startswith(("model.layers.", "score."))} == {"model.embed_tokens.weight", "model.norm.weight"}
    qwen = tiny_prms["qwen2-prm"]
    for family, folder in tiny_prms.items():  # how it was built, for whoever finds the folder
        assert json.loads((folder / "notallbits.json").read_text()) == {"built_by": "notallbits.verify",
                                                                       "family": family, "seed": 0}
        fcfg = json.loads((folder / "config.json").read_text())  # grouped-query attention, as the 7B PRMs' 28/4
        assert fcfg["num_attention_heads"] % fcfg["num_key_value_heads"] == 0
        assert fcfg["num_key_value_heads"] < fcfg["num_attention_heads"]
    with safe_open(ens / "model.safetensors", "pt") as f, safe_open(qwen / "model.safetensors", "pt") as g:
        assert f.metadata() == g.metadata() == {"format": "pt"}  # as transformers' save_pretrained writes it
    qcfg = json.loads((qwen / "config.json").read_text())  # Qwen2.5-Math-PRM-7B's config.json: no ensemble keys
    assert qcfg["architectures"] == ["Qwen2ForProcessRewardModel"] and not {"rr_token", "num_ensemble"} & set(qcfg)
    with safe_open(qwen / "model.safetensors", "pt") as f:
        h = qcfg["hidden_size"]
        assert f.get_slice("score.0.weight").get_shape() == [h, h] and f.get_slice("score.2.weight").get_shape() == [2, h]
        assert {k for k in f.keys() if k.startswith("score.")} == {"score.0.weight", "score.0.bias", "score.2.weight",
                                                                  "score.2.bias"}


def test_ensemble_heads_stay_float32_under_a_bf16_body(tiny_prms):
    import torch

    from notallbits.verify.families import load

    model = load(str(tiny_prms["ensemble-prm"]), "bfloat16", "cpu").model
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert {p.dtype for p in model.score.parameters()} == {torch.float32}


def test_score_steps_equals_activeprms_worker(tiny_prms):
    """ActPRM-X's family: score_steps (and the verify step's batched path) against the authors'
    worker, batched with left padding as they run it."""
    from notallbits.verify import score_steps
    from notallbits.verify.families import load

    folder = tiny_prms["ensemble-prm"]
    expected = authors_ensemble_rewards(folder, SOLUTIONS)
    for (question, steps), want in zip(SOLUTIONS, expected):
        got = score_steps(folder, question, steps, dtype="float32")
        assert len(got) == len(steps) and got == pytest.approx(want, abs=1e-5)
    spread = [r for rewards in expected for r in rewards]
    assert max(spread) - min(spread) > 0.01  # the rewards differ, so a wrong position or head would show
    verifier = load(str(folder), "float32", "cpu")
    batched = verifier.step_rewards([verifier.render(q, s) for q, s in SOLUTIONS], "cpu")
    for got, want in zip(batched, expected):
        assert got == pytest.approx(want, abs=1e-5)


def test_score_steps_equals_the_qwen_prm_model_card(tiny_prms):
    from notallbits.verify import score_steps

    folder = tiny_prms["qwen2-prm"]
    for question, steps in SOLUTIONS:
        want = card_qwen_prm_rewards(folder, question, steps)
        assert score_steps(folder, question, steps, dtype="float32") == pytest.approx(want, abs=1e-5)


def test_the_training_copy_reg_model_never_changes_a_reward(tiny_prms, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from notallbits.verify import score_steps

    folder = tmp_path / "other-reg"
    shutil.copytree(tiny_prms["ensemble-prm"], folder)
    tensors = load_file(folder / "model.safetensors")
    tensors = {k: (torch.randn_like(v) * 10 if k.startswith("score.reg_model.") else v) for k, v in tensors.items()}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    question, steps = SOLUTIONS[0]
    assert score_steps(folder, question, steps, dtype="float32") == score_steps(
        tiny_prms["ensemble-prm"], question, steps, dtype="float32")



def test_score_steps_keeps_the_checkpoints_dtype_and_takes_a_whole_context(tiny_prms, tmp_path):
    """dtype "auto" (the default) scores in the checkpoint's own dtype (config.json: bfloat16); an input
    of exactly the verifier's context is scored, one token more fails in one line."""
    from notallbits.verify import score_steps
    from notallbits.verify.families import load

    folder = tiny_prms["qwen2-prm"]
    question, steps = SOLUTIONS[0]
    bf16 = score_steps(folder, question, steps, dtype="bfloat16")
    assert score_steps(folder, question, steps) == bf16 != score_steps(folder, question, steps, dtype="float32")
    n = len(load(str(folder), "float32", "cpu").render(question, steps))
    exact = _rewrite(folder, tmp_path / "exact", config={"max_position_embeddings": n})
    assert score_steps(exact, question, steps, dtype="float32") == pytest.approx(
        card_qwen_prm_rewards(folder, question, steps), abs=1e-5)
    short = _rewrite(folder, tmp_path / "short", config={"max_position_embeddings": n - 1})
    with pytest.raises(UserError, match=f"{n} tokens, more than the verifier's {n - 1}-token context"):
        score_steps(short, question, steps, dtype="float32")


def test_an_ensemble_of_one_head_without_rr_token_or_pad_token_scores_as_the_authors_worker(tiny_prms, tmp_path):
    """ActivePRM's worker: rr_token from the config, else " \\n\\n"; pad = eos (it sets
    ``tokenizer.pad_token = tokenizer.eos_token``); ``EnsembleModel`` takes any number of heads >= 1."""
    from transformers import AutoTokenizer

    from notallbits.verify.families import load

    folder = _rewrite(tiny_prms["ensemble-prm"], tmp_path / "one",
                      change=lambda t: {k: v[:1] for k, v in t.items() if k.startswith("score.")})
    cfg = {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if k != "rr_token"}
    (folder / "config.json").write_text(json.dumps({**cfg, "num_ensemble": 1}))
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tok_cfg, "pad_token": None}))
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.pad_token_id is None
    verifier = load(str(folder), "float32", "cpu")
    assert verifier.separator == " \n\n" and verifier.separator_id == tok(" \n\n").input_ids[0]
    assert verifier.pad_id == tok.eos_token_id
    got = verifier.step_rewards([verifier.render(q, s) for q, s in SOLUTIONS], "cpu")  # padded batch
    for rewards, want in zip(got, authors_ensemble_rewards(folder, SOLUTIONS)):  # at every token id the
        assert len(rewards) > 4 and rewards == pytest.approx(want, abs=1e-5)  # worker reads (here: " ")


def _rewrite(src, dst, keep=lambda k: True, change=None, config=None):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = {k: v for k, v in load_file(dst / "model.safetensors").items() if keep(k)}
    if change:
        tensors.update(change(tensors))
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    if config:
        cfg = json.loads((dst / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps({**cfg, **config}))
    return dst


def test_a_checkpoint_that_does_not_match_its_family_fails_in_one_line(tiny_prms, tmp_path):
    from notallbits.verify.families import load

    ens, qwen = tiny_prms["ensemble-prm"], tiny_prms["qwen2-prm"]
    cases = [
        (_rewrite(qwen, tmp_path / "no-head", keep=lambda k: not k.startswith("score.")), "lacks 4 weights"),
        (_rewrite(ens, tmp_path / "no-heads", keep=lambda k: not k.startswith("score.model.")), "lacks 6 weights"),
        # an ensemble checkpoint labelled as the Qwen head, and the other way round
        (_rewrite(ens, tmp_path / "relabelled", config={"architectures": ["Qwen2ForProcessRewardModel"]}),
         "lacks 4 weights"),
        (_rewrite(qwen, tmp_path / "relabelled2", config={"architectures": ["Qwen2ForEnsemblePRM"], "num_ensemble": 4}),
         "lacks 6 weights"),
        # a config that promises more heads than the checkpoint has
        (_rewrite(ens, tmp_path / "heads", config={"num_ensemble": 5}), "weights"),
        (_rewrite(ens, tmp_path / "no-count", config={"num_ensemble": None}), "lacks num_ensemble"),
        (_rewrite(qwen, tmp_path / "llama", config={"architectures": ["LlamaForCausalLM"]}), "not a verifier"),
    ]
    for folder, message in cases:
        with pytest.raises(UserError, match=message) as err:
            load(str(folder), "float32", "cpu")
        assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_auto_dtype_is_the_one_config_json_names(tiny_prms, tmp_path):
    """dtype "auto": config.json's ``dtype`` (bf16 in the tiny checkpoints, as in the published PRMs),
    else its older ``torch_dtype`` spelling, else bfloat16."""
    import torch

    from notallbits.verify.families import load

    def body_dtype(folder):
        return load(str(folder)).model.model.embed_tokens.weight.dtype  # load's defaults: auto, cpu

    def without_dtype(name, **config):
        folder = _rewrite(tiny_prms["qwen2-prm"], tmp_path / name)
        cfg = {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if k not in ("dtype", "torch_dtype")}
        (folder / "config.json").write_text(json.dumps({**cfg, **config}))
        return folder

    assert json.loads((tiny_prms["ensemble-prm"] / "config.json").read_text())["dtype"] == "bfloat16"
    assert body_dtype(tiny_prms["ensemble-prm"]) == torch.bfloat16
    assert body_dtype(without_dtype("old", torch_dtype="float32")) == torch.float32
    assert body_dtype(without_dtype("none")) == torch.bfloat16


def test_a_checkpoint_with_an_extra_or_a_wrongly_shaped_weight_fails_in_one_line(tiny_prms, tmp_path):
    import torch

    from notallbits.verify.families import load

    qwen = tiny_prms["qwen2-prm"]
    extra = _rewrite(qwen, tmp_path / "extra", change=lambda t: {"score.9.weight": torch.zeros(2, 2)})
    with pytest.raises(UserError, match=r"has unexpected 1 weights of a Qwen2ForProcessRewardModel "
                                        r"\(first: 'score\.9\.weight'\)") as err:
        load(str(extra), "float32", "cpu")
    assert "\n" not in str(err.value)
    shape = _rewrite(qwen, tmp_path / "shape", change=lambda t: {"score.2.weight": torch.zeros(3, t["score.2.weight"].shape[1])})
    with pytest.raises(UserError, match=r"shape: weights do not fit a Qwen2ForProcessRewardModel: \S") as err:
        load(str(shape), "float32", "cpu")
    assert "\n" not in str(err.value)
    from notallbits.verify.families import BY_NAME

    with pytest.raises(RuntimeError) as raw:  # transformers' own error: its first line is the detail
        BY_NAME["qwen2-prm"].model_class().from_pretrained(shape, dtype=torch.float32)
    assert str(err.value).endswith(str(raw.value).splitlines()[0].strip())


# ---------------------------------------------------------------- the verify step


def _generation_file(path, thinking, answers, chars_at_8):
    """A job's generation file as generate writes it for a verifier: per sample the budget-16 record
    carries the thinking text, each record the length of its budget's prefix of it."""
    from notallbits.io import write_framed_jsonl

    rows = []
    for (qid, sample), text in thinking.items():
        for budget in (8, 16):
            chars = len(text) if budget == 16 else chars_at_8[(qid, sample)]
            rows.append({"question_id": qid, "sample": sample, "seed": sample, "budget_tokens": budget,
                         "thinking_tokens": budget, "forced": True, "waits": 0, "answer_tokens": 3,
                         "answer_text": answers[(qid, sample)], "thinking_chars": chars,
                         **({"thinking_text": text} if budget == 16 else {})})
    header = {"dataset": "d", "model": "m", "bits": 16, "kv": "full", "budgets": [8, 16], "samples": 2,
              "backend": "transformers"}
    write_framed_jsonl(path, header, rows)
    return path


VERIFY_QUESTIONS = [{"id": "q1", "task": "math", "question": "What is 2+3?", "answer": "5"},
                    {"id": "q2", "task": "math", "question": "What is 7*6?", "answer": "42"}]
VERIFY_THINKING = {("q1", 0): "Add 2 and 3.\n\nThat makes 5, checked twice by counting on.",
                   ("q1", 1): "2+3 is 6?\n\n\n\n  \n\nNo: 5.",
                   ("q2", 0): "7*6 = 42",
                   ("q2", 1): ""}
VERIFY_ANSWERS = {("q1", 0): "\\boxed{5}", ("q1", 1): " \\boxed{5} ", ("q2", 0): "\\boxed{42}", ("q2", 1): ""}
# the budget-8 prefix of each thinking text (characters), and the steps each record has, by hand:
# paragraphs at blank lines, stripped, empty ones dropped, then the answer ("(no answer)" if none)
VERIFY_CHARS_AT_8 = {("q1", 0): 12, ("q1", 1): 11, ("q2", 0): 3, ("q2", 1): 0}
VERIFY_STEPS = {
    ("q1", 0, 8): ["Add 2 and 3.", "\\boxed{5}"],
    ("q1", 0, 16): ["Add 2 and 3.", "That makes 5, checked twice by counting on.", "\\boxed{5}"],
    ("q1", 1, 8): ["2+3 is 6?", "\\boxed{5}"],
    ("q1", 1, 16): ["2+3 is 6?", "No: 5.", "\\boxed{5}"],
    ("q2", 0, 8): ["7*6", "\\boxed{42}"],
    ("q2", 0, 16): ["7*6 = 42", "\\boxed{42}"],
    ("q2", 1, 8): ["(no answer)"],
    ("q2", 1, 16): ["(no answer)"],
}


def _tensor_bytes(folder):
    """Bytes of every tensor of a checkpoint: elements x element size, from the tensors themselves."""
    from safetensors.torch import load_file

    return sum(t.numel() * t.element_size() for f in folder.glob("*.safetensors") for t in load_file(f).values())


def test_the_verify_step_scores_every_record_as_activeprms_worker(tiny_prm, tmp_path, monkeypatch):
    """verify(): one row per (question, sample, budget) in the job's order, its steps the budget's
    thinking cut at blank lines then the answer (counted by hand), each step's reward the authors'
    worker's, the score their minimum; the header names the job and the checkpoint's tensor bytes."""
    from transformers import AutoTokenizer

    from notallbits.generation.prompts import format_question
    from notallbits.io import read_framed_jsonl
    from notallbits.verify import FORMAT_VERSION, verify

    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in VERIFY_QUESTIONS))
    gen = _generation_file(tmp_path / "g.jsonl", VERIFY_THINKING, VERIFY_ANSWERS, VERIFY_CHARS_AT_8)
    spec = {"verifier": "prm", "source": str(tiny_prm), "aggregation": "min", "dtype": "float32", "device": "cpu",
            "batch_size": 3}
    from notallbits.verify.families import Verifier

    batches, step_rewards = [], Verifier.step_rewards

    def recorded(self, batch, device):  # the forward passes it asks for: how many records, how long
        batches.append([len(ids) for ids in batch])
        return step_rewards(self, batch, device)

    monkeypatch.setattr(Verifier, "step_rewards", recorded)
    t0 = time.perf_counter()
    header = verify(str(questions), [str(gen)], spec, str(tmp_path / "v.jsonl"))
    wall = time.perf_counter() - t0
    got_header, rows = read_framed_jsonl(tmp_path / "v.jsonl")
    assert got_header == header and 0 < header["seconds"] <= wall  # the forward passes, within the call
    assert {k: v for k, v in header.items() if k != "seconds"} == {
        "format_version": FORMAT_VERSION, "verifier": "prm", "source": str(tiny_prm), "family": "ensemble-prm",
        "aggregation": "min", "max_tokens": 1024, "dtype": "float32", "verifier_bytes": _tensor_bytes(tiny_prm),
        "job": {"dataset": "d", "model": "m", "bits": 16, "kv": "full", "budgets": [8, 16], "samples": 2},
        "records": 8, "device": "cpu"}
    keys = [(r["question_id"], r["sample"], r["budget_tokens"]) for r in rows]
    assert keys == [(q, s, b) for (q, s) in VERIFY_THINKING for b in (8, 16)]
    text = {q["id"]: format_question(q) for q in VERIFY_QUESTIONS}
    want = authors_ensemble_rewards(tiny_prm, [(text[k[0]], VERIFY_STEPS[k]) for k in keys])
    tok = AutoTokenizer.from_pretrained(tiny_prm)
    for row, key, rewards in zip(rows, keys, want):
        assert row["step_rewards"] == pytest.approx(rewards, abs=1e-5)
        assert row["score"] == pytest.approx(min(rewards), abs=1e-5) and row["steps"] == len(VERIFY_STEPS[key])
        assert row["steps_dropped"] == 0
        messages = [{"role": "system", "content": ACTIVEPRM_SYSTEM}, {"role": "user", "content": text[key[0]]}]
        authors_text = (tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                        + "<extra_0>".join(VERIFY_STEPS[key]) + "<extra_0>")
        assert row["input_tokens"] == len(tok(authors_text).input_ids)
    assert len({r["score"] for r in rows}) > 4  # the rewards differ, so a row joined to another record shows
    # batches of batch_size (8 records: 3, 3, 2), the longest inputs first
    assert [len(b) for b in batches] == [3, 3, 2]
    assert sum(batches, []) == sorted((r["input_tokens"] for r in rows), reverse=True)


def test_the_verify_step_drops_the_first_steps_of_a_trace_longer_than_its_context(tiny_prm, tmp_path):
    """A context one token shorter than the longest record: that record (and only it) drops its first
    step; the header's dtype defaults to bfloat16 and the score is the aggregation asked for."""
    from notallbits.io import read_framed_jsonl
    from notallbits.verify import verify

    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in VERIFY_QUESTIONS))
    gen = _generation_file(tmp_path / "g.jsonl", VERIFY_THINKING, VERIFY_ANSWERS, VERIFY_CHARS_AT_8)
    spec = {"verifier": "prm", "source": str(tiny_prm), "aggregation": "min", "dtype": "float32", "device": "cpu"}
    verify(str(questions), [str(gen)], spec, str(tmp_path / "v0.jsonl"))
    _, full = read_framed_jsonl(tmp_path / "v0.jsonl")
    longest = max(r["input_tokens"] for r in full)
    assert [r["input_tokens"] for r in full].count(longest) == 1
    spec = {"verifier": "prm", "source": str(tiny_prm), "aggregation": "last", "max_tokens": longest - 1}
    header = verify(str(questions), [str(gen)], spec, str(tmp_path / "v.jsonl"))
    _, rows = read_framed_jsonl(tmp_path / "v.jsonl")
    assert header["max_tokens"] == longest - 1 and header["dtype"] == "bfloat16" and header["aggregation"] == "last"
    for row, before in zip(rows, full):
        assert row["steps"] == before["steps"] and row["input_tokens"] <= longest - 1
        assert row["steps_dropped"] == (1 if before["input_tokens"] == longest else 0)
        assert row["score"] == pytest.approx(row["step_rewards"][-1], abs=1e-6)


def test_the_verify_step_fails_in_one_line_on_a_bad_job(tiny_prm, tmp_path):
    from notallbits.verify import verify

    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps(VERIFY_QUESTIONS[0]) + "\n")  # q2 missing
    gen = _generation_file(tmp_path / "g.jsonl", VERIFY_THINKING, VERIFY_ANSWERS, VERIFY_CHARS_AT_8)
    spec = {"verifier": "prm", "source": str(tiny_prm), "aggregation": "min", "device": "cpu"}
    with pytest.raises(UserError, match=r"g\.jsonl: record for question 'q2', which .*q\.jsonl lacks"):
        verify(str(questions), [str(gen)], spec, str(tmp_path / "v.jsonl"))
    # an unknown aggregation fails before the model loads (the source does not exist)
    with pytest.raises(UserError, match="unknown PRM aggregation 'median'"):
        verify(str(questions), [str(gen)], {**spec, "aggregation": "median", "source": str(tmp_path / "none")},
               str(tmp_path / "v.jsonl"))
    with pytest.raises(UserError, match="unknown prompt style 'nope'"):
        verify(str(questions), [str(gen)], {**spec, "prompt_style": "nope"}, str(tmp_path / "v.jsonl"))
    import torch

    if not torch.cuda.is_available():  # the device asked for, not a CPU fallback
        with pytest.raises(UserError, match="device is cuda but torch .* cannot use CUDA"):
            verify(str(questions), [str(gen)], {**spec, "device": "cuda"}, str(tmp_path / "v.jsonl"))
    # one question shard of two: the job is not whole
    from notallbits.io import read_framed_jsonl, write_framed_jsonl

    header, rows = read_framed_jsonl(gen)
    write_framed_jsonl(tmp_path / "g1.jsonl", {**header, "shard": [1, 2]}, rows)
    with pytest.raises(UserError, match=r"g1\.jsonl: expected question shards 1\.\.2 of one job, got \[1\]"):
        verify(str(questions), [str(tmp_path / "g1.jsonl")], spec, str(tmp_path / "v.jsonl"))
    # records without thinking text: one line naming the generation file
    _generation_file(tmp_path / "g.jsonl", {("q1", 0): "a"}, VERIFY_ANSWERS, {("q1", 0): 1})
    header, rows = read_framed_jsonl(gen)
    write_framed_jsonl(gen, header, [{k: v for k, v in r.items() if k != "thinking_chars"} for r in rows])
    with pytest.raises(UserError, match=r"g\.jsonl: generation records carry no thinking text"):
        verify(str(questions), [str(gen)], spec, str(tmp_path / "v.jsonl"))
    assert not (tmp_path / "v.jsonl").exists()


def test_the_verify_command_writes_the_verify_file(tiny_prm, tmp_path, monkeypatch):
    """The verifier named by a hub id: loaded from the snapshot huggingface_hub cached (refs/main ->
    snapshots/<commit>/, offline as every job runs), its bytes measured there."""
    import argparse
    import shutil

    import huggingface_hub.constants

    from notallbits.io import read_framed_jsonl
    from notallbits.verify import run

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-prm"
    shutil.copytree(tiny_prm, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in VERIFY_QUESTIONS))
    gen = _generation_file(tmp_path / "g.jsonl", VERIFY_THINKING, VERIFY_ANSWERS, VERIFY_CHARS_AT_8)
    spec = {"verifier": "prm", "source": "tiny-org/tiny-prm", "aggregation": "min", "device": "cpu"}
    run(argparse.Namespace(build_tiny=None, questions=str(questions), generations=(str(gen),), spec=json.dumps(spec),
                           out=str(tmp_path / "out.jsonl"), family="ensemble-prm"))
    header, rows = read_framed_jsonl(tmp_path / "out.jsonl")
    assert header["records"] == len(rows) == 8 and header["verifier"] == "prm"
    assert header["source"] == "tiny-org/tiny-prm" and header["verifier_bytes"] == _tensor_bytes(tiny_prm)


def test_the_build_tiny_command_writes_the_family_asked_for(tmp_path):
    """``notallbits verify --build-tiny DIR --family F`` writes F's checkpoint to DIR; build_tiny without
    a family writes ActPRM-X's, the demo's verifier (docs/verifiers.md)."""
    import argparse

    from transformers import AutoTokenizer

    from notallbits.verify import build_tiny, run

    run(argparse.Namespace(build_tiny=str(tmp_path / "q"), family="qwen2-prm", questions=None, generations=None,
                           spec=None, out=None))
    assert json.loads((tmp_path / "q" / "config.json").read_text())["architectures"] == ["Qwen2ForProcessRewardModel"]
    build_tiny(tmp_path / "e")
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForEnsemblePRM"]
    assert json.loads((tmp_path / "e" / "notallbits.json").read_text())["family"] == "ensemble-prm"
    # the shape docs/verifiers.md gives the demo's verifier
    doc = " ".join((Path(__file__).parents[1] / "docs" / "verifiers.md").read_text().split())
    assert ("2 layers, hidden size 64 (MLP 128), 4 attention heads over 2 KV heads, 4 ensemble heads, "
            "a 192-position context") in doc
    assert {k: cfg[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                                "num_key_value_heads", "num_ensemble", "max_position_embeddings")} == {
        "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_ensemble": 4, "max_position_embeddings": 192}
    tok = AutoTokenizer.from_pretrained(tmp_path / "e")
    assert cfg["vocab_size"] == len(tok) and tok.convert_tokens_to_ids("<extra_0>") == len(tok) - 1


def test_the_verify_command_asks_a_gpu_unless_its_spec_says_cpu(tmp_path):
    """A verify job on CPU (or building the tiny PRM) asks no GPU of the scheduler; any other device,
    'auto' by default, asks one."""
    import argparse

    from notallbits.verify import gpus_needed, run

    def args(**kw):
        return argparse.Namespace(**{"build_tiny": None, "spec": None, "questions": None, "generations": None,
                                     "out": None, "family": "ensemble-prm", **kw})

    assert gpus_needed(args(spec='{"device": "cpu"}')) == 0
    assert gpus_needed(args(spec='{"device": "cuda"}')) == 1
    assert gpus_needed(args(spec='{"source": "x"}')) == 1
    assert gpus_needed(args()) == 1
    assert gpus_needed(args(spec="{not json")) == 1
    assert gpus_needed(args(build_tiny=str(tmp_path), spec='{"device": "cuda"}')) == 0
    with pytest.raises(UserError, match="--questions, --generations, --spec and --out are required"):
        run(args(questions="q", generations=["g"], out="o"))
    with pytest.raises(UserError, match="--spec is not valid JSON"):
        run(args(questions="q", generations=["g"], out="o", spec="{not json"))


# ---------------------------------------------------------------- memory


def test_verifier_bytes_measured_equal_the_memory_model(tiny_prms):
    from notallbits.memory import checkpoint_bytes, prm_weight_bytes

    for folder in tiny_prms.values():
        assert checkpoint_bytes(folder) == prm_weight_bytes(str(folder))


def test_actprm_x_weights_are_the_papers_13_28():
    """Qwen2.5-Math-PRM-7B's body (hidden 3584, MLP 18944, 28 layers, 28 heads, 4 KV heads of 128,
    vocab 152064, q/k/v biases, no lm_head) in bf16, plus ActPRM-X's 32 float32 heads
    3584 -> 128 -> 128 -> 1 stored twice (score.model, score.reg_model): the paper's 13.28 GB (GiB).
    The Qwen 2-label head instead gives 13.19 GiB."""
    from notallbits.memory import GIB, prm_weight_bytes

    h, i, layers, kv, vocab = 3584, 18944, 28, 4 * 128, 152064
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h
    body = vocab * h + layers * per_layer + h
    heads = 32 * ((h * 128 + 128) + (128 * 128 + 128) + (128 + 1))
    assert prm_weight_bytes("sail/ActPRM-X") == 2 * body + 2 * 4 * heads
    assert round(prm_weight_bytes("sail/ActPRM-X") / GIB, 2) == 13.28
    assert round(prm_weight_bytes("Qwen/Qwen2.5-Math-PRM-7B") / GIB, 2) == 13.19


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
