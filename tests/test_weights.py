"""Weight formats beside GPTQ (notallbits/weights.py): AWQ 4-bit and FP8 checkpoints in the layouts
vLLM and transformers read, the (method, bits) axis through the grid, and GPTQ's settings param
untouched by the new quantization keys (existing checkpoints must not rerun)."""

import json

import pytest
import yaml

from notallbits import UserError, grid, weights
from tests.conftest import ROOT

E4M3_MAX = 448.0  # largest finite float8_e4m3fn
E4M3_REL = 2.0**-4  # 3 mantissa bits: round-to-nearest relative error of a normal number


def _blocks(t, edge):
    out, inp = t.shape
    return t.reshape(out // edge, edge, inp // edge, edge)


def test_fp8_checkpoint_is_the_serving_layout(fp8_model, tiny_model):
    """Qwen's -FP8 layout, which vLLM's Fp8Config and transformers' FineGrainedFP8 read: the
    quantization config they parse (activation_scheme is required by vLLM), E4M3 weights whose
    largest magnitude per block is E4M3's maximum (absmax scaling), and weight_scale_inv the
    dequantization *multiplier*: weight * weight_scale_inv is the bf16 weight within E4M3's
    rounding. GPTQModel's own file stores the reciprocal: without the conversion this fails."""
    import torch
    from safetensors.torch import load_file

    qcfg = json.loads((fp8_model / "config.json").read_text())["quantization_config"]
    assert qcfg == {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [64, 64]}
    q, ref = load_file(str(fp8_model / "model.safetensors")), load_file(str(tiny_model / "model.safetensors"))
    linears = [n[: -len(".weight_scale_inv")] for n in q if n.endswith(".weight_scale_inv")]
    assert len(linears) == 2 * 7
    for name in linears:
        w8, scale = q[f"{name}.weight"], q[f"{name}.weight_scale_inv"]
        assert w8.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32
        assert scale.shape == (w8.shape[0] // 64, w8.shape[1] // 64)
        assert torch.equal(_blocks(w8.float(), 64).abs().amax(dim=(1, 3)), torch.full(scale.shape, E4M3_MAX))
        deq = (_blocks(w8.float(), 64) * scale[:, None, :, None]).reshape(w8.shape)
        w = ref[f"{name}.weight"].float()
        # normal E4M3 values: relative rounding; the subnormal range (below 2^-6) rounds to 2^-9 steps
        bound = E4M3_REL * w.abs() + 2.0**-10 * (_blocks(torch.ones_like(w), 64) * scale[:, None, :, None]).reshape(w.shape)
        assert bool(((deq - w).abs() <= bound * 1.001).all()), name
    assert not (fp8_model / "quantize_config.json").exists()  # GPTQModel's, with the reciprocal semantics


def test_awq_checkpoint_is_autoawq_gemm(awq_model):
    """The quantization config vLLM's AWQConfig parses (bits, group_size, zero_point) and AutoAWQ's
    GEMM tensors: qweight/qzeros int32 packed 8 nibbles along the output, scales per group."""
    from safetensors import safe_open

    qcfg = json.loads((awq_model / "config.json").read_text())["quantization_config"]
    assert (qcfg["quant_method"], qcfg["bits"], qcfg["group_size"], qcfg["zero_point"], qcfg["version"]) == \
        ("awq", 4, 128, True, "gemm")
    with safe_open(str(awq_model / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        down = {k: f.get_slice(f"model.layers.0.mlp.down_proj.{k}") for k in ("qweight", "qzeros", "scales")}
        assert down["qweight"].get_shape() == [256, 128 // 8] and down["qweight"].get_dtype() == "I32"
        assert down["qzeros"].get_shape() == [2, 128 // 8] and down["scales"].get_shape() == [2, 128]
    assert not any(n.endswith(".g_idx") for n in names)


def test_quantized_checkpoints_generate_on_cpu(awq_model, fp8_model, tiny_model):
    """transformers loads both on CPU (AWQ through GPTQModel's torch kernel; FP8 dequantized to
    bf16, as transformers does without a GPU) and their logits stay near the bf16 model's."""
    import torch

    from notallbits.generation.hf_backend import load_model

    x = torch.tensor([[5, 17, 42, 99, 7, 3]])
    ref = load_model(str(tiny_model), device="cpu")[0](x).logits.float()
    for folder, limit in ((fp8_model, 0.15), (awq_model, 0.5)):
        model = load_model(str(folder), device="cpu")[0]
        err = ((model(x).logits.float() - ref).norm() / ref.norm()).item()
        assert err < limit, (folder.name, err)


def test_sweep_formats_become_jobs_and_paths():
    config = grid.validate(yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text()))
    config["sweeps"] = [{"datasets": ["demo-arith"], "models": ["tiny-qwen3"], "bits": [4, "gptq-4", "awq-4", "fp8", 16],
                         "budgets": [32], "samples": 1, "k": [1]}]
    keys = sorted(j.key for j in grid.jobs(grid.validate(config)))
    assert keys == ["demo-arith/tiny-qwen3/w16/kv-full", "demo-arith/tiny-qwen3/w4/kv-full",
                    "demo-arith/tiny-qwen3/wawq4/kv-full", "demo-arith/tiny-qwen3/wfp8/kv-full"]
    assert [c[2] for c in grid.cells(config)] == ["awq-4", "bf16", "fp8", "gptq-4"]
    assert grid.Job("d", "m", 8, "full") == grid.Job("d", "m", 8, "full", "gptq")  # the paper's bits keep meaning GPTQ
    assert grid.Job("d", "m", 8, "full", "fp8").key == "d/m/wfp8/kv-full"
    config["sweeps"][0]["bits"] = ["awq-8"]
    with pytest.raises(UserError, match=r"sweeps\[0\]\.bits\[0\]"):
        grid.validate(config)
    # every spelling the quantize command's --bits and the workflow's paths use names one format
    for fmt in weights.FORMATS.values():
        assert weights.get(fmt.name) is weights.get(fmt.tag) is weights.by_tag(fmt.tag) is fmt
    assert weights.get("4") is weights.get(4) is weights.FORMATS["gptq-4"] and weights.get("16").method == "bf16"
    with pytest.raises(UserError, match="unknown weight format 'awq8'"):
        weights.get("awq8")


def test_new_quantization_keys_leave_gptq_settings_alone():
    """The quantize rule's settings param per format: GPTQ sees exactly the keys it saw before
    AWQ/FP8 (a new key would rerun every GPTQ checkpoint and all generation after it)."""
    config = grid.validate({**yaml.safe_load((ROOT / "config.yaml").read_text())})
    q = config["quantization"]
    assert "fp8_block" in q
    before = {"group_size", "desc_act", "sym", "damp_percent", "act_group_aware", "calibration"}
    assert set(weights.quantizer_options(weights.get(4), q)) == before
    assert set(weights.quantizer_options(weights.get("awq-4"), q)) == {"group_size", "calibration"}
    assert weights.quantizer_options(weights.get("fp8"), q) == {"fp8_block": 128}


def test_schema_lists_the_formats():
    items = grid.schema()["properties"]["sweeps"]["items"]["properties"]["bits"]["items"]["enum"]
    assert items == list(weights.BY_BITS) + list(weights.FORMATS)


# AutoAWQ's GEMM packing (awq/modules/linear/gemm.py, WQLinear_GEMM.from_linear; vLLM's awq_triton.py
# undoes the same order): nibble i of each int32 holds output column 8 * word + AWQ_ORDER[i].
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def _unpack_awq(packed):
    import torch

    out = torch.zeros(packed.shape[0], packed.shape[1] * 8, dtype=torch.int32)
    for i, column in enumerate(AWQ_ORDER):
        out[:, column::8] = (packed >> (4 * i)) & 0xF
    return out


def test_awq_packing_is_autoawq_order(awq_model):
    """Dequantizing the file by AutoAWQ's published packing order, W = (q - z) * s per group of
    128 inputs, gives exactly the weights the loaded AWQ layer multiplies by (identity input):
    so vLLM's AWQ kernels, which unpack in that order, read the checkpoint right."""
    import torch
    from safetensors.torch import load_file

    from notallbits.generation.hf_backend import load_model

    tensors = load_file(str(awq_model / "model.safetensors"))
    model = load_model(str(awq_model), device="cpu")[0]
    for name in ("self_attn.k_proj", "mlp.down_proj"):
        p = f"model.layers.1.{name}"
        q, z = _unpack_awq(tensors[f"{p}.qweight"]), _unpack_awq(tensors[f"{p}.qzeros"])
        scales = tensors[f"{p}.scales"].float()
        group = torch.arange(q.shape[0]) // 128
        ours = (q - z[group]).float() * scales[group]  # [in, out]
        layer = model.get_submodule(p)
        with torch.no_grad():
            theirs = layer(torch.eye(q.shape[0], dtype=torch.bfloat16)[None])[0].float()
        assert torch.allclose(theirs, ours, rtol=1e-2, atol=1e-3), (name, (theirs - ours).abs().max())
        assert int(q.min()) >= 0 and int(q.max()) <= 15 and 0 < len(q.unique()) <= 16


def test_every_spelling_of_a_format_and_the_refusals():
    """bits 4/8/16 (int or digits) are the paper's GPTQ-4, GPTQ-8 and bf16; a name or a path tag
    is that format; anything else is one line listing what exists."""
    assert [weights.get(b).name for b in (4, 8, 16, "8", "16")] == ["gptq-4", "gptq-8", "bf16", "gptq-8", "bf16"]
    assert weights.get("fp8").name == "fp8" and weights.get("awq4").name == "awq-4"
    for bad in (True, 3, "3", "w4", None, 4.0):
        with pytest.raises(UserError, match=r"unknown weight format .* \(4, 8, 16 or one of gptq-4, gptq-8, bf16, "
                                            r"awq-4, fp8\)$"):
            weights.get(bad)
    with pytest.raises(UserError, match=r"^unknown weight format 'True' "):  # a YAML 'yes' is not a format
        weights.get(True)
    assert weights.by_tag(16).name == "bf16" and weights.by_tag("fp8").name == "fp8"
    with pytest.raises(UserError, match=r"^unknown weight tag 'gptq-4' \(one of 4, 8, 16, awq4, fp8\)$"):
        weights.by_tag("gptq-4")
    assert weights.of("awq", "4").name == "awq-4" and weights.of("bf16", 16).name == "bf16"
    with pytest.raises(UserError, match=r"^no weight format awq at 8 bits \(known: gptq-4, gptq-8, bf16, awq-4, "
                                        r"fp8\)$"):
        weights.of("awq", 8)
    assert [weights.default_method(b) for b in (4, "8", 16, 3)] == ["gptq", "gptq", "bf16", ""]
    assert [f.quantized for f in weights.FORMATS.values()] == [True, True, False, True, True]
    assert weights.METHODS == ("gptq", "bf16", "awq", "fp8")
    assert [(f.bits, f.tag, f.layout, f.calibrated) for f in weights.FORMATS.values()] == [
        (4, "4", "gptq", True), (8, "8", "gptq", True), (16, "16", "native", False), (4, "awq4", "awq", True),
        (8, "fp8", "fp8_block", False)]
