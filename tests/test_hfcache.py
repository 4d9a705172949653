"""Importing the quantizer (and with it GPTQModel -> tokenicer) leaves the user's Hugging Face
cache where huggingface_hub puts it: ~/.cache/huggingface (or $XDG_CACHE_HOME/huggingface),
with the saved token beside it. tokenicer would set HF_HOME=/tmp/tokenicer_hf_home."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# After the import, what huggingface_hub (re-reading the environment, as every later process
# and every later import does) and transformers would use.
PROBE = """
import importlib, json, os, sys
{imports}
import huggingface_hub.constants as c
importlib.reload(c)
import transformers.utils.hub as h
print(json.dumps({{"HF_HOME": os.environ.get("HF_HOME"), "hub": c.HF_HUB_CACHE, "token": c.HF_TOKEN_PATH,
                   "modules": os.environ.get("HF_MODULES_CACHE", h.HF_MODULES_CACHE)}}))
"""


def probe(tmp_path, imports: str, **env_extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_CACHE", "XDG_CACHE_HOME"))}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **env_extra)
    proc = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("imports", [
    "import notallbits.quantization\nimport gptqmodel",  # the quantize job
    # a transformers-backend job: load_model is the door a GPTQ checkpoint comes through
    "from notallbits.generation.hf_backend import load_model\n"
    "try:\n    load_model('/nonexistent/model')\nexcept Exception:\n    pass\nimport tokenicer",
])
def test_gptqmodel_import_keeps_the_users_hub_cache(tmp_path, imports):
    got = probe(tmp_path, imports)
    home = tmp_path / "home" / ".cache" / "huggingface"  # huggingface_hub's documented default
    assert got["hub"] == str(home / "hub"), got
    assert got["token"] == str(home / "token"), got
    assert got["HF_HOME"] in (None, str(home)) and got["modules"] == str(home / "modules"), got


def test_variables_the_user_set_are_respected(tmp_path):
    got = probe(tmp_path, "import notallbits.quantization\nimport tokenicer", XDG_CACHE_HOME=str(tmp_path / "xdg"),
                HUGGINGFACE_HUB_CACHE=str(tmp_path / "legacy-hub"))
    assert got["hub"] == str(tmp_path / "legacy-hub")
    assert got["token"] == str(tmp_path / "xdg" / "huggingface" / "token")


# ---------------------------------------------------------------- in process, against huggingface_hub's rules
# What huggingface_hub (constants.py) and transformers (utils/hub.py) do, by hand:
#   HF_HOME = expandvars(expanduser($HF_HOME or ($XDG_CACHE_HOME or ~/.cache)/huggingface))
#   HF_HUB_CACHE = expandvars(expanduser($HF_HUB_CACHE or $HUGGINGFACE_HUB_CACHE or HF_HOME/hub))
#   HF_MODULES_CACHE = $HF_MODULES_CACHE or HF_HOME/modules
@pytest.fixture
def home(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith(("HF_", "HUGGINGFACE_", "NOTALLBITS_USER_")) or key == "XDG_CACHE_HOME":
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_cache_locations_follow_huggingface_hubs_order(home, tmp_path, monkeypatch):
    from notallbits.hfcache import user_cache_locations

    default = home / ".cache" / "huggingface"
    assert user_cache_locations({}) == {"HF_HOME": str(default), "HF_HUB_CACHE": str(default / "hub"),
                                        "HF_MODULES_CACHE": str(default / "modules")}
    assert user_cache_locations() == user_cache_locations({})  # the process's environment by default
    xdg = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert user_cache_locations(xdg) == {"HF_HOME": str(tmp_path / "xdg/huggingface"),
                                         "HF_HUB_CACHE": str(tmp_path / "xdg/huggingface/hub"),
                                         "HF_MODULES_CACHE": str(tmp_path / "xdg/huggingface/modules")}
    # HF_HOME wins over XDG; "~" and "$VAR" expanded as huggingface_hub expands them
    monkeypatch.setenv("DISK", str(tmp_path / "disk"))
    got = user_cache_locations({**xdg, "HF_HOME": "$DISK/hf"})
    assert got == {"HF_HOME": str(tmp_path / "disk/hf"), "HF_HUB_CACHE": str(tmp_path / "disk/hf/hub"),
                   "HF_MODULES_CACHE": str(tmp_path / "disk/hf/modules")}
    assert user_cache_locations({"HF_HOME": "~/hf"})["HF_HUB_CACHE"] == str(home / "hf" / "hub")
    # the legacy HUGGINGFACE_HUB_CACHE counts, HF_HUB_CACHE beats it; modules apart
    legacy = {"HUGGINGFACE_HUB_CACHE": "~/legacy", "HF_MODULES_CACHE": "$DISK/mods"}
    assert user_cache_locations(legacy) == {"HF_HOME": str(default), "HF_HUB_CACHE": str(home / "legacy"),
                                            "HF_MODULES_CACHE": str(tmp_path / "disk/mods")}
    assert user_cache_locations({**legacy, "HF_HUB_CACHE": "$DISK/hub"})["HF_HUB_CACHE"] == str(tmp_path / "disk/hub")


def test_pinning_sets_only_what_is_unset(home, tmp_path, monkeypatch):
    from notallbits.hfcache import pin_user_cache

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "mine"))
    got = pin_user_cache()
    default = home / ".cache" / "huggingface"
    assert got["HF_HUB_CACHE"] == str(tmp_path / "mine")
    assert {k: os.environ[k] for k in got} == {"HF_HOME": str(default), "HF_HUB_CACHE": str(tmp_path / "mine"),
                                               "HF_MODULES_CACHE": str(default / "modules")}
    os.environ.setdefault("HF_HOME", "/tmp/tokenicer_hf_home")  # what tokenicer does next finds it set
    assert os.environ["HF_HOME"] == str(default)


def test_online_gives_back_the_users_own_offline_switch(home, monkeypatch):
    """The job prefix saved the user's value in NOTALLBITS_USER_<var> ("" when unset) and set 1."""
    from notallbits.hfcache import online

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("NOTALLBITS_USER_HF_HUB_OFFLINE", "")
    monkeypatch.setenv("NOTALLBITS_USER_HF_DATASETS_OFFLINE", "yes")
    online()
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["HF_DATASETS_OFFLINE"] == "yes"
    assert not any(k.startswith("NOTALLBITS_USER_") for k in os.environ)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # not under the workflow: the user's own setting stays
    online()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "yes"
    # each variable on its own: a saved value for the second only; the first already gone
    monkeypatch.setenv("NOTALLBITS_USER_HF_DATASETS_OFFLINE", "")
    online()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and "HF_DATASETS_OFFLINE" not in os.environ
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("NOTALLBITS_USER_HF_HUB_OFFLINE", "")
    online()
    assert "HF_HUB_OFFLINE" not in os.environ and "NOTALLBITS_USER_HF_HUB_OFFLINE" not in os.environ


