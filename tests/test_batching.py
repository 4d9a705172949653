"""Rows of many questions decoded in one batch (left padding, per-row positions, per-row
eviction and quantization, device sampling) give each sample exactly the trace and forced
answers it gets when its question runs alone."""

import pytest
import torch

from notallbits.generation.forcing import ForcingSpec, QuestionRequest
from notallbits.generation.hf_backend import TransformersBackend
from notallbits.generation.sampling import sample_rows, splitmix64, uniforms

PREFIX = "\n\n**Final Answer**\n\\boxed{"


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model)


def requests_of_different_lengths(tokenizer, samples=2):
    from notallbits.data.registry import demo_arith
    from notallbits.generation.prompts import build_prompt

    out = []
    for n, q in enumerate(demo_arith(3)):
        q = dict(q, question=q["question"] + " Show each step." * (3 * n))  # prompts of clearly different lengths
        ids = tuple(tokenizer.encode(build_prompt(tokenizer, q), add_special_tokens=False))
        seeds = tuple(1000 * n + i for i in range(samples))
        out.append(QuestionRequest(q["id"], ids, tuple(range(samples)), seeds))
    assert len({len(r.prompt_ids) for r in out}) == 3
    return out


def run(model, tokenizer, kv, requests, batch_size, temperature=0.0, budgets=(8, 40)):
    spec = ForcingSpec.from_tokenizer(tokenizer, budgets, "Wait", PREFIX, 5)
    backend = TransformersBackend(model, tokenizer, kv, temperature, 0.95, batch_size)
    out = {}
    for req, results in backend.generate_job(requests, spec):
        for res in results:
            out[(req.question_id, res.sample)] = (res.thinking_ids, res.wait_positions, res.answers)
    return out


KV = {
    "full": {"method": "full"},
    # budgets far below prompt + trace: every row evicts, at steps that differ by row
    "streamingllm": {"method": "streamingllm", "budget": 24, "sink": 4},
    "rkv": {"method": "rkv", "budget": 24, "buffer": 8},
    "hqq": {"method": "hqq", "nbits": 4, "residual_length": 8},
}


@pytest.mark.parametrize("kv", list(KV))
def test_greedy_batch_across_questions_equals_one_question_at_a_time(model_and_tokenizer, kv):
    model, tokenizer = model_and_tokenizer
    requests = requests_of_different_lengths(tokenizer)
    alone = run(model, tokenizer, KV[kv], requests, batch_size=2)  # one question per batch: no padding
    together = run(model, tokenizer, KV[kv], requests, batch_size=6)  # all three, left-padded
    assert len(alone) == 6 and all(len(t) == 40 and set(a) == {8, 40} for t, _, a in alone.values())
    assert together == alone


@pytest.mark.parametrize("kv", ["full", "streamingllm"])
def test_sampled_trace_depends_only_on_its_seed(model_and_tokenizer, kv):
    model, tokenizer = model_and_tokenizer
    requests = requests_of_different_lengths(tokenizer)
    alone = run(model, tokenizer, KV[kv], requests, batch_size=2, temperature=1.0)
    together = run(model, tokenizer, KV[kv], requests[::-1], batch_size=4, temperature=1.0)  # other neighbours
    assert together == alone
    traces = [t for t, _, _ in alone.values()]
    assert len({tuple(t) for t in traces}) == len(traces)  # different seeds really draw differently


def test_splitmix64_matches_reference_vectors():
    # Vigna's splitmix64.c: seeded with 1234567, and the first output from seed 0
    seeds = torch.full((5,), 1234567, dtype=torch.long)
    got = [v % (1 << 64) for v in splitmix64(seeds, torch.arange(5)).tolist()]
    assert got == [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431,
                   16408922859458223821]
    assert splitmix64(torch.tensor([0]), torch.tensor([0])).item() % (1 << 64) == 0xE220A8397B1DCDAF
    u = uniforms(torch.full((20000,), 7), torch.arange(20000))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01


