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
