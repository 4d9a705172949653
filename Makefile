# Two commands for a fresh machine: `make demo` and `make test`. Both create the
# environment when it is missing (Python >= 3.10 with venv; no conda needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: demo test paper-dryrun clean

$(VENV)/.installed: requirements/main.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/main.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --configfile configs/demo.yaml --cores $(CORES)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

paper-dryrun: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --dry-run --quiet rules

clean:
	rm -rf results figures/*.png .snakemake
