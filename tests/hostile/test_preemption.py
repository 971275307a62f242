"""What clusters do to a scoring run (issue #25): signals at every stage, damaged files before --resume,
a full disk, an output folder that turns read-only or vanishes. In each case nothing is lost and nothing
is silently wrong: the run stops with one line, keeps what it finished, and --resume ends with exactly
the output of an uninterrupted run.

Signals hit real processes (fault_driver.py, or `tagcli predict`) at exact points; disk faults are
injected into the writer in-process, since a test cannot fill a real disk.
"""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import SMILES, TIMEOUT, Setup, cli_setup, logp_active_scorers
from tagcli.errors import InputFileError, format_error
from tagcli.io.workunits import PartDirectory
from tagcli.scoring.runner import score_file

DRIVER = Path(__file__).with_name("fault_driver.py")
SETTINGS = {"window_rows": 12, "unit_rows": 5}  # fault_driver.SETTINGS
RESUME_LINE = "(hint: rerun with --resume to continue)"
pytestmark = pytest.mark.slow  # real processes, each loading the tiny model


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    s = cli_setup(tmp_path_factory.mktemp("preemption"), tiny_model_dir)
    values = [SMILES[i % len(SMILES)] + "C" * (i % 4) for i in range(40)] + ["C1CC", ""]
    pq.write_table(pa.table({"id": list(range(len(values))), "smiles": values}), s.root / "mols.parquet")
    return s


@pytest.fixture(scope="module")
def expected(setup: Setup) -> pa.Table:
    out = setup.root / "uninterrupted.parquet"
    assert drive(setup, out).returncode == 0
    return pq.read_table(out)


