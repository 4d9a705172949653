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


def test_c4_draw_reaches_the_last_document_and_a_window_that_just_fits(monkeypatch, tokenizer):
    """GPTQ's get_c4 draws a document with randint(0, len - 1) (the last one included) and a
    window with randint(0, tokens - seq_len - 1): a document of seq_len + 2 tokens has two."""
    import datasets

    short = "seven words and nothing more than that"
    n_short = len(tokenizer(short)["input_ids"])
    long_doc = " ".join(LINES)[:600]
    ids = tokenizer(long_doc)["input_ids"]
    seq_len = len(ids) - 2
    docs = [short] * 3 + [long_doc]
    assert n_short < seq_len
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_dict({"text": docs}))
    got = calibration_samples({"source": "c4", "samples": 12, "seq_len": seq_len, "seed": 1}, tokenizer)
    want = gptq_get_c4(datasets.Dataset.from_dict({"text": docs}), tokenizer, 12, 1, seq_len)
    assert got == want and sorted({tuple(s) for s in got}) == sorted({tuple(ids[:-2]), tuple(ids[1:-1])})


def test_c4_skips_a_document_of_exactly_seq_len_tokens(monkeypatch, tokenizer):
    """get_c4 keeps drawing until a document has MORE than seq_len tokens: one of exactly
    seq_len tokens is never windowed, every window comes from the longer one."""
    import datasets

    long_doc = " ".join(LINES)[:600]
    ids = tokenizer(long_doc)["input_ids"]
    seq_len = len(ids) - 2
    exact = tokenizer.decode(ids[:seq_len])
    assert len(tokenizer(exact)["input_ids"]) == seq_len
    docs = [exact] * 5 + [long_doc]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_dict({"text": docs}))
    got = calibration_samples({"source": "c4", "samples": 6, "seq_len": seq_len, "seed": 2}, tokenizer)
    assert got == gptq_get_c4(datasets.Dataset.from_dict({"text": docs}), tokenizer, 6, 2, seq_len)
    assert {tuple(s) for s in got} <= {tuple(ids[:-2]), tuple(ids[1:-1]), tuple(ids[2:])}


def test_wikitext_window_of_a_text_one_token_longer_starts_at_0(tmp_path, tokenizer):
    """get_wikitext2: i = randint(0, tokens - seq_len - 1), so a text of seq_len + 1 tokens has
    the one window [0, seq_len)."""
    text = " ".join(LINES)[:300]
    ids = tokenizer(text)["input_ids"]
    (tmp_path / "c.txt").write_text(text)
    got = calibration_samples({"source": str(tmp_path / "c.txt"), "samples": 20, "seq_len": len(ids) - 1,
                               "seed": 5}, tokenizer)
    assert got == [ids[:-1]] * 20
    # a text of exactly seq_len tokens has no window (GPTQ's randint(0, -1) fails): refused in one line
    with pytest.raises(UserError, match=rf"^calibration source {tmp_path}/c.txt has {len(ids)} tokens, not more than "
                                        rf"seq_len={len(ids)}: lower quantization.calibration.seq_len"):
        calibration_samples({"source": str(tmp_path / "c.txt"), "samples": 1, "seq_len": len(ids), "seed": 5},
                            tokenizer)


def test_hub_failure_is_one_line_naming_the_corpus(monkeypatch, tokenizer):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'wikitext' on the Hub (LocalEntryNotFoundError)\nTraceback-like detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as err:
        calibration_samples({"source": "wikitext2", "samples": 1, "seq_len": 8, "seed": 0}, tokenizer)
    assert str(err.value) == ("could not load calibration corpus wikitext: ConnectionError: Couldn't reach 'wikitext' "
                              "on the Hub (LocalEntryNotFoundError) (offline: set quantization.calibration.source to "
                              "a local .txt or .jsonl file)")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(OSError()))
    with pytest.raises(UserError, match=r"^could not load calibration corpus allenai/c4: OSError:  \(offline"):
        calibration_samples({"source": "c4", "samples": 1, "seq_len": 8, "seed": 0}, tokenizer)


