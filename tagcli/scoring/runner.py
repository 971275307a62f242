"""Score a whole file: stream record batches through a TagScorer into an output table.

Memory stays bounded by `window_rows`: each window is read, sorted by length inside the
scorer, scored and written back in input order before the next one is read. Files are scored
into a part directory, one part per work unit (workunits.py), which is what makes `--shard` and
`--resume` work; the parts are merged into the destination once every unit is done. Windows are
fixed row ranges of the input, the same however the work is cut: units smaller than a window are
scored together as that window (`window_groups`), so every row meets the same batch neighbours
(which matters in bf16) and tiny units do not pad every batch to their longest row.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tagcli import __version__
from tagcli.errors import BadRowError, InputFileError, UsageError
from tagcli.io.tables import DEFAULT_WINDOW_ROWS, STDIO, TableReader, default_output_path, open_table
from tagcli.io.workunits import (
    InputPlan,
    PartDirectory,
    Shard,
    WorkUnit,
    plan_units,
    window_groups,
)
from tagcli.io.writer import DiskFullError, TableWriter, check_destination, format_bytes, remove_temp_files
from tagcli.scoring.checkpoints import OnNotice, WindowCheckpoint
from tagcli.scoring.scorer import STATUS_ERROR, STATUS_INVALID, STATUS_OK, TagScorer, bad_row_error

DEFAULT_UNIT_ROWS = 8192
OnStart = Callable[[int | None], None] | None
OnRows = Callable[[int], None] | None


@dataclass
class ScoreSummary:
    rows: int = 0
    ok: int = 0
    invalid: int = 0
    error: int = 0
    seconds: float = 0.0
    output: str = ""
    units: int = 0  # units this process scored
    skipped_units: int = 0  # finished earlier (--resume) or by another shard
    merged: bool = False  # the destination was written (every unit is done)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "rows_per_second": round(self.rows_per_second, 2)}

    def add(self, status: pa.Array) -> None:
        counts = {v["values"]: v["counts"] for v in status.value_counts().to_pylist()}
        self.rows += len(status)
        self.ok += counts.get(STATUS_OK, 0)
        self.invalid += counts.get(STATUS_INVALID, 0)
        self.error += counts.get(STATUS_ERROR, 0)

    def counts(self) -> dict[str, int]:
        return {"rows": self.rows, "ok": self.ok, "invalid": self.invalid, "error": self.error}

    def add_counts(self, other: ScoreSummary) -> None:
        self.rows, self.ok, self.invalid, self.error = (
            a + b for a, b in zip(self.counts().values(), other.counts().values())
        )


def scored_batches(
    scorer: TagScorer, reader: TableReader, summary: ScoreSummary, first_row: int = 0
) -> Iterator[pa.Table]:
    """Each window of `reader`, scored, with its statuses counted into `summary`."""
    for batch in reader:
        scored = scorer.score(pa.Table.from_batches([batch], schema=reader.schema), row_offset=first_row + summary.rows)
        summary.add(scored.column("status").combine_chunks())
        yield scored


def score_file(
    scorer: TagScorer,
    source: str | Path,
    destination: str | Path,
    window_rows: int = DEFAULT_WINDOW_ROWS,
    unit_rows: int = DEFAULT_UNIT_ROWS,
    shard: Shard | None = None,
    resume: bool = False,
    keep_parts: bool = False,
    on_start: OnStart = None,
    on_rows: OnRows = None,
    on_notice: OnNotice = None,
    checked: bool = False,
) -> ScoreSummary:
    """Score `source` (CSV/Parquet/'-') into `destination` ('-' for stdout).

    Files go through `DEST.parts/`: this process scores its shard's units (skipping finished
    ones with `resume`), and whichever process finds every unit done merges them into `destination`.
    `on_start` gets the rows this process will score, `on_rows` each count scored and written,
    `on_notice` a line about something set aside (a damaged part or checkpoint, scored again).
    `checked`: the caller ran `check_run` already (the CLI does, before it loads the model).
    """
    summary = ScoreSummary(output=str(destination))
    started = time.perf_counter()
    if not checked:
        check_run(source, destination, shard)
    if STDIO in (str(source), str(destination)):
        if resume or shard is not None:
            raise UsageError("--shard and --resume need an input file and an output file, not stdin/stdout")
        _score_stream(scorer, source, destination, window_rows, summary, on_start, on_rows)
    else:
        _score_units(
            scorer,
            source,
            destination,
            window_rows,
            unit_rows,
            shard or Shard(),
            resume,
            keep_parts,
            summary,
            _Callbacks(on_start, on_rows, on_notice),
        )
    summary.seconds = time.perf_counter() - started
    return summary


def check_run(source: str | Path, destination: str | Path, shard: Shard | None = None) -> None:
    """Fail before any work if `destination` would overwrite `source` (UsageError), or if a live
    run is writing `destination` and the units of `shard` (RunLockedError). Takes no lock: the run
    takes it when it opens the part directory."""
    if STDIO in (str(source), str(destination)):
        return
    check_not_input(source, destination)
    PartDirectory(destination).check_free(shard)


def check_not_input(source: str | Path, destination: str | Path) -> None:
    """Refuse an output that is the input itself (same path, a hard link or a symlink to it), an
    existing folder, or a path whose part directory holds the input."""
    source_path, dest_path = Path(source), Path(destination)
    if not source_path.exists():
        return  # reading it says what is wrong
    try:
        same = dest_path.exists() and os.path.samefile(source_path, dest_path)
    except OSError:
        same = False
    if same:
        how = "" if os.path.abspath(source) == os.path.abspath(destination) else " (a link to it)"
        hint = f"choose another -o, {_example(source)}"
        raise UsageError(f"the output {destination} is the input file{how}", hint=hint)
    if dest_path.is_dir():
        raise UsageError(f"the output {destination} is a folder", hint=f"name a file, {_example(source)}")
    parts = PartDirectory(destination).path.resolve()
    if parts in source_path.resolve().parents:
        raise UsageError(
            f"the input {source} is inside {PartDirectory(destination).path}, the part folder of the output",
            hint=f"choose another -o, {_example(source)}",
        )


def _example(source: str | Path) -> str:
    try:
        return f"e.g. -o {default_output_path(source)}"
    except UsageError:
        return "e.g. -o scores.parquet"


def _score_stream(
    scorer: TagScorer,
    source: str | Path,
    destination: str | Path,
    window_rows: int,
    summary: ScoreSummary,
    on_start: OnStart,
    on_rows: OnRows,
) -> None:
    with open_table(source, batch_rows=window_rows) as reader:
        if on_start:
            on_start(reader.total_rows)
        with TableWriter(destination) as writer:
            for scored in scored_batches(scorer, reader, summary):
                writer.write(scored)
                if on_rows:
                    on_rows(scored.num_rows)
    summary.merged = True


def _score_units(
    scorer: TagScorer,
    source: str | Path,
    destination: str | Path,
    window_rows: int,
    unit_rows: int,
    shard: Shard,
    resume: bool,
    keep_parts: bool,
    summary: ScoreSummary,
    callbacks: _Callbacks,
) -> None:
    plan = plan_units(source, unit_rows, window_rows)
    units = plan.units
    # Scoring no rows checks the columns up front and gives the output schema every part shares.
    schema = scorer.score(plan.schema.empty_table()).schema
    check_destination(destination, schema)  # a column CSV cannot hold, a read-only folder: say so before scoring
    parts = PartDirectory(destination)
    run = _UnitRun(scorer, plan, parts, schema, window_rows, summary, callbacks)
    manifest = _run_manifest(scorer, source, units, unit_rows, window_rows, schema)
    with parts.open(manifest, join=resume or shard.count > 1, shard=shard) as lock:  # held to the end
        mine = [u for u in units if shard.owns(u)]
        todo = [u for u in mine if not (resume and parts.check_done(u, callbacks.on_notice))]
        summary.skipped_units = len(units) - len(todo)
        if callbacks.on_start:
            callbacks.on_start(sum(u.num_rows for u in todo))
        try:
            waiting = {u.index for u in todo}
            for group in window_groups(mine):  # from `mine`, not `todo`: the same groups on resume
                pending = [u for u in group if u.index in waiting]
                if pending:
                    _score_group(run, group, pending)
        except BaseException as exc:
            # Nothing to resume: no unit done, and no window scored in part unless --strict stopped at a bad row.
            resumable = parts.has_checkpoints() and not isinstance(exc, BadRowError)
            if shard.count == 1 and not any(parts.is_done(u) for u in units) and not resumable:
                parts.remove()
            raise
        if all(parts.is_done(u) for u in units):
            if lock.alone():  # no other shard merging now: temp files next to the output are a killed merge's
                remove_temp_files(destination)
            with write_failures(parts, units, parts.size(units)):
                parts.merge(units, destination, schema)
            summary.merged = True
            if shard.count == 1 and not keep_parts:
                parts.remove()


@dataclass
class _Callbacks:
    on_start: OnStart = None  # the rows this process will score
    on_rows: OnRows = None  # rows scored and written
    on_notice: OnNotice = None  # something the user should know (a damaged part or checkpoint set aside)


@dataclass
class _UnitRun:
    """What scoring a shard's units into parts shares: where rows come from and go, and what is counted."""

    scorer: TagScorer
    plan: InputPlan
    parts: PartDirectory
    schema: pa.Schema  # of every part
    window_rows: int
    summary: ScoreSummary
    callbacks: _Callbacks

    def checkpoint(self, first_row: int, rows: int) -> WindowCheckpoint:
        path = self.parts.checkpoint(first_row)
        return WindowCheckpoint.resume(path, {"first_row": first_row, "rows": rows}, self.callbacks.on_notice)

    def score_window(self, table: pa.Table, first_row: int, checkpoint: WindowCheckpoint, strict: bool) -> pa.Table:
        """One window, its batches kept in `checkpoint`; stopped (a signal, a bad row, a full disk),
        what it scored so far is saved for --resume."""
        try:
            return self.scorer.score(table, row_offset=first_row, journal=checkpoint, strict=strict)
        except BaseException:
            with contextlib.suppress(Exception):  # the error that stopped the window is the one to report
                checkpoint.save()
            raise