def test_device_sampler_draws_the_nucleus_distribution():
    """Frequencies over many counters match the top-p renormalized softmax; tokens outside
    the nucleus (smallest prefix with mass >= top_p) are never drawn; greedy is argmax."""
    probs = torch.tensor([0.05, 0.4, 0.3, 0.15, 0.1])
    logits = probs.log()[None].expand(40000, -1)
    seeds = torch.full((40000,), 11, dtype=torch.long)
    tokens = sample_rows(logits, seeds, torch.arange(40000), 1.0, 0.8)  # nucleus: 0.4 + 0.3 + 0.15 >= 0.8
    freq = torch.bincount(tokens, minlength=5).double() / 40000
    want = torch.tensor([0, 0.4, 0.3, 0.15, 0]) / 0.85
    assert torch.allclose(freq, want.double(), atol=0.01), freq
    assert freq[0] == 0 and freq[4] == 0
    assert sample_rows(logits[:2], seeds[:2], 0, 0.0, 0.8).tolist() == [1, 1]


@pytest.mark.parametrize("nbits", [2, 4, 8])
def test_hqq_rows_equal_hqq_on_each_row_alone(nbits):
    """kvcache.quantized.hqq_rows quantizes many rows at once; each row must come out bit for
    bit as hqq's own Quantizer.quantize (transformers' settings) makes it for that row alone:
    rows stop the optimiser at their own iteration, not at the batch's."""
    from hqq.core.quantize import Quantizer

    from notallbits.kvcache.quantized import hqq_rows

    g = torch.Generator().manual_seed(0)
    # key-like rows: per-channel offsets and scales (outlier channels), different per row
    x = torch.randn(6, 2, 40, 32, generator=g) * torch.rand(6, 1, 1, 32, generator=g) * 4
    x = (x + torch.randn(6, 1, 1, 32, generator=g) * 2).to(torch.bfloat16)
    data, meta = hqq_rows(x, nbits, 64, torch.bfloat16)
    cols = data.shape[1] // 6
    for r in range(6):
        q, ref = Quantizer.quantize(x[r : r + 1].contiguous(), nbits=nbits, group_size=64, axis=0, device="cpu",
                                    compute_dtype=torch.bfloat16)
        part = slice(r * cols, (r + 1) * cols)
        assert torch.equal(q, data[:, part]), r
        assert torch.equal(ref["scale"].to(torch.bfloat16), meta["scale"][:, part]), r
        assert torch.equal(ref["zero"].to(torch.bfloat16), meta["zero"][:, part]), r
        # the rest of the meta is hqq's for a row alone (what Quantizer.dequantize reads), with the
        # compute dtype transformers' HQQQuantizedLayer._quantize adds
        want = {**ref, "compute_dtype": torch.bfloat16}
        assert {key: want[key] for key in meta if key not in ("scale", "zero")} == {
            key: value for key, value in meta.items() if key not in ("scale", "zero")}, r


@pytest.mark.parametrize("nbits", [2, 4])
def test_hqq_optimiser_in_windows_equals_hqq_on_wide_rows(nbits):
    """The optimiser runs over windows of a row (kvcache.quantized._hqq_codes) to stay in cache:
    on rows many windows wide (4,800 group columns, windows asked for 500 columns wide) its codes
    and its float32 scales and zeros must be hqq's own for each row alone, bit for bit."""
    from hqq.core.quantize import Quantizer

    from notallbits.kvcache.quantized import _hqq_codes

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 300, 128, generator=g) * torch.rand(2, 1, 1, 128, generator=g) * 4
    x = x + torch.randn(2, 1, 1, 128, generator=g) * 2
    codes, scale, zero = _hqq_codes(x, nbits, 64, chunk_elements=64 * 500)
    for r in range(2):
        q, ref = Quantizer.quantize(x[r : r + 1].contiguous(), nbits=nbits, group_size=64, axis=0, device="cpu",
                                    compute_dtype=torch.float32, bitpack=False)
        assert torch.equal(q.to(torch.uint8), codes[r]), r
        assert torch.equal(ref["scale"], scale[r]), r
        assert torch.equal(ref["zero"], zero[r]), r


