"""The sampler: which tokens can be drawn for given logits, temperature and top-p, against
transformers' own temperature and nucleus (top-p) warpers as the reference."""

import pytest

from notallbits.generation.sampling import derive_seed, sample_next

# A realistic next-token distribution: a few likely continuations and a long tail.
PROBS = [0.40, 0.25, 0.15, 0.08, 0.05, 0.04, 0.02, 0.01]


def reference_support(logits, temperature, top_p):
    """Tokens transformers' TemperatureLogitsWarper + TopPLogitsWarper leave drawable."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    scores = TemperatureLogitsWarper(temperature)(None, logits[None].clone())
    scores = TopPLogitsWarper(top_p)(None, scores)
    return {i for i, s in enumerate(scores[0].tolist()) if s != float("-inf")}


def draws(logits, temperature, top_p, rows=64, rounds=8):
    import torch

    seen = []
    batch = logits[None].repeat(rows, 1)
    for r in range(rounds):
        gens = [torch.Generator().manual_seed(derive_seed(0, r, i)) for i in range(rows)]
        seen += sample_next(batch, gens, temperature, top_p)
    return seen


@pytest.mark.parametrize("temperature, top_p", [(1.0, 0.7), (0.6, 0.95), (1.0, 0.9)])
def test_top_p_never_draws_outside_the_nucleus(temperature, top_p):
    """Catches top-p ignored (sampling from the full distribution): over 512 seeded draws the
    sampler hits exactly the tokens of the reference nucleus, while an unfiltered draw from the
    same logits hits tokens outside it."""
    import torch

    logits = torch.tensor(PROBS).log()
    nucleus = reference_support(logits, temperature, top_p)
    assert 1 < len(nucleus) < len(PROBS)  # the nucleus excludes something and keeps a choice
    seen = draws(logits, temperature, top_p)
    assert set(seen) == nucleus
    unfiltered = draws(logits, temperature, 1.0)
    assert set(unfiltered) - nucleus  # an unfiltered draw would hit the excluded tail


def test_nucleus_by_hand():
    """The smallest prefix of the sorted distribution whose mass reaches top_p: 0.40 + 0.25 + 0.15
    = 0.80 >= 0.7, and 0.40 + 0.25 = 0.65 is not enough, so tokens 0, 1, 2 (shuffled in the
    vocabulary to make sure order comes from the probabilities, not the ids)."""
    import torch

    order = [5, 2, 7, 0, 3, 6, 1, 4]  # token order[i] has probability PROBS[i]
    probs = torch.zeros(8)
    probs[order] = torch.tensor(PROBS)
    assert set(draws(probs.log(), 1.0, 0.7)) == {5, 2, 7}
    assert reference_support(probs.log(), 1.0, 0.7) == {5, 2, 7}


def test_greedy_is_argmax_per_row():
    import torch

    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    assert sample_next(logits, [torch.Generator(), torch.Generator()], 0.0, 0.5) == [1, 0]