def _score_group(run: _UnitRun, group: list[WorkUnit], pending: list[WorkUnit]) -> None:
    """Score `group` (the units of one window) as that window, then write each pending unit.

    The group's done units (from an earlier, interrupted run) are scored again but not rewritten:
    their rows shape the batches as they did the first time, so the pending units get the numbers
    an uninterrupted run gives them (batches in the window's checkpoint are not run again). A group
    of one unit (one window or several) is scored window by window (`_score_unit`). With --strict,
    the units before the first bad row are written before the error.
    """
    if len(group) == 1:
        _score_unit(run, group[0])
        return
    started = time.perf_counter()
    tables = [_read_unit(run, unit) for unit in group]
    window = pa.concat_tables(tables)
    checkpoint = run.checkpoint(group[0].first_row, window.num_rows)
    scored = run.score_window(window, group[0].first_row, checkpoint, strict=False)
    status = scored.column("status").to_pylist()
    bad = next((i for i, s in enumerate(status) if s != STATUS_OK), None) if run.scorer.strict else None
    seconds_per_row = (time.perf_counter() - started) / max(1, scored.num_rows)
    waiting, offset = {u.index for u in pending}, 0
    for unit, table in zip(group, tables):
        if bad is not None and offset + table.num_rows > bad:
            raise bad_row_error(group[0].first_row + bad, scored.column("error")[bad].as_py())
        if unit.index in waiting:
            rows = scored.slice(offset, table.num_rows)
            _write_unit(run, unit, rows, seconds_per_row * rows.num_rows)
        offset += table.num_rows
    checkpoint.remove()