def test_hqq_shrink_is_zero_below_the_bound_the_optimiser_skips_it_under():
    """hqq's own shrink_lp_op (beta 10, lp 0.7, what the legacy optimiser applies) is zero for
    every float32 error below quantized.SHRINK_ZERO_BELOW, and not far above it (the true edge
    is 0.1^(1/1.3) = 0.1701)."""
    from hqq.core.optimize import shrink_lp_op

    from notallbits.kvcache.quantized import SHRINK_ZERO_BELOW

    below = torch.linspace(0.0, SHRINK_ZERO_BELOW, 1_000_001)[:-1]
    below = torch.cat([below, -below, torch.tensor([torch.nextafter(torch.tensor(SHRINK_ZERO_BELOW),
                                                                     torch.tensor(0.0))])])
    assert not shrink_lp_op(below, 10.0, 0.7).any()
    assert shrink_lp_op(torch.tensor([0.1702, -0.1702]), 10.0, 0.7).abs().min() > 0
    assert SHRINK_ZERO_BELOW > 0.15


def _hqq_alone(x, nbits):
    """hqq's own codes, scale and zero of each row of ``x`` quantized alone (float32 meta)."""
    from hqq.core.quantize import Quantizer

    out = []
    for r in range(x.shape[0]):
        q, ref = Quantizer.quantize(x[r : r + 1].contiguous(), nbits=nbits, group_size=64, axis=0, device="cpu",
                                    compute_dtype=torch.float32, bitpack=False)
        out.append((q.to(torch.uint8), ref["scale"], ref["zero"]))
    return out


def _spy(monkeypatch, module, names):
    """Counts of calls and of elements passed to ``module.torch.<name>`` for each name."""
    seen = {name: [0, 0] for name in names}
    for name in names:
        def counted(x, *args, _name=name, _op=getattr(torch, name), **kwargs):
            seen[_name][0] += 1
            seen[_name][1] += x.numel()
            return _op(x, *args, **kwargs)
        monkeypatch.setattr(module.torch, name, counted)
    return seen


def test_hqq_optimiser_takes_no_pow_in_windows_whose_shrink_is_zero(monkeypatch):
    """hqq's shrink relu(|x| - 0.1 |x|^-0.3) is zero for |x| <= 0.17: a window whose errors all
    lie below that takes no pow. 4-bit rows whose group columns all hold values of spread 0.5
    (errors < 0.1) take none; rows with columns of spread 0.5, 1.2 (a few errors above 0.17) and
    3 (many) take it on part of what the optimiser works on; codes, scales and zeros stay hqq's
    own bit for bit in both."""
    from notallbits.kvcache import quantized

    g = torch.Generator().manual_seed(2)
    calm = (torch.randn(2, 64, 4800, generator=g) * 0.5 + torch.randn(2, 1, 4800, generator=g)).view(2, 8, 300, 128)
    spread = torch.full((4800,), 3.0)
    spread[:2304], spread[2304:3328] = 0.5, 1.2
    mixed = (torch.randn(2, 64, 4800, generator=g) * spread + torch.randn(2, 1, 4800, generator=g)).view(2, 8, 300, 128)
    for x, pow_taken in ((calm, False), (mixed, True)):
        seen = _spy(monkeypatch, quantized, ["abs", "pow"])
        codes, scale, zero = quantized._hqq_codes(x, 4, 64, chunk_elements=64 * 256)
        monkeypatch.undo()
        assert seen["abs"][1] > 0, seen
        if pow_taken:
            assert 0 < seen["pow"][1] < seen["abs"][1], seen
        else:
            assert seen["pow"] == [0, 0], seen
        for r, (q, s, z) in enumerate(_hqq_alone(x, 4)):
            assert torch.equal(q, codes[r]) and torch.equal(s, scale[r]) and torch.equal(z, zero[r]), r


@pytest.mark.parametrize("nbits,dtype,work", [(4, torch.float32, 0.45), (8, torch.float32, 0.35),
                                              (4, torch.bfloat16, 0.45), (2, torch.float32, 1.0)])
