"""`tagcli predict`'s progress bar: shown only once scoring begins, and counting only this process's rows.

Rich prints a bar's last state when it stops, also into a pipe, so the subprocess tests read stderr.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from helpers import SMILES, Setup, cli_setup
from tagcli.cli.output import Output
from tagcli.cli.predict_cmd import ScoringBar

ROWS = 240


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def recording_bar(clock: Clock) -> tuple[ScoringBar, io.StringIO]:
    out, text = Output(), io.StringIO()
    out.err = Console(file=text, width=120)
    return ScoringBar(out, enabled=True, get_time=clock), text


def test_the_rate_is_this_processs_rows_over_its_scoring_time() -> None:
    """A window scored in 100 s, then its three units written milliseconds apart: 0.6 rows/s, not the
    ~20,000 rows/s that rich's 30-second speed estimate makes of the burst."""
    clock = Clock()
    bar, text = recording_bar(clock)
    with bar:
        bar.start(120)
        for moment in (100.0, 100.001, 100.002):
            clock.now = moment
            bar.advance(20)
        task = bar.progress.tasks[0]
        assert task.speed > 10_000  # what the bar showed before
    assert "60/120" in text.getvalue() and "0.6 rows/s" in text.getvalue()
    assert "0:01:40" in text.getvalue()  # 60 rows left at 0.6 rows/s


def test_nothing_is_shown_before_scoring_begins() -> None:
    bar, text = recording_bar(Clock())
    with pytest.raises(RuntimeError), bar:
        raise RuntimeError("refused before scoring")
    assert text.getvalue() == "" and not bar.progress.live.is_started


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    s = cli_setup(tmp_path_factory.mktemp("progress"), tiny_model_dir)
    values = [SMILES[i % len(SMILES)] + "C" * (i % 5) for i in range(ROWS)]
    pq.write_table(pa.table({"id": list(range(ROWS)), "smiles": values}), s.root / "mols.parquet")
    return s


def predict(setup: Setup, output: str, *extra: str):
    """`predict` with the progress bar on (its last state lands in stderr), 12 windows of 20 rows."""
    args = ["predict", "mols.parquet", "-F", "logp", "--pack-dir", str(setup.packs), *setup.model_args()]
    return setup.run(*args, "-o", output, "--window-rows", "20", "--unit-rows", "10", *extra)


def bar_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("scoring ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.slow
def test_a_refused_run_prints_its_error_line_alone(setup: Setup) -> None:
    assert predict(setup, "refused.parquet", "--shard", "1/2").returncode == 0
    refused = predict(setup, "refused.parquet", "--shard", "2/2", "--window-rows", "40")
    assert refused.returncode != 0
    assert refused.stderr.startswith("error: refused.parquet.parts belongs to a different run"), refused
    assert "scoring" not in refused.stderr


@pytest.mark.slow
def test_shard_and_resumed_runs_count_only_their_own_rows(setup: Setup) -> None:
    first = predict(setup, "split.parquet", "--shard", "1/2")
    assert first.returncode == 0, first
    assert re.search(rf"\b{ROWS // 2}/{ROWS // 2}\b", bar_line(first.stderr))
    resumed = predict(setup, "split.parquet", "--resume")  # the other half is all that is left
    assert resumed.returncode == 0, resumed
    line = bar_line(resumed.stderr)
    assert re.search(rf"\b{ROWS // 2}/{ROWS // 2}\b", line), line
    assert f"scored {ROWS // 2} rows" in resumed.stdout and "12 work unit(s) done earlier" in resumed.stdout
