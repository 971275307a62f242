"""Ctrl-C at the command line a user types (issue #17): one line and exit 130, whether it comes during
start-up (inside the torch import) or while scoring, and nothing half-written is left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from helpers import SMILES, Setup, cli_setup, tagcli_executable

INTERRUPTED_LINE = "error: interrupted (hint: rerun with --resume to continue)"


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    s = cli_setup(tmp_path_factory.mktemp("stop-signals"), tiny_model_dir)
    pd.DataFrame({"smiles": SMILES}).to_csv(s.root / "in.csv", index=False)
    return s


def interrupt(setup: Setup, source: Path, out: Path, ready: Callable[[], bool]) -> str:
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


# Not slow: the run is stopped 0.3 s after it starts.
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(setup: Setup) -> None:
    out = setup.root / "interrupted.csv"
    started = time.time()
    stderr = interrupt(setup, setup.root / "in.csv", out, lambda: time.time() - started > 0.3)  # inside imports
    assert stderr.strip().splitlines() == [INTERRUPTED_LINE]
    assert not out.exists() and not any(p.name.startswith(".interrupted") for p in setup.root.iterdir())


@pytest.mark.slow
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
