"""What the loader and the scorer check of a head, at the command line a user types (issue #17).

Head weights training cannot produce are refused at load; predictions hundreds of training standard
deviations away are row errors, not numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

from helpers import SMILES, Setup, cli_setup

pytestmark = pytest.mark.slow  # each test runs the installed CLI


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    s = cli_setup(tmp_path_factory.mktemp("head-checks"), tiny_model_dir)
    pd.DataFrame({"smiles": SMILES}).to_csv(s.root / "in.csv", index=False)
    return s


def scale_head(s: Setup, name: str, factor: float) -> Path:
    """A copy of the `logp` pack (renamed) whose head weights are multiplied by `factor`."""
    folder = s.root / f"scaled-{name}"
    pack = folder / name
    pack.mkdir(parents=True)
    manifest = json.loads((s.packs / "logp" / "manifest.json").read_text())
    (pack / "manifest.json").write_text(
        json.dumps(manifest | {"name": name, "template": manifest["template"].replace("logp", name)})
    )
    tags = load_file(s.packs / "logp" / "tags.safetensors")
    save_file({name: tags["logp"]}, pack / "tags.safetensors")
    heads = {k.replace("logp.", f"{name}."): v for k, v in load_file(s.packs / "logp" / "heads.safetensors").items()}
    heads[f"{name}.members.0.weight"] = heads[f"{name}.members.0.weight"] * factor
    save_file(heads, pack / "heads.safetensors")
    (folder / "smiles").symlink_to(s.packs / "smiles")
    return folder


def predict(s: Setup, function: str, folder: Path, *extra: str):
    out = s.root / f"{function}{len(extra)}.out.csv"
    return s.run(
        "predict",
        "in.csv",
        "-F",
        function,
        "--pack-dir",
        str(folder),
        *s.model_args(),
        "--no-progress",
        "-o",
        str(out),
        *extra,
    ), out


def test_head_weights_training_cannot_produce_are_refused_at_load(setup: Setup) -> None:
    result, out = predict(setup, "huge", scale_head(setup, "huge", 1e30))
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "linear weights reach" in lines[0], result
    assert not out.exists()


def test_implausible_predictions_are_row_errors_not_ok(setup: Setup) -> None:
    # Weights within what the loader accepts, but outputs hundreds of training std away.
    result, out = predict(setup, "wild", scale_head(setup, "wild", 900.0))
    assert result.returncode == 0, result
    scored = pd.read_csv(out, keep_default_na=False)
    assert len(scored) == len(SMILES)
    wild = scored["status"] == "error"
    assert wild.any(), scored
    assert scored.loc[wild, "error"].str.contains("implausible pred_y").all()
    assert (scored.loc[wild, "pred_y"] == "").all()  # no number is reported for such a row


def test_ordinary_packs_still_score_ok(setup: Setup) -> None:
    result, out = predict(setup, "logp", setup.packs)
    assert result.returncode == 0, result
    assert set(pd.read_csv(out)["status"]) == {"ok"}
