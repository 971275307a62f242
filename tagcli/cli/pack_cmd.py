"""`tagcli pack`: list, inspect, pull, verify, remove and export tag packs (library: tagcli/packs/)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer
from rich.text import Text

from tagcli.cli.options import (
    BaseModelFilter,
    Column,
    Device,
    Dtype,
    Format,
    Offline,
    PackDirs,
    ProteinColumn,
    Registries,
    SmilesColumn,
    input_columns,
)
from tagcli.cli.output import Output, OutputFormat
from tagcli.cli.pack_rows import human_row, list_block, list_row, size_text
from tagcli.errors import PackError
from tagcli.packs import install, listing
from tagcli.packs.card import model_card
from tagcli.packs.registries import configured_registries
from tagcli.packs.store import PackStore
from tagcli.scoring.references import add_reference
from tagcli.scoring.scorer import TagScorer

app = typer.Typer(help="Tag packs: domain and function tags with their heads.", no_args_is_help=True)

NAME_HELP = "Pack NAME, NAME@VERSION or path"


@app.command("list")
def list_packs(
    available: bool = typer.Option(False, "--available", "-a", help="Also list the packs the registries offer."),
    base_model: BaseModelFilter = None,
    registry_: Registries = None,
    offline: Offline = False,
    pack_dir: PackDirs = None,
    format: Format = OutputFormat.human,
) -> None:
    """Show packs: built-in, installed under $TAGCLI_HOME/packs, and (--available) in registries."""
    registries = configured_registries(registry_ or ()) if available else []
    listed, warnings = listing.list_packs(
        registries, pack_dirs=pack_dir or (), available=available, base_model=base_model, offline=offline
    )
    rows = [list_row(item) for item in listed]
    out = Output(format)
    for warning in warnings:
        out.warn(warning)
    # People get the headline columns (a block per pack where the table would not fit); JSON gets every
    # field, path and fingerprint included.
    columns = ["pack", "kind", "status", "domains", "outputs", "base_model", "compatible", "size", "metrics"]
    columns += ["error"] if any("error" in r for r in rows) else []
    if format is OutputFormat.json:
        out.table(rows, columns, title="tag packs")
    else:
        out.table([human_row(r) for r in rows], columns, title="tag packs", blocks=[list_block(r) for r in rows])


@app.command("info")
def info(
    name: str = typer.Argument(..., help=f"{NAME_HELP} (registries are asked when it is not installed)."),
    registry_: Registries = None,
    offline: Offline = False,
    pack_dir: PackDirs = None,
    format: Format = OutputFormat.human,
) -> None:
    """Show one pack's model card (what it predicts, from what, training, metrics, limits) and where it is;
    --format json: its whole manifest."""
    details = listing.pack_info(name, configured_registries(registry_ or ()), pack_dirs=pack_dir or (), offline=offline)
    out = Output(format)
    if format is OutputFormat.json:
        out.json(details)
    else:
        out.markdown(model_card(details) + "\n" + _where(details))


@app.command("pull")
def pull(
    refs: list[str] = typer.Argument(
        ..., metavar="NAME", help="Packs to install, as NAME or NAME@VERSION; the domain packs they need come along."
    ),
    registry_: Registries = None,
    offline: Offline = False,
    force: bool = typer.Option(False, "--force", help="Reinstall even when that exact archive is installed."),
    pack_dir: PackDirs = None,
    format: Format = OutputFormat.human,
) -> None:
    """Install packs from the registries under $TAGCLI_HOME/packs (also over a built-in of that name)."""
    registries = configured_registries(registry_ or ())
    results = install.pull(refs, registries, pack_dirs=pack_dir or (), offline=offline, force=force)
    _lines(Output(format), results, [_pulled_line(r) for r in results])


@app.command("verify")
def verify(
    name: str | None = typer.Argument(None, help="Pack to check (default: every pack under $TAGCLI_HOME/packs)."),
    pack_dir: PackDirs = None,
    format: Format = OutputFormat.human,
) -> None:
    """Re-hash installed pack files against what was installed, and check that each pack loads."""
    rows = listing.verify(name, pack_dirs=pack_dir or ())
    out = Output(format)
    if format is OutputFormat.json:
        out.json(rows)
    elif not rows:
        out.out.print(Text("no installed packs to verify"))
    else:
        shown = [r | {"problems": "; ".join(r["problems"])} for r in rows]
        out.table(shown, ["name", "version", "origin", "status", "problems"], title="pack verify")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        first = failed[0]
        raise PackError(
            f"{len(failed)} of {len(rows)} pack(s) failed verification: {first['name']}: {first['problems'][0]}",
            hint=f"`tagcli pack pull {first['name']} --force` reinstalls it",
        )


@app.command("rm")
def rm(name: str = typer.Argument(..., help="Installed pack to delete."), format: Format = OutputFormat.human) -> None:
    """Delete a pack installed under $TAGCLI_HOME/packs (built-in packs cannot be removed)."""
    result = install.remove(name)
    out = Output(format)
    line = f"removed {result['name']} {result['version'] or ''} ({result['path']})".replace("  ", " ")
    if result["builtin_now_used"]:
        line += f"; the built-in '{result['name']}' is used again"
    out.record(result, line)
    if result["needed_by"] and format is OutputFormat.human:
        out.warn(f"installed pack(s) {', '.join(result['needed_by'])} need '{result['name']}'")


@app.command("export")
def export(
    name: str = typer.Argument(..., help=f"{NAME_HELP}."),
    to: str = typer.Option(..., "--to", help="Folder to write NAME-VERSION.tagpack and index.json into (a registry)."),
    pack_dir: PackDirs = None,
    format: Format = OutputFormat.human,
) -> None:
    """Write a pack's single-file archive and its model card (NAME-VERSION.md) into a folder, and add the
    pack to the folder's index.json."""
    result = listing.export(name, to, pack_dirs=pack_dir or ())
    line = (
        f"exported {result['name']} {result['version']} -> {result['archive']} ({size_text(result['size'])}, "
        f"sha256 {result['sha256'][:12]}…); model card {result['card']}; index {result['index']}"
    )
    Output(format).record(result, line)