def test_hqq_optimiser_leaves_out_settled_columns_and_stays_hqqs(monkeypatch, nbits, dtype, work):
    """A group column whose zero comes back bit for bit the same is at a fixed point of hqq's
    optimiser; the optimiser on a CPU leaves such columns out of its later iterations. On rows
    shaped like a model's keys (per-channel offsets and scales, an outlier channel; 8 KV heads x
    300 tokens x 128: 4,800 group columns, 192 past the last multiple of 256) codes, scales and
    zeros stay hqq's own for each row alone, bit for bit, while the optimiser works on a
    fraction ``work`` of the elements 20 iterations over every column take (4- and 8-bit columns
    settle within a few iterations; 2-bit ones keep moving)."""
    from notallbits.kvcache import quantized

    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 8, 300, 128, generator=g) * torch.rand(3, 1, 1, 128, generator=g) * 0.5
    x = x + torch.randn(3, 1, 1, 128, generator=g) * 2
    x[:, :, :, 5] *= 4  # an outlier channel
    x = x.to(dtype)
    seen = _spy(monkeypatch, quantized, ["abs"])
    codes, scale, zero = quantized._hqq_codes(x, nbits, 64, chunk_elements=64 * 512)
    monkeypatch.undo()
    assert 0 < seen["abs"][1] <= work * 20 * x.numel(), seen  # |W_f - W_r| once per element worked on
    for r, (q, s, z) in enumerate(_hqq_alone(x, nbits)):
        assert torch.equal(q, codes[r]) and torch.equal(s, scale[r]) and torch.equal(z, zero[r]), r


@pytest.mark.parametrize("nbits", [2, 4])
def test_hqq_optimiser_stays_hqqs_on_a_row_tail_that_is_not_whole_vector_blocks(nbits):
    """A row of 8 KV heads x 301 tokens x 128 has 4,816 group columns: the 208 past the last
    multiple of 256 are worked on in place, a window narrower than the row. torch's CPU pow
    rounds the last values of an inner loop that do not fill a vector block (AVX-512: 32
    floats) on a scalar path, which may differ by an ulp from the vector path hqq's contiguous
    tensor takes; 2-bit columns keep moving for 20 iterations, so such an ulp shows in a zero.
    Codes, scales and zeros must be hqq's own for each row alone, bit for bit."""
    from notallbits.kvcache import quantized

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 301, 128, generator=g) * torch.rand(2, 1, 1, 128, generator=g) * 0.5
    x = x + torch.randn(2, 1, 1, 128, generator=g) * 2
    x[:, :, :, 5] *= 4  # an outlier channel
    codes, scale, zero = quantized._hqq_codes(x, nbits, 64, chunk_elements=64 * 512)
    for r, (q, s, z) in enumerate(_hqq_alone(x, nbits)):
        assert torch.equal(q, codes[r]) and torch.equal(s, scale[r]), r
        assert torch.equal(z, zero[r]), (r, (z != zero[r]).nonzero()[:, -1].tolist())


@pytest.mark.parametrize("nbits", [4, 8])
def test_hqq_optimiser_stays_hqqs_when_every_column_settles_after_a_compact_copy(nbits):
    """Rows whose group columns are mostly constant (hqq: scale 1, zero -min, error 0 from the
    first iteration) with a few hundred noisy ones: the constant columns settle at once, the
    noisy ones are worked on in a compact copy until they settle too, and the optimiser stops
    there. The zeros found in the compact copy are the row's: hqq's own, bit for bit."""
    from notallbits.kvcache import quantized

    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 1, 4800, generator=g).expand(2, 64, 4800).clone()
    for r in range(2):
        noisy = torch.randperm(4608, generator=g)[:1000]
        w[r, :, noisy] += torch.randn(64, 1000, generator=g) * 0.5
    x = w.view(2, 8, 300, 128)  # hqq's [64, M] of each row is w[r]
    codes, scale, zero = quantized._hqq_codes(x, nbits, 64, chunk_elements=64 * 512)
    for r, (q, s, z) in enumerate(_hqq_alone(x, nbits)):
        assert torch.equal(q, codes[r]) and torch.equal(s, scale[r]) and torch.equal(z, zero[r]), r


@pytest.mark.parametrize("seed,nbits", [(60, 4), (189, 8)])
def test_hqq_optimiser_stops_where_hqqs_error_stops_falling_though_a_zero_moved(seed, nbits):
    """hqq stops once an iteration's mean error is not below the best so far, an equal error
    included. These rows (64 x 512, found by running hqq's own step) reach an iteration whose
    float32 mean error equals the last one while some zeros still move: the optimiser, in
    windows of 256 columns or over the whole row, stops there too, with hqq's zeros bit for bit."""
    from notallbits.kvcache import quantized

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(64, 512, generator=g) * 0.05 + torch.randn(1, 512, generator=g)
    x = w.view(1, 2, 128, 128)  # hqq's [64, M] of the row is w
    (q, s, z), = _hqq_alone(x, nbits)
    for chunk in (64 * 256, None):  # in windows, and the row in one piece
        codes, scale, zero = quantized._hqq_codes(x, nbits, 64, chunk_elements=chunk)
        assert torch.equal(q, codes[0]) and torch.equal(s, scale[0]) and torch.equal(z, zero[0]), chunk


