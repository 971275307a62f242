"""recipes/trust_report.py: the uncertainty and applicability-domain numbers (issue #13) on hand-made
tables, and an end-to-end run on a tiny ensemble pack that writes the JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import SMILES, domain_pack, ensemble_config, function_pack, regression_head
from recipes import trust_report
from recipes.trust_report import domain_metrics, markdown, outside, target_metrics, uncertainty_metrics
from tagcli.packs.format import save_pack
from tagcli.train import train


def test_uncertainty_metrics_rank_errors_by_std() -> None:
    error = np.arange(20, dtype=float)
    truth = np.full(20, 3.0)
    pred = truth + np.where(error % 2 == 0, error, -error)  # signs do not matter: |error|
    std = error.copy()  # the std ranks the errors perfectly
    m = uncertainty_metrics(truth, pred, std)
    assert m["spearman_std_error"] == pytest.approx(1.0)
    assert (m["n_top"], m["n_bottom"]) == (2, 10)  # top decile of 20 rows: 2; bottom half: 10
    assert m["mae_top_decile_std"] == pytest.approx((18 + 19) / 2)
    assert m["mae_bottom_half_std"] == pytest.approx(np.mean(np.arange(10)))
    assert m["top_bottom_ratio"] == pytest.approx(18.5 / 4.5)

    reversed_std = uncertainty_metrics(truth, pred, -std)  # a std that ranks backwards
    assert reversed_std["spearman_std_error"] == pytest.approx(-1.0)
    assert reversed_std["mae_top_decile_std"] == pytest.approx(0.5)
    # 11 rows: the top decile rounds up (2 rows), the bottom half down (5 rows)
    eleven = uncertainty_metrics(np.zeros(11), np.arange(11.0), np.arange(11.0))
    assert (eleven["n_top"], eleven["n_bottom"]) == (2, 5) and eleven["mae_top_decile_std"] == pytest.approx(9.5)
    assert all(v is None for v in uncertainty_metrics(truth, pred, None).values())
    assert uncertainty_metrics(truth, pred, np.ones(20))["spearman_std_error"] is None  # a constant std ranks nothing


def test_domain_metrics_split_the_error_by_the_flag() -> None:
    truth = np.zeros(8)
    pred = np.array([0.1, -0.1, 0.2, 0.0, 1.0, -2.0, 0.3, 0.1])
    inside = np.array([True, True, True, True, False, False, True, True])
    m = domain_metrics(truth, pred, inside)
    assert (m["n_in"], m["n_out"]) == (6, 2) and m["share_out"] == pytest.approx(0.25)
    assert m["mae_in"] == pytest.approx(0.8 / 6) and m["mae_out"] == pytest.approx(1.5)
    assert m["out_in_ratio"] == pytest.approx(1.5 / (0.8 / 6))
    everything_in = domain_metrics(truth, pred, np.ones(8, bool))
    assert everything_in["n_out"] == 0 and everything_in["mae_out"] is None and everything_in["out_in_ratio"] is None
    assert all(v is None for v in domain_metrics(truth, pred, None).values())


def test_target_metrics_use_ok_rows_with_a_truth_and_say_na_without_columns() -> None:
    scored = pd.DataFrame(
        {
            "y": [1.0, 2.0, np.nan, 4.0, 5.0],
            "pred_y": [1.5, 2.0, 3.0, None, 4.0],
            "pred_y_std": [0.5, 0.1, 0.2, None, 0.9],
            "domain_score": [1.0, 0.5, 0.7, None, 3.0],
            "in_domain": [True, True, True, None, False],
            "status": ["ok", "ok", "ok", "invalid", "ok"],
        }
    )
    m = target_metrics(scored, "y")
    assert m["n"] == 3 and m["mae"] == pytest.approx(0.5)  # rows 0, 1, 4: no truth in row 2, invalid row 3
    assert m["spearman_std_error"] == pytest.approx(1.0)
    assert (m["n_in"], m["n_out"], m["mae_in"], m["mae_out"]) == (2, 1, pytest.approx(0.25), pytest.approx(1.0))

    bare = target_metrics(scored.drop(columns=["pred_y_std", "domain_score", "in_domain"]), "y")
    assert bare["n"] == 3 and bare["spearman_std_error"] is None and bare["share_out"] is None
    report = {
        "packs": {
            "fn": {
                "status": "measured",
                "readout": "tag-last @ final layer",
                "members": 1,
                "domain_components": 0,
                "max_rows": None,
                "sets": {"test": {"description": "a test set", "rows": 5, "scored": 4, "targets": {"y": bare}}},
            },
            "other": {"status": "not built"},
        }
    }
    text = markdown(report)
    row = next(line for line in text.splitlines() if line.startswith("| test | y |"))
    assert row.count("n/a") == 5 and "| 3 | 0.5 |" in row
    assert "**other**: not built." in text


def test_outside_takes_the_5_to_95_percent_range_of_the_reference() -> None:
    reference = pd.Series(np.arange(101, dtype=float))  # 5% = 5, 95% = 95
    values = pd.Series([4.0, 5.0, 50.0, 95.0, 96.0])
    assert outside(values, reference).tolist() == [True, False, False, False, True]


def molecules(n: int) -> list[str]:
    return [SMILES[i % len(SMILES)] + "C" * (i // len(SMILES)) for i in range(n)]


def write_data(folder: Path) -> None:
    """qed_{train,test} and ba_kiba_{train,val,test} with a few rows each (the QED column is made up)."""
    folder.mkdir()
    for split, values in (("train", molecules(40)), ("test", molecules(24)[::-1])):
        frame = pd.DataFrame({"id": [f"{split}-{i}" for i in range(len(values))], "smiles": values})
        frame["qed"] = [0.3 + 0.01 * len(s) for s in values]
        frame.to_parquet(folder / f"qed_{split}.parquet", index=False)
    for split, ligands in (("train", ["CCO", "CCN(CC)CC"]), ("val", ["CCO", "OCC"]), ("test", ["c1ccccc1", "not"])):
        pd.DataFrame({"ligand_id": [f"{split}{i}" for i in range(len(ligands))], "smiles": ligands}).to_parquet(
            folder / f"ba_kiba_{split}.parquet", index=False
        )


@pytest.mark.slow
def test_the_report_runs_a_tiny_ensemble_pack_and_writes_the_json(
    base, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    data, packs = tmp_path / "data", tmp_path / "packs"
    write_data(data)
    save_pack(domain_pack(base, "smiles", seed=3), packs / "smiles")
    train_csv = tmp_path / "train.csv"
    pd.read_parquet(data / "qed_train.parquet").to_csv(train_csv, index=False)
    config = ensemble_config(train_csv, packs / "qed", function="qed", targets=["qed"], max_steps=2, eval_every=2)
    train(config, base)
    # an old-style pack: one linear member, no domain summary
    save_pack(
        function_pack(base, "binding-affinity", [domain_pack(base, "smiles", seed=3)], regression_head(32, ["label"])),
        packs / "binding-affinity",
    )
    out = tmp_path / "trust.json"
    out.write_text(json.dumps({"packs": {"kept": {"status": "not built"}}}))
    trust_report.main(
        [
            *("--data", str(data), "--packs", str(packs), "--out", str(out)),
            *("--only", "qed", "protein-descriptors", "--max-rows", "20"),
            *("--base-model", str(tiny_model_dir), "--device", "cpu"),
        ]
    )
    report = json.loads(out.read_text())
    assert report["packs"]["kept"] == {"status": "not built"}  # packs not run keep their entry
    assert report["packs"]["protein-descriptors"]["status"] == "not built"
    qed = report["packs"]["qed"]
    assert qed["status"] == "measured" and qed["has_std"] and qed["has_domain"] and qed["members"] == 3
    assert qed["readout"] == "input-mean+tag-mean @ layers 1,2" and qed["max_rows"] == 20
    sets = qed["sets"]
    assert list(sets) == ["test", "kiba ligands", "heavy atoms"]
    assert (sets["test"]["available"], sets["test"]["rows"]) == (24, 20)  # a seeded sample of the 24 rows
    # molecules() makes a few invalid SMILES ("O=C(O)CClC"): counted, not scored
    assert sets["test"]["invalid"] > 0 and sets["test"]["scored"] + sets["test"]["invalid"] == 20
    assert "invalid SMILES" in sets["test"]["first_problem"]
    assert sets["kiba ligands"]["rows"] == 3  # ethanol thrice (CCO twice, OCC), an invalid SMILES dropped
    test = sets["test"]["targets"]["qed"]
    for key in ("mae", "spearman_std_error", "mae_top_decile_std", "mae_bottom_half_std", "share_out"):
        assert isinstance(test[key], float) and math.isfinite(test[key]), key
    assert test["n"] == sets["test"]["scored"] and test["n_in"] + test["n_out"] == test["n"]
    assert f"| test | qed | {test['n']} |" in capsys.readouterr().out

    # the old-style pack reports n/a for std and domain
    capsys.readouterr()
    spec = trust_report.PackSpec("binding-affinity", ("label",), lambda _: [trust_report.TrustSet("test", "t", kiba())])
    trust_report.run_report(data, packs, out=out, base_model=base, device="cpu", specs=[spec])
    bare = json.loads(out.read_text())["packs"]["binding-affinity"]
    assert bare["status"] == "measured" and not bare["has_std"] and not bare["has_domain"]
    metrics = bare["sets"]["test"]["targets"]["label"]
    assert metrics["n"] == 3 and metrics["spearman_std_error"] is None and metrics["mae_in"] is None
    assert "n/a" in markdown(json.loads(out.read_text()))


def kiba() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c"], "smiles": ["CCO", "CCN", "c1ccccc1"], "label": [11.0, 12.0, 13.0]})
