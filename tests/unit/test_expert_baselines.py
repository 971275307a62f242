"""Expert baselines (recipes.expert_baselines) on small generated splits with exact-function targets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem
from rdkit.Chem import QED

from recipes.expert_baselines import AMINO_ACIDS, DESCRIPTORS, TASKS, main, rdkit_descriptors, run_baselines

SMILES = [
    "CCO",
    "c1ccccc1O",
    "CC(=O)Oc1ccccc1C(=O)O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "CC(C)Cc1ccc(C)cc1",
    "O=C(O)c1ccccc1",
    "CCN(CC)CCNC(=O)c1ccc(N)cc1",
    "c1ccc2ccccc2c1",
    "CC(C)NCC(O)COc1cccc2ccccc12",
    "OC1CCCCC1",
    "Clc1ccc(Cl)cc1",
    "NC(=O)c1cccnc1",
]
BAD = "not_a_smiles(("
# Kyte-Doolittle hydropathy: GRAVY is exactly their composition-weighted mean, i.e. linear in composition.
KD = dict(
    zip(
        AMINO_ACIDS,
        [
            1.8,
            2.5,
            -3.5,
            -3.5,
            2.8,
            -0.4,
            -3.2,
            4.5,
            -3.9,
            3.8,
            1.9,
            -3.5,
            -1.6,
            -3.5,
            -4.5,
            -0.8,
            -0.7,
            4.2,
            -0.9,
            -1.3,
        ],
    )
)
N_TRAIN, N_TEST = 60, 20


def _proteins(rng: np.random.Generator, n: int) -> pd.DataFrame:
    # Skewed per-sequence residue probabilities so composition varies enough to learn from.
    seqs = [
        "".join(rng.choice(list(AMINO_ACIDS), size=rng.integers(40, 300), p=rng.dirichlet(np.ones(20))))
        for _ in range(n)
    ]
    frac = lambda s, aas: sum(s.count(a) for a in aas) / len(s)  # noqa: E731
    return pd.DataFrame(
        {
            "sequence": seqs,
            "gravy": [sum(KD[a] for a in s) / len(s) for s in seqs],
            "aromaticity": [frac(s, "FWY") for s in seqs],
            "molecular_weight_kda": [0.11 * len(s) for s in seqs],
            "isoelectric_point": [7 + 3 * np.tanh(5 * (frac(s, "KR") - frac(s, "DE"))) for s in seqs],  # non-linear
            "instability_index": [40 + 100 * frac(s, "P") ** 2 for s in seqs],
        }
    )


def _molecules(n: int, bad: bool) -> pd.DataFrame:
    smiles = [SMILES[i % len(SMILES)] for i in range(n)]
    if bad:
        smiles[0] = BAD
    qed = [QED.qed(m) if (m := Chem.MolFromSmiles(s)) is not None else 0.5 for s in smiles]
    return pd.DataFrame({"smiles": smiles, "qed": qed})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("splits")
    rng = np.random.default_rng(0)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        mols = _molecules(n, bad=True)  # one unparsable SMILES in train (skipped) and in test (counted)
        mols.to_parquet(root / f"qed_{split}.parquet")
        prots = _proteins(rng, n)
        prots.to_parquet(root / f"protein_{split}.parquet")
        kiba = pd.DataFrame({"smiles": mols["smiles"], "sequence": prots["sequence"]})
        kiba["label"] = 11 + mols["qed"] + 2 * prots["aromaticity"]
        kiba.to_parquet(root / f"ba_kiba_{split}.parquet")
    return root


@pytest.fixture(scope="module")
def records(data_dir: Path) -> list[dict]:
    return run_baselines(data_dir)


def test_every_task_target_and_model_is_reported(records: list[dict]) -> None:
    expected = {
        (name, target, model) for name, task in TASKS.items() for target in task.targets for model in task.models
    }
    assert {(r["task"], r["target"], r["model"]) for r in records} == expected


def test_metrics_finite_on_every_test_row(records: list[dict]) -> None:
    for r in records:
        assert r["n"] == N_TEST, r
        assert all(math.isfinite(r[k]) for k in ("mse", "mae", "std_mse", "seconds")), r
        if r["model"] != "mean":  # a constant prediction has no correlation
            assert math.isfinite(r["pearson"]) and math.isfinite(r["spearman"]), r


def test_unparsable_smiles_counted_not_dropped(records: list[dict]) -> None:
    for r in records:
        assert r["unparsed"] == (0 if r["task"] == "protein-descriptors" else 1), r


def test_composition_ridge_recovers_linear_targets(records: list[dict]) -> None:
    by = {(r["target"], r["model"]): r for r in records if r["task"] == "protein-descriptors"}
    # Molecular weight is linear in length, not log(length), so it is outside the feature span: not checked here.
    for target in ("gravy", "aromaticity"):
        assert by[target, "aa-composition-ridge"]["pearson"] > 0.99, by[target, "aa-composition-ridge"]
        assert by[target, "aa-composition-ridge"]["std_mse"] < 0.05


def test_main_writes_sorted_strict_json(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res" / "baselines.json"
    main(["--data", str(data_dir), "--out", str(out), "--task", "protein-descriptors"])
    text = out.read_text()
    assert "NaN" not in text
    rows = json.loads(text)
    assert [(r["target"], r["model"]) for r in rows] == sorted((r["target"], r["model"]) for r in rows)
    assert rows[0]["pearson"] is None or rows[0]["model"] != "mean"
    assert "aa-composition-ridge" in capsys.readouterr().out


def test_unknown_task_rejected(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown task"):
        run_baselines(data_dir, ["nope"])


def test_descriptors_exclude_the_qed_label() -> None:
    # RDKit's descriptor list contains `qed`; it must not leak into the QED task's features.
    assert "qed" not in {name for name, _ in DESCRIPTORS} and len(DESCRIPTORS) > 200
    assert rdkit_descriptors([Chem.MolFromSmiles("CCO")]).shape == (1, len(DESCRIPTORS))


def test_constant_predictor_has_no_correlation(records: list[dict]) -> None:
    assert all(math.isnan(r["pearson"]) and math.isnan(r["spearman"]) for r in records if r["model"] == "mean")
