"""Your own questions and model (docs/own-data.md): the jsonl loader's fields, and a model of a
known family sized by its own facts, never by a silent default."""

import json
import re

import pytest
import yaml

from notallbits import UserError, grid, plan
from notallbits.data.registry import jsonl
from notallbits.memory import GIB, Arch, weight_bytes
from notallbits.modelarch import arch_of
from notallbits.scoring import extract_letter, extract_math, is_correct
from tests.conftest import ROOT, run_snakemake

EXAMPLE = ROOT / "examples" / "own-questions.jsonl"

# Qwen/Qwen2.5-1.5B-Instruct's published config.json (the fields sizing reads, as published)
QWEN25_15B_INSTRUCT = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960,
    "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
    "tie_word_embeddings": True, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
    "torch_dtype": "bfloat16",
}


def _config(tmp_path, models: dict) -> dict:
    return {"models": models, "datasets": {"mine": {"loader": "jsonl", "path": str(EXAMPLE)}},
            "sweeps": [{"name": "s", "datasets": ["mine"], "models": list(models), "bits": [16], "kv": ["full"],
                        "budgets": [32], "samples": 1, "k": [1]}]}


# ---------------------------------------------------------------- your own questions


def test_the_worked_example_scores_by_hand():
    """Each choice record is judged by its own letter (Canberra is B, 29 is C) with no
    permutation in the file; integers and LaTeX fractions by value."""
    records = {r["id"]: r for r in jsonl({"path": str(EXAMPLE)})}
    assert len(records) == 5
    capital, prime = records["capital-1"], records["prime-1"]
    assert [is_correct(letter, capital) for letter in "ABCD"] == [False, True, False, False]
    assert [is_correct(letter, prime) for letter in "ABCD"] == [False, False, True, False]
    assert is_correct(extract_letter("so the answer is \\boxed{B}", 4), capital)
    assert is_correct(extract_math("\\boxed{42}"), records["sum-1"])
    assert is_correct(extract_math("\\boxed{0.75}"), records["frac-1"])
    assert not is_correct(extract_math("\\boxed{41}"), records["sum-1"])


def test_numbers_and_ids_written_as_json_numbers_are_read_as_text(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": 7, "task": "math", "question": "6 x 7?", "answer": 42}) + "\n")
    (rec,) = jsonl({"path": str(path)})
    assert (rec["id"], rec["answer"]) == ("7", "42")
    assert is_correct(extract_math("\\boxed{42}"), rec)


def test_a_permutation_that_contradicts_the_answer_is_refused_at_start_up(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "a", "task": "choice", "question": "?", "choices": ["x", "y"], "answer": "A",
                                "permutation": [1, 0]}) + "\n")
    cfg = _config(tmp_path, {"tiny": {"source": "results/models/tiny/w16", "build": "tiny"}})
    cfg["datasets"]["mine"]["path"] = str(path)
    with pytest.raises(UserError, match=r"datasets\.mine\.path: .*record 1: 'permutation' must"):
        grid.validate(cfg)


def test_missing_task_is_named(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "a", "question": "?", "answer": "1"}) + "\n")
    with pytest.raises(UserError, match="record 1: missing field 'task'"):
        jsonl({"path": str(path)})


def test_the_schema_describes_the_fields_of_a_jsonl_dataset():
    description = grid.schema()["properties"]["datasets"]["additionalProperties"]["properties"]["path"]["description"]
    for field in ("id", "task", "question", "answer", "choices", "tests"):
        assert re.search(rf"\b{field}\b", description), field


def test_the_own_data_page_lists_what_the_loader_requires():
    from notallbits.data.registry import REQUIRED_FIELDS, TASKS

    page = (ROOT / "docs" / "own-data.md").read_text()
    for field in REQUIRED_FIELDS:
        assert f"| `{field}` | yes |" in page, field
    for task in TASKS:
        assert f"`{task}`" in page, task


# ---------------------------------------------------------------- your own model


def test_a_hub_model_without_facts_stops_at_start_up_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    cfg = _config(tmp_path, {"q25": {"source": "Qwen/Qwen2.5-1.5B-Instruct"}})
    with pytest.raises(UserError) as err:
        grid.validate(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("config: models.q25: no architecture facts for 'Qwen/Qwen2.5-1.5B-Instruct'")
    assert "hf download Qwen/Qwen2.5-1.5B-Instruct config.json" in message


def test_a_local_folder_is_sized_from_its_own_config(tmp_path):
    """Qwen2.5-1.5B-Instruct's card: 1.54B parameters, 1.31B without the (tied) embedding."""
    folder = tmp_path / "my-qwen25"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN25_15B_INSTRUCT))
    cfg = grid.validate(_config(tmp_path, {"mine": {"source": str(folder)}}))
    arch = plan.model_arch(cfg, "mine")
    assert round(arch.params / 1e9, 2) == 1.54
    assert round((arch.params - arch.vocab * arch.hidden) / 1e9, 2) == 1.31
    assert (arch.layers, arch.kv_heads, arch.head_dim, arch.qkv_bias, arch.qk_norm) == (28, 2, 128, True, False)


