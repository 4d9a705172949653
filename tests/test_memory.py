"""The memory model against hand-computed numbers, the paper's Table 1, and the bytes of
real checkpoints written by the project's own quantizer."""

import subprocess
import sys

import pytest

from notallbits import UserError
from notallbits.memory import Arch, checkpoint_bytes, kv_bytes, kv_bytes_per_token, table1, weight_bytes


def test_kv_per_token_qwen3_8b_by_hand():
    # 36 layers x 8 KV heads x head_dim 128 x (K and V) x 2 bytes (bf16)
    assert kv_bytes_per_token(Arch.named("Qwen/Qwen3-8B")) == 36 * 8 * 128 * 2 * 2 == 147_456


def test_qwen3_8b_params_by_hand():
    a = Arch.named("Qwen3-8B")
    per_layer = 4096 * 4096 * 2 + 4096 * 1024 * 2 + 3 * 4096 * 12288
    assert a.quantized_params == 36 * per_layer
    assert a.unquantized_params == 2 * 151936 * 4096 + 36 * (2 * 4096 + 2 * 128) + 4096  # untied lm_head


def test_table1_qwen3_8b_row_matches_paper():
    row = next(r for r in table1() if r["model"] == "Qwen3-8B")
    assert row["weight_gib_4bit"] == pytest.approx(5.68, abs=0.01)
    assert row["weight_gib_8bit"] == pytest.approx(8.94, abs=0.01)
    assert row["weight_gib_16bit"] == pytest.approx(15.26, abs=0.01)
    assert row["kv_gib_30k"] == pytest.approx(4.12, abs=0.01)
    assert row["kv_gib_30k_x16"] == pytest.approx(65.91, abs=0.01)


def test_kv_methods_by_hand():
    a = Arch.named("Qwen3-8B")
    per_tok = 147_456
    assert kv_bytes(a, {"method": "full"}, 1000, 4) == 4 * 1000 * per_tok
    # eviction keeps at most budget + buffer tokens
    assert kv_bytes(a, {"method": "rkv", "budget": 2048, "buffer": 128}, 30000, 1) == 2176 * per_tok
    assert kv_bytes(a, {"method": "rkv", "budget": 2048, "buffer": 128}, 1000, 1) == 1000 * per_tok
    assert kv_bytes(a, {"method": "streamingllm", "budget": 2048}, 30000, 2) == 2 * 2048 * per_tok
    # HQQ 4-bit, group 64, 16-bit scale and zero: 4/8 + 32/(8*64) = 0.5625 B per value (paper App. B)
    values = 36 * 8 * 128 * 2
    assert kv_bytes(a, {"method": "hqq", "nbits": 4}, 10000, 1, residual=False) == values * 10000 * 0.5625
    with_res = kv_bytes(a, {"method": "hqq", "nbits": 4, "residual_length": 128}, 10000, 1)
    assert with_res == values * (10000 - 128) * 0.5625 + 128 * per_tok


def test_analytic_equals_measured_bf16(tiny_model):
    arch = Arch.named(str(tiny_model))
    assert weight_bytes(arch, 16) == checkpoint_bytes(tiny_model)


@pytest.mark.slow
@pytest.mark.parametrize("bits", [4, 8])
def test_analytic_equals_measured_gptq(gptq_models, bits):
    arch = Arch.named(str(gptq_models[bits]))
    assert weight_bytes(arch, bits, layout="gptq") == checkpoint_bytes(gptq_models[bits])
    # the paper layout differs exactly by the int32 g_idx (one per input feature per linear)
    g_idx = arch.layers * sum(fan_in for fan_in, _ in arch.linear_shapes()) * 4
    assert weight_bytes(arch, bits, layout="gptq") - weight_bytes(arch, bits, layout="paper") == g_idx


def test_bad_inputs():
    a = Arch.named("Qwen3-8B")
    with pytest.raises(UserError, match="bits must be 4, 8 or 16"):
        weight_bytes(a, 3)
    with pytest.raises(UserError, match="budget must be positive"):
        kv_bytes(a, {"method": "full"}, 0, 1)
    with pytest.raises(UserError, match="unknown model 'Qwen3-7B'"):
        Arch.named("Qwen3-7B")


def test_cli_is_instant_and_torch_free():
    code = ("import sys; from notallbits.cli import main; main(['memory', '--model', 'Qwen/Qwen3-8B', '--bits', '4',"
            " '--budget', '30000', '--samples', '16', '--json']); assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    import json

    result = json.loads(out)
    assert result["weights_gib"] == pytest.approx(5.68, abs=0.01)
    assert result["kv_gib"] == pytest.approx(65.91, abs=0.01)
    assert result["total_gib"] == pytest.approx(result["weights_gib"] + result["kv_gib"])
    assert set(result) >= {"weights_gib", "kv_gib", "total_gib"}
