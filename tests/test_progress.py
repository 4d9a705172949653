"""Progress files (notallbits/generation/progress.py): one file per question id, found again by
a resumed job, and distinct for ids a file system would fold into one name."""

import hashlib
import json
import os
import unicodedata

import pytest

from notallbits.generation.forcing import SampleResult
from notallbits.generation.progress import (ProgressStore, model_fingerprint, progress_name, prompt_digest,
                                            trace_key)


def sha12(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def folded(name: str) -> set[str]:
    """What file systems may turn a name into: case-folded (macOS/Windows defaults), Unicode
    normalised (APFS/HFS+ compare NFD, ZFS with normalization=formD), trailing dots and spaces
    dropped (Windows/SMB)."""
    forms = {name, name.casefold(), name.rstrip(". ")}
    forms |= {unicodedata.normalize(f, n) for f in ("NFC", "NFD", "NFKC", "NFKD") for n in list(forms)}
    return forms | {n.casefold().rstrip(". ") for n in forms}


# ids that differ only in ways a file system folds
FOLDED_IDS = ["Q1", "q1", "aime-2025-I-1", "AIME-2025-i-1", "café", "cafe\u0301", "ﬁle", "file", "x.", "x", "x ",
              "x. ", "x y", "x_y", "x/y", "x\\y", "..", ".", "", "I", "ı", "İ", "i", "ß", "ss", "SS",
              "\u212b", "\u00c5", "\u2126", "\u03a9",  # Angstrom/Ohm signs: one character each, NFC turns them into Å/Ω
              "a" * 300,
              "a" * 300 + "b"]


def test_progress_name_is_the_readable_id_and_twelve_hex_digits_of_its_sha256():
    """The naming is part of the progress format: a resumed job (another release) must find the
    files an earlier one wrote. Readable part: ASCII letters, digits, '-', '_', '.' kept, any
    other character '_', at most 60 characters, no leading dot (else 'q'); then the first 12
    hex digits of SHA-256 of the exact UTF-8 id."""
    assert progress_name("aime25-7") == f"aime25-7.{sha12('aime25-7')}.json"
    assert progress_name("x y/z") == f"x_y_z.{sha12('x y/z')}.json"
    assert progress_name("café") == f"caf_.{sha12('café')}.json"
    assert progress_name("..hidden") == f"hidden.{sha12('..hidden')}.json"
    assert progress_name("...") == f"q.{sha12('...')}.json"
    assert progress_name(".X-1") == f"X-1.{sha12('.X-1')}.json"
    assert progress_name("") == f"q.{sha12('')}.json"
    long = "LiveCodeBench/" + "x" * 100
    assert progress_name(long) == f"LiveCodeBench_{'x' * 46}.{sha12(long)}.json"


def test_ids_a_file_system_folds_together_keep_files_apart():
    """No two ids share a name in any folded form, and every name is a plain portable file name
    (ASCII, no separator, not hidden, short enough for every file system)."""
    names = [progress_name(q) for q in FOLDED_IDS]
    owners: dict[str, str] = {}
    for qid, name in zip(FOLDED_IDS, names):
        assert name.isascii() and "/" not in name and "\\" not in name and not name.startswith(".")
        assert len(name.encode()) <= 255 and name == name.rstrip(". ") and name.endswith(".json")
        for form in folded(name):
            assert owners.setdefault(form, qid) == qid, f"{qid!r} and {owners[form]!r} fold to {form!r}"


def sample(i: int, token: int) -> SampleResult:
    return SampleResult(sample=i, seed=100 + i, thinking_ids=[token, token + 1], wait_positions=[1],
                        natural_end=None, natural_answer=[], answers={8: [token], 16: [token, 2]})


def test_store_keeps_folded_ids_apart_on_disk(tmp_path):
    store = ProgressStore(tmp_path, {"model": "m", "bits": 4})
    for n, qid in enumerate(FOLDED_IDS):
        store.save(qid, {0: sample(0, n), 1: sample(1, n)}, prompt_ids=[n, 7])
    assert len(list(store.dir.glob("*.json"))) == len(FOLDED_IDS) + 1  # + identity.json
    for n, qid in enumerate(FOLDED_IDS):
        loaded = store.load(qid, prompt_ids=[n, 7])
        assert loaded == {0: sample(0, n), 1: sample(1, n)}  # answers' budgets back as ints
        assert list(loaded[0].answers) == [8, 16]


def test_store_rejects_a_file_of_another_id_prompt_or_a_damaged_one(tmp_path, capsys):
    store = ProgressStore(tmp_path, {"model": "m"})
    store.save("Q1", {0: sample(0, 5)}, prompt_ids=[1, 2])
    assert store.load("Q1", [1, 2]) == {0: sample(0, 5)}
    assert store.load("Q1", [1, 2, 3]) == {}  # another prompt (a template change)
    assert "different prompt" in capsys.readouterr().err
    # a file holding another id under this id's name (copied in by hand, a hash collision)
    (store.dir / progress_name("q1")).write_text((store.dir / progress_name("Q1")).read_text())
    assert store.load("q1", [1, 2]) == {}
    assert "holds question 'Q1', not 'q1'" in capsys.readouterr().err
    for damage in ("{", '{"samples": []}', '{"question_id": "Q1", "samples": [{"sample": 0}]}', "\xff", "[]",
                   '{"question_id": "Q1", "samples": [{"answers": [1]}]}', '{"question_id": "Q1", "samples": [1]}',
                   '{"question_id": "Q1", "samples": [{"answers": {}, "sample": 0, "extra": 1}]}'):
        (store.dir / progress_name("Q1")).write_text(damage, encoding="latin-1")
        assert store.load("Q1", [1, 2]) == {}
        assert "unreadable" in capsys.readouterr().err
    assert store.load("never", [1]) == {} and capsys.readouterr().err == ""  # absent: a plain miss


def test_store_folder_is_the_identity_without_key_order(tmp_path):
    a = ProgressStore(tmp_path, {"model": "m", "bits": 4, "kv": {"method": "full"}})
    b = ProgressStore(tmp_path, {"kv": {"method": "full"}, "bits": 4, "model": "m"})
    c = ProgressStore(tmp_path, {"model": "m", "bits": 8, "kv": {"method": "full"}})
    assert a.dir == b.dir != c.dir and a.dir.parent == tmp_path
    assert a.dir.name == hashlib.sha256(b'{"bits": 4, "kv": {"method": "full"}, "model": "m"}').hexdigest()[:16]
    assert (a.dir / "identity.json").read_text() == (
        '{\n "bits": 4,\n "kv": {\n  "method": "full"\n },\n "model": "m"\n}\n')  # for people: sorted, indented
    assert trace_key({"a": 1}) != trace_key({"a": 2})
    assert prompt_digest([1, 2]) == hashlib.sha256(b"[1, 2]").hexdigest()[:16] != prompt_digest([2, 1])


def test_model_fingerprint_follows_file_names_sizes_and_times(tmp_path):
    assert model_fingerprint("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"  # a hub id stands for itself
    (tmp_path / "a.bin").write_bytes(b"12")
    (tmp_path / "sub").mkdir()  # folders are not files of the checkpoint
    first = model_fingerprint(str(tmp_path))
    assert len(first) == 16 and model_fingerprint(str(tmp_path)) == first
    st = (tmp_path / "a.bin").stat()
    (tmp_path / "a.bin").write_bytes(b"13")  # same size, new content, time put back
    os.utime(tmp_path / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert model_fingerprint(str(tmp_path)) == first  # (cheap identity: same name, size, time)
    os.utime(tmp_path / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    second = model_fingerprint(str(tmp_path))
    assert second != first
    (tmp_path / "b.bin").write_bytes(b"")
    os.utime(tmp_path / "b.bin", ns=(0, 7))
    assert model_fingerprint(str(tmp_path)) not in (first, second)
    # the identity stored progress is filed under: "name:bytes:mtime_ns" per file, sorted, one a line
    listing = f"a.bin:2:{st.st_mtime_ns + 1}\nb.bin:0:7"
    assert model_fingerprint(str(tmp_path)) == hashlib.sha256(listing.encode()).hexdigest()[:16]
    (tmp_path / "b.bin").unlink()
    (tmp_path / "a.bin").write_bytes(b"123")
    os.utime(tmp_path / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert model_fingerprint(str(tmp_path)) != second  # size


@pytest.mark.parametrize("qid", ["Q1", "q1", "café", "cafe\u0301"])
def test_saved_file_carries_the_exact_id_and_prompt_digest(tmp_path, qid):
    store = ProgressStore(tmp_path, {"model": "m"})
    store.save(qid, {1: sample(1, 3), 0: sample(0, 4)}, prompt_ids=[9])
    data = json.loads((store.dir / progress_name(qid)).read_text(encoding="utf-8"))
    assert data["question_id"] == qid and data["prompt_sha256"] == prompt_digest([9])
    assert [s["sample"] for s in data["samples"]] == [0, 1]  # sorted by sample
    # compact: token ids are most of a progress file (32 samples x 30k tokens), a space after
    # every comma would add a sixth
    text = (store.dir / progress_name(qid)).read_text(encoding="utf-8")
    assert '"thinking_ids":[4,5]' in text and ", " not in text and ": " not in text


def test_store_folder_is_made_with_its_parents(tmp_path):
    store = ProgressStore(tmp_path / "results" / "progress", {"model": "m"})
    assert store.dir.parent == tmp_path / "results" / "progress" and (store.dir / "identity.json").exists()
