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

    for folder in sorted((ROOT / "models" / "toy").iterdir()):
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