def test_calibration_file_errors_name_the_file_and_line(tmp_path, tokenizer):
    settings = {"samples": 1, "seq_len": 4, "seed": 0}

    def error_of(name, content):
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(UserError) as err:
            calibration_samples({**settings, "source": str(path)}, tokenizer)
        return str(err.value).replace(str(tmp_path) + "/", "")

    assert error_of("gone.txt", None) == "calibration file gone.txt does not exist"
    assert error_of("latin1.txt", "caf\u00e9 au lait".encode("latin-1")) == (
        "calibration file latin1.txt: not UTF-8 (byte 3)")
    # line numbers count from 1 and include blank lines
    assert error_of("bad.jsonl", b'{"text": "one"}\n\n{"text": \n').startswith(
        "calibration file bad.jsonl line 3: bad JSON (")
    assert error_of("field.jsonl", b'{"text": "one"}\n{"body": "two"}\n') == (
        "calibration file field.jsonl line 2: needs a string field 'text'")
    assert error_of("list.jsonl", b'["text"]\n') == "calibration file list.jsonl line 1: needs a string field 'text'"
    # UTF-8 text beyond ASCII is read as such; JSONL records' "text" joined by blank lines like a .txt
    (tmp_path / "u.txt").write_text("na\u00efve caf\u00e9 \u2014 " * 40, encoding="utf-8")
    (tmp_path / "u.jsonl").write_text('{"text": "%s"}\n\n' % ("na\u00efve caf\u00e9 \u2014 " * 40), encoding="utf-8")
    a = calibration_samples({**settings, "source": str(tmp_path / "u.txt"), "samples": 3}, tokenizer)
    assert a == calibration_samples({**settings, "source": str(tmp_path / "u.jsonl"), "samples": 3}, tokenizer)


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
    (lambda c: c["sweeps"][0].pop("name") and c["quantization"]["calibration"].update(dataset="toy-math"),
     "config: quantization.calibration.dataset: 'toy-math' is evaluated in sweeps[0]; calibrating on it leaks"),
    (lambda c: c["quantization"]["calibration"].update(source="wikitext2"),
     "config: quantization.calibration.dataset: only read with source 'traces' (source is 'wikitext2')"),
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


