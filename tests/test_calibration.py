"""GPTQ calibration data: the GPTQ authors' window draw, the real corpus loading calls,
the toy's training problems as a never-evaluated set, and leaks refused at config time."""

import copy
import random

import pytest
import yaml

from notallbits import UserError, grid
from notallbits.calibration import calibration_samples
from tests.conftest import ROOT

LINES = [f" = Section {i} = " if i % 7 == 0 else f"The {i}th line of a small corpus, with words and {i * 37} numbers ."
         for i in range(400)]


@pytest.fixture(scope="module")
def tokenizer():
    from notallbits.tinymodel import build_tokenizer

    return build_tokenizer()


def gptq_get_wikitext2(traindata, tokenizer, nsamples, seed, seqlen):
    """IST-DASLab/gptq datautils.py get_wikitext2 (the loop, verbatim but for tensors -> lists)."""
    trainenc = tokenizer("\n\n".join(traindata["text"]))
    random.seed(seed)
    trainloader = []
    for _ in range(nsamples):
        i = random.randint(0, len(trainenc["input_ids"]) - seqlen - 1)
        j = i + seqlen
        trainloader.append(trainenc["input_ids"][i:j])
    return trainloader


def gptq_get_c4(traindata, tokenizer, nsamples, seed, seqlen):
    """IST-DASLab/gptq datautils.py get_c4 (the training loop)."""
    random.seed(seed)
    trainloader = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(traindata) - 1)
            trainenc = tokenizer(traindata[i]["text"])
            if len(trainenc["input_ids"]) > seqlen:
                break
        i = random.randint(0, len(trainenc["input_ids"]) - seqlen - 1)
        j = i + seqlen
        trainloader.append(trainenc["input_ids"][i:j])
    return trainloader


@pytest.mark.parametrize("source, reference, docs", [
    ("wikitext2", gptq_get_wikitext2, LINES),
    ("c4", gptq_get_c4, [" ".join(LINES[i:i + 1 + i % 9]) for i in range(0, 300, 3)]),
])
def test_hub_corpora_are_drawn_as_gptq_draws_them(monkeypatch, tokenizer, source, reference, docs):
    import datasets

    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict({"text": docs})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    got = calibration_samples({"source": source, "samples": 16, "seq_len": 64, "seed": 3}, tokenizer)
    want = reference(datasets.Dataset.from_dict({"text": docs}), tokenizer, 16, 3, 64)
    assert got == want and len(set(map(tuple, got))) > 8
    if source == "wikitext2":
        assert calls == [(("wikitext", "wikitext-2-raw-v1"), {"split": "train"})]
    else:
        assert calls == [(("allenai/c4", None), {"data_files": {"train": "en/c4-train.00000-of-01024.json.gz"},
                                                 "split": "train"})]


def test_local_text_and_jsonl_files(tmp_path, tokenizer):
    txt = tmp_path / "corpus.txt"
    txt.write_text("\n\n".join(LINES))
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("".join(f'{{"text": "{line}"}}\n' for line in LINES))
    settings = {"samples": 8, "seq_len": 32, "seed": 0}
    a = calibration_samples({**settings, "source": str(txt)}, tokenizer)
    b = calibration_samples({**settings, "source": str(jsonl)}, tokenizer)
    assert a == b and all(len(s) == 32 for s in a)
    with pytest.raises(UserError, match=r"corpus.txt has \d+ tokens, not more than seq_len=100000"):
        calibration_samples({**settings, "source": str(txt), "seq_len": 100000}, tokenizer)


def test_toy_train_set_is_what_training_drew():
    from notallbits.data.registry import load
    from notallbits.generation.prompts import build_prompt
    from notallbits.toy.train import char_tokenizer, training_example

    tok = char_tokenizer()
    rng = random.Random(0)  # train-toy --seed 0 draws its examples from this stream
    trained = [training_example(tok, rng) for _ in range(40)]
    problems = load({"loader": "toy_train", "limit": 40})
    for (ids, start), rec in zip(trained, problems):
        assert tok.decode(ids[:start]) == build_prompt(tok, rec, style="toy")
    assert {r["task"] for r in problems} == {"math", "choice"}
    evaluated = load({"loader": "toy_math", "limit": 200})
    assert not {r["question"] for r in problems} & {r["question"] for r in evaluated if len(r["question"]) > 9}


def demo_config():
    return yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["quantization"]["calibration"].update(dataset="toy-math"),
     "config: quantization.calibration.dataset: 'toy-math' is evaluated in sweeps[0] (demo); calibrating on it "
     "leaks the test questions into the quantized model"),
    (lambda c: c["datasets"].update({"toy-train": {"loader": "toy_math", "limit": 100, "prompt_style": "toy"}}),
     "config: quantization.calibration.dataset: 'toy-train' holds the same questions as 'toy-math', evaluated in "
     "sweeps[0] (demo); calibrating on it leaks the test questions"),
    (lambda c: c["quantization"]["calibration"].update(source="nowhere.txt") or c["quantization"]["calibration"].pop(
        "dataset"),
     "config: quantization.calibration.source: 'nowhere.txt' is neither wikitext2, c4, traces nor an existing "
     ".txt/.jsonl file"),
    (lambda c: c["quantization"]["calibration"].pop("dataset"),
     "config: quantization.calibration.dataset: required for source 'traces'"),
])
def test_evaluated_data_is_refused_as_calibration(edit, message):
    config = demo_config()
    edit(config)
    with pytest.raises(UserError) as err:
        grid.validate(config)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_an_evaluated_file_is_refused_as_calibration_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the workflow's directory, where prepare_data writes results/data/
    (tmp_path / "results/data").mkdir(parents=True)
    (tmp_path / "results/data/toy-choice.jsonl").write_text('{"text": "a prepared evaluation set"}\n')
    config = demo_config()
    config["quantization"]["calibration"] = {"source": "results/data/toy-choice.jsonl"}
    with pytest.raises(UserError, match=r"^config: quantization.calibration.source: results/data/toy-choice.jsonl is "
                                        r"dataset 'toy-choice', evaluated in sweeps\[0\] \(demo\); calibrating on it "
                                        r"leaks the test questions$"):
        grid.validate(config)


def test_shipped_configs_calibrate_on_data_no_sweep_evaluates():
    for name in ("config.yaml", "configs/demo.yaml", "configs/tiny.yaml", "configs/demo-vllm.yaml"):
        config = grid.validate(yaml.safe_load((ROOT / name).read_text()))
        cal = config["quantization"]["calibration"]
        assert cal["source"] in ("wikitext2", "traces"), name
        evaluated = {d for s in config["sweeps"] for d in s["datasets"]}
        assert cal.get("dataset") not in evaluated, name
    paper = grid.validate(yaml.safe_load((ROOT / "config.yaml").read_text()))["quantization"]
    assert {k: paper["calibration"][k] for k in ("source", "samples", "seq_len", "seed")} == {
        "source": "wikitext2", "samples": 128, "seq_len": 2048, "seed": 0}
    legacy = copy.deepcopy(demo_config())
    legacy["quantization"] = {"calibration_dataset": "toy-math"}
    with pytest.raises(UserError, match="unknown key 'quantization.calibration_dataset'"):
        grid.validate(legacy)