def test_hqq_optimiser_takes_the_pow_only_in_windows_that_shrink(monkeypatch):
    """A window's pow is skipped while all its errors lie below SHRINK_ZERO_BELOW; one window
    that shrinks does not make the others take it. 4-bit rows whose first 256 group columns
    spread 3 (errors to shrink) and the other 4,544 spread 0.3 (errors < 0.05): in windows of 256
    columns the pow runs on at most two windows' worth of elements per row and iteration (the
    first window, and a compact copy's window that holds its moving columns), not on the calm
    columns; codes, scales and zeros stay hqq's own."""
    from notallbits.kvcache import quantized

    g = torch.Generator().manual_seed(2)
    spread = torch.full((4800,), 0.3)
    spread[:256] = 3.0
    x = (torch.randn(2, 64, 4800, generator=g) * spread + torch.randn(2, 1, 4800, generator=g)).view(2, 8, 300, 128)
    seen = _spy(monkeypatch, quantized, ["pow"])
    codes, scale, zero = quantized._hqq_codes(x, 4, 64, chunk_elements=64 * 256)
    monkeypatch.undo()
    assert 0 < seen["pow"][1] <= 2 * 20 * 2 * 64 * 256, seen
    for r, (q, s, z) in enumerate(_hqq_alone(x, 4)):
        assert torch.equal(q, codes[r]) and torch.equal(s, scale[r]) and torch.equal(z, zero[r]), r


def test_hqq_rows_of_a_bf16_cache_in_several_pieces_equal_hqq():
    """bf16 rows that the optimiser takes two at a time (pieces of whole rows, a CPU window of
    2 x 65,536 values): each piece converts its own rows to float32, and codes, scales and zeros
    are hqq's own for each row alone (hqq: W = tensor.float()), bit for bit."""
    from notallbits.kvcache import quantized

    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 8, 64, 128, generator=g) * torch.rand(6, 1, 1, 128, generator=g) * 0.5
    x = (x + torch.randn(6, 1, 1, 128, generator=g) * 2).to(torch.bfloat16)
    codes, scale, zero = quantized._hqq_codes(x, 4, 64, chunk_elements=2 * 8 * 64 * 128)
    for r, (q, s, z) in enumerate(_hqq_alone(x, 4)):
        assert torch.equal(q, codes[r]) and torch.equal(s, scale[r]) and torch.equal(z, zero[r]), r


def test_hqq_optimiser_converts_a_bf16_piece_to_float32_once(monkeypatch):
    """hqq converts W to float32 once (W_f = tensor.float()) and iterates on it; the optimiser
    on bf16 rows that fit one window does the same: float32 copies of at most four times the
    values in all (the initial range, the optimiser's copy, the codes; not one per iteration),
    with hqq's codes, scales and zeros."""
    from notallbits.kvcache import quantized

    g = torch.Generator().manual_seed(6)
    x = (torch.randn(3, 2, 40, 32, generator=g) * torch.rand(3, 1, 1, 32, generator=g) * 4).to(torch.bfloat16)
    converted = [0]
    real = torch.Tensor.float

    def counted(t, *args, **kwargs):
        converted[0] += t.numel() if t.dtype != torch.float32 else 0
        return real(t, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "float", counted)
    codes, scale, zero = quantized._hqq_codes(x, 4, 64)
    monkeypatch.undo()
    assert 0 < converted[0] <= 4 * x.numel(), converted
    for r, (q, s, z) in enumerate(_hqq_alone(x, 4)):
        assert torch.equal(q, codes[r]) and torch.equal(s, scale[r]) and torch.equal(z, zero[r]), r


def test_hqq_optimiser_over_many_small_rows_holds_windows_of_one_piece():
    """64 short rows (2 KV heads x 40 tokens x 32, 2,560 values each) taken two at a time: the
    work memory is one error buffer the size of the rows, the codes, scales and zeros, and five
    buffers of one piece (2 rows): under twice the rows' float32 bytes, whatever the number of
    pieces."""
    from notallbits.bench.kv_methods import peak_extra_bytes
    from notallbits.kvcache.quantized import _hqq_codes

    x = torch.randn(64, 2, 40, 32, generator=torch.Generator().manual_seed(9))
    _, peak = peak_extra_bytes(_hqq_codes, x, 4, 64, chunk_elements=2 * 2 * 40 * 32)
    assert peak < 2 * x.nbytes, (peak, x.nbytes)


