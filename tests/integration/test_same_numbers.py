"""Same numbers however the work is cut (issue #25), on the real embedded model with the built-in qed pack.

In bf16 a row's numbers depend on which rows share its batch, so one run, two shards (one by --shard,
one by a launcher's RANK/WORLD_SIZE), --devices 2, a larger --unit-rows and a run killed with SIGKILL
then resumed must all score exactly the same batches: their outputs are compared bit for bit, in
bf16 and in fp32. (--window-rows does change bf16 numbers; nothing here claims otherwise.)

tests/data/drug_like_120.csv: the first 120 molecules of ../shared/data/qed_test.parquet (MOSES test set).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from helpers import embedded_model_tests, tagcli_executable
from tagcli.basemodel import embedded
from tagcli.basemodel.load import select_dtype
from tagcli.io.workunits import PartDirectory

pytestmark = embedded_model_tests()
MOLECULES = Path(__file__).resolve().parents[1] / "data" / "drug_like_120.csv"
# 3 windows of 40 rows, 5 batches each, in units of 20 rows (6 units) unless told: every way of cutting
# below has several windows and units to cut.
CUT = ["--window-rows", "40", "--batch-size", "8"]
TIMEOUT = 900


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The embedded model pulled once for the module (~20-60 s)."""
    path = tmp_path_factory.mktemp("same-numbers-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TAGCLI_HOME", str(path))
        embedded.pull_embedded()
    yield path


class Runs:
    """`tagcli predict --function qed` of MOLECULES in DTYPE, started as background processes in ROOT."""

    def __init__(self, root: Path, home: Path, dtype: str) -> None:
        self.root, self.dtype = root, dtype
        # One thread each: the runs go side by side on a small CPU, and every run has the same settings.
        self.env = {**os.environ, "TAGCLI_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.env.pop("TAGCLI_DEBUG", None)

    def start(self, output: str, *extra: str, unit_rows: int = 20, env: dict[str, str] | None = None):
        args = ["predict", str(MOLECULES), "--function", "qed", "-o", output, *CUT, "--unit-rows", str(unit_rows)]
        args += ["--dtype", self.dtype]
        args += ["--device", "cpu", "--no-progress", "--format", "json", *extra]
        return subprocess.Popen(
            [tagcli_executable(), *args],
            env={**self.env, **(env or {})},
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def finish(process: subprocess.Popen) -> dict:
    """The JSON summary of a run that must succeed."""
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, f"{process.args}\n-> {process.returncode}\n{stderr}"
    return json.loads(stdout)


def kill_after_units(process: subprocess.Popen, output: Path, units: int) -> None:
    """SIGKILL `process` once `units` unit records exist in OUTPUT.parts (no cleanup code runs)."""
    records = PartDirectory(output).path / PartDirectory.RECORDS
    deadline = time.monotonic() + TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        if records.is_dir() and len(list(records.glob("*.json"))) >= units:
            break
        time.sleep(0.01)
    assert process.poll() is None, f"finished before it could be killed: {process.communicate()[1]}"
    process.send_signal(signal.SIGKILL)
    process.wait()


def differences(table: pa.Table, reference: pa.Table) -> str:
    """Which columns differ from REFERENCE, and by how much (for the failure message)."""
    if table.schema != reference.schema or table.num_rows != reference.num_rows:
        return f"shape: {table.schema} {table.num_rows} rows vs {reference.schema} {reference.num_rows} rows"
    lines = []
    for name in reference.column_names:
        a, b = table.column(name), reference.column(name)
        if a.equals(b):
            continue
        if pa.types.is_floating(b.type):
            gap = pc.abs(pc.subtract(a, b))
            lines.append(f"{name}: {pc.sum(pc.greater(gap, 0)).as_py()} rows differ, max {pc.max(gap).as_py():.3g}")
        else:
            lines.append(f"{name}: differs")
    return "; ".join(lines)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_every_way_of_cutting_the_work_gives_one_runs_numbers(dtype: str, home: Path, tmp_path: Path) -> None:
    if dtype == "bfloat16" and select_dtype("auto", torch.device("cpu")) != torch.bfloat16:
        pytest.skip("this CPU has no native bf16 (avx512_bf16/amx_bf16), so --dtype auto never picks bf16 here")
    runs = Runs(tmp_path, home, dtype)
    started = {
        "one run": [runs.start("one.parquet")],
        "--shard 1/2 + RANK=1 WORLD_SIZE=2": [
            runs.start("shards.parquet", "--shard", "1/2"),
            runs.start("shards.parquet", env={"RANK": "1", "WORLD_SIZE": "2"}),  # as accelerate/torchrun set it
        ],
        "--devices 2": [runs.start("devices.parquet", "--devices", "2")],
        # 100 rounds down to 2 whole windows: units scored window by window, not as a window's pieces.
        "--unit-rows 100": [runs.start("units.parquet", unit_rows=100)],
    }
    kill_after_units(runs.start("resumed.parquet"), tmp_path / "resumed.parquet", 2)  # the first window
    assert not (tmp_path / "resumed.parquet").exists()
    started["kill -9 + --resume"] = [runs.start("resumed.parquet", "--resume")]
    summaries = {name: [finish(p) for p in processes] for name, processes in started.items()}
    assert summaries["kill -9 + --resume"][0]["skipped_units"] >= 2  # it resumed, not started over
    outputs = dict(zip(started, ["one", "shards", "devices", "units", "resumed"]))
    reference = pq.read_table(tmp_path / "one.parquet")
    assert reference.num_rows == 120 and pc.all(pc.equal(reference.column("status"), "ok")).as_py()
    tables = {name: pq.read_table(tmp_path / f"{stem}.parquet") for name, stem in outputs.items()}
    mismatches = {name: differences(t, reference) for name, t in tables.items() if not t.equals(reference)}
    assert not mismatches, f"{dtype}, not one run's output: {mismatches}"
