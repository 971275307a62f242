"""Your own assay with no recipe knowledge (issue #24): `tagcli train stage2` with no head flag gets the
shipped packs' head (pooled readout, ensemble, uncertainty, domain summary), and a log file shows
what it is doing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import cli_setup

pytestmark = pytest.mark.slow  # every test runs the installed CLI as a subprocess


def test_no_flags_give_the_shipped_head_and_a_readable_log(tmp_path: Path, tiny_model_dir: Path) -> None:
    s = cli_setup(tmp_path, tiny_model_dir)
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("val", 20)):
        values = [
            f"{'C' * int(rng.integers(1, 30))}{rng.choice(['O', 'N', 'Cl', 'c1ccccc1', 'C(=O)O'])}" for _ in range(n)
        ]
        labels = ["BBB+" if "O" in v or "N" in v else "BBB-" for v in values]
        pd.DataFrame({"smiles": values, "bbb": labels}).to_csv(tmp_path / f"{split}.csv", index=False)
    result = s.run(
        "train", "stage2", "--domain", "smiles", "--function", "mine", "--task", "classification",
        "--target", "bbb", "--data", "train.csv", "--val", "val.csv", "--out", "packs/mine",
        "--pack-dir", str(s.packs), "--max-steps", "3", *s.model_args(),
    )  # fmt: skip
    assert result.returncode == 0, result
    head = json.loads((tmp_path / "packs" / "mine" / "manifest.json").read_text())["head"]
    # The tiny model has 2 blocks: `auto` reads the input and the function tag at block 1 of 2.
    assert head["readout"] == {"pools": ["input-mean", "tag-mean"], "layers": [1]}
    assert (head["members"], head["hidden_units"], head["domain_components"]) == (5, 32, 16)

    log = result.stderr.splitlines()  # stderr is a pipe here: plain lines, no live bar
    for phase in ("loading the base model", "encoding rows", "tag steps", "final head: fitting"):
        assert any(line.startswith(f"{phase}: ") for line in log), (phase, log)
    assert any(line.startswith("step 3: validation ") for line in log), log
    assert not any("\r" in line or "━" in line for line in log)  # no progress-bar drawing in a log

    scored = s.run("predict", "val.csv", "-F", "mine", "--pack-dir", str(tmp_path / "packs"),
                   "--pack-dir", str(s.packs), *s.model_args(), "--no-progress", "-o", "out.csv")  # fmt: skip
    assert scored.returncode == 0, scored
    out = pd.read_csv(tmp_path / "out.csv")
    assert {"pred_bbb", "prob_BBB+", "prob_BBB-", "domain_score", "in_domain"} <= set(out.columns)
    assert (out["status"] == "ok").all()
