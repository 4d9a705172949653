"""Config validation and the cell grid, against the paper's published grid."""

import copy
import json

import pytest
import yaml

from notallbits import UserError, grid
from tests.conftest import ROOT


@pytest.fixture
def paper():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_paper_grid_counts(paper):
    assert [s["name"] for s in paper["sweeps"]] == ["main", "kv-compression", "extended-tasks", "prm-best-of-n",
                                                    "weight-methods"]
    whole = grid.validate(copy.deepcopy(paper))  # what `notallbits grid config.yaml` reports
    # weight-methods: AWQ-4 and FP8 x 2 datasets x 6 models x 4 budgets x K in {1, 8}; its GPTQ/bf16
    # cells are main's (budgets and K a subset, fewer samples), so no existing job changes
    assert len(grid.cells(whole)) == 4608 + 1944 + 576 + 2 * 2 * 6 * 4 * 2 == 7320
    assert len(grid.jobs(whole)) == 36 + 324 + 36 + 2 * 2 * 6 == 420
    without = grid.jobs(grid.validate({**paper, "sweeps": paper["sweeps"][:4]}))
    assert all(grid.jobs(whole)[job] == spec for job, spec in without.items())
    # PRM Best-of-N scores the main sweep's AIME25 traces: no cell of K or generation job of its own
    verified = [j for j, s in grid.jobs(whole).items() if s.verifiers]
    assert len(verified) == 6 * 3 and all(grid.jobs(whole)[j].verifiers == ["actprm-x"] for j in verified)
    assert {(j.dataset, j.kv) for j in verified} == {("aime25", "full")}
    extended = grid.validate({**paper, "sweeps": paper["sweeps"][2:3]})
    # MATH-500 and LiveCodeBench: 2 datasets x 6 models x 3 precisions x 4 budgets x 4 vote counts
    assert len(grid.cells(extended)) == 2 * 6 * 3 * 4 * 4 and len(grid.jobs(extended)) == 2 * 6 * 3
    assert grid.generation_settings(extended, "livecodebench")["answer_prefix"] == "\n\n```python\n"
    paper["sweeps"] = paper["sweeps"][:2]
    kv = grid.validate(paper)
    # KV sweep: 2 datasets x 6 models x 4/8/16-bit weights x 9 KV settings x 3 budgets x K in {1, 8}
    assert len(grid.cells(kv)) == 4608 + 2 * 6 * 3 * 9 * 3 * 2 == 6552
    assert len(grid.jobs(kv)) == 36 + 2 * 6 * 3 * 9 == 360
    assert all(s.backend == "transformers" for j, s in grid.jobs(kv).items() if j.kv != "full")
    assert {j.bits for j in grid.jobs(kv) if j.kv != "full"} == {4, 8, 16}  # KV methods x weight precision
    paper["sweeps"] = paper["sweeps"][:1]
    config = grid.validate(paper)
    # 2 datasets x 6 models x 3 precisions x 8 budgets (2k..30k step 4k) x 16 vote counts
    assert len(grid.cells(config)) == 2 * 6 * 3 * 8 * 16
    jobs = grid.jobs(config)
    assert len(jobs) == 2 * 6 * 3  # one generation job serves all budgets and K
    spec = jobs[grid.Job("aime25", "Qwen3-8B", 4, "full")]
    assert spec.budgets == list(range(2000, 30001, 4000))
    assert spec.samples == 32 and spec.ks == list(range(1, 17))  # Maj@K for every K = 1..16


def test_defaults_filled(paper):
    config = grid.validate(paper)
    assert config["sampling"] == {"temperature": 0.6, "top_p": 0.95, "seed": 0}
    assert config["generation"]["wait_extension"] is True
    assert config["interpreters"]["generate_vllm"] == "python"


