"""The anchors (recipes.anchors, recipes.moleculeace_anchors, recipes.anchors_chemprop) on tiny generated splits."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recipes import anchors, moleculeace_anchors
from recipes.anchors import ENDPOINTS, Data, Split, tanimoto_kernel

BAD = "not_a_smiles(("
SIDE = ["C", "CC", "O", "N", "Cl", "F", "C(=O)O", "OC", "C#N", "CCC"]


def molecules(n: int, offset: int = 0) -> list[str]:
    """Aromatic and aliphatic molecules with varied side chains (deterministic)."""
    out = []
    for i in range(offset, offset + n):
        side, length = SIDE[i % len(SIDE)], 1 + (i // len(SIDE)) % 5
        out.append(f"c1ccccc1{'C' * length}{side}" if i % 2 else f"{'C' * (length + 1)}{side}")
    return out


def aromatic(smiles: list[str]) -> np.ndarray:
    return np.array(["c1" in s for s in smiles], dtype=float)


def peptides(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray]:
    """Peptides whose class is whether they are rich in K and R (as antimicrobial peptides are)."""
    label = rng.integers(0, 2, n)
    residues = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    weights = [np.where(np.isin(residues, ["K", "R"]), 6.0 if y else 0.5, 1.0) for y in label]
    seqs = ["".join(rng.choice(residues, size=rng.integers(10, 40), p=w / w.sum())) for w in weights]
    return seqs, label


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("measured")
    rng = np.random.default_rng(0)
    for split, n, offset in (("train", 40, 0), ("val", 16, 40), ("test", 16, 56)):
        smiles = molecules(n, offset)
        if split != "val":
            smiles[1] = BAD  # one row without features in train (left out) and in test (train prior)
        label = aromatic(smiles)
        bbb = pd.DataFrame({"smiles": smiles, "bbb": np.where(label == 1, "BBB+", "BBB-")})
        bbb.to_parquet(root / f"bbb_{split}.parquet")
        heavy = [len(s.replace("(", "").replace(")", "").replace("=", "").replace("#", "")) for s in smiles]
        pd.DataFrame({"smiles": smiles, "log_solubility": -0.3 * np.array(heavy) + 2 * label}).to_parquet(
            root / f"solubility_{split}.parquet"
        )
        seqs, amp = peptides(rng, n)
        pd.DataFrame({"sequence": seqs, "amp": amp}).to_parquet(root / f"amp_{split}.parquet")
    return root


CLASSIC = ["prior", "mean", "rf-ecfp4", "rf-rdkit2d", "rf-composition", "svm-tanimoto-ecfp4"]


@pytest.fixture(scope="module")
def results(data_dir: Path) -> dict:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(anchors, "TREES", 25)
        return anchors.run(data_dir, models=CLASSIC)


def test_every_classic_anchor_runs_with_sane_metrics(results: dict) -> None:
    assert set(results["endpoints"]) == set(ENDPOINTS)
    for name, entry in results["endpoints"].items():
        assert set(entry["models"]) == {m for m in ENDPOINTS[name].models if m in CLASSIC}
        for model, r in entry["models"].items():
            m = r["metrics"]
            assert r["n_test"] == m["n"] == 16 and r["seconds"] >= 0, (name, model)
            if entry["kind"] == "classification":
                assert 0 <= m["brier"] <= 1 and 0 <= m["accuracy"] <= 1 and 0 <= m["pr_auc"] <= 1
                assert m["roc_auc"] == 0.5 if model == "prior" else m["roc_auc"] > 0.8, (name, model, m)
            else:
                assert m["rmse"] == pytest.approx(math.sqrt(m["mse"]))
                if model != "mean":
                    assert m["rmse"] < entry["models"]["mean"]["metrics"]["rmse"], (model, m)
    assert results["machine"]["cores"] >= 1 and "avx512_bf16" in results["machine"]["flags"]


def test_rows_without_features_are_counted_and_get_the_prior(results: dict, data_dir: Path) -> None:
    bbb = results["endpoints"]["bbb"]["models"]
    assert bbb["rf-ecfp4"]["feature_problems"] == {"train": 1, "val": 0, "test": 1}
    assert results["endpoints"]["amp"]["models"]["rf-composition"]["feature_problems"] == {
        "train": 0,
        "val": 0,
        "test": 0,
    }
    data = anchors.load(data_dir, ENDPOINTS["solubility"])
    prediction = anchors.MODELS["rf-ecfp4"](data)
    assert prediction.test[1] == pytest.approx(np.mean(data.train.y))  # the train prior, not a zero row


def test_svm_choice_is_recorded_and_its_probabilities_rank_like_its_decision_values(results: dict) -> None:
    svm = results["endpoints"]["bbb"]["models"]["svm-tanimoto-ecfp4"]
    assert svm["hyperparameters"]["C"] in anchors.C_GRID and svm["platt"]["slope"] > 0
    assert set(svm["hyperparameters"]["validation"]) == {str(c) for c in anchors.C_GRID}


def test_tanimoto_kernel_by_hand() -> None:
    a = np.array([[1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 3]])  # counts: only whether a bit is set counts
    expected = np.array(
        [
            [1, 1 / 4, 0],  # {0,1} vs {0,2,3}: 1 common of 4
            [1 / 4, 1, 1 / 3],  # {0,2,3} vs {3}: 1 common of 3
            [0, 1 / 3, 1],
        ]
    )
    assert np.allclose(tanimoto_kernel(a, a), expected)
    assert tanimoto_kernel(np.zeros((1, 4)), np.zeros((1, 4)))[0, 0] == 0.0
    assert list(anchors.knn_predict(np.array([[0.9, 0.1, 0.5]]), np.array([1.0, 2.0, 3.0]), 2)) == [2.0]


def test_metric_reports_by_hand() -> None:
    report = anchors.classification_report(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.1]))
    assert report["roc_auc"] == 0.75 and report["accuracy"] == 0.5 and report["balanced_accuracy"] == 0.5
    assert report["brier"] == pytest.approx((0.01 + 0.64 + 0.49 + 0.01) / 4)
    assert report["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_cliff_rmse_by_hand() -> None:
    y, predicted, cliff = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 1.0, 4.0]), np.array([1, 0, 1, 0])
    assert moleculeace_anchors.cliff_rmse(y, predicted, cliff) == pytest.approx(math.sqrt((0.25 + 4) / 2))
    assert math.isnan(moleculeace_anchors.cliff_rmse(y, predicted, np.zeros(4)))
    assert moleculeace_anchors.rmse(y, predicted) == pytest.approx(math.sqrt(4.25 / 4))


def test_moleculeace_anchors_on_two_tiny_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "moleculeace"
    folder.mkdir()
    for i, name in enumerate(("CHEMBL1_Ki", "CHEMBL2_EC50")):
        smiles = molecules(50, offset=10 * i)
        y = aromatic(smiles) * 2 + np.arange(50) % 5 * 0.1
        split = np.where(np.arange(50) % 5 == 0, "test", "train")
        pd.DataFrame({"smiles": smiles, "y": y, "cliff_mol": np.arange(50) % 2, "split": split}).to_parquet(
            folder / f"{name}.parquet"
        )
    monkeypatch.setattr(anchors, "TREES", 25)
    monkeypatch.setattr(moleculeace_anchors, "TREES", 25)
    result = moleculeace_anchors.moleculeace_anchors(tmp_path)
    assert set(result["sets"]) == {"CHEMBL1_Ki", "CHEMBL2_EC50"}
    for entry in result["sets"].values():
        assert entry["n_val_carved"] == 8  # 20% of 40 train rows
        for model, r in entry["models"].items():
            assert r["n_test"] == 10 and r["n_cliff"] == 5 and r["rmse"] < 1.5, (model, r)
            assert math.isfinite(r["rmse_cliff"])
    assert set(result["means"]) == set(moleculeace_anchors.MODELS)
    means = result["means"]["knn-tanimoto-ecfp4"]
    rmses = [s["models"]["knn-tanimoto-ecfp4"]["rmse"] for s in result["sets"].values()]
    assert means["mean_rmse"] == pytest.approx(np.mean(rmses)) and means["sets"] == 2
    assert (
        result["sets"]["CHEMBL1_Ki"]["models"]["knn-tanimoto-ecfp4"]["hyperparameters"]["k"]
        in moleculeace_anchors.K_GRID
    )
    with pytest.raises(ValueError, match="unknown MoleculeACE set"):
        moleculeace_anchors.moleculeace_anchors(tmp_path, ["CHEMBL9_Ki"])


def test_main_writes_strict_json_and_merges_a_partial_run(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "anchors.json"
    anchors.main(["--data", str(data_dir), "--out", str(out), "--endpoint", "amp", "--model", "prior"])
    anchors.main(["--data", str(data_dir), "--out", str(out), "--endpoint", "solubility", "--model", "mean"])
    text = out.read_text()
    assert "NaN" not in text
    written = json.loads(text)
    assert list(written["endpoints"]) == ["solubility", "amp"]  # the endpoints' order, both kept
    assert written["endpoints"]["solubility"]["models"]["mean"]["metrics"]["pearson"] is None


def optional_extra(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        reason = f"{module} is not installed: the optional `anchors` extra (make anchors-install)"
        print(f"skipped: {reason}")
        pytest.skip(reason)


def test_chemprop_trains_and_predicts_on_tiny_data(data_dir: Path) -> None:
    optional_extra("chemprop")
    from recipes.anchors_chemprop import train_chemprop

    train = molecules(40)
    (val, test), info = train_chemprop(
        (train, aromatic(train)),
        (molecules(16, 40), aromatic(molecules(16, 40))),
        [molecules(8, 40), []],
        "classification",
        max_epochs=2,
    )
    assert val.shape == (8,) and test.shape == (0,) and np.all((val >= 0) & (val <= 1))
    assert info["epochs_trained"] == 2 and 1 <= info["best_epoch"] <= 2


def test_admet_ai_gives_bbb_probabilities(data_dir: Path) -> None:
    optional_extra("admet_ai")
    data = anchors.load(data_dir, ENDPOINTS["bbb"])
    small = Data(
        data.endpoint,
        data.train,
        Split(data.val.texts[:4], data.val.y[:4]),
        Split(data.test.texts[:4], data.test.y[:4]),
    )
    result = anchors.run_model(small, "admet-ai")
    assert result["task"] == "BBB_Martins" and "overlaps" in result["note"]
    assert result["feature_problems"]["test"] == 1 and 0 <= result["metrics"]["brier"] <= 1
