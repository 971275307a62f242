"""`tagcli eval`: score a labeled file and report metrics against its label columns."""

from __future__ import annotations

from typing import Optional

import typer

from tagcli.cli.output import Output, OutputFormat
from tagcli.cli.predict_cmd import input_columns
from tagcli.runner import evaluate_file
from tagcli.scorer import TagScorer


def evaluate(
    input: str = typer.Argument(..., help="Labeled CSV or Parquet file."),
    function: str = typer.Option(..., "--function", "-F", help="Function pack (name or path)."),
    target: list[str] = typer.Option(..., "--target", "-t", help="Label column; one per predicted value, in order."),
    domain: Optional[list[str]] = typer.Option(None, "--domain", "-D", help="Domain tag(s); default: those the function was trained with."),
    column: Optional[str] = typer.Option(None, "--column", "-c", help="Input column, when there is one domain."),
    smiles_col: Optional[str] = typer.Option(None, "--smiles-col", help="Column holding SMILES."),
    protein_col: Optional[str] = typer.Option(None, "--protein-col", help="Column holding protein sequences."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Base model; default: the pack's own."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16, float16."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Most rows per forward pass."),
    pack_dir: Optional[list[str]] = typer.Option(None, "--pack-dir", help="Extra folder to search for packs."),
    format: OutputFormat = typer.Option(OutputFormat.human, "--format", "-f", help="human or json."),
) -> None:
    """Print MSE, MAE, Pearson and Spearman (classification: accuracy, ROC-AUC) per target."""
    scorer = TagScorer(
        function, domain or None, base_model=base_model, device=device, dtype=dtype, batch_size=batch_size,
        columns=input_columns(column, smiles_col, protein_col, domain), pack_dirs=pack_dir or (),
    )
    report = evaluate_file(scorer, input, target)
    out = Output(format)
    if format is OutputFormat.json:
        out.json(report)
        return
    rows = [{"target": t, **{k: v for k, v in report[t].items()}} for t in target]
    out.table(rows, list(rows[0]), title=f"{function} on {input}: {report['scored']} of {report['rows']} rows scored")
