"""`tagcli predict`: score a CSV/Parquet file with function tags behind domain tags."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable

import torch
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from tagcli.cli.options import scoring_command
from tagcli.cli.output import Output, OutputFormat
from tagcli.cli.scorer_request import ScorerRequest
from tagcli.errors import TagcliError, UsageError, stop_signal
from tagcli.io.tables import DEFAULT_WINDOW_ROWS, default_output_path
from tagcli.io.workunits import PartDirectory, Shard
from tagcli.scoring.runner import DEFAULT_UNIT_ROWS, check_run, score_file


@scoring_command
def predict(
    ctx: typer.Context,
    input: str = typer.Argument(..., help="CSV or Parquet file to score, or - for CSV on stdin."),
    function: list[str] = typer.Option(
        ..., "--function", "-F", help="Function pack (name or path), e.g. qed. Repeat to score several."
    ),
    output: str | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Output .csv or .parquet (default: INPUT.scored.EXT next to the input; stdout for stdin).",
    ),
    window_rows: int = typer.Option(
        DEFAULT_WINDOW_ROWS,
        "--window-rows",
        help="Rows length-sorted and batched together, as fixed row ranges of the input (bounds memory). "
        "In bf16 another value changes the numbers; shards, --devices, --unit-rows and --resume never do.",
    ),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad row instead of marking it."),
    percentiles: bool = typer.Option(
        True,
        "--percentiles/--no-percentiles",
        help="Add <column>_percentile (0-100) beside each prediction a pack ranks among its reference set "
        "(e.g. approved drugs; named on its card). On by default wherever a pack carries one.",
    ),
    shard: str | None = typer.Option(
        None,
        "--shard",
        help="Score only shard I of N (e.g. 2/8): a disjoint share of the windows, with one run's numbers. "
        "Shards write OUTPUT.parts/; the last to finish merges.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue an interrupted run from OUTPUT.parts/ (finished units skipped, checkpointed batches "
        "reused), with one run's output.",
    ),
    devices: int = typer.Option(
        1,
        "--devices",
        help="Run N processes, one per GPU (cuda:0..N-1; with --device cpu, N CPU processes), each on its own shard.",
    ),
    unit_rows: int = typer.Option(
        DEFAULT_UNIT_ROWS,
        "--unit-rows",
        help="Rows per work unit, one part file each: a piece of one window, or whole windows (rounded down) "
        "above --window-rows. Changes no numbers.",
    ),
    keep_parts: bool = typer.Option(
        False, "--keep-parts", help="Keep OUTPUT.parts/ (one Parquet part per unit, plus its manifest) after merging."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
    *,
    device: str,
    format: OutputFormat,
) -> None:
    """Score every row of INPUT; writes all input columns + pred_* + status + error, in input order."""
    if devices < 1:
        raise UsageError(f"--devices must be at least 1, got {devices}")
    out = Output(format)
    destination = output or ("-" if input == "-" else str(default_output_path(input)))
    shard_of_run = Shard.parse(shard) if shard else Shard.from_launcher()
    check_run(input, destination, shard_of_run)  # the input as output, a live run on it: say so before any work
    request = ScorerRequest.from_options(function, ctx.params)
    request.pull_missing(out)
    if devices > 1:  # after pulling, so the processes don't all download the same packs
        if shard:
            raise UsageError("--devices starts its own shards; drop --shard")
        _run_device_processes(out, devices, device, destination, keep_parts)
        return
    scorer = request.scorer(strict=strict, percentiles=percentiles)
    with ScoringBar(out, enabled=progress) as bar:
        summary = score_file(
            scorer,
            input,
            destination,
            window_rows=window_rows,
            unit_rows=unit_rows,
            shard=shard_of_run,
            resume=resume,
            keep_parts=keep_parts,
            on_start=bar.start,
            on_rows=bar.advance,
            on_notice=out.warn,
            checked=True,
        )
    line = (
        f"scored {summary.rows} rows: {summary.ok} ok, {summary.invalid} invalid, {summary.error} error "
        f"in {summary.seconds:.1f} s ({summary.rows_per_second:.1f} rows/s)"
    )
    if summary.skipped_units:
        line += f"; {summary.skipped_units} work unit(s) done earlier or by other shards"
    line += (
        f" -> {destination}"
        if summary.merged
        else f"; parts in {PartDirectory(destination).path}, merged when every shard is done"
    )
    if destination == "-":  # stdout carries the table; the summary goes to stderr
        out.err.print(line, highlight=False)
    else:
        out.record(summary.as_dict(), line)


def _run_device_processes(out: Output, count: int, device: str, destination: str, keep_parts: bool) -> None:
    """`--devices N`: this same command N times as shards 1/N..N/N, one per device; no gather needed."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        if count > torch.cuda.device_count():
            raise UsageError(f"--devices {count} but only {torch.cuda.device_count()} CUDA device(s) are visible")
        placements = [f"cuda:{k}" for k in range(count)]
    elif device == "auto":
        raise UsageError("--devices needs GPUs (none visible)", hint="add --device cpu to run N CPU processes")
    else:
        placements = [device] * count
    argv = _without_option(sys.argv[1:], "--devices")
    shard_args = [
        "--no-progress",
        "--keep-parts",
        "--format",
        "json",
    ]  # the last --format wins: summaries come back as JSON
    logs = [tempfile.TemporaryFile("w+") for _ in placements]  # a file, not a pipe: a chatty shard never blocks
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tagcli", *argv, "--shard", f"{k + 1}/{count}", "--device", placement, *shard_args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        for k, (placement, log) in enumerate(zip(placements, logs))
    ]
    outputs = _wait_for_shards(children)
    for k, log in enumerate(logs):  # each shard's warnings and errors, labelled
        log.seek(0)
        for line in log.read().splitlines():
            out.err.print(f"shard {k + 1}/{count}: {line}", highlight=False, markup=False)
        log.close()
    failed = [k + 1 for k, child in enumerate(children) if child.returncode != 0]
    if failed:
        raise TagcliError(
            f"shard(s) {', '.join(map(str, failed))} of {count} failed (see above); rerun with --resume to finish"
        )
    if not keep_parts:
        PartDirectory(destination).remove()
    summaries = [json.loads(text) for text in outputs]
    totals = {key: sum(s[key] for s in summaries) for key in ("rows", "ok", "invalid", "error")}
    out.record(
        {**totals, "output": destination, "processes": count, "devices": placements},
        f"{count} processes scored {totals['rows']} rows: {totals['ok']} ok, {totals['invalid']} invalid, "
        f"{totals['error']} error -> {destination}",
    )


