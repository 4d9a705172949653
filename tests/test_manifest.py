"""Checkpoint manifests (notallbits/manifest.py) on small folders: what a manifest lists, and
every way a folder can differ from it failing in one line that names the file."""

import hashlib
import json
import os

import pytest

from notallbits import UserError, manifest

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2's "abc"


def folder_with_files(tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_bytes(b"abc")
    (model / "sub" / "w.bin").write_bytes(b"\x00" * 10)
    return model


def test_manifest_lists_every_file_with_its_size_and_sha256(tmp_path):
    model = folder_with_files(tmp_path)
    written = manifest.write(model)
    assert written == model / manifest.MANIFEST
    assert json.loads(written.read_text()) == manifest.build(model) == {
        "manifest_version": 1,
        "files": {"config.json": {"bytes": 3, "sha256": ABC_SHA256},
                  "sub/w.bin": {"bytes": 10, "sha256": hashlib.sha256(b"\x00" * 10).hexdigest()}}}
    assert manifest.build(model) == json.loads(written.read_text())  # the manifest does not list itself
    assert written.read_text().startswith('{\n "files": {\n  "config.json": {\n   "bytes": 3,\n   "sha256": "ba78')
    assert manifest.sha256(model / "config.json", chunk=1) == ABC_SHA256  # read in chunks: the same digest


def test_a_folder_without_a_manifest_is_not_checked(tmp_path):
    assert manifest.verify(tmp_path) is False
    assert manifest.verify(tmp_path / "absent") is False
    (tmp_path / "file").write_text("x")
    assert manifest.verify(tmp_path / "file") is False


@pytest.mark.parametrize("text", ["{", "[]", '{"files": []}', '{"version": 1}', '{"files": {"config.json": 3}}',
                                  '{"files": {"config.json": {"bytes": 3}}}', "\xff"])
def test_an_unreadable_manifest_is_one_line(tmp_path, text):
    model = folder_with_files(tmp_path)
    (model / manifest.MANIFEST).write_text(text, encoding="latin-1")
    with pytest.raises(UserError, match=rf"^{model}: file {manifest.MANIFEST} is corrupt or incomplete "
                                        r"\(not a readable manifest\): delete this folder and rerun$"):
        manifest.verify(model)


def test_missing_resized_and_altered_files_name_the_file(tmp_path):
    model = folder_with_files(tmp_path)
    manifest.write(model)
    (model / "extra.txt").write_text("not listed")  # files beyond the manifest are ignored
    assert manifest.verify(model) is True
    (model / "sub" / "w.bin").write_bytes(b"\x00" * 11)
    with pytest.raises(UserError, match=rf"^{model}: file sub/w\.bin is corrupt or incomplete \(size differs from its "
                                        r"manifest: 11 bytes, not 10\): delete this folder and rerun$"):
        manifest.verify(model, hashes=False)
    (model / "sub" / "w.bin").write_bytes(b"\x01" * 10)
    assert manifest.verify(model, hashes=False) is True  # sizes only
    with pytest.raises(UserError, match=rf"^{model}: file sub/w\.bin is corrupt or incomplete \(size/hash differ"):
        manifest.verify(model)
    (model / "sub" / "w.bin").unlink()
    with pytest.raises(UserError, match=rf"^{model}: file sub/w\.bin is corrupt or incomplete \(missing, but listed"):
        manifest.verify(model, hashes=False)


def test_each_file_version_is_hashed_once(tmp_path, monkeypatch):
    """The sidecar beside the folder remembers (size, mtime, inode, sha256) of each checked file;
    a file whose version changed is hashed again, and the folder itself is never written."""
    model = folder_with_files(tmp_path)
    manifest.write(model)
    hashed = []
    real = manifest.sha256
    monkeypatch.setattr(manifest, "sha256", lambda p, *a: hashed.append(p.name) or real(p, *a))
    before = sorted(os.listdir(model))
    assert manifest.verify(model) and sorted(hashed) == ["config.json", "w.bin"]
    sidecar = tmp_path / ".model.verified.json"
    st = (model / "config.json").stat()
    assert json.loads(sidecar.read_text())["config.json"] == [3, st.st_mtime_ns, st.st_ino, ABC_SHA256]
    assert sorted(os.listdir(model)) == before
    hashed.clear()
    assert manifest.verify(model) and hashed == []
    os.utime(model / "config.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    assert manifest.verify(model) and hashed == ["config.json"]
    hashed.clear()
    sidecar.write_text("[1, 2]")  # a sidecar that is not a dict: check everything again
    assert manifest.verify(model) and sorted(hashed) == ["config.json", "w.bin"]
    hashed.clear()
    sidecar.write_text("{")
    assert manifest.verify(model) and len(hashed) == 2
    hashed.clear()
    assert manifest.verify(model) and hashed == []
