"""Sharded, resumable and multi-process `tagcli predict`, run as real processes on the tiny model.

The kill test is the one that matters: SIGKILL at arbitrary moments (no cleanup code runs), then
`--resume`, must give exactly the table an uninterrupted run writes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import SMILES, TIMEOUT, Setup, cli_setup
from tagcli.io.workunits import PartDirectory

pytestmark = pytest.mark.slow  # each test runs the installed CLI, most of them several times
ROWS = 3000


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    s = cli_setup(tmp_path_factory.mktemp("scale"), tiny_model_dir)
    values = [SMILES[i % len(SMILES)] + "C" * (i % 7) for i in range(ROWS)] + ["C1CC"]  # one invalid row
    pq.write_table(
        pa.table({"id": list(range(len(values))), "smiles": values}), s.root / "mols.parquet", row_group_size=500
    )
    return s


@pytest.fixture(scope="module")
def reference(setup: Setup) -> pa.Table:
    result = setup.run(*setup.unit_predict_args("reference.parquet"))
    assert result.returncode == 0, result
    table = pq.read_table(setup.root / "reference.parquet")
    assert table.num_rows == ROWS + 1
    return table


def kill_when(process: subprocess.Popen, parts: PartDirectory, done_units: int) -> None:
    """SIGKILL `process` as soon as `done_units` unit records exist (0: as soon as the manifest does)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        records = list((parts.path / parts.RECORDS).glob("*.json")) if parts.path.is_dir() else []
        ready = len(records) >= done_units if done_units else (parts.path / parts.MANIFEST).exists()
        if ready or process.poll() is not None:
            break
        time.sleep(0.005)
    assert process.poll() is None, f"finished before it could be killed: {process.stderr.read()}"
    process.kill()  # SIGKILL: no cleanup runs
    process.wait()


def test_kill_9_then_resume_gives_the_uninterrupted_output(setup: Setup, reference: pa.Table) -> None:
    parts = PartDirectory(setup.root / "killed.parquet")
    args = setup.unit_predict_args("killed.parquet")
    for done_units in (0, 3, 9):  # killed at start, early, and again in the middle of a resumed run
        kill_when(
            setup.start(*args, *(["--resume"] if done_units else []), stdout=subprocess.DEVNULL), parts, done_units
        )
        assert not (setup.root / "killed.parquet").exists()
    result = setup.run(*args, "--resume", "--format", "json")
    assert result.returncode == 0, result
    assert '"skipped_units": ' in result.stdout and '"skipped_units": 0' not in result.stdout
    assert pq.read_table(setup.root / "killed.parquet").equals(reference)  # same rows, order and values
    assert not parts.path.exists()


def test_concurrent_shards_together_give_one_run(setup: Setup, reference: pa.Table) -> None:
    processes = [
        setup.start(*setup.unit_predict_args("sharded.parquet", "--shard", f"{k}/3"), stdout=subprocess.DEVNULL)
        for k in (1, 2, 3)
    ]
    errors = [p.communicate(timeout=TIMEOUT)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], errors
    assert pq.read_table(setup.root / "sharded.parquet").equals(reference)
    records = sorted((PartDirectory(setup.root / "sharded.parquet").path / "_units").glob("*.json"))
    assert len(records) == 51  # every unit scored exactly once, by one of the shards


def test_devices_runs_one_process_per_device(setup: Setup, reference: pa.Table) -> None:
    result = setup.run(*setup.unit_predict_args("devices.parquet", "--devices", "2"))
    assert result.returncode == 0, result
    ok = reference.column("status").to_pylist().count("ok")
    assert f"2 processes scored {ROWS + 1} rows: {ok} ok, {ROWS + 1 - ok} invalid, 0 error" in result.stdout
    assert pq.read_table(setup.root / "devices.parquet").equals(reference)
    assert not PartDirectory(setup.root / "devices.parquet").path.exists()


@pytest.mark.parametrize("devices", ["0", "-1"])
def test_devices_below_one_is_a_usage_error(setup: Setup, devices: str) -> None:
    result = setup.run(*setup.unit_predict_args("no-devices.parquet", "--devices", devices))
    assert result.returncode == 2, result
    assert "--devices" in result.stderr and "Traceback" not in result.stderr
    assert not (setup.root / "no-devices.parquet").exists()


def test_accelerate_launch_gives_each_process_its_shard(setup: Setup, reference: pa.Table) -> None:
    accelerate = Path(sys.executable).parent / "accelerate"
    launch = [
        str(accelerate),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    # --multi_gpu only selects accelerate's torchrun launcher; with --device cpu the processes stay on the CPU.
    done = subprocess.run(
        [*launch, "-m", "tagcli", *setup.unit_predict_args("accelerate.parquet")],
        capture_output=True,
        text=True,
        env=setup.env,
        cwd=setup.root,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "-> accelerate.parquet" in done.stdout  # whichever process finished last merged
    assert pq.read_table(setup.root / "accelerate.parquet").equals(reference)


def test_python_dash_m_tagcli(setup: Setup) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tagcli", "--version"], capture_output=True, text=True, env=setup.env, timeout=TIMEOUT
    )
    assert done.returncode == 0 and done.stdout.startswith("tagcli ")


def test_unit_size_changes_neither_the_output_nor_a_resumed_one(setup: Setup) -> None:
    """Small units are scored together in windows of --window-rows rows, so they pad no more than one
    big unit and give its very table (1260 rows: a window both unit sizes divide), killed and resumed too."""

    def args(output: str, *unit_rows: str) -> list[str]:
        common = ["-F", "logp", "--pack-dir", str(setup.packs), *setup.model_args(), "--no-progress"]
        return ["predict", "mols.parquet", *common, "-o", output, "--window-rows", "1260", *unit_rows]

    tables = {}
    for unit_rows in ("7", "60", None):
        result = setup.run(*args(f"units-{unit_rows}.parquet", *(["--unit-rows", unit_rows] if unit_rows else [])))
        assert result.returncode == 0, result
        tables[unit_rows] = pq.read_table(setup.root / f"units-{unit_rows}.parquet")
    assert tables["7"].equals(tables[None]) and tables["60"].equals(tables[None])

    killed = args("units-killed.parquet", "--unit-rows", "60")
    kill_when(setup.start(*killed, stdout=subprocess.DEVNULL), PartDirectory(setup.root / "units-killed.parquet"), 21)
    result = setup.run(*killed, "--resume", "--format", "json")
    assert result.returncode == 0, result
    assert '"skipped_units": 0' not in result.stdout  # the first window's 21 units were done
    assert pq.read_table(setup.root / "units-killed.parquet").equals(tables[None])