def _wait_for_shards(children: list[subprocess.Popen]) -> list[str]:
    """Each shard process's stdout once it ends. A SIGTERM or SIGHUP that stops this process (a scheduler
    preempting the job) is passed on, so every shard stops as it would alone; Ctrl-C reached them already."""
    try:
        return [child.communicate()[0] for child in children]
    except KeyboardInterrupt:
        stop = stop_signal()
        for child in children:
            if stop not in (None, signal.SIGINT) and child.poll() is None:
                child.send_signal(stop)
        for child in children:
            child.wait()
        raise


def _without_option(argv: list[str], name: str) -> list[str]:
    """`argv` minus `name VALUE` / `name=VALUE`."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            kept.append(arg)
    return kept


class ScoringBar:
    """The progress bar of a scoring run. It appears once scoring begins, so a run refused before that
    prints its error line alone, and counts only the rows this process scores (`score_file`'s
    `on_start` total leaves out units done earlier or by other shards)."""

    def __init__(self, out: Output, enabled: bool, get_time: Callable[[], float] | None = None) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RowsPerSecond(),
            TimeElapsedColumn(),
            TimeLeft(),
            console=out.err,
            disable=not enabled,
            get_time=get_time,
        )
        self.task: TaskID | None = None

    def start(self, total: int | None) -> None:
        self.progress.start()
        self.task = self.progress.add_task("scoring", total=total)

    def advance(self, rows: int) -> None:
        self.progress.advance(self.task, rows)

    def __enter__(self) -> ScoringBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.progress.stop()


def average_rate(task: Task) -> float | None:
    """Rows per second since scoring began. Not rich's `task.speed`, which averages the last 30 s of
    updates: a window's units are written together once it is scored, milliseconds apart, and that
    burst read as a rate shows thousands of rows per second for a run doing a few."""
    elapsed = task.finished_time or task.elapsed
    return task.completed / elapsed if elapsed and task.completed else None


class RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        rate = average_rate(task)
        return Text(f"{rate:.1f} rows/s" if rate else "- rows/s", style="progress.data.speed")


class TimeLeft(ProgressColumn):
    """The time left at the average rate."""

    def render(self, task: Task) -> Text:
        rate = average_rate(task)
        if task.total is None or not rate:
            return Text("-:--:--", style="progress.remaining")
        minutes, seconds = divmod(int(max(0.0, task.total - task.completed) / rate), 60)
        return Text(f"{minutes // 60:d}:{minutes % 60:02d}:{seconds:02d}", style="progress.remaining")
