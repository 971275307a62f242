"""The installed `tagcli` entry point, run as a subprocess on the tiny model.

Every run pays the torch/transformers import (a few seconds), so all commands are started
together once per module, in parallel, and each test checks one result.
"""

from __future__ import annotations

import io
import json
import shutil
from concurrent.futures import Future
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from helpers import SMILES, Result, Setup, cli_setup, get, start_all
from tagcli import __version__

pytestmark = pytest.mark.slow  # every test runs the installed CLI as a subprocess

OTHER_FINGERPRINT = "sha256:" + "cd" * 32


SCORE_ROWS = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "C1CCC", "CCN(CC)CC"]


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    s = cli_setup(tmp_path_factory.mktemp("cli"), tiny_model_dir)
    root = s.root
    # the same packs, recorded for another base model
    for name in ("smiles", "logp"):
        shutil.copytree(root / "packs" / name, root / "foreign" / name)
        manifest = json.loads((root / "foreign" / name / "manifest.json").read_text())
        manifest["base_model"] = {"id": "some/other-model", "fingerprint": OTHER_FINGERPRINT}
        (root / "foreign" / name / "manifest.json").write_text(json.dumps(manifest))
    pd.DataFrame({"name": [f"m{i}" for i in range(len(SCORE_ROWS))], "smiles": SCORE_ROWS}).to_csv(
        root / "in.csv", index=False
    )
    values = SMILES * 3
    pd.DataFrame({"smiles": values, "y": [float(len(v)) for v in values]}).to_csv(root / "train.csv", index=False)
    return s