def test_union_of_sweeps_merges_jobs(paper):
    paper["sweeps"] = paper["sweeps"][:1]
    paper["sweeps"].append({"datasets": ["aime25"], "models": ["Qwen3-8B"], "bits": [4], "budgets": [1000, 2000],
                            "samples": 40, "k": [32]})
    config = grid.validate(paper)
    spec = grid.jobs(config)[grid.Job("aime25", "Qwen3-8B", 4, "full")]
    assert spec.budgets[:2] == [1000, 2000] and spec.samples == 40 and 32 in spec.ks
    assert len(grid.cells(config)) == 4608 + 2  # new cells: (1000, K=32) and (2000, K=32)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.update(bogus=1), "unknown key 'bogus'"),
    (lambda c: c.update(bogus=["1", "2"]), "unknown key 'bogus'"),  # a list the schema says nothing of
    (lambda c: c["sampling"].update(temprature=0.5), "unknown key 'sampling.temprature'"),
    (lambda c: c["sweeps"][0].update(bits=[4, 5]), "sweeps[0].bits[1]: 5 is not one of [4, 8, 16, 'gptq-4', 'gptq-8', 'bf16', 'awq-4', 'fp8']"),
    (lambda c: c["sweeps"][0].update(budgets=[0, 2000]), "sweeps[0].budgets[0]: 0 is less than the minimum of 1"),
    (lambda c: c["sweeps"][0].update(k=[1, 64]), "sweeps[0].k: K=64 exceeds samples=32"),
    (lambda c: c["sweeps"][0].update(models=["Qwen3-7B"]), "sweeps[0].models: unknown name 'Qwen3-7B'"),
    (lambda c: c["sweeps"][0].update(datasets=["aime24"]), "sweeps[0].datasets: unknown name 'aime24'"),
    (lambda c: c["sweeps"][0].update(kv=["full", "snapkv"]), "sweeps[0].kv: unknown name 'snapkv'"),
    (lambda c: c["kv_methods"].update(tight={"method": "rkv", "budget": 8}),
     "kv_methods.tight: KV method rkv: budget 8 must exceed the observation window 8"),
    (lambda c: c["sweeps"][0].update(selection=["majority", "prm_best_of_n"]),
     "sweeps[0].verifier: required for selection prm_best_of_n"),
    (lambda c: c["models"].update(t1={"source": "models/toy/other", "build": "toy"}),
     "models.t1.source: a toy model is built at 'models/toy/t1'"),
    (lambda c: c["models"].update(built={"source": "results/models/built", "build": "tiny"},
                                  local={"source": "/no/such/model"}),
     "models.local.source: model path '/no/such/model' does not exist"),
    (lambda c: c["verifiers"].update(built={"source": "results/verifiers/built", "build": "tiny"},
                                     local={"source": "./no/such/prm"}),
     "verifiers.local.source: model path './no/such/prm' does not exist"),
    (lambda c: c["datasets"].update(mine={"loader": "jsonl"}), "datasets.mine.path: required for loader 'jsonl'"),
    (lambda c: c["sweeps"][0].update(samples="1.5"), "sweeps[0].samples: '1.5' is not of type 'integer'"),
    (lambda c: c["sweeps"][0].update(bits=["5"]), "sweeps[0].bits[0]: '5' is not one of"),
    (lambda c: c["models"].update(mine={"source": "Qwen/Qwen3-8B", "architecture": "Qwen3-9B"}),
     "models.mine.architecture: no offline facts named 'Qwen3-9B'"),
    (lambda c: c["models"].update(local={"source": "/no/such/model"}), "models.local.source: model path '/no/such/model' does not exist"),
])
def test_bad_config_one_line(paper, mutate, message):
    paper.setdefault("sampling", {})
    bad = copy.deepcopy(paper)
    mutate(bad)
    with pytest.raises(UserError) as err:
        grid.validate(bad)
    text = str(err.value)
    assert message in text and "\n" not in text


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_validates(path):
    config = grid.load(ROOT / "configs" / path)
    assert grid.jobs(config)


def test_r1_distill_is_another_family_by_config_alone():
    from notallbits.memory import Arch

    config = grid.load(ROOT / "configs" / "r1-distill.yaml")
    assert {j.model for j in grid.jobs(config)} == {"R1-Distill-Qwen-1.5B", "R1-Distill-Qwen-7B",
                                                     "R1-Distill-Qwen-14B", "R1-Distill-Qwen-32B"}
    arch = Arch.named(config["models"]["R1-Distill-Qwen-7B"]["architecture"])
    assert arch.qkv_bias and not arch.qk_norm and arch.kv_heads == 4  # Qwen2 attention


