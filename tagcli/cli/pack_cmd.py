"""`tagcli pack`: list, inspect, pull, verify, remove and export tag packs (library: tagcli/registry.py)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import typer
from rich.text import Text

from tagcli.packs import registry
from tagcli.cli.options import BaseModelFilter, Format, Offline, PackDirs, Registries
from tagcli.cli.output import Output, OutputFormat
from tagcli.errors import PackError
from tagcli.packs.registry import configured_registries

app = typer.Typer(help="Tag packs: domain and function tags with their heads.", no_args_is_help=True)


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
    rows, warnings = registry.list_packs(registries, pack_dirs=pack_dir or (), available=available, base_model=base_model, offline=offline)
    out = Output(format)
    for warning in warnings:
        out.warn(warning)
    # People get the headline columns; JSON gets every field, path and fingerprint included.
    columns = ["pack", "kind", "status", "domains", "outputs", "base_model", "compatible", "size", "metrics"]
    columns += ["error"] if any("error" in r for r in rows) else []
    out.table(rows if format is OutputFormat.json else [_for_people(r) for r in rows], columns, title="tag packs")


@app.command("info")
def info(
    name: str = typer.Argument(..., help="Pack NAME, NAME@VERSION or path (registries are asked when it is not installed)."),
    registry_: Registries = None,
    offline: Offline = False,
    pack_dir: PackDirs = None,
    format: Format = OutputFormat.human,
) -> None:
    """Show one pack's manifest: template, head, training data, metrics, and where it came from."""
    details = registry.pack_info(name, configured_registries(registry_ or ()), pack_dirs=pack_dir or (), offline=offline)
    out = Output(format)
    if format is OutputFormat.json:
        out.json(details)
    else:
        out.table([{"field": k, "value": v} for k, v in details.items()], ["field", "value"], title=f"pack {details.get('name')}")


@app.command("pull")
def pull(
    refs: list[str] = typer.Argument(..., metavar="NAME", help="Packs to install, as NAME or NAME@VERSION; the domain packs they need come along."),
    registry_: Registries = None,
    offline: Offline = False,
    force: bool = typer.Option(False, "--force", help="Reinstall even when that exact archive is installed."),
    pack_dir: PackDirs = None,
    format: Format = OutputFormat.human,
) -> None:
    """Install packs from the registries under $TAGCLI_HOME/packs (also over a built-in of that name)."""
    results = registry.pull(refs, configured_registries(registry_ or ()), pack_dirs=pack_dir or (), offline=offline, force=force)
    _lines(Output(format), results, [_pulled_line(r) for r in results])


@app.command("verify")
def verify(
    name: Optional[str] = typer.Argument(None, help="Pack to check (default: every pack under $TAGCLI_HOME/packs)."),
    pack_dir: PackDirs = None,
    format: Format = OutputFormat.human,
) -> None:
    """Re-hash installed pack files against what was installed, and check that each pack loads."""
    rows = registry.verify(name, pack_dirs=pack_dir or ())
    out = Output(format)
    if format is OutputFormat.json:
        out.json(rows)
    elif not rows:
        out.out.print(Text("no installed packs to verify"))
    else:
        out.table([r | {"problems": "; ".join(r["problems"])} for r in rows], ["name", "version", "origin", "status", "problems"], title="pack verify")
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
    result = registry.remove(name)
    out = Output(format)
    line = f"removed {result['name']} {result['version'] or ''} ({result['path']})".replace("  ", " ")
    if result["builtin_now_used"]:
        line += f"; the built-in '{result['name']}' is used again"
    out.record(result, line)
    if result["needed_by"] and format is OutputFormat.human:
        out.warn(f"installed pack(s) {', '.join(result['needed_by'])} need '{result['name']}'")


@app.command("export")
def export(
    name: str = typer.Argument(..., help="Pack NAME, NAME@VERSION or path."),
    to: str = typer.Option(..., "--to", help="Folder to write NAME-VERSION.tagpack and index.json into (a registry)."),
    pack_dir: PackDirs = None,
    format: Format = OutputFormat.human,
) -> None:
    """Write a pack's single-file archive into a folder and add it to the folder's index.json."""
    result = registry.export(name, to, pack_dirs=pack_dir or ())
    line = f"exported {result['name']} {result['version']} -> {result['archive']} ({_size(result['size'])}, sha256 {result['sha256'][:12]}…); index {result['index']}"
    Output(format).record(result, line)


# --------------------------------------------------------------------------- formatting


def _lines(out: Output, records: Sequence[dict[str, Any]], lines: Sequence[str]) -> None:
    if out.format is OutputFormat.json:
        out.json(list(records))
    else:
        for line in lines:
            out.out.print(Text(line))


def _pulled_line(result: dict[str, Any]) -> str:
    why = f", needed by {result['wanted_by']}" if result.get("wanted_by") else ""
    return f"{result['status']} {result['name']} {result['version']} from {result['registry']}{why} -> {result['path']}"


def _for_people(row: dict[str, Any]) -> dict[str, Any]:
    shown = dict(row) | {"pack": f"{row['name']} {row.get('version') or ''}".strip()}
    if isinstance(row.get("size"), int):
        shown["size"] = _size(row["size"])
    if "compatible" in row:
        shown["compatible"] = "yes" if row["compatible"] else "no"
    if row.get("status") == "available":
        shown["status"] = f"available ({row['source']})"
    return shown


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n}"
