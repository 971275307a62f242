"""`--target-range` at training and `--clip/--no-clip` at scoring, through the installed CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import SMILES, cli_setup

pytestmark = pytest.mark.slow  # every test runs the installed CLI as a subprocess


def test_a_range_declared_at_training_clips_and_flags_predictions(tiny_model_dir: Path, tmp_path: Path) -> None:
    s = cli_setup(tmp_path, tiny_model_dir)
    values = SMILES * 3
    # labels in [0, 1], so a linear head predicts some values outside it for these molecules
    pd.DataFrame({"smiles": values, "y": [(len(v) % 5) / 4 for v in values]}).to_csv(
        tmp_path / "train.csv", index=False
    )
    trained = s.run(
        "train", "stage2", "--domain", "smiles", "--function", "frac", "--target", "y", "--target-range", "0,1",
        "--data", "train.csv", "--out", "frac", "--max-steps", "1", "--tag-length", "2", "--pack-dir", str(s.packs),
        *s.model_args(),
    )  # fmt: skip
    assert trained.returncode == 0, trained
    manifest = json.loads((tmp_path / "frac" / "manifest.json").read_text())
    assert manifest["head"]["targets"][0]["range"] == [0.0, 1.0]
    pd.DataFrame({"smiles": values + ["C1CC"]}).to_csv(tmp_path / "in.csv", index=False)
    outputs = {}
    for flag in ("--clip", "--no-clip"):
        out = tmp_path / f"out{flag}.csv"
        args = ["predict", "in.csv", "-F", "frac", "--pack-dir", str(tmp_path), "--pack-dir", str(s.packs)]
        result = s.run(*args, *s.model_args(), "--no-progress", "-o", str(out), flag)
        assert result.returncode == 0, result
        outputs[flag] = pd.read_csv(out)
    clipped, raw = outputs["--clip"], outputs["--no-clip"]
    ok = clipped["status"] == "ok"
    assert clipped.loc[ok, "pred_y"].between(0, 1).all()
    outside = raw.loc[ok, "pred_y"].lt(0) | raw.loc[ok, "pred_y"].gt(1)
    assert (clipped.loc[ok, "pred_y_out_of_range"] == outside).all()
    assert (raw.loc[ok, "pred_y_out_of_range"] == outside).all()
    assert clipped.loc[~ok, "pred_y_out_of_range"].isna().all()
