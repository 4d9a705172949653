import json

import pytest

from notallbits import UserError
from notallbits.io import read_framed_jsonl, write_framed_jsonl


def test_roundtrip_and_truncation(tmp_path):
    path = tmp_path / "g.jsonl"
    write_framed_jsonl(path, {"a": 1}, [{"i": i} for i in range(5)])
    header, records = read_framed_jsonl(path)
    assert header == {"a": 1} and [r["i"] for r in records] == list(range(5))
    lines = path.read_text().splitlines()
    (tmp_path / "cut.jsonl").write_text("\n".join(lines[:4]) + "\n")  # footer lost
    with pytest.raises(UserError, match="truncated"):
        read_framed_jsonl(tmp_path / "cut.jsonl")
    (tmp_path / "half.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:7])  # cut mid-line
    with pytest.raises(UserError, match="truncated or corrupt"):
        read_framed_jsonl(tmp_path / "half.jsonl")
    fake = lines[:3] + [json.dumps({"_footer": {"records": 5}})]
    (tmp_path / "lie.jsonl").write_text("\n".join(fake) + "\n")
    with pytest.raises(UserError, match="2 records, footer says 5"):
        read_framed_jsonl(tmp_path / "lie.jsonl")


def test_failed_write_leaves_nothing(tmp_path):
    def records():
        yield {"i": 0}
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_framed_jsonl(tmp_path / "g.jsonl", {}, records())
    assert list(tmp_path.iterdir()) == []


def test_read_text_names_the_file_and_the_problem(tmp_path):
    from notallbits.io import read_text

    with pytest.raises(UserError, match=r"^\S+/nope\.yaml: config file does not exist$"):
        read_text(tmp_path / "nope.yaml", "config file")
    with pytest.raises(UserError, match=r"^\S+: is a folder, not a file$"):
        read_text(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("line 1\nline 2\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1\.txt: not UTF-8 text \(byte 0xe9 at line 3\)$"):
        read_text(tmp_path / "latin1.txt")
    (tmp_path / "ok.txt").write_bytes("café\n".encode())
    assert read_text(tmp_path / "ok.txt") == "café\n"


def test_framed_file_without_a_header_or_empty_is_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match=r"empty\.jsonl: empty file$"):
        read_framed_jsonl(empty)
    for first in ('{"i": 0}', "[1, 2]", '"_header"'):
        path = tmp_path / "plain.jsonl"
        path.write_text(first + '\n{"_footer": {"records": 0}}\n')
        with pytest.raises(UserError, match=r"plain\.jsonl: missing header line \(not a notallbits file\?\)$"):
            read_framed_jsonl(path)
    path.write_text('{"_header": {}}\n{"i": 1}\n[3]\n')
    with pytest.raises(UserError, match=r"truncated \(no footer line; the job that wrote it did not finish\)$"):
        read_framed_jsonl(path)
    path.write_text('{"_header": {"a": 1}}\n{"_footer": {}}\n')
    with pytest.raises(UserError, match=r"truncated \(0 records, footer says None\)$"):
        read_framed_jsonl(path)
    path.write_text('{"_header": {"a": 1}}\n{"_footer": {"records": 0}}\n')
    assert read_framed_jsonl(path) == ({"a": 1}, [])
    path.write_text('{"_header": {}}\n{"i": 1}\n{"i": \n{"_footer": {"records": 2}}\n')
    with pytest.raises(UserError, match=r"plain\.jsonl: truncated or corrupt \(bad JSON at line 3: Expecting value\): "
                                        r"delete it and rerun the step that writes it$"):
        read_framed_jsonl(path)


def test_framed_file_is_header_records_footer_one_json_per_line(tmp_path):
    path = tmp_path / "g.jsonl"
    assert write_framed_jsonl(path, {"job": "x"}, iter([{"i": 0}, {"i": 1}])) == 2
    assert path.read_text() == '{"_header": {"job": "x"}}\n{"i": 0}\n{"i": 1}\n{"_footer": {"records": 2}}\n'
    assert write_framed_jsonl(path, {}, []) == 0
    assert read_framed_jsonl(path) == ({}, [])


def test_jsonl_reading_skips_blank_lines_and_names_the_bad_one(tmp_path):
    from notallbits.io import read_jsonl, write_jsonl

    path = tmp_path / "q.jsonl"
    write_jsonl(path, iter([{"id": "a"}, {"id": "é"}]))
    assert path.read_text(encoding="utf-8") == '{"id": "a"}\n{"id": "\\u00e9"}\n'
    path.write_text('{"id": "a"}\n\n   \n{"id": "b"}\n')
    assert read_jsonl(path) == [{"id": "a"}, {"id": "b"}]
    path.write_text('{"id": "a"}\n\n{"id": \n')
    with pytest.raises(UserError, match=r"q\.jsonl:3: bad JSON \(Expecting value\)$"):
        read_jsonl(path)
    path.write_text('{"id": "a"}\n["b"]\n')
    with pytest.raises(UserError, match=r"q\.jsonl:2: expected a JSON object per line, got list$"):
        read_jsonl(path)


def test_write_json_is_sorted_indented_and_ends_with_a_newline(tmp_path):
    from notallbits.io import write_json

    write_json(tmp_path / "sub" / "a.json", {"b": [1], "a": {"d": 1, "c": 2}})
    assert (tmp_path / "sub" / "a.json").read_text() == (
        '{\n  "a": {\n    "c": 2,\n    "d": 1\n  },\n  "b": [\n    1\n  ]\n}\n')


def test_atomic_writes_replace_whole_or_leave_the_old(tmp_path):
    """A failed writer leaves the previous file or folder as it was and no temporary behind; a
    finished one replaces it. Permissions: a plain open()/mkdir under the umask, executables
    keep their x bits."""
    import os

    from notallbits.io import atomic_dir, atomic_path, current_umask, write_text

    write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt", suffix=".txt") as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".a.txt.") and tmp.suffix == ".txt"
            tmp.write_text("half")
            raise RuntimeError
    assert (tmp_path / "a.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "stale.bin").write_text("x")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "m") as tmp:
            (tmp / "new.bin").write_text("y")
            raise RuntimeError
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["stale.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "m"]
    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        with atomic_dir(tmp_path / "m") as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".m.")
            (tmp / "run.sh").write_text("#!/bin/sh\n")
            os.chmod(tmp / "run.sh", 0o700)
            (tmp / "data.bin").write_text("z")
            os.chmod(tmp / "data.bin", 0o600)
            (tmp / "tool").write_text("x")
            os.chmod(tmp / "tool", 0o601)  # executable by others only: still an executable
            (tmp / "sub").mkdir(mode=0o700)
            os.symlink("data.bin", tmp / "link")
    finally:
        os.umask(old)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["data.bin", "link", "run.sh", "sub", "tool"]
    modes = {p.name: p.lstat().st_mode & 0o777 for p in (tmp_path / "m").iterdir() if not p.is_symlink()}
    assert modes == {"run.sh": 0o750, "data.bin": 0o640, "sub": 0o750, "tool": 0o750}
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "m"]


def test_a_folder_swapped_in_is_readable_by_all_under_umask_022(tmp_path):
    import os

    from notallbits.io import atomic_dir

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "m") as tmp:
            (tmp / "data.bin").write_text("z")
            os.chmod(tmp / "data.bin", 0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "m" / "data.bin").stat().st_mode & 0o777 == 0o644
