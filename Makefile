# Two commands for a fresh machine: `make demo` and `make test`. Both create the
# environment when it is missing (Python >= 3.10 with venv; no conda needed).
PYTHON ?= python3
VENV ?= .venv
VENV_VLLM ?= .venv-vllm
BIN := $(VENV)/bin
CORES ?= all

.PHONY: demo demo-vllm test paper-dryrun clean

$(VENV)/.installed: requirements/main.txt requirements/slurm.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/main.txt
	# the SLURM executor plugin asks numpy>=2.4.5, gptqmodel 7.6.0 pins numpy==2.2.6; the
	# plugin runs fine on 2.2.6, so it is installed without its pins (see requirements/slurm.txt)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/slurm.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# vLLM's pins clash with the quantizer's: its own environment. The PyPI torchvision it pulls
# is a CUDA build that breaks transformers' model imports on CPU, so it goes.
$(VENV_VLLM)/.installed: requirements/vllm.txt pyproject.toml
	test -x $(VENV_VLLM)/bin/python || $(PYTHON) -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_VLLM)/bin/python -m pip install --quiet -r requirements/vllm.txt
	$(VENV_VLLM)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	$(VENV_VLLM)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

demo-vllm: $(VENV)/.installed $(VENV_VLLM)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --configfile configs/demo-vllm.yaml --cores $(CORES)

demo: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --configfile configs/demo.yaml --cores $(CORES)

test: $(VENV)/.installed $(VENV_VLLM)/.installed
	NOTALLBITS_VLLM_PYTHON="$(abspath $(VENV_VLLM)/bin/python)" $(BIN)/python -m pytest -q

paper-dryrun: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --dry-run --quiet rules

clean:
	rm -rf results figures/*.png .snakemake