@app.command("reference")
def reference(
    name: str = typer.Argument(..., help="Function pack directory (or the name of one) to add the reference to."),
    data: str = typer.Option(..., "--data", help="CSV or Parquet file of the reference set's inputs."),
    set_name: str = typer.Option(..., "--name", help="What the reference set is, e.g. 'ChEMBL approved drugs'."),
    source: str = typer.Option("", "--source", help="Where the set comes from, precisely enough to fetch it again."),
    column: Column = None,
    smiles_col: SmilesColumn = None,
    protein_col: ProteinColumn = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    pack_dir: PackDirs = None,
    format: Format = OutputFormat.human,
) -> None:
    """Score a reference set once with a function pack and store the distribution of its predictions in the
    pack (tags and head untouched), so `predict` adds <column>_percentile columns. Replaces any earlier one."""
    scorer = TagScorer(
        name,
        store=PackStore(pack_dir or ()),
        columns=input_columns(column, smiles_col, protein_col, None),
        device=device,
        dtype=dtype,
        percentiles=False,
    )
    added, summary = add_reference(scorer, data, set_name, source or str(data))
    pack = scorer.plans[0].function
    result = {"pack": pack.name, "path": str(pack.path), "reference": set_name, "rows": added.rows}
    result |= {"columns": added.columns, "invalid": summary.invalid, "error": summary.error}
    line = (
        f"{pack.name}: reference '{set_name}' from {added.rows} of {summary.rows} rows "
        f"({summary.invalid} invalid, {summary.error} error) ranks {', '.join(added.columns)} -> {pack.path}"
    )
    Output(format).record(result, line)


# --------------------------------------------------------------------------- info's and pull's lines


def _where(details: dict[str, Any]) -> str:
    """The Markdown section under `pack info`'s card: this copy of the pack, not the pack itself."""
    lines = ["## This copy", "", f"- **Status:** {details.get('status')}"]
    if details.get("path"):
        lines.append(f"- **Path:** `{details['path']}`")
    installed = details.get("installed_from") or {}
    if installed.get("registry"):
        lines.append(f"- **Pulled from:** {installed['registry']} at {installed.get('installed_at')}")
    if details.get("registry") and details.get("status") == "available":
        lines.append(f"- **Offered by:** {details['registry']} ({size_text(details.get('size') or 0)})")
        lines.append(f"- **Install it:** `tagcli pack pull {details.get('name')}@{details.get('version')}`")
    if details.get("tag_sha256"):
        lines.append(f"- **Tag sha256:** `{details['tag_sha256']}`")
    return "\n".join(lines) + "\n"


def _lines(out: Output, records: Sequence[dict[str, Any]], lines: Sequence[str]) -> None:
    if out.format is OutputFormat.json:
        out.json(list(records))
    else:
        for line in lines:
            out.out.print(Text(line))


def _pulled_line(result: dict[str, Any]) -> str:
    why = f", needed by {result['wanted_by']}" if result.get("wanted_by") else ""
    return f"{result['status']} {result['name']} {result['version']} from {result['registry']}{why} -> {result['path']}"
