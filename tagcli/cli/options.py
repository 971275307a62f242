"""Command-line options shared by several commands, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

from tagcli.cli.output import OutputFormat
from tagcli.errors import UsageError

Domains = Annotated[
    list[str] | None,
    typer.Option(
        "--domain",
        "-D",
        help="Domain tag(s) in front of the input; default: those the function was trained with. "
        "Repeat for pairs (--domain protein --domain smiles).",
    ),
]
Column = Annotated[str | None, typer.Option("--column", "-c", help="Input column, when there is one domain.")]
SmilesColumn = Annotated[str | None, typer.Option("--smiles-col", help="Column holding SMILES.")]
ProteinColumn = Annotated[str | None, typer.Option("--protein-col", help="Column holding protein sequences.")]
Inputs = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        help="SLOT=COLUMN: the column of an input slot, e.g. --input drug_a=smiles_1 --input drug_b=smiles_2 "
        "(default: a column named like the slot). Repeatable.",
    ),
]
BothOrders = Annotated[
    bool,
    typer.Option(
        "--both-orders",
        help="Symmetric pair packs (manifest symmetric: true): average the predictions of both input orders.",
    ),
]
BaseModelOption = Annotated[
    str | None,
    typer.Option("--base-model", help="Base model (embedded name, HF id or local dir); default: the pack's own."),
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, mps.")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto (bf16 where supported), float32, bfloat16, float16.")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Most rows per forward pass.")]
MaxBatchTokens = Annotated[
    int,
    typer.Option("--max-batch-tokens", help="Most padded tokens per forward pass (long inputs get smaller batches)."),
]
Clip = Annotated[
    bool,
    typer.Option(
        "--clip/--no-clip",
        help="Bound predictions to a target's valid range (e.g. QED to [0, 1]); "
        "pred_*_out_of_range flags them either way.",
    ),
]
PackDirs = Annotated[
    list[str] | None, typer.Option("--pack-dir", help="Extra folder to search for packs (searched first).")
]
Format = Annotated[OutputFormat, typer.Option("--format", "-f", help="human or json.")]
Registries = Annotated[
    list[str] | None,
    typer.Option(
        "--registry",
        help="Pack registry: hf://ORG/REPO (optionally @REVISION), https://…/index.json, file://… or a folder. "
        "Repeat; searched in order, before TAGCLI_REGISTRY and the config file.",
    ),
]
Offline = Annotated[
    bool,
    typer.Option(
        "--offline",
        help="Never download packs: use installed ones (hf:// registries: only the local Hugging Face cache).",
    ),
]
BaseModelFilter = Annotated[
    str | None,
    typer.Option(
        "--base-model", help="Only packs for this base model (embedded name, HF id, local dir or sha256: fingerprint)."
    ),
]


def slot_columns(specs: list[str] | None) -> dict[str, str]:
    """`--input SLOT=COLUMN` options as slot → column."""
    columns: dict[str, str] = {}
    for spec in specs or ():
        slot, sep, column = spec.partition("=")
        if not sep or not slot or not column:
            raise UsageError(f"--input takes SLOT=COLUMN, not {spec!r}", hint="e.g. --input drug_a=smiles_1")
        if slot in columns and columns[slot] != column:
            raise UsageError(f"--input names two columns for the slot {slot!r}: {columns[slot]!r} and {column!r}")
        columns[slot] = column
    return columns


def input_columns(
    column: str | None, smiles: str | None, protein: str | None, domains: list[str] | None
) -> dict[str, str]:
    """The scorer's column mapping from the column options."""
    columns = {k: v for k, v in (("smiles", smiles), ("protein", protein)) if v}
    if column:
        if domains and len(domains) > 1:
            raise UsageError("--column is ambiguous with several domains", hint="use --smiles-col and --protein-col")
        columns["*"] = column
    return columns