def test_the_users_own_question_file_is_refused_as_calibration_text(tmp_path, monkeypatch):
    """A dataset of one's own questions (loader jsonl, path:) is evaluated from its own file too."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.jsonl").write_bytes((ROOT / "examples" / "own-questions.jsonl").read_bytes())
    config = demo_config()
    config["datasets"]["mine"] = {"loader": "jsonl", "path": "mine.jsonl"}
    config["sweeps"][0]["datasets"] = ["mine"]
    config["quantization"]["calibration"] = {"source": str(tmp_path / "mine.jsonl")}
    with pytest.raises(UserError, match=rf"^config: quantization.calibration.source: {tmp_path}/mine.jsonl is dataset "
                                        r"'mine', evaluated in sweeps\[0\] \(demo\); calibrating on it leaks"):
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


def test_calibration_traces_are_the_models_own_sampled_continuations_of_the_questions_cycled(tiny_model, tmp_path):
    import argparse
    import json

    from notallbits import UserError
    from notallbits.calibration_traces import gpus_needed, run
    from notallbits.data.registry import demo_arith
    from notallbits.io import read_jsonl, write_jsonl

    questions = demo_arith(2)
    write_jsonl(tmp_path / "q.jsonl", questions)
    spec = {"model_path": str(tiny_model), "samples": 3, "seq_len": 120, "seed": 0, "temperature": 1.0, "top_p": 1.0,
            "dtype": "float32", "device": "cpu", "batch_size": 2}

    def traces(name, **change):
        run(argparse.Namespace(questions=str(tmp_path / "q.jsonl"), spec=json.dumps({**spec, **change}),
                               out=str(tmp_path / name)))
        return read_jsonl(tmp_path / name)

    got = traces("a.jsonl")
    # 3 samples of 2 questions: the first question again for the third
    assert [r["id"] for r in got] == ["arith-000#0", "arith-001#1", "arith-000#2"]
    for r, q in zip(got, [questions[0], questions[1], questions[0]]):
        assert 1 <= r["generated_tokens"] <= 120 - r["prompt_tokens"]  # prompt and continuation within seq_len
        assert r["text"].startswith("<|im_start|>user\n" + q["question"])  # the chat prompt, then the trace
    assert got[0]["prompt_tokens"] == got[2]["prompt_tokens"] and got[0]["text"] != got[2]["text"]  # other draws
    # the random tiny model rarely samples EOS: a trace of the batch's longest prompt runs to seq_len
    assert max(r["prompt_tokens"] + r["generated_tokens"] for r in got) == 120
    assert traces("b.jsonl") == got  # the seed decides the draws
    # a nucleus of one token (top_p near 0) is greedy decoding: the seed no longer matters
    assert traces("g.jsonl", top_p=1e-6) == traces("h.jsonl", top_p=1e-6, seed=1)
    assert traces("c.jsonl", seed=1) != got
    # the spec's temperature reaches the sampler (the model's own default is 1): the same seed, other draws
    assert traces("t.jsonl", temperature=0.5) != got
    with pytest.raises(UserError, match="not less than seq_len=10"):
        traces("d.jsonl", seq_len=10)
    with pytest.raises(UserError, match="--spec is not valid JSON"):
        run(argparse.Namespace(questions=str(tmp_path / "q.jsonl"), spec="{", out=str(tmp_path / "e.jsonl")))
    # a spec without dtype runs in bfloat16, the checkpoint's own
    run(argparse.Namespace(questions=str(tmp_path / "q.jsonl"), out=str(tmp_path / "nodtype.jsonl"),
                           spec=json.dumps({k: v for k, v in spec.items() if k != "dtype"})))
    assert read_jsonl(tmp_path / "nodtype.jsonl") == traces("bf16.jsonl", dtype="bfloat16")
    import torch

    if not torch.cuda.is_available():  # the spec's device is the one asked for: a GPU this torch cannot use, refused
        with pytest.raises(UserError, match="cannot use CUDA"):
            traces("cuda.jsonl", device="cuda")
    assert [gpus_needed(argparse.Namespace(spec=s)) for s in (json.dumps(spec), json.dumps({**spec, "device": "auto"}),
                                                              "{", "[]")] == [0, 1, 1, 1]


def test_left_padding_leaves_each_trace_as_its_prompt_alone_gets_it(tiny_model, tmp_path):
    """Greedy decoding (a one-token nucleus): a batch of prompts of different lengths, left-padded
    and masked, gives each prompt the trace it gets in a batch of its own. The tokenizer here has
    no pad token, so the padding is EOS (what transformers' generate falls back to)."""
    import json
    import shutil
    import time

    from notallbits import manifest
    from notallbits.calibration_traces import generate_traces
    from notallbits.data.registry import demo_arith
    from notallbits.io import read_jsonl, write_jsonl

    model = tmp_path / "nopad"
    shutil.copytree(tiny_model, model)
    tok_cfg = json.loads((model / "tokenizer_config.json").read_text())
    tok_cfg.pop("pad_token", None)
    (model / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    manifest.write(model)
    questions = demo_arith(2)
    questions[1]["question"] += " Show the carries."
    write_jsonl(tmp_path / "q.jsonl", questions)

    def traces(name, batch_size):
        started = time.perf_counter()
        stats = generate_traces(str(model), str(tmp_path / "q.jsonl"), str(tmp_path / name), 2, 112, 0, 1.0, 1e-6,
                                dtype="float32", device="cpu", batch_size=batch_size)
        assert 0 <= stats["seconds"] <= time.perf_counter() - started + 0.005  # its generation's time, in s
        assert stats["seconds"] == round(stats["seconds"], 2)  # to the hundredth
        return stats, read_jsonl(tmp_path / name)

    stats, batched = traces("b.jsonl", 2)
    assert batched[0]["prompt_tokens"] < batched[1]["prompt_tokens"]  # the first prompt is padded
    assert stats == {"traces": 2, "generated_tokens": sum(r["generated_tokens"] for r in batched),
                     "seconds": stats["seconds"]} and isinstance(stats["seconds"], float) and stats["seconds"] >= 0
    alone = traces("one.jsonl", 1)[1]
    assert alone[1] == batched[1]  # the longest prompt, unpadded either way
    # the padded one: the same greedy tokens, cut where the batch's longest prompt reaches seq_len
    assert alone[0]["text"].startswith(batched[0]["text"]) and alone[0]["generated_tokens"] > batched[0][
        "generated_tokens"] == 112 - batched[1]["prompt_tokens"]


def test_trace_samples_are_the_first_traces_cut_at_seq_len_without_special_tokens(tokenizer, tmp_path):
    from notallbits.io import write_jsonl

    texts = ["<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n<think>\nFour.",
             "<|im_start|>user\nWhat is 3 + 3?<|im_end|>", "<|im_start|>user\nunused<|im_end|>"]
    write_jsonl(tmp_path / "t.jsonl", [{"id": str(i), "text": t} for i, t in enumerate(texts)])
    settings = {"source": "traces", "samples": 2, "seq_len": 6, "seed": 0}
    got = calibration_samples(settings, tokenizer, str(tmp_path / "t.jsonl"))
    # the chat template's own tokens open each trace: nothing added before <|im_start|>
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert len(got) == 2 and all(len(s) == 6 and s[0] == im_start for s in got)
    assert tokenizer.decode(got[1]) == tokenizer.decode(tokenizer.encode(texts[1], add_special_tokens=False)[:6])
    with pytest.raises(UserError, match="3 traces, fewer than quantization.calibration.samples=4"):
        calibration_samples({**settings, "samples": 4}, tokenizer, str(tmp_path / "t.jsonl"))


def test_trace_samples_take_every_trace_and_add_no_bos(tokenizer, tmp_path):
    """As many traces as samples is enough; a tokenizer that opens every encoding with a BOS
    (Llama 3's tokenizer.json: a TemplateProcessing post-processor "<|begin_of_text|> $A")
    adds none to a trace, whose text already starts with the chat template's own tokens."""
    import copy as _copy

    from tokenizers.processors import TemplateProcessing

    from notallbits.io import write_jsonl

    bos_tok = _copy.deepcopy(tokenizer)
    bos = bos_tok.convert_tokens_to_ids("<|endoftext|>")
    bos_tok._tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)])
    assert bos_tok("<|im_start|>user")["input_ids"][0] == bos  # it does add one by default
    texts = ["<|im_start|>user\nWhat is 2 + 2?<|im_end|>", "<|im_start|>user\nWhat is 3 + 3?<|im_end|>",
             "<|im_start|>user\nWhat is 4 + 4?<|im_end|>"]
    write_jsonl(tmp_path / "t.jsonl", [{"id": str(i), "text": t} for i, t in enumerate(texts)])
    got = calibration_samples({"source": "traces", "samples": 3, "seq_len": 5, "seed": 0}, bos_tok,
                              str(tmp_path / "t.jsonl"))
    im_start = bos_tok.convert_tokens_to_ids("<|im_start|>")
    assert len(got) == 3 and all(len(s) == 5 and s[0] == im_start and bos not in s for s in got)