def test_a_downloaded_hub_config_is_read_from_the_cache(tmp_path, monkeypatch):
    """huggingface_hub's cache layout: models--ORG--NAME/refs/main -> snapshots/<commit>/."""
    cache = tmp_path / "hub"
    repo = cache / "models--Qwen--Qwen2.5-1.5B-Instruct"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text(json.dumps(QWEN25_15B_INSTRUCT))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    cfg = grid.validate(_config(tmp_path, {"q25": {"source": "Qwen/Qwen2.5-1.5B-Instruct"}}))
    assert round(plan.model_arch(cfg, "q25").params / 1e9, 2) == 1.54


def test_a_config_of_an_unknown_family_is_refused(tmp_path):
    folder = tmp_path / "gpt2ish"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**QWEN25_15B_INSTRUCT, "model_type": "gpt2"}))
    with pytest.raises(UserError, match=r"models\.m\.source: .*model_type 'gpt2' is not a known family"):
        grid.validate(_config(tmp_path, {"m": {"source": str(folder)}}))


# The published config.json of each Qwen/Qwen2.5-<size>-Instruct, the reference model that
# nvidia/OpenReasoning-Nemotron-<size> is post-trained from (its model card): hidden, intermediate,
# layers, attention heads, KV heads, vocabulary, tied embeddings
QWEN25_INSTRUCT_CONFIGS = {
    "1.5B": (1536, 8960, 28, 12, 2, 151936, True),
    "7B": (3584, 18944, 28, 28, 4, 152064, False),
    "14B": (5120, 13824, 48, 40, 8, 152064, False),
    "32B": (5120, 27648, 64, 40, 8, 152064, False),
}


@pytest.mark.parametrize("size", list(QWEN25_INSTRUCT_CONFIGS))
def test_openreasoning_nemotron_facts_are_the_published_qwen25_configs(size):
    cfg = grid.load(ROOT / "configs" / "openreasoning-nemotron.yaml")
    name = f"OpenReasoning-Nemotron-{size}"
    arch = arch_of(name, cfg["models"][name])
    assert (arch.hidden, arch.intermediate, arch.layers, arch.heads, arch.kv_heads, arch.vocab,
            arch.tied) == QWEN25_INSTRUCT_CONFIGS[size]
    assert (arch.head_dim, arch.qkv_bias, arch.qk_norm) == (128, True, False)  # the qwen2 family


def test_openreasoning_nemotron_parameter_counts():
    """Qwen2.5-1.5B-Instruct's card: 1.54B parameters, 1.31B non-embedding; the GGUF of
    nvidia/OpenReasoning-Nemotron-32B (Ollama's listing): 32.8B."""
    cfg = grid.load(ROOT / "configs" / "openreasoning-nemotron.yaml")
    small = arch_of("OpenReasoning-Nemotron-1.5B", cfg["models"]["OpenReasoning-Nemotron-1.5B"])
    large = arch_of("OpenReasoning-Nemotron-32B", cfg["models"]["OpenReasoning-Nemotron-32B"])
    assert round(small.params / 1e9, 2) == 1.54
    assert round((small.params - small.vocab * small.hidden) / 1e9, 2) == 1.31
    assert round(large.params / 1e9, 1) == 32.8


def test_openreasoning_nemotron_config_plans_every_model_by_its_own_size():
    cfg = grid.load(ROOT / "configs" / "openreasoning-nemotron.yaml")
    sizes = {m: weight_bytes(plan.model_arch(cfg, m), 16) / GIB for m in cfg["models"]}
    assert sorted(sizes, key=sizes.get) == [f"OpenReasoning-Nemotron-{s}" for s in ("1.5B", "7B", "14B", "32B")]
    assert 60 < sizes["OpenReasoning-Nemotron-32B"] < 62  # 32.8B parameters with its untied lm_head, x 2 B


def test_built_models_are_sized_by_their_recipe_before_they_exist(tmp_path):
    from notallbits.tinymodel import TINY_ARCH

    arch = arch_of("tiny", {"source": str(tmp_path / "not-built"), "build": "tiny"})
    assert (arch.hidden, arch.layers, arch.kv_heads) == (TINY_ARCH["hidden_size"], TINY_ARCH["num_hidden_layers"],
                                                         TINY_ARCH["num_key_value_heads"])
    assert weight_bytes(arch, 16) < 2**20 < weight_bytes(Arch.named("Qwen3-0.6B"), 16)


def test_the_rules_ask_a_32b_model_for_its_memory(tmp_path):
    """A generation job's host-memory request follows the model's bf16 weights (rules/common.smk):
    OpenReasoning-Nemotron-32B's 61 GiB, where an unknown model used to get a small default."""
    cfg = yaml.safe_load((ROOT / "configs" / "openreasoning-nemotron.yaml").read_text())
    cfg["datasets"] = {"mine": {"loader": "jsonl", "path": str(EXAMPLE)}}
    cfg["sweeps"] = [{"name": "s", "datasets": ["mine"], "models": ["OpenReasoning-Nemotron-32B"], "bits": [16],
                      "kv": ["full"], "budgets": [32], "samples": 1, "k": [1]}]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = run_snakemake(tmp_path / "w", path, "-n", "results/generations/mine/OpenReasoning-Nemotron-32B/w16/"
                        "kv-full.jsonl").stdout
    mem_mb = int(re.search(r"rule generate:.*?mem_mb=(\d+)", out, re.DOTALL).group(1))
    assert mem_mb >= 1024 * 1.25 * 60
