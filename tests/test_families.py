"""Other reasoning-model families by config alone: tiny random Qwen3, Qwen2 and Llama checkpoints
through the memory model, the KV caches (StreamingLLM logits, R-KV on the model's real queries)
and budget forcing markers from the tokenizer."""

import json

import pytest
import torch

from notallbits import UserError
from notallbits.families import FAMILIES
from notallbits.memory import Arch, checkpoint_bytes, weight_bytes

FAMILY_NAMES = ["qwen3", "qwen2", "llama"]


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    from notallbits.tinymodel import build

    root = tmp_path_factory.mktemp("families")
    return {f: build(root / f, family=f) for f in FAMILY_NAMES}


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_checkpoint_is_the_family_and_memory_model_is_exact(family_models, family):
    cfg = json.loads((family_models[family] / "config.json").read_text())
    assert cfg["model_type"] == family
    arch = Arch.named(str(family_models[family]))
    assert arch.qk_norm is FAMILIES[family].qk_norm and arch.qkv_bias is (family == "qwen2")
    assert weight_bytes(arch, 16) == checkpoint_bytes(family_models[family])


def recorded_queries(model, family):
    """The post-RoPE queries the model itself computes, recorded from its own modeling module."""
    import importlib

    mod = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    seen = []
    original = mod.apply_rotary_pos_emb

    def spy(q, k, cos, sin, *args, **kwargs):
        out = original(q, k, cos, sin, *args, **kwargs)
        seen.append(out[0])
        return out

    return mod, original, spy, seen


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_rkv_captures_the_models_real_queries(family_models, family):
    from notallbits.kvcache import make_cache

    model = load(family_models[family])
    settings = {"method": "rkv", "budget": 16, "buffer": 8, "window": 8}
    cache = make_cache(settings, model)
    mod, original, spy, seen = recorded_queries(model, family)
    mod.apply_rotary_pos_emb = spy
    try:
        ids = torch.randint(10, 300, (2, 12), generator=torch.Generator().manual_seed(3))
        model(input_ids=ids, past_key_values=cache, position_ids=torch.arange(12)[None])
    finally:
        mod.apply_rotary_pos_emb = original
    layers = model.config.num_hidden_layers
    assert len(seen) == layers
    for i in range(layers):
        torch.testing.assert_close(cache.layers[i].recent_queries, seen[i][..., -8:, :], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_streamingllm_equals_full_attention_on_kept_positions(family_models, family):
    from transformers import DynamicCache

    from notallbits.kvcache import make_cache

    model = load(family_models[family])
    ids = torch.randint(10, 300, (2, 61), generator=torch.Generator().manual_seed(0))
    prompt, nxt = ids[:, :60], ids[:, 60:61]

    def step(cache, x, start):
        return model(input_ids=x, past_key_values=cache, position_ids=torch.arange(start, start + x.shape[1])[None]).logits[:, -1]

    cache = make_cache({"method": "streamingllm", "budget": 24, "sink": 4}, model)
    step(cache, prompt, 0)
    got = step(cache, nxt, 60)
    full = DynamicCache(config=model.config)
    step(full, prompt, 0)
    kept = list(range(4)) + list(range(40, 60))
    ref = DynamicCache(config=model.config)
    for i, layer in enumerate(full.layers):
        ref.update(layer.keys[:, :, kept], layer.values[:, :, kept], i)
    torch.testing.assert_close(got, step(ref, nxt, 60), rtol=1e-5, atol=1e-5)


def test_thinking_markers_come_from_the_tokenizer(family_models):
    from transformers import AutoTokenizer

    from notallbits.generation.forcing import ForcingSpec

    tok = AutoTokenizer.from_pretrained(family_models["llama"])
    spec = ForcingSpec.from_tokenizer(tok, [8], "Wait", "\n**Final Answer**\n\\boxed{", 4)
    assert spec.end_think_id == tok.convert_tokens_to_ids("</think>")
    assert tok.convert_tokens_to_ids("<|im_end|>") in spec.eos_ids  # the model's own end id


def test_a_tokenizer_without_thinking_markers_is_refused_in_one_line(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from notallbits.generation.forcing import ForcingSpec

    raw = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "<eos>": 2}, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>")
    with pytest.raises(UserError, match="has no </think> token"):
        ForcingSpec.from_tokenizer(tok, [8], "Wait", "x", 4)


def test_unknown_family_is_named():
    from notallbits.families import family_of

    with pytest.raises(UserError, match="model_type 'mamba' is not a known family"):
        family_of({"model_type": "mamba"}, "x/config.json")


@pytest.mark.slow
def test_tiny_qwen2_and_llama_through_the_whole_chain(tmp_path):
    """configs/tiny-families.yaml end to end: GPTQ 4-bit, full cache, StreamingLLM, R-KV and HQQ on a
    Qwen2 and a Llama checkpoint; measured weight bytes = the memory model's; vLLM too where present."""
    import pandas as pd

    from notallbits.io import read_framed_jsonl
    from tests.conftest import ROOT, run_snakemake, vllm_python

    cfg = ROOT / "configs" / "tiny-families.yaml"
    run_snakemake(tmp_path, cfg)
    summary = pd.read_csv(tmp_path / "results/tiny-families/summary.csv")
    assert set(summary["model"]) == {"tiny-qwen2", "tiny-llama"}
    assert set(summary["kv"]) == {"full", "streaming-24", "rkv-24", "hqq-4bit"}
    for model in ("tiny-qwen2", "tiny-llama"):
        arch = Arch.named(str(tmp_path / "results/models" / model / "w16"))
        for bits in (4, 16):
            measured = summary[(summary["model"] == model) & (summary["bits"] == bits)]["weight_bytes"].unique()
            assert list(measured) == [weight_bytes(arch, bits)], (model, bits)
    for gen in (tmp_path / "results/generations").rglob("*.jsonl"):
        header, records = read_framed_jsonl(gen)
        assert all(r["thinking_tokens"] == r["budget_tokens"] for r in records if r["forced"]), gen
    vllm = vllm_python()
    if vllm is None:
        pytest.skip("no vLLM interpreter for the vLLM half")
    import shutil

    # the same checkpoints (copied with their times: nothing is rebuilt), full-cache cells through vLLM
    for part in ("models", "data"):
        shutil.copytree(tmp_path / "results" / part, tmp_path / "vllm/results" / part, symlinks=True)
    targets = [f"results/tiny-families-vllm/scores/demo-arith/{m}/w{b}/kv-full.csv" for m in ("tiny-qwen2", "tiny-llama") for b in (4, 16)]
    import yaml

    config = yaml.safe_load(cfg.read_text())
    config["generation"]["backend"] = "vllm"
    config["interpreters"] = {"generate_vllm": vllm}
    vllm_cfg = tmp_path / "tiny-families-vllm.yaml"
    vllm_cfg.write_text(yaml.safe_dump(config))
    run_snakemake(tmp_path / "vllm", vllm_cfg, *targets)
    for target in targets:
        scores = pd.read_csv(tmp_path / "vllm" / target)
        assert set(scores["backend"]) == {"vllm"} and len(scores) == 2 * 2, target


def test_schema_family_enum_is_the_family_table():
    from notallbits.grid import schema

    enum = schema()["properties"]["models"]["additionalProperties"]["properties"]["family"]["enum"]
    assert enum == list(FAMILIES)


# The keys of public config.json files that decide the bias tensors (Qwen2.5-7B-Instruct,
# Qwen3-8B, Llama-3.1-8B-Instruct as published): Qwen2 always has q/k/v biases and no key for
# it; Qwen3 and Llama have attention_bias false.
QWEN25_7B = {"model_type": "qwen2", "hidden_size": 3584, "num_attention_heads": 28, "num_key_value_heads": 4,
             "num_hidden_layers": 28, "intermediate_size": 18944, "vocab_size": 152064, "tie_word_embeddings": False}
LLAMA31_8B = {"model_type": "llama", "attention_bias": False, "hidden_size": 4096, "num_attention_heads": 32,
              "num_key_value_heads": 8, "num_hidden_layers": 32, "intermediate_size": 14336, "vocab_size": 128256,
              "tie_word_embeddings": False, "head_dim": 128}


def test_bias_and_norm_tensors_follow_the_family_and_its_config():
    """Qwen2.5-7B holds 7,615,616,512 parameters (its model card's 7.61B: 28 layers of q/k/v
    biases 3584 + 2 x 512 included); Llama-3.1-8B 8,030,261,248 (8.03B, no biases); with
    attention_bias true Llama gains 32 x (4096 + 2 x 1024) bias values."""
    from notallbits.families import family_of

    assert family_of(QWEN25_7B).has_qkv_bias(QWEN25_7B) is True
    assert family_of(LLAMA31_8B).has_qkv_bias(LLAMA31_8B) is False
    assert family_of({**LLAMA31_8B, "attention_bias": True}).has_qkv_bias({"attention_bias": True}) is True
    assert FAMILIES["qwen3"].has_qkv_bias({}) is False and FAMILIES["qwen3"].qk_norm
    assert Arch.from_hf_config(QWEN25_7B).params == 7_615_616_512
    assert Arch.from_hf_config(LLAMA31_8B).params == 8_030_261_248
    biased = Arch.from_hf_config({**LLAMA31_8B, "attention_bias": True})
    assert biased.params - 8_030_261_248 == 32 * (4096 + 2 * 1024)
    # a decoder of no known family: no q/k norm, biases as its config states
    other = Arch.from_hf_config({**LLAMA31_8B, "model_type": "mistral"})
    assert other.params == 8_030_261_248 and not other.qk_norm
    assert Arch.from_hf_config({**LLAMA31_8B, "model_type": "mistral", "attention_bias": True}).qkv_bias


def test_family_of_names_the_file_and_the_known_families():
    from notallbits.families import family_of

    assert family_of({"model_type": "qwen2"}) is FAMILIES["qwen2"]
    with pytest.raises(UserError, match=r"^config\.json: model_type None is not a known family "
                                        r"\(known: qwen3, qwen2, llama; add one in notallbits/families\.py\)$"):
        family_of({})