def _read_unit(run: _UnitRun, unit: WorkUnit) -> pa.Table:
    """All rows of a unit smaller than a window, checked against the plan."""
    with open_table(run.plan.path, batch_rows=run.window_rows, unit=unit) as reader:
        table = pa.Table.from_batches(list(reader), schema=reader.schema)
    run.plan.check_unit_rows(unit, table.num_rows)
    return table


def _write_unit(run: _UnitRun, unit: WorkUnit, scored: pa.Table, seconds: float) -> None:
    """Write a unit's scored rows as its part, then record it as done."""
    counts = ScoreSummary()
    counts.add(scored.column("status").combine_chunks())
    with write_failures(run.parts, run.plan.units, scored.nbytes), run.parts.writer(unit, run.schema) as writer:
        writer.write(scored)
    run.parts.mark_done(unit, {**counts.counts(), "seconds": round(seconds, 3)})
    _count(run, counts)


def _score_unit(run: _UnitRun, unit: WorkUnit) -> None:
    """Score one unit, window by window, into its part file, then record it as done. Each finished
    window stays in its checkpoint until the unit is done, so a resumed run does not score it again."""
    counts, started, checkpoints = ScoreSummary(), time.perf_counter(), []
    end = unit.first_row + unit.num_rows
    with (
        write_failures(run.parts, run.plan.units),
        open_table(run.plan.path, batch_rows=run.window_rows, unit=unit) as reader,
        run.parts.writer(unit, run.schema) as writer,
    ):
        for batch in reader:
            first_row = unit.first_row + counts.rows
            checkpoints.append(run.checkpoint(first_row, batch.num_rows))
            table = pa.Table.from_batches([batch], schema=reader.schema)
            scored = run.score_window(table, first_row, checkpoints[-1], strict=run.scorer.strict)
            if first_row + scored.num_rows < end:
                checkpoints[-1].save()
            counts.add(scored.column("status").combine_chunks())
            writer.write(scored)
            if run.callbacks.on_rows:
                run.callbacks.on_rows(scored.num_rows)
    run.plan.check_unit_rows(unit, counts.rows)  # "changed while it was scored" only if it did
    run.parts.mark_done(unit, {**counts.counts(), "seconds": round(time.perf_counter() - started, 3)})
    for checkpoint in checkpoints:
        checkpoint.remove()
    _count(run, counts, rows_reported=True)


