"""What `tagcli train` refuses, warns about and keeps (issue #29), through the installed CLI on the tiny model.

Each case a new user met: a one-line error with a hint and exit 2 (usage) or a printed warning, and
never a deleted file or a lost run.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import Setup, cli_setup

pytestmark = pytest.mark.slow  # every test runs the installed CLI as a subprocess


def molecules(n: int, seed: int) -> list[str]:
    """Short valid SMILES, distinct enough that two seeds share few."""
    rng = np.random.default_rng(seed)
    return [
        "C" * int(rng.integers(1, 9)) + str(rng.choice(["O", "N", "Cl", "C(=O)O", "c1ccccc1", "OC"])) for _ in range(n)
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Setup:
    root = tmp_path_factory.mktemp("train-checks")
    s = cli_setup(root, tiny_model_dir)
    for name, seed in (("train", 0), ("val", 1)):
        values = molecules(40, seed)
        frame = pd.DataFrame(
            {
                "smiles": values,
                "y": [len(v) / 10 for v in values],
                "bbb": ["BBB+" if "O" in v else "BBB-" for v in values],
            }
        )
        frame.to_csv(root / f"{name}.csv", index=False)
    return s


def train(setup: Setup, *extra: str, out: str = "fn", data: str = "train.csv", val: str | None = "val.csv"):
    args = ["train", "stage2", "--domain", "smiles", "--function", "fn", "--target", "y", "--data", data]
    args += ["--val", val] if val else []
    args += ["--out", out, "--max-steps", "2", "--tag-length", "2", "--pack-dir", str(setup.packs)]
    return setup.run(*args, *setup.model_args(), *extra)


def one_error(result, code: int = 2, alone: bool = False) -> str:
    """The one `error:` line a refused run ends with (no traceback). `alone`: refused before the model
    loads, so nothing at all is printed before it (no progress line either)."""
    assert result.returncode == code, result
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, result
    assert "Traceback" not in result.stderr and (len(lines) == 1 or not alone), result
    return lines[-1]


# --------------------------------------------------------------------------- 1, 3: --out


def test_out_folder_with_other_files_is_refused_and_kept(setup: Setup) -> None:
    folder = setup.root / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "manifest.json.bak").write_text("{}")
    line = one_error(train(setup, out="notes"), alone=True)
    assert "holds files that are not a tagcli pack" in line and "hint:" in line
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json.bak", "notes.txt"]
    assert (folder / "notes.txt").read_text() == "mine"
    assert not (setup.root / "notes.ckpt").exists()


def test_an_existing_pack_needs_force_and_is_replaced_whole(setup: Setup) -> None:
    assert train(setup, out="replaced").returncode == 0
    before = json.loads((setup.root / "replaced" / "manifest.json").read_text())
    line = one_error(train(setup, out="replaced"), alone=True)
    assert "already holds a pack" in line and "--force" in line
    assert json.loads((setup.root / "replaced" / "manifest.json").read_text()) == before
    assert train(setup, "--force", "--seed", "3", out="replaced").returncode == 0
    after = json.loads((setup.root / "replaced" / "manifest.json").read_text())
    assert after["training"]["seed"] == 3 and not list(setup.root.glob(".replaced.*"))


def test_out_naming_a_file_is_refused_before_training(setup: Setup) -> None:
    (setup.root / "afile.txt").write_text("keep")
    line = one_error(train(setup, out="afile.txt"), alone=True)
    assert "is a file, not a pack folder" in line
    assert (setup.root / "afile.txt").read_text() == "keep" and not (setup.root / "afile.txt.ckpt").exists()


@pytest.fixture
def read_only(setup: Setup) -> Iterator[Path]:
    folder = setup.root / "readonly"
    folder.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_out_on_a_read_only_file_system_is_refused_before_training(setup: Setup, read_only: Path) -> None:
    started = time.monotonic()
    line = one_error(train(setup, out="readonly/pack"), alone=True)
    assert "cannot write in" in line and "Read-only file system" in line, line
    assert time.monotonic() - started < 60  # refused at once, not after a training run


def test_members_zero_and_negative_hidden_units_name_their_option(setup: Setup) -> None:
    assert "--members must be from 1 to 64, got 0" in one_error(train(setup, "--members", "0"), alone=True)
    line = one_error(train(setup, "--hidden-units", "-1"), alone=True)
    assert "--hidden-units must be from 0 to 4096, got -1" in line


# --------------------------------------------------------------------------- 4: eval labels


def test_eval_with_labels_outside_the_classes_is_one_error(setup: Setup) -> None:
    trained = setup.run(
        "train", "stage2", "--domain", "smiles", "--function", "bbb", "--target", "bbb", "--task", "classification",
        "--data", "train.csv", "--val", "val.csv", "--out", "bbb", "--max-steps", "1", "--tag-length", "2",
        "--members", "2", "--hidden-units", "4", "--pack-dir", str(setup.packs), *setup.model_args(),
    )  # fmt: skip
    assert trained.returncode == 0, trained
    frame = pd.read_csv(setup.root / "val.csv")
    frame["bbb"] = ["yes", "no"] * (len(frame) // 2)
    frame.to_csv(setup.root / "yesno.csv", index=False)
    args = ["eval", "yesno.csv", "-F", "bbb", "--target", "bbb", "--pack-dir", str(setup.root)]
    line = one_error(setup.run(*args, "--pack-dir", str(setup.packs), *setup.model_args()))
    assert "has a usable label in bbb (found: no, yes)" in line and "classes are BBB+, BBB-" in line
    frame.loc[:9, "bbb"] = "BBB+"
    frame.to_csv(setup.root / "some.csv", index=False)
    args[1] = "some.csv"
    result = setup.run(*args, "--pack-dir", str(setup.packs), *setup.model_args(), "--format", "json")
    assert result.returncode == 0, result
    assert "warning: 30 of 40 scored rows have no usable label in bbb" in " ".join(result.stderr.split())
    assert json.loads(result.stdout)["bbb"]["n"] == 10 and "RuntimeWarning" not in result.stderr


# --------------------------------------------------------------------------- 5: SIGTERM


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_checkpoints_the_current_step_and_resume_continues(setup: Setup, signum: int) -> None:
    out = f"stopped{signum}"
    args = ["train", "stage2", "--domain", "smiles", "--function", "fn", "--target", "y", "--data", "train.csv"]
    args += ["--val", "val.csv", "--out", out, "--eval-every", "100000", "--checkpoint-every", "100000"]
    args += ["--tag-length", "2", "--pack-dir", str(setup.packs), *setup.model_args()]
    process = setup.start(*args, "--max-steps", "100000")
    assert process.stderr is not None
    for line in process.stderr:  # plain progress lines (stderr is a pipe); steps start after this one
        if line.startswith("tag steps"):
            break
    time.sleep(2.0)
    process.send_signal(signum)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, rest
    state = json.loads((setup.root / f"{out}.ckpt" / "state.json").read_text())
    assert 0 < state["step"] < 100000
    assert rest.strip().splitlines()[-1] == (
        f"error: terminated (hint: rerun the same train command with --resume to continue from step {state['step']})"
    )
    resumed = setup.run(*args, "--max-steps", str(state["step"] + 3), "--resume")
    assert resumed.returncode == 0, resumed
    assert f"resumed from checkpoint at step {state['step']}" in resumed.stderr
    manifest = json.loads((setup.root / out / "manifest.json").read_text())
    assert manifest["training"]["steps"] == state["step"] + 3


# --------------------------------------------------------------------------- 6-10


def test_a_validation_file_without_the_target_names_the_file_and_column(setup: Setup) -> None:
    pd.DataFrame({"smiles": molecules(10, 2)}).to_csv(setup.root / "val-no-y.csv", index=False)
    line = one_error(train(setup, val="val-no-y.csv"))
    assert line == "error: no target column 'y' in val-no-y.csv (columns: smiles)"


def test_a_constant_target_is_refused(setup: Setup) -> None:
    frame = pd.read_csv(setup.root / "train.csv").assign(y=3.0)
    frame.to_csv(setup.root / "constant.csv", index=False)
    line = one_error(train(setup, data="constant.csv", out="constant"))
    assert "target 'y' is 3 on every training row" in line


def test_a_readout_layer_the_model_lacks_is_refused(setup: Setup) -> None:
    line = one_error(train(setup, "--readout", "tag-last@999", out="deep"))
    assert line == "error: --readout tag-last@999: the readout reads layer 999, but the base model has 2"


def test_validation_on_the_training_rows_is_refused(setup: Setup) -> None:
    assert "is the training file itself" in one_error(train(setup, val="train.csv", out="leak"))
    shutil.copy(setup.root / "train.csv", setup.root / "copy.csv")
    assert "every validation row's input is also a training row's" in one_error(train(setup, val="copy.csv"))


def test_dropped_rows_are_counted_and_printed(setup: Setup) -> None:
    frame = pd.read_csv(setup.root / "train.csv")
    frame.loc[:9, "y"] = np.nan
    frame.loc[10:13, "smiles"] = "C1CC"
    frame.to_csv(setup.root / "holes.csv", index=False)
    result = train(setup, data="holes.csv", out="holes")
    assert result.returncode == 0, result
    text = " ".join(result.stderr.split())
    assert "warning: holes.csv: 14 of 40 rows dropped (35%): 10 missing label, 4 invalid SMILES" in text
    manifest = json.loads((setup.root / "holes" / "manifest.json").read_text())
    assert manifest["training"]["data"]["dropped"]["train"] == {"missing label": 10, "invalid SMILES": 4}
    card = setup.run("pack", "info", "holes", "--pack-dir", str(setup.root))
    assert "26 rows used; 14 dropped (10 missing label, 4 invalid SMILES)" in " ".join(card.stdout.split())


def test_a_validation_vocabulary_unlike_training_is_explained(setup: Setup) -> None:
    frame = pd.read_csv(setup.root / "val.csv")
    frame["bbb"] = ["yes", "no"] * (len(frame) // 2)
    frame.to_csv(setup.root / "vocab.csv", index=False)
    result = setup.run(
        "train", "stage2", "--domain", "smiles", "--function", "v", "--target", "bbb", "--task", "classification",
        "--data", "train.csv", "--val", "vocab.csv", "--out", "vocab", "--pack-dir", str(setup.packs),
        *setup.model_args(),
    )  # fmt: skip
    line = one_error(result)
    assert "no usable validation rows left" in line and "40 a label that is not one of the training classes" in line
    assert "hint: the validation labels must be values the training labels also have" in line


def test_a_repeated_target_is_refused(setup: Setup) -> None:
    assert "--target y is given more than once" in one_error(train(setup, "--target", "y"), alone=True)
