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