def _count(run: _UnitRun, counts: ScoreSummary, rows_reported: bool = False) -> None:
    run.summary.add_counts(counts)
    run.summary.units += 1
    if run.callbacks.on_rows and not rows_reported:
        run.callbacks.on_rows(counts.rows)


@contextmanager
def write_failures(parts: PartDirectory, units: list[WorkUnit], needed: int | None = None) -> Iterator[None]:
    """A part or the merged output cannot be written: a full disk says how much is needed (where known)
    and that the finished units are kept for --resume; a part folder deleted mid-run says so."""
    try:
        yield
    except DiskFullError as exc:
        done = sum(parts.is_done(u) for u in units)
        need = f"; it needs about {format_bytes(needed)}" if needed else ""
        hint = f"free space in {exc.folder}, then rerun with --resume ({done} finished unit(s) kept in {parts.path})"
        raise DiskFullError(exc.message.removesuffix(")") + need + ")", exc.folder, hint) from exc
    except InputFileError:
        if parts.path.is_dir():
            raise
        raise InputFileError(
            f"{parts.path} was deleted while the run was writing it", hint="rerun without --resume to start again"
        ) from None


def _run_manifest(
    scorer: TagScorer, source: str | Path, units: list[WorkUnit], unit_rows: int, window_rows: int, schema: pa.Schema
) -> dict[str, Any]:
    """What a resumed run or another shard must share with this one for the parts to fit together."""
    stat = Path(source).stat()
    return {
        "input": {"path": str(Path(source).resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "rows": sum(u.num_rows for u in units),
        "units": len(units),
        "unit_rows": unit_rows,
        "window_rows": window_rows,
        "output_columns": schema.names,
        "scorer": scorer.describe(),
        "tagcli": __version__,
    }