def test_offline_values_are_huggingface_hubs_true_values(home, monkeypatch):
    from huggingface_hub.constants import ENV_VARS_TRUE_VALUES

    from notallbits.hfcache import is_offline

    assert ENV_VARS_TRUE_VALUES == {"1", "ON", "YES", "TRUE"}
    for value in ("1", "on", "Yes", "TRUE", " true "):
        assert is_offline({"HF_HUB_OFFLINE": value}) and is_offline({"HF_DATASETS_OFFLINE": value}), value
    for value in ("0", "", "false", "off", "no", "2"):
        assert not is_offline({"HF_HUB_OFFLINE": value, "HF_DATASETS_OFFLINE": value}), value
    assert not is_offline({})
    assert not is_offline()
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert is_offline()


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_repo(hub, repo_id, files, repo_type="model", commit=COMMIT, ref="main"):
    """A repo as huggingface_hub caches it: blobs, snapshots/<commit>/ of links, refs/<ref>."""
    folder = hub / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "blobs").mkdir()
    for name, text in files.items():
        blob = folder / "blobs" / f"blob-{name.replace('/', '_')}"
        blob.write_text(text)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    if ref:
        (folder / "refs").mkdir()
        (folder / "refs" / ref).write_text(commit)  # as huggingface_hub writes it: no newline
    return snapshot


