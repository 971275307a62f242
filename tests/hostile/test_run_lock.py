"""Two runs on one output, a killed run's lock, shards of one job, and an output that is the input.

Real `tagcli` processes on the tiny model. A run that must stay live while others try the same
output is paused with SIGSTOP (a stopped process is still running as far as the lock goes) and
continued with SIGCONT afterwards, so nothing depends on how fast the machine is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from helpers import SMILES, TIMEOUT, Setup, cli_setup
from tagcli.errors import UsageError
from tagcli.io.lock import STALE_AFTER_SECONDS, RunLock, RunLockedError, StaleLock
from tagcli.io.workunits import PartDirectory
from tagcli.scoring.runner import check_run

ROWS = 2400
STARTED = r"started (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d"


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    s = cli_setup(tmp_path_factory.mktemp("lock"), tiny_model_dir)
    values = [SMILES[i % len(SMILES)] + "C" * (i % 7) for i in range(ROWS)]
    table = pa.table({"id": list(range(ROWS)), "smiles": values})
    pq.write_table(table, s.root / "mols.parquet", row_group_size=500)
    pa_csv.write_csv(table.slice(0, 20), s.root / "mols.csv")
    return s


@pytest.fixture(scope="module")
def reference(setup: Setup) -> pa.Table:
    result = setup.run(*setup.unit_predict_args("reference.parquet"))
    assert result.returncode == 0, result
    return pq.read_table(setup.root / "reference.parquet")


def run_together(s: Setup, *arg_lists: list[str]) -> list[tuple[int, str, str]]:
    """Run several tagcli commands at once: [(exit code, stdout, stderr)] in the same order."""
    processes = [s.start(*args) for args in arg_lists]
    outputs = [p.communicate(timeout=TIMEOUT) for p in processes]
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs)]


def wait_for_units(process: subprocess.Popen, parts: PartDirectory, done_units: int) -> None:
    """Return once `done_units` unit records exist, with `process` still running."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        if parts.path.is_dir() and len(list((parts.path / parts.RECORDS).glob("*.json"))) >= done_units:
            return
        time.sleep(0.005)
    raise AssertionError(f"finished before it was caught running: {process.communicate()}")


@contextmanager
def paused_runs(s: Setup, *runs: list[str]) -> Iterator[list[subprocess.Popen]]:
    """Runs (each: output and extra options), all stopped (SIGSTOP) in the middle for the block,
    then continued to their end."""
    processes: list[subprocess.Popen] = []
    try:
        # One at a time: a run started early would go on (and may finish) while the test waits on another.
        for run in runs:
            processes.append(s.start(*s.unit_predict_args(*run)))
            wait_for_units(processes[-1], PartDirectory(s.root / run[0]), 2)
            processes[-1].send_signal(signal.SIGSTOP)
        yield processes
    finally:
        for process in processes:
            process.send_signal(signal.SIGCONT)
        for process in processes:
            process.communicate(timeout=TIMEOUT)


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.slow  # real tagcli processes
def test_second_runs_on_live_outputs_stop_at_once_other_shards_join(setup: Setup, reference: pa.Table) -> None:
    """Two live runs (paused): a plain one, and shard 1/2 of a job. Meanwhile the same command, the
    same with --resume (the old hint) and a second claim on shard 1/2 stop at once; shard 2/2 joins."""
    live, sharded = PartDirectory(setup.root / "live.parquet"), PartDirectory(setup.root / "sharded.parquet")
    with paused_runs(setup, ["live.parquet"], ["sharded.parquet", "--shard", "1/2"]) as (plain, shard):
        *refused, same_shard, other_shard = run_together(
            setup,
            setup.unit_predict_args("live.parquet"),
            setup.unit_predict_args("live.parquet", "--resume"),
            setup.unit_predict_args("sharded.parquet", "--shard", "1/2"),
            setup.unit_predict_args("sharded.parquet", "--shard", "2/2"),
        )
    host = re.escape(socket.gethostname())
    for code, _, stderr in refused:
        assert code == 1, stderr
        assert re.fullmatch(
            rf"error: live\.parquet is being written by another tagcli run \(pid {plain.pid} on host {host}, "
            rf"{STARTED}\) \(hint: wait for it, or pass a different -o\)",
            one_error_line(stderr),
        ), stderr
    assert same_shard[0] == 1, same_shard
    assert re.fullmatch(
        rf"error: sharded\.parquet is being written by another tagcli run \(shard 1/2: pid {shard.pid} on host "
        rf"{host}, {STARTED}\) \(hint: wait for it, or pass a different -o\)",
        one_error_line(same_shard[2]),
    ), same_shard
    assert other_shard[0] == 0, other_shard
    assert "merged when every shard is done" in other_shard[1]  # shard 1/2 was not done yet

    assert plain.returncode == 0 and shard.returncode == 0  # shard 1/2 finished last and merged
    assert pq.read_table(setup.root / "live.parquet").equals(reference)
    assert pq.read_table(setup.root / "sharded.parquet").equals(reference)
    assert not live.path.exists()
    assert len(list((sharded.path / sharded.RECORDS).glob("*.json"))) == ROWS // 60
    assert list((sharded.path / "_locks").iterdir()) == []  # every process removed its lock


