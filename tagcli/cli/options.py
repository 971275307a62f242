"""Command-line options shared by several commands, declared once."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from copy import copy
from typing import Annotated, Any, get_args

import typer

from tagcli.cli.output import OutputFormat
from tagcli.core.batching import BATCH_ROWS, MAX_BATCH_TOKENS
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


def _scoring_options(
    domain: Domains = None,
    input_slot: Inputs = None,
    column: Column = None,
    smiles_col: SmilesColumn = None,
    protein_col: ProteinColumn = None,
    both_orders: BothOrders = False,
    base_model: BaseModelOption = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    batch_size: BatchSize = BATCH_ROWS,
    max_batch_tokens: MaxBatchTokens = MAX_BATCH_TOKENS,
    clip: Clip = True,
    pack_dir: PackDirs = None,
    registry: Registries = None,
    offline: Offline = False,
    format: Format = OutputFormat.human,
) -> None:
    """The options of every scoring command (`predict`, `eval`), declared once: `scoring_command` adds them."""


def _in_panel(parameter: inspect.Parameter, panel: str) -> inspect.Parameter:
    """`parameter` (an Annotated Typer option) as a keyword, shown under its own heading in --help."""
    kind, info = get_args(parameter.annotation)
    info = copy(info)
    info.rich_help_panel = panel
    return parameter.replace(annotation=Annotated[kind, info], kind=inspect.Parameter.KEYWORD_ONLY)


SCORING_OPTIONS = {
    name: _in_panel(parameter, "Scoring options")
    for name, parameter in inspect.signature(_scoring_options, eval_str=True).parameters.items()
}


def scoring_command(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the scoring options after its own, as Typer sees it. The command reads them from
    `ctx.params` (`ScorerRequest.from_options`); one it also needs itself it names as a keyword-only
    parameter without a default (e.g. `*, format: OutputFormat`), and receives."""
    own = inspect.signature(command, eval_str=True).parameters
    wanted = set(own)

    @functools.wraps(command)
    def run(**options: Any) -> None:
        command(**{name: value for name, value in options.items() if name in wanted})

    merged = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for name, p in own.items() if name not in SCORING_OPTIONS]
    merged += SCORING_OPTIONS.values()
    run.__signature__ = inspect.Signature(merged)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in merged}
    return run


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
