"""`tagcli pack reference` and `predict --percentiles/--no-percentiles` through the CLI (in process, tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import SMILES, write_packs
from tagcli.cli.app import run


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        run(list(args))
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def test_a_reference_added_by_the_cli_gives_percentile_columns(base, tmp_path: Path, capsys) -> None:
    packs = tmp_path / "packs"
    write_packs(packs, base)
    data = tmp_path / "drugs.csv"
    pd.DataFrame({"name": range(len(SMILES) + 1), "mol": [*SMILES, "C1CC"]}).to_csv(data, index=False)
    before = (packs / "logp" / "heads.safetensors").read_bytes()
    args = ["pack", "reference", str(packs / "logp"), "--data", str(data), "--column", "mol", "--name", "drugs"]
    code, out, _ = cli(capsys, *args, "--pack-dir", str(packs), "--format", "json")
    record = json.loads(out)
    assert code == 0 and record["rows"] == len(SMILES) and record["invalid"] == 1 and record["columns"] == ["pred_y"]
    assert (packs / "logp" / "heads.safetensors").read_bytes() == before
    mols = tmp_path / "mols.csv"
    pd.DataFrame({"smiles": SMILES}).to_csv(mols, index=False)
    predict = ["predict", "-F", "logp", str(mols), "--pack-dir", str(packs), "--no-progress"]
    assert cli(capsys, *predict, "-o", str(tmp_path / "with.csv"))[0] == 0
    assert cli(capsys, *predict, "-o", str(tmp_path / "without.csv"), "--no-percentiles")[0] == 0
    with_ranks, without = pd.read_csv(tmp_path / "with.csv"), pd.read_csv(tmp_path / "without.csv")
    assert "pred_y_percentile" not in without and with_ranks["pred_y_percentile"].between(0, 100).all()
    assert with_ranks.drop(columns="pred_y_percentile").equals(without)
    code, _, err = cli(capsys, "pack", "reference", str(packs / "smiles"), "--data", str(data), "--name", "x")
    assert code != 0 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1