def test_every_key_of_the_workflows_traces_spec_reaches_the_generator(monkeypatch, tmp_path):
    """The calibration_traces rule (rules/common.smk, calibration_traces_spec) writes every key;
    each lands in the generator's parameter of that name, none replaced by a default."""
    import argparse
    import json

    from notallbits import calibration_traces

    calls = []
    monkeypatch.setattr(calibration_traces, "generate_traces", lambda *a, **k: calls.append((a, k)))
    spec = {"model_path": "m", "dataset": "toy-train", "prompt_style": "toy", "samples": 5, "seq_len": 99, "seed": 7,
            "temperature": 0.6, "top_p": 0.95, "dtype": "float32", "device": "cpu", "batch_size": 3}
    calibration_traces.run(argparse.Namespace(questions="q.jsonl", spec=json.dumps(spec), out="t.jsonl"))
    assert calls == [(("m", "q.jsonl", "t.jsonl", 5, 99, 7, 0.6, 0.95, "toy", "float32", "cpu", 3), {})]
    # a hand-written spec without the device runs where a config without generation.device does
    schema = yaml.safe_load((ROOT / "notallbits" / "schemas" / "config.schema.yaml").read_text())
    del spec["device"]
    calibration_traces.run(argparse.Namespace(questions="q.jsonl", spec=json.dumps(spec), out="t.jsonl"))
    assert calls[-1][0][10] == schema["properties"]["generation"]["properties"]["device"]["default"] == "auto"


