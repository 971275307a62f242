"""`tagcli report`: an HTML page about a scored file (library: tagcli/report/)."""

from __future__ import annotations

from pathlib import Path

import typer

from tagcli.cli.options import Format, PackDirs
from tagcli.cli.output import Output, OutputFormat
from tagcli.packs.store import PackStore
from tagcli.report import write_report
from tagcli.report.collect import SAMPLE_ROWS


def report(
    scored: str = typer.Argument(..., help="A scored CSV or Parquet file (the output of tagcli predict)."),
    output: str | None = typer.Option(
        None, "--output", "-o", help="HTML file to write (default: SCORED's name with .report.html)."
    ),
    function: list[str] = typer.Option(
        [], "--function", "-F", help="Pack that scored the file (default: every installed pack whose columns it has)."
    ),
    target: list[str] = typer.Option(
        [],
        "--target",
        "-t",
        help="Label column to evaluate against (default: the pack's training targets, where present).",
    ),
    sample_rows: int = typer.Option(
        SAMPLE_ROWS, "--sample-rows", help="Most rows the plots draw (a uniform sample of a larger file)."
    ),
    pack_dir: PackDirs = None,
    format: Format = OutputFormat.human,
) -> None:
    """Write one self-contained HTML page (no script, nothing fetched) about a scored file: rows by status and
    why, each prediction beside the pack's reference set, uncertainty and domain views with the flagged rows,
    the pack cards, and for a labelled file the eval metrics and plots. Streams the file."""
    destination = output or str(Path(scored).with_suffix(".report.html"))
    summary = write_report(
        scored,
        destination,
        functions=function,
        targets=target,
        store=PackStore(pack_dir or ()),
        sample_rows=sample_rows,
    )
    sampled = f", plots from a sample of {summary.sampled_rows}" if summary.sampled_rows < summary.rows else ""
    labelled = f"; evaluated {', '.join(summary.labelled)} against the labels" if summary.labelled else ""
    line = (
        f"report of {summary.rows} rows ({', '.join(summary.functions)}{sampled}; {summary.flagged} flagged"
        f"{labelled}) -> {destination}"
    )
    Output(format).record(summary.as_dict(), line)