def test_hqq_optimiser_takes_no_pow_on_8bit_rows_in_one_piece(monkeypatch):
    """8-bit codes leave errors under half a step, far below SHRINK_ZERO_BELOW on rows of spread
    ~4 (steps of 0.03): the optimiser over rows that fit one piece takes no pow at all, and its
    codes, scales and zeros are hqq's own."""
    from notallbits.kvcache import quantized

    g = torch.Generator().manual_seed(12)
    x = torch.randn(3, 2, 40, 32, generator=g) * torch.rand(3, 1, 1, 32, generator=g)
    x = x + torch.randn(3, 1, 1, 32, generator=g)
    seen = _spy(monkeypatch, quantized, ["abs", "pow"])
    codes, scale, zero = quantized._hqq_codes(x, 8, 64)
    monkeypatch.undo()
    assert seen["abs"][1] > 0 and seen["pow"] == [0, 0], seen
    for r, (q, s, z) in enumerate(_hqq_alone(x, 8)):
        assert torch.equal(q, codes[r]) and torch.equal(s, scale[r]) and torch.equal(z, zero[r]), r


def test_hqq_optimiser_works_on_at_most_a_window_of_values_at_a_time(monkeypatch):
    """A window of ``chunk_elements`` values (settings.HQQ_OPT_CHUNK_ELEMENTS: what stays in a
    CPU's cache) that holds exactly one row: each step of the optimiser works on one row's
    2,560 values, never on two rows at once; codes, scales and zeros are hqq's own."""
    from notallbits.kvcache import quantized

    x = torch.randn(4, 2, 40, 32, generator=torch.Generator().manual_seed(13))
    sizes = []
    real = torch.abs

    def spy(t, *args, **kwargs):
        sizes.append(t.numel())
        return real(t, *args, **kwargs)

    monkeypatch.setattr(quantized.torch, "abs", spy)
    codes, scale, zero = quantized._hqq_codes(x, 4, 64, chunk_elements=2 * 40 * 32)
    monkeypatch.undo()
    assert sizes and max(sizes) == 2 * 40 * 32, sorted(set(sizes))
    for r, (q, s, z) in enumerate(_hqq_alone(x, 4)):
        assert torch.equal(q, codes[r]) and torch.equal(s, scale[r]) and torch.equal(z, zero[r]), r


def test_hqq_optimiser_on_wide_rows_works_on_at_most_a_window_and_codes_each_value_once(monkeypatch):
    """Rows wider than the window (8 KV heads x 300 tokens x 128, 4,800 group columns; a window
    of 64 x 256 values): every step works on at most one window of values (in place or in a
    compact copy), and the codes round each value once; codes, scales and zeros are hqq's own."""
    from notallbits.kvcache import quantized

    g = torch.Generator().manual_seed(14)
    x = torch.randn(2, 8, 300, 128, generator=g) * torch.rand(2, 1, 1, 128, generator=g)
    x = x + torch.randn(2, 1, 1, 128, generator=g)
    seen = {"abs": [], "round": 0}
    real_abs, real_round = torch.abs, torch.round

    def spy_abs(t, *args, **kwargs):
        seen["abs"].append(t.numel())
        return real_abs(t, *args, **kwargs)

    def spy_round(t, *args, **kwargs):
        seen["round"] += t.numel()
        return real_round(t, *args, **kwargs)

    monkeypatch.setattr(quantized.torch, "abs", spy_abs)
    monkeypatch.setattr(quantized.torch, "round", spy_round)
    codes, scale, zero = quantized._hqq_codes(x, 4, 64, chunk_elements=64 * 256)
    monkeypatch.undo()
    assert max(seen["abs"]) == 64 * 256 and seen["round"] == x.numel(), (max(seen["abs"]), seen["round"])
    for r, (q, s, z) in enumerate(_hqq_alone(x, 4)):
        assert torch.equal(q, codes[r]) and torch.equal(s, scale[r]) and torch.equal(z, zero[r]), r
