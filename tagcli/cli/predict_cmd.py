"""`tagcli predict`: score a CSV/Parquet file with function tags behind domain tags."""

from __future__ import annotations

from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from tagcli.cli.output import Output, OutputFormat
from tagcli.errors import UsageError
from tagcli.runner import score_file
from tagcli.scorer import TagScorer
from tagcli.tables import default_output_path


def predict(
    input: str = typer.Argument(..., help="CSV or Parquet file to score, or - for CSV on stdin."),
    function: list[str] = typer.Option(..., "--function", "-F", help="Function pack (name or path), e.g. qed. Repeat to score several."),
    domain: Optional[list[str]] = typer.Option(None, "--domain", "-D", help="Domain tag(s) in front of the input; default: those the function was trained with. Repeat for pairs (--domain protein --domain smiles)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Output .csv or .parquet (default: INPUT.scored.EXT next to the input; stdout for stdin)."),
    column: Optional[str] = typer.Option(None, "--column", "-c", help="Input column, when there is one domain."),
    smiles_col: Optional[str] = typer.Option(None, "--smiles-col", help="Column holding SMILES."),
    protein_col: Optional[str] = typer.Option(None, "--protein-col", help="Column holding protein sequences."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Base model (embedded name, HF id or local dir); default: the pack's own."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 where supported), float32, bfloat16, float16."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Most rows per forward pass."),
    max_batch_tokens: int = typer.Option(32768, "--max-batch-tokens", help="Most padded tokens per forward pass (long inputs get smaller batches)."),
    window_rows: int = typer.Option(4096, "--window-rows", help="Rows read, length-sorted and written at a time (bounds memory)."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad row instead of marking it."),
    pack_dir: Optional[list[str]] = typer.Option(None, "--pack-dir", help="Extra folder to search for packs (searched first)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
    format: OutputFormat = typer.Option(OutputFormat.human, "--format", "-f", help="Summary format on stdout."),
) -> None:
    """Score every row of INPUT; writes all input columns + pred_* + status + error, in input order."""
    out = Output(format)
    destination = output or ("-" if input == "-" else str(default_output_path(input)))
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


def input_columns(column: str | None, smiles: str | None, protein: str | None, domains: list[str] | None) -> dict[str, str]:
    columns = {k: v for k, v in (("smiles", smiles), ("protein", protein)) if v}
    if column:
        if domains and len(domains) > 1:
            raise UsageError("--column is ambiguous with several domains", hint="use --smiles-col and --protein-col")
        columns["*"] = column
    return columns


class RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} rows/s" if task.speed else "- rows/s", style="progress.data.speed")


def _progress(out: Output, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RowsPerSecond(),
        TimeElapsedColumn(), TimeRemainingColumn(),
        console=out.err, disable=not enabled,
    )
