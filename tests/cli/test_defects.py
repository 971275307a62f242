"""Regressions from the hostile-input probe (issue #17), at the command line a user types.

Absurd head weights, implausible predictions, Ctrl-C during start-up and bad --devices values.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

from helpers import SMILES, Setup, cli_setup, tagcli_executable


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    s = cli_setup(tmp_path_factory.mktemp("defects"), tiny_model_dir)
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


def test_a_validation_file_without_the_target_names_the_file_and_column(setup: Setup) -> None:
    pd.DataFrame({"smiles": SMILES, "y": range(len(SMILES))}).to_csv(setup.root / "train.csv", index=False)
    pd.DataFrame({"smiles": SMILES}).to_csv(setup.root / "val.csv", index=False)
    result = setup.run(
        "train",
        "stage2",
        "--domain",
        "smiles",
        "--function",
        "len",
        "--target",
        "y",
        "--data",
        "train.csv",
        "--val",
        "val.csv",
        "--out",
        "len",
        "--pack-dir",
        str(setup.packs),
        *setup.model_args(),
    )
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines()[-1] == "error: no target column 'y' in val.csv (columns: smiles)"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("devices", ["0", "-1"])
def test_devices_below_one_is_a_usage_error(setup: Setup, devices: str) -> None:
    result, out = predict(setup, "logp", setup.packs, "--devices", devices, "--device", "cpu")
    assert result.returncode == 2, result
    assert "--devices" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


INTERRUPTED_LINE = "error: interrupted (hint: rerun with --resume to continue)"


def interrupt(setup: Setup, source: Path, out: Path, ready) -> str:
    """Start `tagcli predict SOURCE -o OUT`, send Ctrl-C once `ready()` holds; its stderr (exit 130 checked)."""
    args = ["predict", str(source), "-F", "logp", "--pack-dir", str(setup.packs), *setup.model_args(), "-o", str(out)]
    command = [tagcli_executable(), *args, "--no-progress"]
    process = subprocess.Popen(command, cwd=setup.root, env=setup.env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ready() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    return stderr


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(setup: Setup) -> None:
    out = setup.root / "interrupted.csv"
    started = time.time()
    stderr = interrupt(setup, setup.root / "in.csv", out, lambda: time.time() - started > 0.3)  # inside imports
    assert stderr.strip().splitlines() == [INTERRUPTED_LINE]
    assert not out.exists() and not any(p.name.startswith(".interrupted") for p in setup.root.iterdir())


def test_ctrl_c_while_scoring_is_one_line_and_exit_130(setup: Setup) -> None:
    big = setup.root / "big.csv"
    pd.DataFrame({"smiles": SMILES * 4000}).to_csv(big, index=False)
    out = setup.root / "big.out.csv"
    parts = Path(str(out) + ".parts")
    stderr = interrupt(setup, big, out, parts.exists)  # scoring has started
    assert stderr.strip().splitlines() == [INTERRUPTED_LINE]
    assert not out.exists()


def test_entry_point_module_is_import_light() -> None:
    """`tagcli.cli` (the console script's module) must not import torch before it can handle Ctrl-C."""
    code = "import sys, tagcli.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done