def _train_chain(s: Setup) -> dict[str, Result]:
    work = s.root / "trained"
    common = [
        "--data",
        str(s.root / "train.csv"),
        "--base-model",
        str(s.model),
        "--max-steps",
        "2",
        "--tag-length",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    out = {"stage1": s.run("train", "stage1", "--domain", "smiles", "--out", str(work / "smiles"), *common)}
    if out["stage1"].returncode == 0:
        out["stage2"] = s.run(
            "train",
            "stage2",
            "--domain",
            "smiles",
            "--function",
            "len",
            "--target",
            "y",
            "--out",
            str(work / "len"),
            "--format",
            "json",
            *common,
        )
    if out.get("stage2") and out["stage2"].returncode == 0:
        out["eval"] = s.run(
            "eval", str(s.root / "train.csv"), "-F", str(work / "len"), "-t", "y", *s.model_args(), "--format", "json"
        )
    return out


@pytest.fixture(scope="module")
def results(setup: Setup) -> dict[str, Future]:
    s = setup
    bad = "smiles\nCCO\nc1ccccc1\nCCC\nC1CCC\nCC\n"
    jobs = {
        "version": lambda: s.run("--version"),
        "predict": lambda: s.predict("in.csv", "-o", str(s.root / "out.csv")),
        "predict_json": lambda: s.predict("in.csv", "-o", str(s.root / "out.parquet"), "--format", "json"),
        "unknown_option": lambda: s.predict("in.csv", "--no-such-option"),
        "missing_input": lambda: s.predict(str(s.root / "missing.csv"), "-o", str(s.root / "never.csv")),
        "foreign": lambda: s.run(
            "predict", "in.csv", "-F", str(s.root / "foreign" / "logp"), *s.model_args(), "-o", str(s.root / "f.csv")
        ),
        "strict": lambda: s.predict("-", "--strict", stdin=bad),
        "stdin": lambda: s.predict("-", stdin=(s.root / "in.csv").read_text()),
        "pack_list": lambda: s.run("pack", "list", "--pack-dir", str(s.packs), "--format", "json"),
        "train": lambda: _train_chain(s),
    }
    yield from start_all(jobs)


def one_error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, str(result)
    assert lines[0].startswith("error: "), str(result)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    return lines[0]


# --------------------------------------------------------------------------- tests


def test_version(results) -> None:
    r = get(results, "version")
    assert r.returncode == 0, str(r)
    assert r.stdout.strip() == f"tagcli {__version__}"


def test_predict_writes_output_and_prints_a_summary(results, setup: Setup) -> None:
    r = get(results, "predict")
    assert r.returncode == 0, str(r)
    out = pd.read_csv(setup.root / "out.csv")
    assert out.columns.tolist() == ["name", "smiles", "pred_y", "status", "error"]
    assert out["name"].tolist() == [f"m{i}" for i in range(len(SCORE_ROWS))]
    assert out["status"].tolist() == ["ok", "ok", "ok", "invalid", "ok"]
    assert pd.isna(out["pred_y"][3]) and out["pred_y"].drop(index=3).notna().all()
    assert out["error"][3].startswith("invalid SMILES 'C1CCC'")
    summary = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(summary) == 1, str(r)
    assert summary[0].startswith("scored 5 rows: 4 ok, 1 invalid, 0 error")
    assert summary[0].endswith(str(setup.root / "out.csv"))


def test_predict_json_summary(results, setup: Setup) -> None:
    r = get(results, "predict_json")
    assert r.returncode == 0, str(r)
    summary = json.loads(r.stdout)
    assert (summary["rows"], summary["ok"], summary["invalid"], summary["error"]) == (5, 4, 1, 0)
    assert summary["output"] == str(setup.root / "out.parquet")
    assert "rows_per_second" in summary
    table = pq.read_table(setup.root / "out.parquet")
    assert table.num_rows == 5 and table.column("smiles").to_pylist() == SCORE_ROWS
    # the same scores as the CSV run
    assert get(results, "predict").returncode == 0
    csv = pd.read_csv(setup.root / "out.csv")
    pd.testing.assert_series_equal(table.to_pandas()["pred_y"], csv["pred_y"], atol=1e-6, check_dtype=False)


def test_unknown_option_fails_without_a_traceback(results) -> None:
    r = get(results, "unknown_option")
    assert r.returncode != 0, str(r)
    assert "--no-such-option" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_unknown_option_is_a_usage_error(results) -> None:
    r = get(results, "unknown_option")
    assert r.returncode == 2, str(r)
    assert "No such option: --no-such-option" in r.stderr
    assert "Usage:" in r.stderr


def test_missing_input_file(results, setup: Setup) -> None:
    r = get(results, "missing_input")
    assert r.returncode == 1, str(r)
    line = one_error_line(r)
    assert "missing.csv" in line
    assert r.stdout == ""
    assert not (setup.root / "never.csv").exists()


def test_pack_for_another_base_model(results) -> None:
    r = get(results, "foreign")
    assert r.returncode == 1, str(r)
    line = one_error_line(r)
    assert "was trained for base model some/other-model" in line
    assert "--base-model some/other-model" in line  # the hint


def test_strict_stops_at_the_bad_row(results) -> None:
    r = get(results, "strict")
    assert r.returncode == 1, str(r)
    line = one_error_line(r)
    assert line.startswith("error: row 4: invalid SMILES 'C1CCC'"), line
    assert r.stdout == ""  # no partial table on stdout


def test_stdin_to_stdout(results) -> None:
    r = get(results, "stdin")
    assert r.returncode == 0, str(r)
    out = pd.read_csv(io.StringIO(r.stdout))
    assert out.columns.tolist() == ["name", "smiles", "pred_y", "status", "error"]
    assert out["smiles"].tolist() == SCORE_ROWS
    assert out["status"].tolist() == ["ok", "ok", "ok", "invalid", "ok"]
    assert "scored 5 rows" in r.stderr  # the summary goes to stderr when stdout carries the table


def test_pack_list_json(results, setup: Setup) -> None:
    r = get(results, "pack_list")
    assert r.returncode == 0, str(r)
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert {"smiles", "protein", "logp", "bind", "active", "fold"} <= set(rows)
    assert rows["logp"]["kind"] == "function" and rows["logp"]["outputs"] == ["pred_y"]
    assert rows["logp"]["domains"] == ["smiles"]
    assert rows["smiles"]["kind"] == "domain"
    assert rows["bind"]["domains"] == ["protein", "smiles"]
    assert rows["logp"]["path"] == str((setup.packs / "logp").resolve())


def test_train_stage1_then_stage2(results, setup: Setup) -> None:
    chain = get(results, "train")
    r1 = chain["stage1"]
    assert r1.returncode == 0, str(r1)
    assert "wrote domain pack 'smiles'" in r1.stdout
    assert (setup.root / "trained" / "smiles" / "manifest.json").is_file()
    r2 = chain["stage2"]
    assert r2.returncode == 0, str(r2)
    record = json.loads(r2.stdout)
    assert record["name"] == "len" and record["kind"] == "function"
    assert "standardized_mse" in record["val"]
    manifest = json.loads((setup.root / "trained" / "len" / "manifest.json").read_text())
    assert manifest["domains"] == ["smiles"] and manifest["training"]["steps"] == 2
    assert manifest["base_model"]["id"] == str(setup.model)


def test_eval_prints_metrics_json(results) -> None:
    chain = get(results, "train")
    assert "eval" in chain, "training failed; see test_train_stage1_then_stage2"
    r = chain["eval"]
    assert r.returncode == 0, str(r)
    report = json.loads(r.stdout)
    assert report["rows"] == report["scored"] == 24 and report["invalid"] == 0
    assert set(report["y"]) == {"n", "mse", "mae", "pearson", "spearman"}
    assert report["y"]["n"] == 24
