"""Named input slots through the installed `tagcli`: `--input SLOT=COLUMN` on predict, eval and train stage 3.

A pair pack `combo` reads two SMILES (`drug_a`, `drug_b`, both behind the SMILES tag); `sim` is the same
layout declared symmetric. All commands start together, in parallel, and each test checks one result.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import SMILES, Result, Setup, cli_setup, function_pack, get, regression_head, start_all, tiny_base
from tagcli.packs.format import load_pack, save_pack

pytestmark = pytest.mark.slow  # every test runs the installed CLI as a subprocess

PAIR = "{tag:smiles}{input:drug_a=smiles}{tag:smiles}{input:drug_b=smiles}{tag:%s}"
FIRST = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC", "O=C(O)CCl"]
SECOND = ["CCCCCC", "C1CCC", "c1ccccc1", "CCO", "OCC1OC(O)C(O)C(O)C1O"]  # row 2 is not a molecule


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    s = cli_setup(tmp_path_factory.mktemp("slots"), tiny_model_dir)
    base = tiny_base(tiny_model_dir)
    smiles = load_pack(s.packs / "smiles")
    for name, seed, symmetric in (("combo", 7, False), ("sim", 8, True)):
        head = regression_head(base.hidden_size, ["effect"], seed=seed)
        pack = function_pack(base, name, [smiles], head, seed=seed, template=PAIR % name)
        pack.manifest.symmetric = symmetric
        save_pack(pack, s.packs / name)
    pd.DataFrame({"smiles_1": FIRST, "smiles_2": SECOND}).to_csv(s.root / "pairs.csv", index=False)
    pd.DataFrame({"drug_a": SECOND, "drug_b": FIRST}).to_csv(s.root / "by_name.csv", index=False)
    values = SMILES * 3
    pd.DataFrame(
        {
            "smiles_1": values,
            "smiles_2": values[::-1],
            "y": [float(len(a) - len(b)) for a, b in zip(values, values[::-1])],
        }
    ).to_csv(s.root / "train.csv", index=False)
    return s


def predict(s: Setup, function: str, source: str, output: str, *extra: str) -> Result:
    args = ["predict", source, "-F", function, "--pack-dir", str(s.packs), *s.model_args(), "--no-progress"]
    return s.run(*args, "-o", str(s.root / output), *extra)


def train_and_eval(s: Setup) -> dict[str, Result]:
    slots = ["--input", "drug_a=smiles_1", "--input", "drug_b=smiles_2"]
    train = s.run(
        "train", "stage3", "--data", str(s.root / "train.csv"), "--out", str(s.root / "trained" / "gap"),
        "--domain", "smiles", "--function", "gap", "--target", "y", "--template", PAIR % "gap", *slots,
        "--symmetric", "--pack-dir", str(s.packs), "--base-model", str(s.model), "--device", "cpu",
        "--dtype", "float32", "--max-steps", "2", "--tag-length", "2", "--batch-size", "8", "--eval-every", "2",
    )  # fmt: skip
    evaluate = s.run(
        "eval", str(s.root / "train.csv"), "-F", str(s.root / "trained" / "gap"), "--target", "y", *slots,
        "--both-orders", "--pack-dir", str(s.packs), *s.model_args(), "--format", "json",
    )  # fmt: skip
    return {"train": train, "eval": evaluate}


@pytest.fixture(scope="module")
def results(setup: Setup):
    s = setup
    mapped = ["--input", "drug_a=smiles_1", "--input", "drug_b=smiles_2"]
    jobs = {
        "mapped": lambda: predict(s, "combo", "pairs.csv", "mapped.csv", *mapped),
        "swapped": lambda: predict(
            s, "combo", "pairs.csv", "swapped.csv", "--input", "drug_a=smiles_2", "--input", "drug_b=smiles_1"
        ),
        "by_name": lambda: predict(s, "combo", "by_name.csv", "by_name.scored.csv"),
        "missing": lambda: predict(s, "combo", "pairs.csv", "missing.csv", "--input", "drug_a=smiles_1"),
        "both": lambda: predict(s, "sim", "pairs.csv", "both.csv", *mapped, "--both-orders"),
        "not_symmetric": lambda: predict(s, "combo", "pairs.csv", "no.csv", *mapped, "--both-orders"),
        "train": lambda: train_and_eval(s),
    }
    yield from start_all(jobs)


def one_error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), str(result)
    return lines[0]


def scored(s: Setup, name: str) -> pd.DataFrame:
    return pd.read_csv(s.root / name, keep_default_na=False)


def test_input_maps_columns_to_slots_with_a_status_per_row(setup: Setup, results) -> None:
    r = get(results, "mapped")
    assert r.returncode == 0, str(r)
    out = scored(setup, "mapped.csv")
    assert list(out.columns) == ["smiles_1", "smiles_2", "pred_effect", "status", "error"]
    assert out["status"].tolist() == ["ok", "invalid", "ok", "ok", "ok"]
    assert out["error"][1].startswith("drug_b (smiles_2): invalid SMILES 'C1CCC'"), out["error"][1]
    assert out["pred_effect"][1] == ""


def test_swapped_columns_give_the_swapped_prediction(setup: Setup, results) -> None:
    for name in ("swapped", "by_name", "mapped"):
        assert get(results, name).returncode == 0, str(get(results, name))
    swapped, by_name = scored(setup, "swapped.csv"), scored(setup, "by_name.scored.csv")
    assert swapped["pred_effect"].tolist() == by_name["pred_effect"].tolist()  # drug_a=SECOND, drug_b=FIRST
    assert swapped["error"][1].startswith("drug_a (smiles_2): invalid SMILES")
    forward = scored(setup, "mapped.csv")["pred_effect"].tolist()
    assert all(a != b for a, b, status in zip(forward, swapped["pred_effect"], swapped["status"]) if status == "ok")


def test_a_missing_column_is_one_line_naming_the_slot(results) -> None:
    line = one_error_line(get(results, "missing"))
    assert "cannot find the column of input slot drug_b (smiles)" in line and "--input drug_b=COLUMN" in line


def test_both_orders_needs_a_symmetric_pack(setup: Setup, results) -> None:
    r = get(results, "both")
    assert r.returncode == 0, str(r)
    assert scored(setup, "both.csv")["status"].tolist() == ["ok", "invalid", "ok", "ok", "ok"]
    assert "'combo' is not symmetric" in one_error_line(get(results, "not_symmetric"))


def test_stage3_trains_two_slots_of_one_domain_and_eval_reads_them(setup: Setup, results) -> None:
    done = get(results, "train")
    assert done["train"].returncode == 0, str(done["train"])
    manifest = json.loads((setup.root / "trained" / "gap" / "manifest.json").read_text())
    assert manifest["domains"] == ["smiles"] and manifest["template"] == PAIR % "gap" and manifest["symmetric"]
    assert done["eval"].returncode == 0, str(done["eval"])
    report = json.loads(done["eval"].stdout)
    assert report["scored"] == report["rows"] == 24 and set(report["y"]) >= {"pearson", "mse"}
