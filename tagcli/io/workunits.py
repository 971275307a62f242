"""Work units and part directories: how a big scoring run is split, sharded, resumed and merged.

    mols.parquet ──plan_units──▶ window 0        │ window 1        │ …   (fixed rows [k*W, (k+1)*W): the scoring grain)
                                 unit 0 │ unit 1 │ unit 2 │ unit 3 │ …   (inside windows, or whole windows)
                                 + the input's schema            (read on the way: no second open)
                  --shard I/N ─▶ units whose group % N == I          (disjoint; together: all of them)
               window_groups ─▶ [u0 u1] [u2 u3] …                 (the units of one group, scored together)
    out.parquet.parts/
        _manifest.json           what makes the run reproducible: input, packs, base model, settings
        _locks/shard-1-of-1.json which live process writes which units (lock.py)
        part-000003.parquet      unit 3's scored rows, written atomically (temp file + rename)
        _units/000003.json       written after the part: unit 3 is done (rows, ok/invalid/error)

A unit counts as done only when its `_units` record exists, and that record is written after its
part file is in place; a process killed at any point leaves at most a temp file and no record, so
`--resume` redoes exactly the unfinished units.

The scorer sorts rows by length and cuts batches only within what it is given at once, and in bf16 a
row's numbers depend on the rows padded into its batch. So the grain of scoring is a fixed *window*
of the input, rows [k*W, (k+1)*W) for W = `window_rows`, and units never straddle a window: units
smaller than a window cut it into pieces scored together (one *group*), larger ones are rounded down
to whole windows (each unit its own group, scored window by window). Shards own whole groups, and a
resumed run scores a group with a missing unit whole again (writing only what is missing). Thus
every row is batched with the same rows whatever the shards, `--devices`, `--unit-rows` or resume,
and only `window_rows` (recorded in the manifest) changes numbers. Names starting with '_' or '.'
are ignored by Parquet dataset readers, so the directory also reads as one dataset in row order.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tagcli.atomic import write_json_atomic
from tagcli.errors import InputFileError, UsageError, first_line
from tagcli.io.csv_records import scan_csv
from tagcli.io.lock import RunLock, StaleLock
from tagcli.io.tables import DEFAULT_WINDOW_ROWS, csv_schema, open_bytes, read_csv_header, table_format
from tagcli.io.writer import TableWriter, write_errors
from tagcli.packs.integrity import sha256_file


@dataclass(frozen=True)
class WorkUnit:
    """Rows [first_row, first_row + num_rows) of a table: the piece one process scores at a time.

    Plain CSV units also carry the byte range those rows occupy (so a reader can seek to them);
    Parquet units are found through row-group metadata. Planned by `plan_units`.
    """

    index: int
    first_row: int
    num_rows: int
    byte_range: tuple[int, int] | None = None
    group: int = 0  # the window group it is scored with (`window_groups`), and what a shard owns


@dataclass(frozen=True)
class InputPlan:
    """An input table cut into units, and its schema: exactly what `TableReader.schema` gives for it."""

    units: list[WorkUnit]
    schema: pa.Schema
    path: str = ""
    stamp: tuple[int, int] | None = None  # the input's (size, mtime_ns) before it was planned

    def check_unit_rows(self, unit: WorkUnit, rows: int) -> None:
        """Fail if `unit` read as `rows` rows when `unit.num_rows` were planned.

        Only a file that changed (size or mtime) is said to have changed. Otherwise the planner and
        the reader disagree about where records end: with one unit (the whole file) no row can be
        lost or read twice, so the rows read stand; with several units that is an error.
        """
        if rows == unit.num_rows:
            return
        where = f"unit {unit.index} has {rows} rows, expected {unit.num_rows}"
        if _stamp(self.path) != self.stamp:
            raise InputFileError(f"{self.path} changed while it was scored: {where}")
        if len(self.units) > 1:
            total = sum(u.num_rows for u in self.units)
            raise InputFileError(
                f"cannot split {self.path} into work units: {where}, though the file did not change",
                hint=f"score it as one unit with --unit-rows {max(total, rows)}, and report this as a tagcli bug",
            )


@dataclass(frozen=True)
class Shard:
    """This process's share of the units: those whose window group % count == index."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'I/N' with 1 <= I <= N (1-based, as users count)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
            raise UsageError(f"--shard takes I/N with 1 <= I <= N, e.g. 2/8; got {text!r}")
        return cls(int(match.group(1)) - 1, int(match.group(2)))

    @classmethod
    def from_launcher(cls) -> Shard | None:
        """The shard a launcher assigned (`accelerate launch`, `torchrun`: RANK and WORLD_SIZE)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world) if world > 1 else None

    def owns(self, unit: WorkUnit) -> bool:
        return unit.group % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


def window_groups(units: Sequence[WorkUnit]) -> list[list[WorkUnit]]:
    """`units` in order, in groups of consecutive units of the same window group: each group is scored
    as one whole window (or, for a unit of several windows, window by window)."""
    groups: list[list[WorkUnit]] = []
    for unit in units:
        if groups and groups[-1][-1].group == unit.group:
            groups[-1].append(unit)
        else:
            groups.append([unit])
    return groups


def unit_layout(unit_rows: int, window_rows: int) -> tuple[int, int]:
    """(rows per unit, rows per group): units never straddle a window, so a unit smaller than a window
    cuts it into pieces, and a larger one is rounded down to whole windows (a group of its own)."""
    if unit_rows < 1:
        raise UsageError(f"--unit-rows must be at least 1, got {unit_rows}")
    if window_rows < 1:
        raise UsageError(f"--window-rows must be at least 1, got {window_rows}")
    if unit_rows < window_rows:
        return unit_rows, window_rows
    rows = unit_rows // window_rows * window_rows
    return rows, rows


def plan_units(path: str | Path, unit_rows: int, window_rows: int = DEFAULT_WINDOW_ROWS) -> InputPlan:
    """Cut a table into units laid out by `unit_layout` (an empty table: one empty unit).

    Parquet row counts and the schema come from the footer. Plain CSV files are scanned once for
    record boundaries (quote-aware, so newlines inside quoted cells stay inside their row); gzipped
    CSV cannot be entered in the middle, so it is a single unit. A CSV schema is its header's names,
    every column a string.
    """
    layout = unit_layout(unit_rows, window_rows)
    stamp = _stamp(path)  # before reading: a change from now on shows as a different stamp
    units, schema = _plan_parquet(path, layout) if table_format(path) == "parquet" else _plan_csv(path, layout)
    return InputPlan(units, schema, str(path), stamp)


def _stamp(path: str | Path) -> tuple[int, int] | None:
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _plan_parquet(path: str | Path, layout: tuple[int, int]) -> tuple[list[WorkUnit], pa.Schema]:
    try:
        with pq.ParquetFile(path) as footer:
            total, schema = footer.metadata.num_rows, footer.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise InputFileError(f"cannot read {path} as Parquet: {exc}") from exc
    unit, group = layout
    starts = [row for first in range(0, total, group) for row in range(first, min(first + group, total), unit)]
    ends = [*starts[1:], total]
    units = [WorkUnit(k, start, end - start, group=start // group) for k, (start, end) in enumerate(zip(starts, ends))]
    return units or [WorkUnit(0, 0, 0)], schema


def _plan_csv(path: str | Path, layout: tuple[int, int]) -> tuple[list[WorkUnit], pa.Schema]:
    if str(path).lower().endswith(".gz"):
        with gzip.open(path, "rb") as stream:
            names, _ = read_csv_header(stream, str(path))  # type: ignore[arg-type]
            _, total = scan_csv(stream, stream.tell(), every=1 << 62)
        return [WorkUnit(0, 0, total)], csv_schema(names)
    unit, group = layout
    with open_bytes(str(path)) as stream:
        names, _ = read_csv_header(stream, str(path))
        data_start, size = stream.tell(), Path(path).stat().st_size
        row_starts, total = scan_csv(stream, data_start, every=unit, period=group)
    ends = [offset for _, offset in row_starts[1:]] + [size]
    rows = [row for row, _ in row_starts[1:]] + [total]
    units = [
        WorkUnit(k, row, rows[k] - row, (offset, ends[k]), group=row // group)
        for k, (row, offset) in enumerate(row_starts)
    ]
    return units or [WorkUnit(0, 0, 0, (data_start, size))], csv_schema(names)


class PartDirectory:
    """`DEST.parts/`: one part file and one done-record per unit, plus the run's manifest."""

    MANIFEST = "_manifest.json"
    RECORDS = "_units"
    CHECKPOINTS = "_checkpoints"  # what a killed run scored of the window it was in (checkpoints.py)
    LOCKS = "_locks"  # one lock file per shard of each live process (lock.py)

    def __init__(self, destination: str | Path) -> None:
        self.destination = str(destination)
        destination = Path(destination)
        self.path = destination.with_name(destination.name + ".parts")

    def part(self, unit: WorkUnit) -> Path:
        return self.path / f"part-{unit.index:06d}.parquet"

    def _record(self, unit: WorkUnit) -> Path:
        return self.path / self.RECORDS / f"{unit.index:06d}.json"

    def checkpoint(self, first_row: int) -> Path:
        return self.path / self.CHECKPOINTS / f"window-{first_row:012d}.json"

    def has_checkpoints(self) -> bool:
        return any((self.path / self.CHECKPOINTS).glob("window-*.json"))

    def size(self, units: Sequence[WorkUnit]) -> int:
        return sum(self.part(u).stat().st_size for u in units if self.part(u).is_file())

    def open(self, manifest: dict[str, Any], join: bool, shard: Shard | None = None) -> RunLock:
        """Lock `shard` (default: the whole run) here, then start the directory with `manifest`, or
        join the run already there if it is the same run. Returns the held lock: release it (or use
        it as a `with` block) when the process is done; it is released here if opening fails.

        A live process writing the same units stops this one (RunLockedError); a stale lock (its
        process is gone) is taken over when `join`, or when there is no manifest yet. Shards start
        at the same moment, so the manifest is created without clobbering (link) and whoever comes
        second checks that it describes the same run.
        """
        manifest = json.loads(json.dumps(manifest))  # as it reads back from disk
        existing = self._read_manifest()
        lock = self._lock(shard or Shard())
        try:
            lock.acquire(takeover=join or existing is None)
        except StaleLock as stale:
            raise self._unfinished(f"; its process ({stale.holder}) is gone") from None
        except OSError as exc:
            raise InputFileError(f"cannot write {self.path}: {first_line(exc)}") from exc
        try:
            self._join(manifest, existing, join)
        except BaseException:
            lock.release()
            raise
        return lock

    def check_free(self, shard: Shard | None = None) -> None:
        """Raise RunLockedError if a live process is writing units of `shard` here (locks nothing)."""
        self._lock(shard or Shard()).check()

    def _lock(self, shard: Shard) -> RunLock:
        return RunLock(self.path / self.LOCKS, shard.index, shard.count, self.destination)

    def _unfinished(self, detail: str = "") -> UsageError:
        hint = "pass --resume to continue it, or delete the folder"
        return UsageError(f"{self.path} holds the parts of an unfinished run{detail}", hint=hint)

    def _join(self, manifest: dict[str, Any], existing: dict[str, Any] | None, join: bool) -> None:
        if existing is None:
            existing = self._read_manifest()  # a shard started meanwhile
        if existing is None:
            with write_errors(str(self.path)):
                (self.path / self.RECORDS).mkdir(parents=True, exist_ok=True)
                if self._create_manifest(manifest):
                    return
            existing = self._read_manifest() or {}
        elif not join:
            raise self._unfinished()
        different = sorted(k for k in manifest.keys() | existing.keys() if manifest.get(k) != existing.get(k))
        if different:
            key = different[0]
            there, now = json.dumps(existing.get(key)), json.dumps(manifest.get(key))
            raise UsageError(
                f"{self.path} belongs to a different run ({key}: {there} there, {now} now)",
                hint="use the same input, packs and settings, or delete the folder",
            )

    def _create_manifest(self, manifest: dict[str, Any]) -> bool:
        """Write the manifest unless another process already did (then return False)."""
        target = self.path / self.MANIFEST
        temp = self.path / f".manifest.{secrets.token_hex(6)}.json"  # unique across hosts sharing the folder
        write_json_atomic(temp, manifest)
        try:
            os.link(temp, target)  # atomic and never clobbers
            return True
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create instead
            try:
                with open(target, "x", encoding="utf-8") as f:
                    f.write(temp.read_text(encoding="utf-8"))
                return True
            except FileExistsError:
                return False
        finally:
            temp.unlink(missing_ok=True)

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / self.MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            hint = "delete the folder and start again"
            raise InputFileError(f"cannot read {self.path / self.MANIFEST}: {exc}", hint=hint) from exc

    def is_done(self, unit: WorkUnit) -> bool:
        return self._record(unit).is_file() and self.part(unit).is_file()

    def check_done(self, unit: WorkUnit, on_notice: Callable[[str], None] | None = None) -> bool:
        """Done, and its part is the file that was written: a part truncated, changed or damaged since
        is named, set aside and its unit left to be scored again."""
        if not self.is_done(unit):
            return False
        problem = self._part_problem(unit)
        if problem is None:
            return True
        if on_notice:
            on_notice(f"{self.part(unit)} {problem}: its unit is scored again")
        self._discard(unit)
        return False

    def _part_problem(self, unit: WorkUnit) -> str | None:
        try:
            record = json.loads(self._record(unit).read_text(encoding="utf-8"))
            size, expected = record["bytes"], record["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return "has no readable record of what was written"
        actual = self.part(unit).stat().st_size
        if actual != size:
            return f"holds {actual} bytes where {size} were written (truncated?)"
        return None if sha256_file(self.part(unit)) == expected else "is not the file that was written (damaged?)"

    def _discard(self, unit: WorkUnit) -> None:
        self._record(unit).unlink(missing_ok=True)
        self.part(unit).unlink(missing_ok=True)

    def writer(self, unit: WorkUnit, schema: pa.Schema) -> TableWriter:
        """An atomic writer for the unit's part; clears temp files a killed attempt left behind."""
        for stale in self.path.glob(f".{self.part(unit).name}.*.tmp"):
            stale.unlink(missing_ok=True)
        return TableWriter(self.part(unit), schema)

    def mark_done(self, unit: WorkUnit, record: dict[str, Any]) -> None:
        """Record the unit as done, with its part's size and digest (a damaged part is found later)."""
        part = self.part(unit)
        written = {"bytes": part.stat().st_size, "sha256": sha256_file(part)}
        with write_errors(str(self._record(unit))):
            write_json_atomic(
                self._record(unit), {"unit": unit.index, "first_row": unit.first_row, **record, **written}
            )

    def merge(self, units: list[WorkUnit], destination: str | Path, schema: pa.Schema) -> None:
        """Concatenate every unit's part, in unit order, into `destination` (atomically). Parts that are
        not what was written are never merged: they are set aside and the run refuses to finish."""
        damaged = [(u, problem) for u in units if (problem := self._part_problem(u)) is not None]
        for unit, _ in damaged:
            self._discard(unit)
        if damaged:
            unit, problem = damaged[0]
            raise InputFileError(
                f"{len(damaged)} part(s) not merged: {self.part(unit)} {problem}",
                hint="rerun with --resume to score the set-aside unit(s) again",
            )
        with TableWriter(destination, schema) as writer:
            for unit in units:
                with pq.ParquetFile(self.part(unit)) as part:
                    for batch in part.iter_batches():
                        writer.write(batch)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
