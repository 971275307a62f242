"""`tagcli eval --plot FILE` writes the picture and still prints the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import SMILES, cli_setup

pytestmark = pytest.mark.slow  # every test runs the installed CLI as a subprocess


def test_eval_plot_writes_a_png(tiny_model_dir: Path, tmp_path: Path) -> None:
    s = cli_setup(tmp_path, tiny_model_dir)
    values = SMILES * 3
    pd.DataFrame({"smiles": values, "y": [float(len(v)) for v in values]}).to_csv(tmp_path / "labeled.csv", index=False)
    args = ["eval", "labeled.csv", "-F", "logp", "-t", "y", "--pack-dir", str(s.packs), *s.model_args()]
    result = s.run(*args, "--plot", "parity.png", "--format", "json")
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["scored"] == len(values)
    assert (tmp_path / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote parity.png" in result.stderr
