"""Issue 13, "nothing silently wrong": question identity, readable outputs, errors that name
the file, checkpoint manifests. Each test here failed on the main branch before the fix."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from notallbits import UserError
from notallbits.data.prepare import read_questions
from notallbits.generation.run import generate
from notallbits.io import atomic_dir, atomic_path, read_framed_jsonl, write_framed_jsonl, write_jsonl, write_text

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "\n\n**Final Answer**\n\\boxed{"


def make_spec(model, budgets=(8,), samples=2):
    return {"dataset": "demo", "model": "tiny", "model_path": str(model), "bits": 16, "kv": "full",
            "kv_settings": {"method": "full"}, "backend": "transformers", "budgets": list(budgets),
            "samples": samples, "sampling": {"temperature": 0.6, "top_p": 0.95, "seed": 0},
            "generation": {"wait_extension": True, "wait_text": "Wait", "answer_prefix": PREFIX,
                           "answer_max_tokens": 4, "batch_size": 8, "dtype": "float32", "device": "cpu"}}


def question(qid, text):
    return {"id": qid, "task": "math", "question": text, "choices": None, "answer": "3", "permutation": None}


def by_question(path):
    _, records = read_framed_jsonl(path)
    out = {}
    for r in records:
        out.setdefault(r["question_id"], []).append(r)
    return out


def cli(*args, cwd=None, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "notallbits", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env)


# ------------------------------------------------------------------ 1. question identity
def test_ids_that_sanitize_alike_keep_their_own_traces(tiny_model, tmp_path):
    """`x y` and `x_y` shared one progress file: the second question reused the first's
    traces (and was scored against its own gold). Each must get what it gets alone."""
    both = tmp_path / "both.jsonl"
    write_jsonl(both, [question("x y", "What is 1 + 2?"), question("x_y", "What is 40 - 37?")])
    alone = tmp_path / "alone.jsonl"
    write_jsonl(alone, [question("x_y", "What is 40 - 37?")])
    generate(str(both), make_spec(tiny_model), str(tmp_path / "both.out"), str(tmp_path / "p1"))
    generate(str(alone), make_spec(tiny_model), str(tmp_path / "alone.out"), str(tmp_path / "p2"))
    assert by_question(tmp_path / "both.out")["x_y"] == by_question(tmp_path / "alone.out")["x_y"]
    files = sorted(f.name for f in (tmp_path / "p1").rglob("*.json") if f.name != "identity.json")
    assert len(files) == 2 and all(f.startswith("x_y.") for f in files)  # readable, yet distinct


def test_progress_of_an_edited_question_is_not_reused(tiny_model, tmp_path, capsys):
    """Same id, different prompt (the dataset was edited): the stored traces answer the old
    question and must not be reused."""
    path = tmp_path / "q.jsonl"
    write_jsonl(path, [question("q1", "What is 1 + 2?")])
    generate(str(path), make_spec(tiny_model), str(tmp_path / "old.out"), str(tmp_path / "p"))
    write_jsonl(path, [question("q1", "What is 40 - 37?")])
    capsys.readouterr()
    generate(str(path), make_spec(tiny_model), str(tmp_path / "new.out"), str(tmp_path / "p"))
    assert "written for a different prompt of question 'q1': regenerating" in capsys.readouterr().err
    generate(str(path), make_spec(tiny_model), str(tmp_path / "fresh.out"), str(tmp_path / "fresh"))
    assert by_question(tmp_path / "new.out") == by_question(tmp_path / "fresh.out")


def test_duplicate_ids_are_one_line_naming_both_records(tmp_path):
    path = tmp_path / "q.jsonl"
    write_jsonl(path, [question("a", "1?"), question("b", "2?"), question("a", "3?")])
    with pytest.raises(UserError, match=r"q.jsonl: records 1 and 3 have the same id 'a'"):
        read_questions(str(path))
    spec = json.dumps({"loader": "jsonl", "path": str(path)})
    proc = cli("prepare-data", "--spec", spec, "--out", tmp_path / "out.jsonl")
    assert proc.returncode == 2 and not (tmp_path / "out.jsonl").exists()
    assert proc.stderr.strip().splitlines() == [
        f"notallbits prepare-data: error: {path}: records 1 and 3 have the same id 'a' "
        "(question ids must be unique within a dataset)"]


# ------------------------------------------------------------------ 3. permissions
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_follow_the_umask(tmp_path, umask):
    """mkstemp/mkdtemp made every atomic output 0600 and model folders 0700."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_framed_jsonl(tmp_path / "g.jsonl", {}, [{"i": 1}])
        with atomic_path(tmp_path / "s.csv", suffix=".csv") as tmp:
            pd.DataFrame({"a": [1]}).to_csv(tmp, index=False)
        with atomic_path(tmp_path / "f.png", suffix=".png") as tmp:
            fig = plt.figure()
            fig.savefig(tmp, format="png")
            plt.close(fig)
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "config.json").write_text("{}")
            (tmp / "sub").mkdir()
            # a writer that renames its own private temporary file into place (as safetensors does)
            fd = os.open(tmp / "sub" / "w.bin", os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
    finally:
        os.umask(old)
    for name in ("a.txt", "g.jsonl", "s.csv", "f.png", "model/config.json", "model/sub/w.bin"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == oct(0o666 & ~umask), name
    for name in ("model", "model/sub"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == oct(0o777 & ~umask), name


def test_built_checkpoint_files_follow_the_umask(tiny_model):
    """transformers writes model.safetensors 0600; the folder came out 0700."""
    mask = os.umask(0o022)
    os.umask(mask)
    assert tiny_model.stat().st_mode & 0o777 == 0o777 & ~mask
    for f in tiny_model.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f.name


@pytest.mark.slow
def test_gptq_checkpoints_are_readable_and_carry_a_manifest(gptq_models):
    """GPTQModel's folder came out 0700 (mkdtemp); the manifest is written with it."""
    from notallbits import manifest

    mask = os.umask(0o022)
    os.umask(mask)
    for folder in gptq_models.values():
        assert folder.stat().st_mode & 0o777 == 0o777 & ~mask
        assert all(f.stat().st_mode & 0o777 == 0o666 & ~mask for f in folder.iterdir()), folder
        assert manifest.verify(folder, hashes=False)
        assert json.loads((folder / manifest.MANIFEST).read_text()) == manifest.build(folder)


# ------------------------------------------------------------------ 5. errors that name the file
def test_bad_json_names_its_real_line(tmp_path):
    path = tmp_path / "g.jsonl"
    write_framed_jsonl(path, {}, [{"i": i} for i in range(5)])
    lines = path.read_text().splitlines()
    lines[4] = lines[4][:5]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"g.jsonl: truncated or corrupt \(bad JSON at line 5: "):
        read_framed_jsonl(path)
    path.write_bytes(b'{"_header": {}}\n\xff\xfe\x00binary\n')
    with pytest.raises(UserError, match=r"g.jsonl: not UTF-8 text \(byte 0xff at line 2\)"):
        read_framed_jsonl(path)


@pytest.mark.parametrize("content", [b"\x00\xff\xfe garbage \x89PNG", b'{"samples": 3}', b"[1, 2]",
                                     b'{"question_id": "q1", "samples": [{"sample": 0}]}'])
def test_damaged_progress_is_regenerated_with_a_log_line(tiny_model, tmp_path, capsys, content):
    """Decision: a progress file is a cache of traces, so an unreadable one is a cache miss
    (regenerate, say so in the log), not a traceback and not an error to clean up by hand."""
    path = tmp_path / "q.jsonl"
    write_jsonl(path, [question("q1", "What is 1 + 2?")])
    generate(str(path), make_spec(tiny_model), str(tmp_path / "a.out"), str(tmp_path / "p"))
    (stored,) = [f for f in (tmp_path / "p").rglob("q1.*.json")]
    stored.write_bytes(content)
    capsys.readouterr()
    generate(str(path), make_spec(tiny_model), str(tmp_path / "b.out"), str(tmp_path / "p"))
    err = capsys.readouterr().err
    assert f"progress: {stored}: unreadable" in err and "regenerating question 'q1'" in err
    assert by_question(tmp_path / "a.out") == by_question(tmp_path / "b.out")
    assert json.loads(stored.read_text())["question_id"] == "q1"  # rewritten whole


def _copy(model, dest):
    shutil.copytree(model, dest)
    return dest


def test_truncated_checkpoint_is_one_line_naming_the_file(tiny_model, tmp_path):
    """A truncated model.safetensors failed with SafetensorError and no path, and a rerun
    never noticed it (the folder exists). Now the generate job's last log line says it."""
    from notallbits import manifest

    model = _copy(tiny_model, tmp_path / "w16")
    assert manifest.verify(model) is True
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    q = tmp_path / "q.jsonl"
    write_jsonl(q, [question("q1", "What is 1 + 2?")])
    log = tmp_path / "job.log"
    with open(log, "w") as fh:  # as the rule runs it: stdout and stderr into the log
        proc = subprocess.run([sys.executable, "-m", "notallbits", "generate", "--questions", str(q),
                               "--spec", json.dumps(make_spec(model)), "--out", str(tmp_path / "g.jsonl"),
                               "--progress", str(tmp_path / "p")], stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert log.read_text().splitlines()[-1] == (
        f"notallbits generate: error: {model}: file model.safetensors is corrupt or incomplete (size differs "
        f"from its manifest: {weights.stat().st_size} bytes, not {weights.stat().st_size + 1000}): "
        "delete this folder and rerun")


def test_same_size_corruption_is_found_by_hash_once_per_file_version(tiny_model, tmp_path, monkeypatch):
    from notallbits import manifest

    model = _copy(tiny_model, tmp_path / "w16")
    hashed = []
    real = manifest.sha256
    monkeypatch.setattr(manifest, "sha256", lambda p, *a: hashed.append(Path(p).name) or real(p, *a))
    assert manifest.verify(model) and "model.safetensors" in hashed
    hashed.clear()
    assert manifest.verify(model) and hashed == []  # unchanged files: sizes only
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # same size, different bytes: a fresh file version
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"w16: file model.safetensors is corrupt or incomplete "
                                        r"\(size/hash differ from its manifest\): delete this folder and rerun"):
        manifest.verify(model)
    assert not any(p.name.endswith(".verified.json") for p in model.iterdir())  # the folder is left alone


def test_missing_file_and_loader_paths_check_the_manifest(tiny_model, tmp_path):
    from notallbits.generation.hf_backend import load_model
    from notallbits.generation.run import model_facts

    model = _copy(tiny_model, tmp_path / "w16")
    (model / "tokenizer.json").unlink()
    for load in (lambda: load_model(str(model), "float32", "cpu"), lambda: model_facts(str(model))):
        with pytest.raises(UserError, match=r"file tokenizer.json is corrupt or incomplete \(missing"):
            load()


def test_shipped_toy_models_match_their_manifests():
    from notallbits import manifest

    # folders only: verified-hash sidecars (.<name>.verified.json) lie beside them once a job has loaded a toy
    for folder in sorted(p for p in (ROOT / "models" / "toy").iterdir() if p.is_dir()):
        assert (folder / manifest.MANIFEST).exists(), folder
        assert manifest.verify(folder, hashes=False)
        assert json.loads((folder / manifest.MANIFEST).read_text()) == manifest.build(folder), folder


def test_unexpected_error_is_the_last_log_line(tmp_path):
    """A failing job's console line is its log's last line: it was the tqdm bar or the
    traceback's tail; it is now the error itself."""
    code = ("import sys; from tqdm import tqdm; from notallbits import cli\n"
            "mod = type(sys)('boom'); mod.add_arguments = lambda p: None\n"
            "def run(args):\n    bar = tqdm(total=10, file=sys.stderr); bar.update(3); raise RuntimeError('disk full')\n"
            "mod.run = run; sys.modules['boom'] = mod; cli.SUBCOMMANDS['boom'] = ('boom', 'x')\n"
            "sys.exit(cli.main(['boom']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert proc.stderr.splitlines()[-1] == ("notallbits boom: error: unexpected RuntimeError: disk full "
                                            "(traceback above)")


# ------------------------------------------------------------------ 6. inputs checked at start-up
SMALL = """\
models:
  mine: {source: MODEL}
datasets:
  mine: {loader: jsonl, path: DATA}
sweeps:
  - {datasets: [mine], models: [mine], bits: [16], budgets: [32], samples: 1, k: [1]}
"""


def small_config(tmp_path, model="Qwen/Qwen3-0.6B", data="questions.jsonl"):
    path = tmp_path / "config.yaml"
    path.write_text(SMALL.replace("MODEL", model).replace("DATA", data))
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # config paths are relative to the workflow's directory
    write_jsonl(tmp_path / "questions.jsonl", [question("q1", "What is 1 + 2?")])
    return tmp_path


@pytest.mark.parametrize("setup, message", [
    (lambda d: (d / "questions.jsonl").unlink(),
     "config: datasets.mine.path: questions.jsonl: file does not exist"),
    (lambda d: (d / "questions.jsonl").write_bytes(b'{"id": "q\xe9"}\n'),
     "config: datasets.mine.path: questions.jsonl: not UTF-8 text (byte 0xe9 at line 1)"),
    (lambda d: (d / "questions.jsonl").write_text('{"id": "q1"}\n'),
     "config: datasets.mine.path: questions.jsonl record 1: missing field 'task'"),
])
def test_jsonl_dataset_is_checked_at_start_up(in_tmp, setup, message):
    """It was an InputFunctionException traceback from the runtime estimator (or the first job)."""
    from notallbits import grid

    setup(in_tmp)
    with pytest.raises(UserError) as err:
        grid.load(small_config(in_tmp))
    assert str(err.value) == message


@pytest.mark.parametrize("source, message", [
    ("models/mine", "config: models.mine.source: model path 'models/mine' does not exist (read as a local path, "
                    "not a hub id, because models/ is a folder here)"),
    ("./mine/w16", "config: models.mine.source: model path './mine/w16' does not exist"),
    ("a/b/c", "config: models.mine.source: 'a/b/c' is neither a local folder nor a hub id (owner/name)"),
])
def test_local_model_path_is_not_taken_for_a_hub_id(in_tmp, source, message):
    """`models/mine` (one slash) was taken for a hub id and failed at the first job with
    "couldn't connect"."""
    from notallbits import grid

    (in_tmp / "models").mkdir()
    with pytest.raises(UserError) as err:
        grid.load(small_config(in_tmp, model=source))
    assert str(err.value) == message
    (in_tmp / "models" / "mine").mkdir()  # an existing folder wins, as does anything hub-shaped
    with pytest.raises(UserError, match="folder 'models/mine' has no config.json"):  # what sizes its jobs
        grid.load(small_config(in_tmp, model="models/mine"))
    (in_tmp / "models" / "mine" / "config.json").write_text(json.dumps(
        {"model_type": "qwen3", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 512}))
    grid.load(small_config(in_tmp, model="models/mine"))
    grid.load(small_config(in_tmp, model="Qwen/Qwen3-0.6B"))


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  mine: {source: Qwen/Qwen3-0.6B}\ndatasets:\n  mine: [1, 2\nsweeps: []\n")
    proc = cli("plan", bad)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"notallbits plan: error: {bad}:5:7: not valid YAML (expected ',' or ']', but got ':', "
        "while parsing a flow sequence)"]


def test_malformed_default_config_names_file_and_line(tmp_path):
    """Snakemake's own message named neither the file nor the line."""
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text() + "oops: [1, 2\n  x: y\n")
    exe = shutil.which("snakemake", path=os.path.dirname(sys.executable)) or "snakemake"
    proc = subprocess.run([exe, "-s", str(ROOT / "Snakefile"), "-n", "--cores", "1"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0
    n = len((ROOT / "config.yaml").read_text().splitlines())
    assert f"error: config.yaml:{n + 2}:4: not valid YAML" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--kv", "hqq", "--kv-nbits", "3"], "KV method hqq: nbits must be 2, 4 or 8, got 3"),
    (["--kv", "streamingllm", "--kv-budget", "-100"], "KV method streamingllm: budget -100 must exceed sink 4"),
    (["--kv", "rkv", "--kv-budget", "-100"], "KV method rkv: budget -100 must exceed the observation window 8"),
])
def test_memory_rejects_impossible_kv_settings(args, message):
    """`--kv-budget -100` printed -0.01 GiB of KV; `--kv-nbits 3` was accepted."""
    proc = cli("memory", "--model", "Qwen3-8B", "--budget", "4096", *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"notallbits memory: error: {message}"]


def test_advise_reads_a_parquet_summary(tmp_path):
    """`advise --summary summary.parquet` (aggregate writes one) was read as CSV: a traceback."""
    import pandas as pd

    from tests.test_analysis import row

    table = pd.DataFrame([row("Qwen3-4B", 4, 2.0, 2000, 1, 0.3, 0.20), row("Qwen3-8B", 8, 8.9, 2000, 1, 0.3, 0.40)])
    table.to_parquet(tmp_path / "summary.parquet")
    table.to_csv(tmp_path / "summary.csv", index=False)
    outs = [cli("advise", "--memory", "12GiB", "--dataset", "aime25", "--json", "--summary", tmp_path / name)
            for name in ("summary.parquet", "summary.csv")]
    assert [p.returncode for p in outs] == [0, 0] and outs[0].stdout == outs[1].stdout
    (tmp_path / "x.parquet").write_text("model,bits\n")
    proc = cli("advise", "--memory", "12GiB", "--dataset", "aime25", "--summary", tmp_path / "x.parquet")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(f"notallbits advise: error: {tmp_path / 'x.parquet'}: not a readable Parquet "
                                  "summary table (")