def test_bad_yaml_names_file_line_and_column(tmp_path):
    # line 3 is "sweeps: []": its ":" (column 7) is where PyYAML finds the flow mapping unclosed
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  x: {a: 1\nsweeps: []\n")
    with pytest.raises(UserError) as err:
        grid.load_yaml(path)
    assert str(err.value) == (f"{path}:3:7: not valid YAML (expected ',' or '}}', but got ':', "
                              f"while parsing a flow mapping)")
    with pytest.raises(UserError, match="config file does not exist"):
        grid.load_yaml(tmp_path / "missing.yaml")


def test_config_that_is_not_a_mapping_names_the_top_level():
    with pytest.raises(UserError, match=r"^config: <top level>: \[1\] is not of type 'object'"):
        grid.validate([1])


def test_sweep_without_kv_is_the_full_cache():
    sweep = {"datasets": ["d"], "models": ["m"], "bits": [16, 4], "budgets": [100], "k": [1]}
    assert grid.cells({"sweeps": [sweep]}) == [("d", "m", "bf16", "full", 100, 1), ("d", "m", "gptq-4", "full", 100, 1)]


def test_grid_command_lists_the_jobs(tmp_path, capsys):
    import argparse

    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    config["sweeps"] = config["sweeps"][:1]  # demo: 2 datasets x 3 weight formats, full cache
    path = tmp_path / "one-sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    grid.run(argparse.Namespace(config=str(path), json=True))
    listed = json.loads(capsys.readouterr().out)
    assert sorted((j["dataset"], j["bits"], j["kv"]) for j in listed) == [
        (d, b, "full") for d in ("demo-arith", "demo-choice") for b in (4, 8, 16)]
    assert all(j["budgets"] == [32, 64, 128] and j["samples"] == 4 and j["k"] == [1, 2, 4]
               and j["model"] == "tiny-qwen3" and j["verifiers"] == [] and j["backend"] == "transformers"
               for j in listed)
    grid.run(argparse.Namespace(config=str(path), json=False))
    assert capsys.readouterr().out.splitlines()[0] == "54 cells, 6 generation jobs"  # 6 jobs x 3 budgets x 3 K


def test_defaults_filled_inside_named_entries():
    """The schema's defaults of each named model, dataset and verifier (additionalProperties)."""
    config = grid.load(ROOT / "configs" / "tiny.yaml")
    assert config["models"]["tiny-qwen3"]["family"] == "qwen3" and config["models"]["tiny-qwen3"]["gpus"] == 1
    demo = config["datasets"]["demo-arith"]
    assert (demo["shuffle_seed"], demo["prompt_style"], demo["shards"]) == (0, "default", 1)
    assert demo["limit"] == 6  # stated in the file: not overwritten
    assert config["verifiers"]["tiny-prm"]["aggregation"] == "min"


def test_own_dataset_with_a_repeated_id_names_the_file(tmp_path, paper):
    path = tmp_path / "mine.jsonl"
    rec = {"id": "q1", "task": "math", "question": "1 + 1?", "answer": "2"}
    path.write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    paper["datasets"]["mine"] = {"loader": "jsonl", "path": str(path)}
    with pytest.raises(UserError) as err:
        grid.validate(paper)
    assert str(err.value).startswith(f"config: datasets.mine.path: {path}: records 1 and 2 have the same id 'q1'")


def test_command_line_text_is_read_as_the_schema_types_it():
    """`snakemake --config` hands nested values over as text (YAML's BaseLoader)."""
    got = grid.coerce_strings({"models": {"m": {"source": "Qwen/Qwen3-8B", "gpus": "2"}},
                               "sweeps": [{"samples": "4", "budgets": ["1000", "2000"], "bits": ["16", "fp8"]}],
                               "hub": {"cache": "null"}}, grid.schema())
    assert got["models"]["m"] == {"source": "Qwen/Qwen3-8B", "gpus": 2}  # a named entry's keys too
    assert got["sweeps"] == [{"samples": 4, "budgets": [1000, 2000], "bits": [16, "fp8"]}]
    assert got["hub"]["cache"] == "null"  # typed text (or null): text stays text
    assert grid.coerce_strings("'a'", {"enum": ["a", "b"]}) == "'a'"  # an enum of text: as written
    # YAML 1.1's booleans are not numbers: "yes" where an integer is wanted stays text (the
    # validator then names the key), where a boolean is wanted it is one
    assert grid.coerce_strings("yes", {"type": "integer"}) == "yes"
    assert grid.coerce_strings("true", {"type": ["integer", "null"]}) == "true"
    assert grid.coerce_strings("yes", {"type": "boolean"}) is True


def test_of_several_errors_the_shallowest_is_named(paper):
    bad = {**paper, "bogus": 1, "sweeps": [{**paper["sweeps"][0], "budgets": [0]}]}
    with pytest.raises(UserError, match="unknown key 'bogus'"):
        grid.validate(bad)


def test_yaml_error_without_a_position_names_the_file(tmp_path):
    """PyYAML's reader refuses control characters with a ReaderError, which has no problem_mark,
    problem or context (only its message, whose first line says what): the line names the file."""
    path = tmp_path / "bell.yaml"
    path.write_text("models:\n  x: 1\x07\n")
    with pytest.raises(UserError) as err:
        grid.load_yaml(path)
    assert str(err.value) == f"{path}: not valid YAML (unacceptable character #x0007: special characters are not allowed)"


def test_snakefile_exits_with_the_yaml_error_line(tmp_path):
    """exit_on_bad_yaml (the Snakefile's first check) stops with "error: <file>:<line>:<col>: ..." on
    bad YAML, and lets a good or missing config file through (Snakemake reports a missing one)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  x: {a: 1\nsweeps: []\n")
    with pytest.raises(SystemExit) as exc:
        grid.exit_on_bad_yaml(bad)
    assert exc.value.code == (f"error: {bad}:3:7: not valid YAML (expected ',' or '}}', but got ':', "
                              f"while parsing a flow mapping)")
    good = tmp_path / "good.yaml"
    good.write_text("models: {}\n")
    assert grid.exit_on_bad_yaml(good) is None and grid.exit_on_bad_yaml(tmp_path / "missing.yaml") is None


@pytest.mark.parametrize("src", ["../no/such/model", "~/no/such/model"])
def test_a_source_written_as_a_relative_or_home_path_is_a_missing_folder(src):
    """'../x' and '~/x' are paths (the hub's ids are owner/name), so a missing one is a missing folder."""
    assert grid.model_source_problem(src) == f"model path {src!r} does not exist"


def test_an_empty_config_file_names_the_first_missing_key(tmp_path):
    """An empty YAML file reads as None: the config it stands for is empty, missing 'models'."""
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    with pytest.raises(UserError, match=r"^config: <top level>: 'models' is a required property$"):
        grid.load(path)


def test_the_schema_has_the_shape_the_default_filling_relies_on():
    """_fill_defaults walks "type: object" properties, arrays' items and additionalProperties the way
    snakemake.utils.validate(set_default=True) does; the equivalent mutants listed for it rest on
    this shape: no object is also typed as something else, no object has both properties and an
    additionalProperties schema, every array states its items, no schema without a type has
    properties, items or an additionalProperties schema, and the only defaults that are non-empty
    containers are lists of text."""
    def walk(node, path):
        if isinstance(node, list):
            for i, item in enumerate(node):
                yield from walk(item, f"{path}[{i}]")
        if not isinstance(node, dict):
            return
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")

    for path, node in walk(grid.schema(), ""):
        kind = node.get("type")
        assert not isinstance(kind, list) or not {"object", "array"} & set(kind), path
        if kind == "array":
            assert "items" in node, path
        if "properties" in node:
            assert not isinstance(node.get("additionalProperties"), dict), path
        if kind is None:
            assert not {"properties", "items"} & set(node) and not isinstance(node.get("additionalProperties"), dict), path
        default = node.get("default") if isinstance(node.get("default"), (list, dict)) else None
        if default:
            assert isinstance(default, list) and all(isinstance(v, str) for v in default), path
