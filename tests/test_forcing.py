"""Budget forcing on token ids: exact token counts, Wait replacement, cap-only mode."""

from notallbits.generation.forcing import ForcingSpec, Trace

END, EOS, PAD, WAIT1, WAIT2 = 90, 91, 92, 80, 81


def spec(budgets=(4, 8), wait=True, answer_max=3):
    return ForcingSpec(tuple(budgets), END, frozenset({EOS}), (WAIT1, WAIT2), (END, 70, 71), answer_max, wait)


def feed(trace, sampled):
    return [trace.push(t) for t in sampled]


def test_runs_to_exactly_the_largest_budget():
    tr = Trace(spec())
    fed = feed(tr, [1, 2, 3, 4, 5, 6, 7, 8])
    assert fed == [1, 2, 3, 4, 5, 6, 7, 8] and tr.finished and len(tr.thinking) == 8


def test_early_end_becomes_wait_and_counts_toward_budget():
    tr = Trace(spec())
    fed = feed(tr, [1, END, 9, 3, EOS, 9, 5, 6])
    # END -> Wait (2 ids, the second replacing the next sample), EOS -> Wait again
    assert fed == [1, WAIT1, WAIT2, 3, WAIT1, WAIT2, 5, 6]
    assert tr.thinking == fed and tr.wait_positions == [1, 4] and tr.finished


def test_cap_only_keeps_the_natural_answer():
    tr = Trace(spec(wait=False))
    fed = feed(tr, [1, 2, END, 60, 61, EOS])
    assert fed == [1, 2, END, 60, 61, EOS]
    assert tr.natural_end == 2 and tr.thinking == [1, 2] and tr.natural_answer == [END, 60, 61, EOS]
    assert tr.finished


def test_cap_only_answer_is_capped():
    tr = Trace(spec(wait=False, answer_max=2))
    feed(tr, [1, END, 60, 61, 62])
    assert tr.natural_answer == [END, 60, 61] and tr.finished


def test_eos_without_answer_in_cap_only_mode():
    tr = Trace(spec(wait=False))
    feed(tr, [1, EOS])
    assert tr.natural_end == 1 and tr.finished


def test_from_tokenizer_on_tiny_model(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    s = ForcingSpec.from_tokenizer(tok, [64, 32, 32], "Wait", "\n\n**Final Answer**\n\\boxed{", 16)
    assert s.budgets == (32, 64) and s.max_budget == 64
    assert s.end_think_id == tok.convert_tokens_to_ids("</think>")
    assert tok.convert_tokens_to_ids("<|im_end|>") in s.eos_ids
    assert tok.decode(s.answer_prefix_ids) == "</think>\n\n**Final Answer**\n\\boxed{"
    assert tok.decode(s.wait_ids) == "Wait"