def drive(setup: Setup, out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(DRIVER), str(setup.model), str(setup.packs), str(setup.root / "mols.parquet")]
    return subprocess.run(
        [*command, str(out), *args], env=setup.env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def locks(out: Path) -> list[Path]:
    return list((PartDirectory(out).path / PartDirectory.LOCKS).glob("*.json"))


@pytest.mark.parametrize(
    ("point", "name"), [(p, n) for p in ("batch", "checkpoint", "merge") for n in ("TERM", "KILL")] + [("batch", "HUP")]
)
def test_a_signal_anywhere_then_resume_gives_the_uninterrupted_output(
    setup: Setup, expected: pa.Table, point: str, name: str
) -> None:
    out = setup.root / f"{point}-{name}.parquet"
    stopped = drive(setup, out, "--at", point, "--signal", name)
    signum = getattr(signal, f"SIG{name}")
    if name == "KILL":
        assert stopped.returncode == -signum and stopped.stderr == ""
    else:
        assert stopped.returncode == 128 + signum
        assert stopped.stderr.splitlines() == [f"error: terminated {RESUME_LINE}"]
        assert locks(out) == []  # released: a rerun needs no takeover
    assert not out.exists()  # never a half-merged output
    resumed = drive(setup, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert pq.read_table(out).equals(expected)
    assert not PartDirectory(out).path.exists()
    assert not list(setup.root.glob(f".{out.name}.*"))  # a killed merge's temp file is gone too


@pytest.mark.parametrize("devices", [[], ["--devices", "2"]])
def test_sigterm_to_tagcli_predict_keeps_the_parts_and_releases_the_lock(setup: Setup, devices: list[str]) -> None:
    """A scheduler's SIGTERM to `predict` (with --devices: to the parent only, which passes it on)."""
    big = setup.root / "big.csv"
    big.write_text("smiles\n" + "\n".join(SMILES * 3000) + "\n")
    out = setup.root / f"big{len(devices)}.out.parquet"
    records = PartDirectory(out).path / PartDirectory.RECORDS
    process = setup.start(*setup.unit_predict_args(str(out), *devices, source=str(big)), stdout=subprocess.DEVNULL)
    deadline = time.time() + TIMEOUT
    while not any(records.glob("*.json")) and time.time() < deadline:  # a unit is done
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 143
    assert stderr.strip().splitlines() == [f"error: terminated {RESUME_LINE}"]
    assert any(records.glob("*.json")) and locks(out) == [] and not out.exists()


# --------------------------------------------------------------------------- damaged files before --resume


@pytest.fixture(scope="module")
def scorer(base, tmp_path_factory: pytest.TempPathFactory):
    return logp_active_scorers(base, tmp_path_factory.mktemp("packs"))


@pytest.fixture
def source(setup: Setup) -> Path:
    return setup.root / "mols.parquet"


def stopped_run(scorer, source: Path, out: Path, rows: int) -> PartDirectory:
    """A run stopped after `rows` rows are written, as a crash would stop it."""

    class Stop(Exception):
        pass

    def on_rows(n: int, seen: list[int] = [0]) -> None:  # noqa: B006  (one counter per run)
        seen[0] += n
        if seen[0] >= rows:
            raise Stop

    with pytest.raises(Stop):
        score_file(scorer(), source, out, on_rows=on_rows, **SETTINGS)
    return PartDirectory(out)


def resumed(scorer, source: Path, out: Path) -> list[str]:
    notices: list[str] = []
    score_file(scorer(), source, out, resume=True, on_notice=notices.append, **SETTINGS)
    return notices


def reference(scorer, source: Path, tmp_path: Path) -> pa.Table:
    score_file(scorer(), source, tmp_path / "reference.parquet", **SETTINGS)
    return pq.read_table(tmp_path / "reference.parquet")


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_part_is_named_and_scored_again(scorer, source: Path, tmp_path: Path, damage: str) -> None:
    out = tmp_path / "out.parquet"
    parts = stopped_run(scorer, source, out, rows=20)
    part = sorted(parts.path.glob("part-*.parquet"))[1]
    data = part.read_bytes()
    if damage == "truncate":
        part.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        part.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        part.unlink()
    notices = resumed(scorer, source, out)
    if damage == "delete":  # no part, not done: scored again without a word
        assert notices == []
    else:
        assert len(notices) == 1 and str(part) in notices[0] and "scored again" in notices[0]
    assert pq.read_table(out).equals(reference(scorer, source, tmp_path))


def test_a_part_damaged_before_the_merge_is_never_merged(scorer, source: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out.parquet"
    merge = PartDirectory.merge

    def damage_then_merge(self: PartDirectory, units, destination, schema) -> None:
        self.part(units[0]).write_bytes(b"PAR1 not a part")  # another shard's disk went bad meanwhile
        merge(self, units, destination, schema)

    monkeypatch.setattr(PartDirectory, "merge", damage_then_merge)
    with pytest.raises(InputFileError, match=r"^1 part\(s\) not merged: .*part-000000\.parquet holds"):
        score_file(scorer(), source, out, **SETTINGS)
    assert not out.exists()
    monkeypatch.setattr(PartDirectory, "merge", merge)
    assert resumed(scorer, source, out) == []  # the part was set aside: its unit is simply not done
    assert pq.read_table(out).equals(reference(scorer, source, tmp_path))


@pytest.mark.parametrize("damage", ["truncate", "edit"])
def test_a_damaged_checkpoint_is_named_and_its_window_scored_again(
    scorer, source: Path, tmp_path: Path, monkeypatch, damage: str
) -> None:
    monkeypatch.setattr("tagcli.scoring.checkpoints.CHECKPOINT_SECONDS", 0.0)
    out = tmp_path / "out.parquet"
    parts = stopped_run(scorer, source, out, rows=5)  # stopped inside the first window, after its first unit
    [checkpoint] = (parts.path / PartDirectory.CHECKPOINTS).glob("*.json")
    text = checkpoint.read_text()
    checkpoint.write_text(text[: len(text) // 2] if damage == "truncate" else text.replace("0.", "1.", 1))
    notices = resumed(scorer, source, out)
    assert len(notices) == 1 and str(checkpoint) in notices[0] and "scored again" in notices[0]
    assert pq.read_table(out).equals(reference(scorer, source, tmp_path))


# --------------------------------------------------------------------------- full disk, read-only, vanished folder


def part_file(parts: PartDirectory, unit: int) -> Path:
    return parts.path / f"part-{unit:06d}.parquet"


def failing_writes(monkeypatch, name: str, error: OSError) -> None:
    """Make pyarrow's Parquet writer raise `error` when it writes the file `name` (through its temp file)."""
    write = pq.ParquetWriter.write

    def write_or_fail(self: pq.ParquetWriter, data, *args, **kwargs) -> None:
        if Path(self.where).name.startswith(f".{Path(name).name}."):
            raise error
        write(self, data, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write", write_or_fail)


ENOSPC = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")


def test_a_full_disk_while_writing_a_part(scorer, source: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out.parquet"
    parts = PartDirectory(out)
    failing_writes(monkeypatch, part_file(parts, 4), ENOSPC)
    with pytest.raises(InputFileError) as caught:
        score_file(scorer(), source, out, **SETTINGS)
    line, code = format_error(caught.value)
    assert code == 1 and "\n" not in line
    assert line.startswith(f"cannot write {part_file(parts, 4)}: no space left on device (")
    assert f"free in {parts.path}" in line and "it needs about" in line
    assert line.endswith(f"then rerun with --resume (4 finished unit(s) kept in {parts.path}))")
    assert not list(parts.path.glob(".*.tmp"))  # the failed part left nothing behind
    monkeypatch.undo()
    resumed(scorer, source, out)
    assert pq.read_table(out).equals(reference(scorer, source, tmp_path))


def test_a_full_disk_while_merging(scorer, source: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out.parquet"
    failing_writes(monkeypatch, out, ENOSPC)
    with pytest.raises(InputFileError) as caught:
        score_file(scorer(), source, out, **SETTINGS)
    line, _ = format_error(caught.value)
    assert line.startswith(f"cannot write {out}: no space left on device (") and "it needs about" in line
    assert "rerun with --resume (11 finished unit(s) kept" in line
    monkeypatch.undo()
    assert resumed(scorer, source, out) == []  # every unit done: --resume only merges
    assert pq.read_table(out).equals(reference(scorer, source, tmp_path))


def test_an_output_folder_that_turns_read_only(scorer, source: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out.parquet"
    parts = PartDirectory(out)
    denied = PermissionError(errno.EACCES, "Permission denied", str(part_file(parts, 3)))
    failing_writes(monkeypatch, part_file(parts, 3), denied)
    with pytest.raises(InputFileError, match=r"the folder .*\.parts is not writable \(permission denied\)$"):
        score_file(scorer(), source, out, **SETTINGS)
    assert len(list((parts.path / parts.RECORDS).glob("*.json"))) == 3  # units before it kept
    monkeypatch.undo()
    resumed(scorer, source, out)
    assert pq.read_table(out).equals(reference(scorer, source, tmp_path))


def test_an_output_folder_that_vanishes(scorer, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    parts = PartDirectory(out)

    def remove_the_folder(n: int) -> None:
        parts.remove()  # someone cleans up the scratch disk mid-run

    with pytest.raises(InputFileError, match=r"parts was deleted while the run was writing it \(hint: rerun without"):
        score_file(scorer(), source, out, on_rows=remove_the_folder, **SETTINGS)
    assert not out.exists()
    score_file(scorer(), source, out, **SETTINGS)  # nothing to resume: a plain rerun starts afresh
    assert pq.read_table(out).equals(reference(scorer, source, tmp_path))
