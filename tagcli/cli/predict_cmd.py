"""`tagcli predict`: score a CSV/Parquet file with function tags behind domain tags."""

from __future__ import annotations

from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from tagcli.cli.options import BaseModelOption, BatchSize, Column, Device, Domains, Dtype, Format, Offline, PackDirs, ProteinColumn, Registries, SmilesColumn, input_columns
from tagcli.cli.output import Output, OutputFormat
from tagcli.registry import ensure_packs
from tagcli.runner import score_file
from tagcli.scorer import TagScorer
from tagcli.tables import default_output_path


def predict(
    input: str = typer.Argument(..., help="CSV or Parquet file to score, or - for CSV on stdin."),
    function: list[str] = typer.Option(..., "--function", "-F", help="Function pack (name or path), e.g. qed. Repeat to score several."),
    domain: Domains = None,
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Output .csv or .parquet (default: INPUT.scored.EXT next to the input; stdout for stdin)."),
    column: Column = None,
    smiles_col: SmilesColumn = None,
    protein_col: ProteinColumn = None,
    base_model: BaseModelOption = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    batch_size: BatchSize = 64,
    max_batch_tokens: int = typer.Option(32768, "--max-batch-tokens", help="Most padded tokens per forward pass (long inputs get smaller batches)."),
    window_rows: int = typer.Option(4096, "--window-rows", help="Rows read, length-sorted and written at a time (bounds memory)."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad row instead of marking it."),
    pack_dir: PackDirs = None,
    registry: Registries = None,
    offline: Offline = False,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
    format: Format = OutputFormat.human,
) -> None:
    """Score every row of INPUT; writes all input columns + pred_* + status + error, in input order."""
    out = Output(format)
    destination = output or ("-" if input == "-" else str(default_output_path(input)))
    # Missing packs (and the domain packs they need) are pulled from the registries first, unless --offline.
    function, domain = ensure_packs(
        function, domain or None, registries=registry or (), pack_dirs=pack_dir or (), offline=offline, base_model=base_model,
        on_pull=lambda r: out.err.print(f"pulled {r['name']} {r['version']} from {r['registry']}", highlight=False),
    )
    scorer = TagScorer(
        function, domain or None, base_model=base_model, device=device, dtype=dtype, batch_size=batch_size,
        max_batch_tokens=max_batch_tokens, columns=input_columns(column, smiles_col, protein_col, domain), pack_dirs=pack_dir or (), strict=strict,
    )
    with _progress(out, enabled=progress) as bar:
        task = bar.add_task("scoring", total=None)
        summary = score_file(
            scorer, input, destination, window_rows=window_rows,
            on_start=lambda total: bar.update(task, total=total),
            on_rows=lambda n: bar.advance(task, n),
        )
    line = (
        f"scored {summary.rows} rows: {summary.ok} ok, {summary.invalid} invalid, {summary.error} error "
        f"in {summary.seconds:.1f} s ({summary.rows_per_second:.1f} rows/s) -> {destination}"
    )
    if destination == "-":  # stdout carries the table; the summary goes to stderr
        out.err.print(line, highlight=False)
    else:
        out.record(summary.as_dict(), line)


class RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} rows/s" if task.speed else "- rows/s", style="progress.data.speed")


def _progress(out: Output, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RowsPerSecond(),
        TimeElapsedColumn(), TimeRemainingColumn(),
        console=out.err, disable=not enabled,
    )