def test_traces_stop_at_the_checkpoints_eos_and_decode_as_asked(tiny_model, tmp_path):
    """A copy of the tiny model whose generation_config.json names ONE int EOS, the newline
    (the random model's likeliest token after "<think>\n"), and turns sampling off, and whose
    tokenizer adds a BOS by default (Llama 3's post-processor). A trace ends with the checkpoint's
    EOS, included, nothing of the padding after it; prompts get no BOS; the traces are sampled
    whatever the checkpoint says; a prompt of exactly seq_len tokens is refused."""
    import json
    import shutil

    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from notallbits import manifest
    from notallbits.calibration_traces import generate_traces
    from notallbits.data.registry import demo_arith
    from notallbits.generation.prompts import build_prompt
    from notallbits.io import read_jsonl, write_jsonl

    questions = demo_arith(2)
    write_jsonl(tmp_path / "q.jsonl", questions)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompts = [tok.encode(build_prompt(tok, q, "default"), add_special_tokens=False) for q in questions]
    [newline] = tok.encode("\n", add_special_tokens=False)

    def traces(path, name, questions_file="q.jsonl", **kw):
        args = {"samples": 2, "seq_len": 100, "seed": 0, "temperature": 0.2, "top_p": 1.0, "dtype": "float32",
                "device": "cpu", "batch_size": 2, **kw}
        generate_traces(str(path), str(tmp_path / questions_file), str(tmp_path / name), args.pop("samples"),
                        args.pop("seq_len"), args.pop("seed"), args.pop("temperature"), args.pop("top_p"), **args)
        return read_jsonl(tmp_path / name)

    copy = tmp_path / "eos"
    shutil.copytree(tiny_model, copy)
    gen_cfg = json.loads((copy / "generation_config.json").read_text())
    gen_cfg.update(eos_token_id=newline, do_sample=False)
    (copy / "generation_config.json").write_text(json.dumps(gen_cfg))
    bos = tok.convert_tokens_to_ids("<|endoftext|>")
    tok._tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A",
                                                        special_tokens=[("<|endoftext|>", bos)])
    tok.save_pretrained(copy)
    assert AutoTokenizer.from_pretrained(copy)("x")["input_ids"][0] == bos
    manifest.write(copy)
    got = traces(copy, "eos.jsonl")
    # seed 0: the first trace runs to seq_len, the second samples the EOS first (the batch pads it on)
    assert [(r["prompt_tokens"], r["generated_tokens"]) for r in got] == [(len(prompts[0]), 100 - len(prompts[0])),
                                                                         (len(prompts[1]), 1)]
    assert got[1]["text"] == tok.decode(prompts[1] + [newline])  # no BOS, cut after the EOS
    assert got[0]["text"].startswith(tok.decode(prompts[0])) and "<|endoftext|>" not in got[0]["text"]
    # a generation_config without EOS: the tokenizer's EOS (here the newline) ends a trace
    no_eos = tmp_path / "no_eos"
    shutil.copytree(tiny_model, no_eos)
    gen_cfg = json.loads((no_eos / "generation_config.json").read_text())
    gen_cfg["eos_token_id"] = None
    (no_eos / "generation_config.json").write_text(json.dumps(gen_cfg))
    tok_cfg = json.loads((no_eos / "tokenizer_config.json").read_text())
    tok_cfg["eos_token"] = tok.convert_ids_to_tokens(newline)
    (no_eos / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    manifest.write(no_eos)
    assert AutoTokenizer.from_pretrained(no_eos).eos_token_id == newline
    assert [r["generated_tokens"] for r in traces(no_eos, "no_eos.jsonl", samples=1, top_p=1e-6)] == [1]
    # sampled although the checkpoint's generation_config turns sampling off: the seed decides
    assert traces(copy, "s1.jsonl", seed=1) != got
    # the chat prompt in the dataset's style, sample i of a batch is question i
    three = demo_arith(3)
    write_jsonl(tmp_path / "q3.jsonl", three)
    styled = traces(tiny_model, "toy.jsonl", "q3.jsonl", samples=3, batch_size=3, seq_len=60, prompt_style="toy")
    assert [r["id"] for r in styled] == ["arith-000#0", "arith-001#1", "arith-002#2"]
    assert all(r["text"].startswith(build_prompt(tok, q, "toy")) for r, q in zip(styled, three))
    assert build_prompt(tok, questions[0], "toy") != build_prompt(tok, questions[0], "default")
    # no room to generate: a prompt of exactly seq_len tokens is refused
    with pytest.raises(UserError, match=f"a calibration prompt is {len(prompts[0])} tokens, not less than seq_len"):
        traces(tiny_model, "full.jsonl", samples=1, seq_len=len(prompts[0]))
    # each batch draws with torch's seed + its first sample: the third trace (question 0 again,
    # batch start 2) is what seed 2 draws for question 0 alone
    three = traces(tiny_model, "three.jsonl", samples=3, temperature=1.0)
    assert three[2]["text"] == traces(tiny_model, "seed2.jsonl", samples=1, seed=2, temperature=1.0)[0]["text"]


def test_a_trace_of_a_trained_model_is_its_plain_greedy_continuation(tmp_path):
    """toy-l (a model that learned its task), a one-token nucleus: the trace is what greedy
    decoding with plain forward passes of the unpadded prompt (positions 0, 1, 2, ...) gives."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from notallbits.calibration_traces import generate_traces
    from notallbits.data.registry import load
    from notallbits.generation.prompts import build_prompt
    from notallbits.io import read_jsonl, write_jsonl

    toy_l = ROOT / "models" / "toy" / "toy-l"
    questions = load({"loader": "toy_train", "limit": 1})
    write_jsonl(tmp_path / "q.jsonl", questions)
    tok = AutoTokenizer.from_pretrained(toy_l)
    model = AutoModelForCausalLM.from_pretrained(toy_l, dtype=torch.float32).eval()
    ids = tok.encode(build_prompt(tok, questions[0], "toy"), add_special_tokens=False)
    n_prompt = len(ids)
    with torch.inference_mode():
        for _ in range(24):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    generate_traces(str(toy_l), str(tmp_path / "q.jsonl"), str(tmp_path / "t.jsonl"), 1, len(ids), 0, 1.0, 1e-6,
                    "toy", dtype="float32", device="cpu")
    [got] = read_jsonl(tmp_path / "t.jsonl")
    assert len(set(ids[n_prompt:])) > 3  # a real continuation, not one token repeated
    assert got["text"] == tok.decode(ids) and got["generated_tokens"] == 24


def test_traces_sample_from_the_whole_vocabulary_at_top_p_1(tiny_model, tmp_path, monkeypatch):
    """The sampling rule is temperature + top_p only, no top-k cut, also for a checkpoint whose
    generation_config.json sets top_k 20 (as Qwen3's do): at top_p 1 every token of the
    vocabulary has a nonzero probability at every step."""
    import json
    import shutil

    import torch

    from notallbits import manifest
    from notallbits.calibration_traces import generate_traces
    from notallbits.data.registry import demo_arith
    from notallbits.io import write_jsonl

    write_jsonl(tmp_path / "q.jsonl", demo_arith(1))
    support = []
    real = torch.multinomial

    def spy(probs, *args, **kwargs):
        support.append(int((probs > 0).sum(-1).min()))
        return real(probs, *args, **kwargs)

    model = tmp_path / "topk"
    shutil.copytree(tiny_model, model)
    gen_cfg = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**gen_cfg, "top_k": 20}))
    manifest.write(model)
    monkeypatch.setattr(torch, "multinomial", spy)
    generate_traces(str(model), str(tmp_path / "q.jsonl"), str(tmp_path / "t.jsonl"), 1, 60, 0, 1.0, 1.0,
                    dtype="float32", device="cpu")
    vocab = json.loads((tiny_model / "config.json").read_text())["vocab_size"]
    assert len(support) > 1 and set(support) == {vocab}
