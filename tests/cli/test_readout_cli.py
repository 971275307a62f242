"""Readouts and ensemble heads through the installed CLI (issue #12): train with `--readout`/`--members`,
then `tagcli predict` gives exactly what the head computes from the features training cached."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from helpers import SMILES, cli_setup, function_pack, regression_head, tiny_base
from tagcli.core.readout import ReadoutSpec
from tagcli.packs.format import load_pack, save_pack

pytestmark = pytest.mark.slow  # every test runs the installed CLI as a subprocess


def test_a_head_trained_on_cached_features_scores_identically_through_predict(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    dtype = "float32"  # features and scoring in the same numerics: equal up to float rounding
    s = cli_setup(tmp_path, tiny_model_dir)
    values = [v + "C" * k for k in range(4) for v in SMILES if "Cl" not in v]
    pd.DataFrame({"smiles": values, "y": [float(len(v)) for v in values]}).to_csv(tmp_path / "train.csv", index=False)
    trained = s.run(
        "train", "stage2", "--domain", "smiles", "--function", "ens", "--target", "y", "--data", "train.csv",
        "--val-fraction", "0.25", "--out", "ens", "--max-steps", "2", "--tag-length", "2", "--readout",
        "input-mean+tag-mean+tag-last@1,2", "--members", "3", "--hidden-units", "8", "--domain-components", "4",
        "--dtype", dtype, "--pack-dir", str(s.packs), *s.model_args(),
    )  # fmt: skip
    assert trained.returncode == 0, trained
    manifest = json.loads((tmp_path / "ens" / "manifest.json").read_text())
    assert manifest["head"]["readout"] == {"pools": ["input-mean", "tag-mean", "tag-last"], "layers": [1, 2]}
    assert manifest["training"]["hyperparameters"]["members"] == 3

    # The rows training fitted on, in its order: the first block of cached training features.
    blocks = sorted((tmp_path / "ens.ckpt" / "features").rglob("train-*.safetensors"))
    cached = load_file(blocks[0])["features"]
    head = load_pack(tmp_path / "ens").head
    with torch.no_grad():
        expected = head.predict(type("Readout", (), {"hidden": cached})())
    train_rows = len(cached)
    assert train_rows == manifest["training"]["data"]["train_rows"]

    # Score the training split's rows (the same rows, the same order) through the CLI.
    frame = pd.read_csv(tmp_path / "train.csv")
    order = np.random.default_rng(0).permutation(len(frame))  # split_tables: seeded 25% held out
    kept = frame.iloc[np.sort(order[round(len(frame) * 0.25) :])]
    kept[["smiles"]].to_csv(tmp_path / "in.csv", index=False)
    result = s.run(
        "predict", "in.csv", "-F", "ens", "--pack-dir", str(tmp_path), "--pack-dir", str(s.packs), *s.model_args(),
        "--dtype", dtype, "--no-progress", "--no-clip", "-o", "out.parquet",
    )  # fmt: skip
    assert result.returncode == 0, result
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out.columns[-6:]) == ["pred_y", "pred_y_std", "domain_score", "in_domain", "status", "error"]
    assert (out["status"] == "ok").all() and len(out) == train_rows
    for column in ("pred_y", "pred_y_std", "domain_score"):
        np.testing.assert_allclose(out[column], expected[column].numpy(), rtol=1e-5, atol=1e-5, err_msg=column)
    assert out["in_domain"].tolist() == list(expected["in_domain"])


def test_a_pack_reading_a_layer_the_base_model_lacks_is_one_line_before_scoring(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The tiny model has 2 decoder blocks; a pack whose readout reads block 3 (its fingerprint is the
    tiny model's, so nothing else refuses it) is refused at load by predict and eval alike."""
    s = cli_setup(tmp_path, tiny_model_dir)
    base = tiny_base(tiny_model_dir)
    head = regression_head(base.hidden_size, ["y"], readout=ReadoutSpec(("tag-mean",), (1, 3)))
    save_pack(function_pack(base, "deep", [load_pack(s.packs / "smiles")], head), s.packs / "deep")
    pd.DataFrame({"smiles": SMILES, "y": [1.0] * len(SMILES)}).to_csv(tmp_path / "in.csv", index=False)
    common = ["in.csv", "-F", "deep", "--pack-dir", str(s.packs), *s.model_args()]
    runs = {
        "predict": s.run("predict", *common, "--no-progress", "-o", "out.csv"),
        "eval": s.run("eval", *common, "--target", "y"),
    }
    for command, result in runs.items():
        assert result.returncode == 1, result
        assert result.stderr.strip().splitlines() == [
            "error: function 'deep': the readout reads layer 3, but the base model has 2 "
            "(hint: use the base model it was trained on)"
        ], command
    assert not (tmp_path / "out.csv").exists()
