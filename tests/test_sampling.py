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


def test_uniform_is_the_top_53_bits_of_splitmix64_in_float64():
    """Vigna's to-double: (x >> 11) * 2**-53, exact in float64. The first output of SplitMix64
    seeded with 0 is 0xE220A8397B1DCDAF (his splitmix64.c); a float32 uniform would round it."""
    import torch

    from notallbits.generation.sampling import uniforms

    u = uniforms(torch.tensor([0]), torch.tensor([0]))
    assert u.dtype == torch.float64
    assert u.item() == (0xE220A8397B1DCDAF >> 11) * 2.0**-53


def test_sample_next_draws_only_from_each_rows_generator():
    """A row's draw depends on its own generator, not on torch's global random state."""
    import torch

    logits = torch.zeros(64, 50)  # uniform over 50 tokens: a draw from any other stream differs
    seeded = lambda: [torch.Generator().manual_seed(derive_seed(3, i)) for i in range(64)]  # noqa: E731
    torch.manual_seed(1)
    first = sample_next(logits, seeded(), 1.0, 0.9)
    torch.manual_seed(2)
    assert sample_next(logits, seeded(), 1.0, 0.9) == first
    assert sample_next(logits, seeded(), 1.0, 1.0) == sample_next(logits, seeded(), 1.0, 1.0)


def test_top_p_one_keeps_every_token_the_softmax_gives_mass_and_no_masked_one():
    """At top_p = 1 there is no nucleus cut: the kept tokens are exactly those of positive
    probability, per row; tokens with a -inf logit (probability 0) are never kept, even where
    the float32 cumulative sum of the rest stops just below 1 (row 0: 4 of 6, row 1: 5 of 6)."""
    import torch

    from notallbits.generation.sampling import nucleus

    inf = float("inf")
    probs = torch.softmax(torch.tensor([[3.0, 0.0, 1.0, 2.0, -inf, -inf], [0.0, 0.0, -inf, 0.0, 0.0, 0.0]]), -1)
    sorted_p, order, kept = nucleus(probs, 1.0)
    assert kept.tolist() == [4, 5]
    assert order[0, :4].tolist() == [0, 3, 2, 1] and order[1, :5].tolist() == [0, 1, 3, 4, 5]  # stable on ties


def test_nucleus_stops_at_the_first_token_that_reaches_top_p():
    """The smallest prefix with mass >= top_p, by hand on exact binary fractions: 0.5 + 0.25
    reaches 0.75, so the second 0.25 is out (transformers' TopPLogitsWarper removes it too:
    ascending cumulative 0.25 <= 1 - 0.75); one dominant token is a nucleus of one."""
    import torch

    from notallbits.generation.sampling import nucleus

    assert nucleus(torch.tensor([[0.25, 0.5, 0.25, 0.0]]), 0.75)[2].tolist() == [2]
    assert nucleus(torch.tensor([[0.125, 0.75, 0.125]]), 0.5)[2].tolist() == [1]


def test_seed_is_sha256s_first_8_bytes_little_endian_without_the_sign_bit():
    """A sample's seed must not change between versions or machines (stored traces and records
    carry it) and must fit a signed int64 (torch's seed tensors and Generator). By hand with
    coreutils: `printf '0:q1:0' | sha256sum` starts 23 53 a0 07 4a 48 df c1; read little-endian
    that is 0xc1df484a07a05323, and without the top bit 0x41df484a07a05323. `printf
    '7:gsm8k-12:3' | sha256sum` starts e5 0d 87 a0 18 5b c1 a4 -> 0x24c15b18a0870de5."""
    assert derive_seed(0, "q1", 0) == 0x41DF484A07A05323
    assert derive_seed(7, "gsm8k-12", 3) == 0x24C15B18A0870DE5
    seeds = [derive_seed(0, "q", i) for i in range(256)]
    assert all(0 <= s < 1 << 63 for s in seeds) and len(set(seeds)) == 256
    assert any(s & 1 for s in seeds) and any(s >= 1 << 62 for s in seeds)  # every one of the 63 bits is used


def test_nucleus_orders_tied_tokens_by_their_id():
    """A row of a real vocabulary has many tokens of one probability: the order is descending,
    ties by token id (Python's stable sorted() by hand), so the token a uniform lands on does not
    depend on the sort kernel; torch's default sort reorders ties on rows of 100 tokens or more."""
    import random

    import torch

    from notallbits.generation.sampling import nucleus

    rng = random.Random(0)
    levels = [rng.choice([8.0, 4.0, 2.0, 1.0]) for _ in range(256)]
    probs = torch.tensor([levels, levels[::-1]]) / sum(levels)
    for top_p in (1.0, 0.9):
        _, order, _ = nucleus(probs, top_p)
        for row in range(2):
            p = probs[row].tolist()
            assert order[row].tolist() == sorted(range(256), key=lambda i: -p[i])


def test_device_sampler_at_qwen3s_recommended_settings_matches_transformers_warpers():
    """Temperature 0.6 and top-p 0.95 (Qwen3's thinking-mode settings): over 40000 counters the
    device sampler's frequencies are the distribution transformers' TemperatureLogitsWarper +
    TopPLogitsWarper leave (by hand: p**(1/0.6) renormalized is 0.515, 0.318, 0.100, 0.051,
    0.016; the nucleus stops at 0.984, so the last is out and the first becomes 0.515 / 0.984).
    One int counter for all rows draws what the same counter as a per-row tensor draws."""
    import torch
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from notallbits.generation.sampling import sample_rows

    logits = torch.tensor([0.05, 0.4, 0.3, 0.15, 0.1]).log()
    scores = TopPLogitsWarper(0.95)(None, TemperatureLogitsWarper(0.6)(None, logits[None].clone()))
    want = torch.softmax(scores[0].double(), -1)
    assert want[0] == 0 and abs(want[1].item() - 0.5146 / 0.9839) < 1e-3
    n = 40000
    tokens = sample_rows(logits[None].expand(n, -1), torch.full((n,), 11), torch.arange(n), 0.6, 0.95)
    freq = torch.bincount(tokens, minlength=5).double() / n
    assert torch.allclose(freq, want, atol=0.01), freq
    assert freq[0] == 0
    seeds = torch.tensor([derive_seed(5, i) for i in range(64)])
    rows = logits[None].expand(64, -1)
    assert sample_rows(rows, seeds, 7, 0.6, 0.95).tolist() == sample_rows(rows, seeds, torch.full((64,), 7), 0.6, 0.95).tolist()


def test_a_uniform_on_a_boundary_draws_the_next_token_as_numpys_choice():
    """Inverse CDF over half-open intervals: token k for u in [cdf[k-1], cdf[k]), numpy's
    Generator.choice rule (cdf.searchsorted(u, side="right")). The seed below makes SplitMix64's
    first output exactly 2**63 (its mixing steps inverted by hand), a uniform of exactly 0.5: on
    two tokens of 0.5 it draws the second."""
    import numpy as np
    import torch

    from notallbits.generation.sampling import sample_rows, splitmix64, uniforms

    seed = torch.tensor([3453682501520545093])
    assert splitmix64(seed, torch.tensor([0])).item() % (1 << 64) == 1 << 63
    assert uniforms(seed, torch.tensor([0])).item() == 0.5
    assert np.searchsorted(np.array([0.5, 1.0]), 0.5, side="right") == 1
    assert sample_rows(torch.tensor([[0.5, 0.5]]).log(), seed, 0, 1.0, 1.0).tolist() == [1]
