"""The built-in packs on the real embedded model, through the installed CLI (slow: real model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tagcli.packs.store import PackStore, builtin_packs_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TAGCLI = str(Path(sys.executable).parent / "tagcli")


def run(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TAGCLI_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([TAGCLI, *args], capture_output=True, text=True, env=env, timeout=600)


def test_every_builtin_pack_loads_and_names_the_embedded_model() -> None:
    packs = PackStore().installed()
    assert {"smiles", "qed"} <= set(packs)
    for name, pack in packs.items():
        assert not isinstance(pack, Exception), f"{name}: {pack}"
        assert pack.path.parent == builtin_packs_dir().resolve()
        assert pack.manifest.base_model["id"] == "smollm2-135m"


@pytest.mark.skipif(not (DATA / "qed_test.parquet").exists(), reason="shared data not present")
def test_predict_qed_keeps_every_row_in_order(tmp_path: Path, isolated_home: Path) -> None:
    source = tmp_path / "mols.parquet"
    rows = pd.read_parquet(DATA / "qed_test.parquet").head(200)
    bad = pd.DataFrame(
        {"id": ["bad-1", "bad-2", "bad-3", "bad-4"], "smiles": ["C1CC", "", "C" * 10_000, "not a smiles"]}
    )
    mixed = pd.concat([rows.iloc[:50], bad, rows.iloc[50:]], ignore_index=True)
    mixed.to_parquet(source)
    result = run(
        "predict",
        "--domain",
        "smiles",
        "--function",
        "qed",
        str(source),
        "-o",
        str(tmp_path / "out.parquet"),
        "--format",
        "json",
        home=isolated_home,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == len(mixed) and summary["invalid"] == 4 and summary["ok"] == len(mixed) - 4
    scored = pd.read_parquet(tmp_path / "out.parquet")
    assert scored["id"].tolist() == mixed["id"].tolist()
    ok = scored["status"] == "ok"
    assert scored.loc[ok, "pred_qed"].notna().all() and scored.loc[~ok, "pred_qed"].isna().all()
    assert scored.loc[~ok, "error"].str.len().gt(0).all()
    # A real pack predicts something related to QED, not a constant.
    assert scored.loc[ok, "pred_qed"].std() > 0
    assert scored.loc[ok, ["qed", "pred_qed"]].corr().iloc[0, 1] > 0.2


FUNCTIONS = {  # built-in function pack → (test split, its label columns)
    "qed": ("qed_test", ["qed"]),
    "protein-descriptors": (
        "protein_test",
        ["isoelectric_point", "gravy", "aromaticity", "instability_index", "molecular_weight_kda"],
    ),
    "binding-affinity": ("ba_kiba_test", ["label"]),
}


# The pair and text packs join the defaults when `make packs` has built them.
NEW = {"tanimoto": "pearson", "formula": "exact_match"}
HEADLINE = {name: "pearson" for name in FUNCTIONS} | {n: m for n, m in NEW.items() if n in PackStore().installed()}


def test_pack_list_shows_every_default_pack_with_test_metrics(isolated_home: Path) -> None:
    result = run("pack", "list", "--format", "json", home=isolated_home)
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert {"smiles", "protein", *HEADLINE} <= set(listed)
    for name, metric in HEADLINE.items():
        assert listed[name]["metrics"]["split"] == "test", name
        assert isinstance(listed[name]["metrics"][metric], float), name


@pytest.mark.skipif(not DATA.exists(), reason="shared data not present")
@pytest.mark.skipif(not set(NEW) <= set(PackStore().installed()), reason="tanimoto/formula packs not built yet")
def test_pair_and_text_packs_score_through_the_cli(tmp_path: Path, isolated_home: Path) -> None:
    smiles = pd.read_parquet(DATA / "qed_test.parquet")["smiles"].head(8).tolist()
    pd.DataFrame({"first": smiles, "second": smiles[::-1], "smiles": smiles}).to_csv(tmp_path / "in.csv", index=False)
    pairs = run(
        "predict", "--function", "tanimoto", str(tmp_path / "in.csv"), "--input", "drug_a=first", "--input",
        "drug_b=second", "-o", str(tmp_path / "pairs.csv"), home=isolated_home,
    )  # fmt: skip
    assert pairs.returncode == 0, pairs.stderr
    scored = pd.read_csv(tmp_path / "pairs.csv")
    assert (scored["status"] == "ok").all() and scored["pred_tanimoto"].between(0, 1).all()
    text = run(
        "predict", "--function", "formula", str(tmp_path / "in.csv"), "-o", str(tmp_path / "f.csv"), home=isolated_home
    )
    assert text.returncode == 0, text.stderr
    formulas = pd.read_csv(tmp_path / "f.csv")
    assert (formulas["status"] == "ok").all() and formulas["pred_formula"].str.startswith("C").mean() > 0.5


@pytest.mark.skipif(not DATA.exists(), reason="shared data not present")
@pytest.mark.parametrize("function", ["protein-descriptors", "binding-affinity"])
def test_predict_with_each_default_function(function: str, tmp_path: Path, isolated_home: Path) -> None:
    split, labels = FUNCTIONS[function]
    source = tmp_path / "rows.parquet"
    pd.read_parquet(DATA / f"{split}.parquet").head(12).to_parquet(source)
    result = run(
        "predict",
        "--function",
        function,
        str(source),
        "-o",
        str(tmp_path / "out.parquet"),
        "--format",
        "json",
        home=isolated_home,
    )
    assert result.returncode == 0, result.stderr
    scored = pd.read_parquet(tmp_path / "out.parquet")
    assert (scored["status"] == "ok").all() and len(scored) == 12
    for label in labels:
        assert scored[f"pred_{label}"].notna().all() and scored[f"pred_{label}"].std() > 0