@pytest.mark.slow  # real tagcli processes
def test_a_killed_runs_lock_is_stale_and_resume_takes_it_over(setup: Setup, reference: pa.Table) -> None:
    parts = PartDirectory(setup.root / "killed.parquet")
    killed = setup.start(*setup.unit_predict_args("killed.parquet"))
    wait_for_units(killed, parts, 2)
    killed.kill()  # SIGKILL: the lock file stays behind
    killed.communicate()
    assert (parts.path / "_locks" / "shard-1-of-1.json").is_file()

    result = setup.run(*setup.unit_predict_args("killed.parquet"))
    assert result.returncode == 2, result
    assert re.fullmatch(
        rf"error: killed\.parquet\.parts holds the parts of an unfinished run; its process \(pid {killed.pid} "
        rf"on host {re.escape(socket.gethostname())}, {STARTED}\) is gone "
        r"\(hint: pass --resume to continue it, or delete the folder\)",
        one_error_line(result.stderr),
    ), result

    result = setup.run(*setup.unit_predict_args("killed.parquet", "--resume"))
    assert result.returncode == 0, result
    assert pq.read_table(setup.root / "killed.parquet").equals(reference)
    assert not parts.path.exists()


def test_which_locks_conflict(tmp_path: Path) -> None:
    """In process: shares of units that overlap conflict, whoever holds them; other hosts by heartbeat."""
    folder = tmp_path / "_locks"
    with RunLock(folder, 0, 1, "out.parquet") as whole:
        whole.acquire(takeover=False)
        for index, count in ((0, 1), (0, 3), (2, 3)):
            with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on host "):
                RunLock(folder, index, count, "out.parquet").check()
    with RunLock(folder, 1, 4, "out.parquet") as shard:  # units 1, 5, 9, ...
        shard.acquire(takeover=False)
        RunLock(folder, 0, 2, "out.parquet").check()  # units 0, 2, 4, ...: none in common
        RunLock(folder, 3, 4, "out.parquet").check()
        with pytest.raises(RunLockedError, match=r"\(shard 2/4: pid "):
            RunLock(folder, 1, 2, "out.parquet").check()  # units 1, 3, 5, ...
    assert list(folder.iterdir()) == []
    # another host: live while its heartbeat (the file's mtime) is fresh, stale after STALE_AFTER_SECONDS
    lock = folder / "shard-1-of-1.json"
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": time.time(), "shard": "1/1", "token": "t"}))
    with pytest.raises(RunLockedError, match="pid 1 on host elsewhere"):
        RunLock(folder, 0, 1, "out.parquet").acquire(takeover=True)
    old = time.time() - STALE_AFTER_SECONDS - 60
    os.utime(lock, (old, old))
    with pytest.raises(StaleLock):
        RunLock(folder, 0, 1, "out.parquet").acquire(takeover=False)
    with RunLock(folder, 0, 1, "out.parquet") as taken:
        taken.acquire(takeover=True)
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow  # real tagcli processes
def test_an_output_that_is_the_input_is_refused(setup: Setup) -> None:
    source = setup.root / "mols.csv"
    os.link(source, setup.root / "mols-hard.csv")
    os.symlink("mols.csv", setup.root / "mols-sym.csv")
    before = sha256(source)
    outputs = ["mols.csv", "mols-hard.csv", "mols-sym.csv"]
    results = run_together(setup, *(setup.unit_predict_args(out, source="mols.csv") for out in outputs))
    for output, (code, _, stderr) in zip(outputs, results):
        assert code == 2, stderr
        how = "" if output == "mols.csv" else " (a link to it)"
        assert one_error_line(stderr) == (
            f"error: the output {output} is the input file{how} (hint: choose another -o, e.g. -o mols.scored.csv)"
        )
    assert sha256(source) == before and (setup.root / "mols-sym.csv").is_symlink()
    assert not PartDirectory(source).path.exists() and not (setup.root / "mols.scored.csv").exists()


def test_an_output_folder_or_one_whose_parts_hold_the_input_is_refused(tmp_path: Path) -> None:
    parts = PartDirectory(tmp_path / "out.parquet").path
    parts.mkdir()
    (parts / "part-000000.parquet").write_bytes(b"x")
    with pytest.raises(UsageError, match="is inside .*out.parquet.parts, the part folder of the output"):
        check_run(parts / "part-000000.parquet", tmp_path / "out.parquet")
    (tmp_path / "dir.parquet").mkdir()
    with pytest.raises(UsageError, match="dir.parquet is a folder"):
        check_run(parts / "part-000000.parquet", tmp_path / "dir.parquet")