def test_snapshot_is_where_huggingface_hub_finds_the_files(home, tmp_path):
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name

    from notallbits.hfcache import cached_snapshot, repo_folder

    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    assert repo_folder("Qwen/Qwen3-8B", environ=env) == str(tmp_path / "hub" / "models--Qwen--Qwen3-8B")
    assert repo_folder("Maxwell-Jia/AIME_2024", "dataset", environ=env) == str(
        tmp_path / "hub" / repo_folder_name(repo_id="Maxwell-Jia/AIME_2024", repo_type="dataset"))
    assert repo_folder("Qwen/Qwen3-8B") == str(home / ".cache/huggingface/hub/models--Qwen--Qwen3-8B")
    assert cached_snapshot("Qwen/Qwen3-8B", environ=env) is None  # nothing cached
    snapshot = lay_out_repo(tmp_path / "hub", "Qwen/Qwen3-8B", {"config.json": "{}"})
    lay_out_repo(tmp_path / "hub", "Qwen/Qwen3-8B", {"config.json": "{}"}, repo_type="dataset",
                 commit="f" * 40, ref="v1")
    hub_says = try_to_load_from_cache("Qwen/Qwen3-8B", "config.json", cache_dir=str(tmp_path / "hub"))
    assert cached_snapshot("Qwen/Qwen3-8B", environ=env) == os.path.dirname(hub_says) == str(snapshot)
    # a commit hash as the revision needs no ref; an unknown ref or commit is not cached
    assert cached_snapshot("Qwen/Qwen3-8B", COMMIT, environ=env) == str(snapshot)
    assert cached_snapshot("Qwen/Qwen3-8B", "v1", environ=env) is None
    assert cached_snapshot("Qwen/Qwen3-8B", "v1", "dataset", environ=env) == os.path.dirname(
        try_to_load_from_cache("Qwen/Qwen3-8B", "config.json", revision="v1", repo_type="dataset",
                               cache_dir=str(tmp_path / "hub")))
    assert cached_snapshot("Qwen/Qwen3-8B", environ={}) is None  # HOME's cache is empty
    (tmp_path / "hub/models--Qwen--Qwen3-8B/refs/main").write_text(COMMIT + "\n")  # edited by hand
    assert cached_snapshot("Qwen/Qwen3-8B", environ=env) == str(snapshot)


def weight_map(*shards):
    return json.dumps({"metadata": {"total_size": 1},
                       "weight_map": {f"model.layers.{i}.w": s for i, s in enumerate(shards)}})


def test_files_a_snapshot_lacks_to_load_offline(home, tmp_path):
    from notallbits.hfcache import missing_model_files, model_cache_problem

    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    hub = tmp_path / "hub"
    full = {"config.json": "{}", "tokenizer.json": "{}", "model.safetensors": "w"}
    complete = lay_out_repo(hub, "o/complete", full)
    assert missing_model_files(str(complete)) == [] and model_cache_problem("o/complete", environ=env) is None
    for tokenizer in ("tokenizer.model", "vocab.json"):  # sentencepiece, or BPE vocab + merges
        snap = lay_out_repo(hub, f"o/{tokenizer}", {"config.json": "{}", tokenizer: "t", "model.safetensors": "w"})
        assert missing_model_files(str(snap)) == []
    bare = lay_out_repo(hub, "o/bare", {"generation_config.json": "{}"})
    assert missing_model_files(str(bare)) == ["config.json", "tokenizer.json", "model.safetensors"]
    assert model_cache_problem("o/bare", environ=env) == (
        "o/bare: the cached snapshot lacks config.json, tokenizer.json, model.safetensors")
    # sharded: every shard the index names (each once, in order), not model.safetensors
    sharded = lay_out_repo(hub, "o/sharded", {
        "config.json": "{}", "tokenizer.json": "{}", "model-00002-of-00003.safetensors": "w",
        "model.safetensors.index.json": weight_map("model-00003-of-00003.safetensors",
                                                   "model-00001-of-00003.safetensors",
                                                   "model-00002-of-00003.safetensors",
                                                   "model-00001-of-00003.safetensors")})
    assert missing_model_files(str(sharded)) == ["model-00001-of-00003.safetensors",
                                                 "model-00003-of-00003.safetensors"]
    # a link whose blob is gone is a download cut short
    os.unlink(os.path.realpath(complete / "model.safetensors"))
    assert missing_model_files(str(complete)) == ["model.safetensors"]
    many = lay_out_repo(hub, "o/many", {"tokenizer.json": "{}", "model.safetensors.index.json": weight_map(
        *(f"model-0000{i}-of-00003.safetensors" for i in range(1, 4)))})  # 4 missing: 3 named, then "..."
    assert model_cache_problem("o/many", environ=env) == (
        "o/many: the cached snapshot lacks config.json, model-00001-of-00003.safetensors, "
        "model-00002-of-00003.safetensors ...")
    assert model_cache_problem("o/absent", environ=env) == (
        f"o/absent is not in the hub cache ({hub / 'models--o--absent'})")


@pytest.mark.parametrize("index", ["{not json", json.dumps({"metadata": {}}), json.dumps({"weight_map": None}),
                                   json.dumps(["model.safetensors"])])
def test_an_unreadable_shard_index_is_named(home, tmp_path, index):
    from notallbits.hfcache import missing_model_files

    snap = lay_out_repo(tmp_path / "hub", "o/bad", {"tokenizer.json": "{}", "model.safetensors.index.json": index})
    assert missing_model_files(str(snap)) == ["config.json", "model.safetensors.index.json (unreadable)"]
