"""recipes/quality_table.py: rows for the pair and text packs, readouts, "not built" rows and the trust section."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recipes import quality_table


def write_manifest(folder: Path, head: dict, test: dict | None, targets: list[str]) -> None:
    folder.mkdir(parents=True)
    manifest = {"head": head, "training": {"data": {"targets": targets}}, "metrics": {"test": test} if test else {}}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    results = tmp_path / "recipes" / "results"
    (results / "pair_data").mkdir(parents=True)
    monkeypatch.setattr(quality_table, "REPO", tmp_path)
    monkeypatch.setattr(quality_table, "RESULTS", results)
    monkeypatch.setattr(quality_table, "PAIR_DIRS", (results / "pair_data",))
    monkeypatch.setattr(quality_table, "TASKS", [])
    return tmp_path


def test_new_packs_show_not_built_then_their_metrics_and_readouts(repo: Path) -> None:
    text = quality_table.markdown(quality_table.task_rows(repo), repo)
    assert "| tanimoto | tagcli tag-llm | – | not built |" in text
    assert (
        "| tanimoto | baseline: fingerprint-free (gradient boosting on SMILES token counts) | – | not built |" in text
    )
    assert "| formula | tagcli tag-llm | – | not built | – | – |" in text

    readout = {"pools": ["input-mean", "tag-mean"], "layers": [4, 8]}
    pair = {"n": 1000, "mse": 0.01, "mae": 0.08, "pearson": 0.9, "spearman": 0.88}
    write_manifest(
        repo / "tagpacks" / "tanimoto",
        {"type": "regression", "targets": [{"name": "tanimoto"}], "readout": readout, "members": 5},
        {"rows": 1000, **pair},
        ["tanimoto"],
    )
    write_manifest(
        repo / "tagpacks" / "formula",
        {"type": "text", "target": "formula"},
        {"rows": 1000, "n": 1000, "exact_match": 0.25, "char_error_rate": 0.125},
        ["formula"],
    )
    write_manifest(  # an old pack: no readout in its head spec is the paper's
        repo / "recipes" / "baselines" / "tanimoto-linear-probe",
        {"type": "regression", "targets": [{"name": "tanimoto"}]},
        None,
        ["tanimoto"],
    )
    write_manifest(  # the paper's readout at the same budget
        repo / "recipes" / "baselines" / "tanimoto-paper-readout",
        {"type": "regression", "targets": [{"name": "tanimoto"}], "readout": {"pools": ["tag-last"], "layers": []}},
        {"rows": 1000, **pair, "pearson": 0.7},
        ["tanimoto"],
    )
    baseline = {"model": "gradient boosting on |a - b|", "n": 1000, "mse": 0.02, "pearson": 0.6, "mae": 0.1}
    (repo / "recipes" / "results" / "pair_data" / "pair_baseline.json").write_text(json.dumps(baseline))
    pd.DataFrame({"tanimoto": [0.0, 0.2, 0.4, 0.6]}).to_parquet(
        repo / "recipes" / "results" / "pair_data" / "tanimoto_test.parquet"
    )
    text = quality_table.markdown(quality_table.task_rows(repo), repo)
    lines = text.splitlines()
    tag_llm = next(line for line in lines if line.startswith("| tanimoto | tagcli tag-llm |"))
    assert "| input-mean+tag-mean @ layers 4,8, 5 members | 1,000 | 0.01 | 0.08 | 0.9 | 0.88 | 0.2 |" in tag_llm
    models = [line.split(" | ")[1] for line in lines if line.startswith("| tanimoto |")]
    stale = "tagcli linear-probe (previous recipe: other readout and budget)"  # not the recipe's readout
    assert models[:3] == ["tagcli tag-llm", "tagcli tag-llm, paper readout", stale]
    paper = next(line for line in lines if "paper readout |" in line)
    assert "| tag-last @ final layer (paper) | 1,000 | 0.01 | 0.08 | 0.7 |" in paper
    probe = next(line for line in lines if line.startswith(f"| tanimoto | {stale} |"))
    assert "| tag-last @ final layer (paper) | not evaluated |" in probe
    fingerprint_free = next(line for line in lines if "baseline: fingerprint-free" in line)
    assert "| 1,000 | 0.02 | 0.1 | 0.6 | – | 0.4 |" in fingerprint_free and "|a" not in fingerprint_free
    assert "| formula | tagcli tag-llm | generated text (LM head) | 1,000 | 0.25 | 0.125 |" in text


def test_the_trust_section_is_replaced_between_its_markers(repo: Path) -> None:
    assert "make trust" in quality_table.trust_markdown()
    report = {"packs": {"qed": {"status": "not built"}}}
    (repo / "recipes" / "results" / "trust.json").write_text(json.dumps(report))
    section = quality_table.trust_markdown()
    assert "**qed**: not built." in section
    readme = f"a\n{quality_table.TRUST_BEGIN}\nold\n{quality_table.TRUST_END}\nb\n"
    replaced = quality_table.replace_between(readme, quality_table.TRUST_BEGIN, quality_table.TRUST_END, section)
    assert replaced == f"a\n{quality_table.TRUST_BEGIN}\n{section}{quality_table.TRUST_END}\nb\n"
    assert quality_table.replace_between("no markers", quality_table.TRUST_BEGIN, "x", section) == "no markers"


def test_measured_endpoints_show_packs_and_anchors(repo: Path) -> None:
    text = quality_table.markdown(quality_table.task_rows(repo), repo)
    assert "Anchors not measured yet: `make baselines`" in text
    assert "| tagcli tag-llm (`tagpacks/bbb`) | not built yet |" in text
    alone = "| tagcli head on extra features alone, no LLM (`recipes/levers.py`)"
    assert f"{alone} | not measured yet |" in text
    assert "Not measured yet: `make moleculeace` writes recipes/results/moleculeace.json" in text

    bbb = {"rows": 687, "n": 687, "accuracy": 0.7, "roc_auc": 0.78, "log_loss": 0.6}
    bbb_head = {"type": "classification", "target": "bbb", "extra_features": [{"name": "rdkit2d"}]}
    write_manifest(repo / "tagpacks" / "bbb", bbb_head, bbb, ["bbb"])
    amp = {"n": 697, "roc_auc": 0.957}  # no extra features: the shipped pack is the tags-alone row
    write_manifest(repo / "tagpacks" / "amp", {"type": "classification", "target": "amp"}, amp, ["amp"])
    solubility = {"n": 253, "mse": 0.25, "mae": 0.4, "pearson": 0.93, "spearman": 0.92}
    write_manifest(
        repo / "recipes" / "baselines" / "solubility-tags-only",
        {"type": "regression", "targets": [{"name": "log_solubility"}]},
        solubility,
        ["log_solubility"],
    )
    svm = {
        "metrics": {
            "n": 687,
            "roc_auc": 0.766,
            "pr_auc": 0.78,
            "balanced_accuracy": 0.67,
            "brier": 0.2,
            "accuracy": 0.68,
        },
        "seconds": 17.0,
        "hyperparameters": {"C": 3.0},
        "feature_problems": {"train": 5, "val": 0, "test": 0},
    }
    skipped = {"status": "skipped", "reason": "No module named 'chemprop'"}
    anchors = {
        "machine": {"cpu": "AMD EPYC", "cores": 2, "flags": {"avx512_bf16": True}, "packages": {"rdkit": "2026.3.6"}},
        "seed": 0,
        "seconds": 600,
        "endpoints": {
            "bbb": {
                "kind": "classification",
                "positive": "BBB+",
                "models": {"svm-tanimoto-ecfp4": svm, "chemprop": skipped},
            }
        },
    }
    results = repo / "recipes" / "results"
    (results / "measured_anchors.json").write_text(json.dumps(anchors))
    per_set = {"rmse": 0.7, "rmse_cliff": 0.8, "n_test": 161, "n_cliff": 67, "seconds": 2.0}
    ace = {
        "machine": {"cpu": "AMD EPYC", "cores": 2},
        "validation": "seeded random 20%",
        "seconds": 300,
        "sets": {"CHEMBL1862_Ki": {"models": {"knn-tanimoto-ecfp4": per_set}}},
        "means": {"knn-tanimoto-ecfp4": {"mean_rmse": 0.7, "mean_rmse_cliff": 0.8, "sets": 1}},
    }
    (results / "moleculeace_anchors.json").write_text(json.dumps(ace))
    (results / "levers").mkdir()
    test = {"n": 253, "mse": 0.36, "rmse": 0.6, "mae": 0.45, "pearson": 0.96, "spearman": 0.95}
    tags = {"n": 253, "rmse": 0.65, "mae": 0.5, "pearson": 0.94, "spearman": 0.93}
    levers = {
        "chosen": {"extra_features_alone": "rdkit2d alone", "tags_alone": "input-mean 2-12"},
        "variants": {"rdkit2d alone": {"test": test}, "input-mean 2-12": {"test": tags}},
    }
    (results / "levers" / "solubility.json").write_text(json.dumps(levers))
    text = quality_table.markdown(quality_table.task_rows(repo), repo)
    assert f"{alone} | 253 | 0.6 | 0.45 | 0.96 | 0.95 | – | rdkit2d alone, the same ensemble head" in text
    tags_alone = "| tagcli head on the tags alone (`recipes/levers.py`) | 253 | 0.65 | 0.5 | 0.94 | 0.93 | – |"
    assert tags_alone + " input-mean 2-12, the same ensemble head" in text
    assert "| tagcli head on the tags alone (`recipes/levers.py`) | not measured yet |" in text  # bbb, amp
    assert "with AVX-512 bf16" in text and "**bbb** (bbb_test, classification, positive class BBB+)" in text
    assert "| tagcli tag-llm (`tagpacks/bbb`) | 687 | 0.78 | – | – | – | 0.7 | – |" in text
    assert "| tagcli tags only (`recipes/baselines/bbb-tags-only`) | not built yet |" in text
    assert "| tagcli tag-llm, tags alone (`tagpacks/amp`) | 697 | 0.957 |" in text
    assert "amp-tags-only" not in text
    tags_only = next(line for line in text.splitlines() if "solubility-tags-only" in line)
    assert "| 253 | 0.5 | 0.4 | 0.93 | 0.92 | – |" in tags_only  # RMSE from the recorded MSE
    assert (
        "| anchor: SVM, Tanimoto kernel on ECFP4 bits | 687 | 0.766 | 0.78 | 0.67 | 0.2 | 0.68 | 17 | "
        "C = 3 on validation; 5 train rows without features left out |" in text
    )
    assert "| anchor: chemprop v2 (D-MPNN) | skipped: No module named 'chemprop' |" in text
    glance = quality_table.glance_markdown()
    assert "| `bbb` | ROC-AUC | 0.78 | – | 0.766 (SVM, Tanimoto kernel on ECFP4 bits) |" in glance
    assert "| `solubility` | RMSE | – | 0.5 | not measured yet |" in glance  # shipped pack not built here
    assert "| anchor: kNN, Tanimoto on ECFP4 bits | 1 | 0.7 | 0.8 | 2 |" in text
    assert "| CHEMBL1862_Ki | 161 | 67 | 0.7 / 0.8 |" in text

    # `make moleculeace` has run: its file (tag-LLM models beside the anchors) is the table, tag-LLM rows first.
    tag = {**per_set, "seconds": 40.0}
    ace["sets"]["CHEMBL1862_Ki"]["models"] = {"knn-tanimoto-ecfp4": per_set, "tag-llm": tag}
    ace["means"] = {**ace["means"], "tag-llm": {"mean_rmse": 0.75, "mean_rmse_cliff": 0.85, "sets": 1}}
    ace["settings"] = {"readout": "input-mean@2,4", "members": 6}
    (results / "moleculeace.json").write_text(json.dumps(ace))
    text = quality_table.markdown(quality_table.task_rows(repo), repo)
    table = quality_table.moleculeace_means(quality_table.moleculeace_results())
    assert table[2:] == [
        "| tag-LLM: tags alone | 1 | 0.75 | 0.85 | 40 |",
        "| anchor: kNN, Tanimoto on ECFP4 bits | 1 | 0.7 | 0.8 | 2 |",
    ]
    assert "\n".join(table) in text and "readout input-mean@2,4, 6 members, no tag steps" in text


def test_results_measured_on_an_earlier_domain_tag_say_so(repo: Path, base) -> None:
    """After `make packs` retrains a domain tag, the levers and MoleculeACE rows measured on the one
    before are marked, until their recipes are rerun (they record the digest of the tag they read)."""
    from helpers import domain_pack
    from tagcli.packs.format import save_pack

    save_pack(domain_pack(base, "smiles", seed=3), repo / "tagpacks" / "smiles")
    shipped = {"smiles": domain_pack(base, "smiles", seed=3).tag_digest()}
    results = repo / "recipes" / "results"
    (results / "levers").mkdir()
    tags = {"n": 253, "rmse": 0.65, "mae": 0.5, "pearson": 0.94, "spearman": 0.93}
    levers = {
        "chosen": {"tags_alone": "blocks 2-8", "extra_features_alone": "rdkit2d alone"},
        "variants": {"blocks 2-8": {"test": tags}, "rdkit2d alone": {"test": tags}},
    }
    ace = {
        "settings": {"readout": "input-mean@2,4", "members": 6},
        "sets": {"CHEMBL1862_Ki": {"models": {"tag-llm": {"rmse": 0.7, "rmse_cliff": 0.8, "n_test": 1, "n_cliff": 1}}}},
        "means": {"tag-llm": {"mean_rmse": 0.7, "mean_rmse_cliff": 0.8, "sets": 1}},
    }
    earlier = "measured on an earlier `smiles` domain tag than the shipped one"
    for recorded, marked in (({}, True), ({"smiles": "sha256:0"}, True), (shipped, False)):
        (results / "levers" / "solubility.json").write_text(json.dumps({**levers, "domain_tags": recorded}))
        (results / "moleculeace.json").write_text(json.dumps({**ace, "domain_tags": recorded}))
        text = quality_table.markdown(quality_table.task_rows(repo), repo)
        row = next(
            line for line in text.splitlines() if line.startswith("| tagcli head on the tags alone") and "253" in line
        )
        assert (earlier in row) is marked, (recorded, row)
        alone = next(line for line in text.splitlines() if line.startswith("| tagcli head on extra features alone"))
        assert earlier not in alone  # no language model there, no domain tag
        assert ("The tag-LLM rows were " + earlier) in text if marked else earlier not in text
