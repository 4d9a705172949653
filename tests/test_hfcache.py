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
