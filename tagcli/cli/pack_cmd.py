"""`tagcli pack`: list and inspect tag packs."""

from __future__ import annotations

from typing import Any

import typer

from tagcli.cli.options import Format, PackDirs
from tagcli.cli.output import Output, OutputFormat
from tagcli.pack import TagPack
from tagcli.store import PackStore

app = typer.Typer(help="Tag packs: domain and function tags with their heads.", no_args_is_help=True)



@app.command("list")
def list_packs(pack_dir: PackDirs = None, format: Format = OutputFormat.human) -> None:
    """Show installed packs: built-in ones and those under $TAGCLI_HOME/packs."""
    rows = [pack_summary(p) if isinstance(p, TagPack) else {"name": name, "kind": "broken", "error": str(p)} for name, p in PackStore(pack_dir or ()).installed().items()]
    # People get the headline columns; JSON gets every field, path included.
    columns = ["name", "kind", "domains", "outputs", "base_model", "metrics"]
    Output(format).table(rows, columns + (["error"] if any("error" in r for r in rows) else []), title="tag packs")


@app.command("info")
def info(name: str = typer.Argument(..., help="Pack name or path."), pack_dir: PackDirs = None, format: Format = OutputFormat.human) -> None:
    """Show one pack's manifest: template, head, training data, metrics."""
    pack = PackStore(pack_dir or ()).load(name)
    manifest = vars(pack.manifest) | {"path": str(pack.path), "tag_sha256": pack.tag_digest()}
    out = Output(format)
    if format is OutputFormat.json:
        out.json(manifest)
    else:
        out.table([{"field": k, "value": v} for k, v in manifest.items()], ["field", "value"], title=f"pack {pack.name}")


def pack_summary(pack: TagPack) -> dict[str, Any]:
    m = pack.manifest
    outputs = pack.head.output_columns() if pack.head else []
    return {
        "name": m.name,
        "kind": m.kind,
        "version": m.version,
        "domains": m.domains or [m.name],
        "outputs": outputs,
        "base_model": m.base_model.get("id"),
        "method": m.method,
        "metrics": _headline_metrics(m.metrics),
        "path": str(pack.path),
    }


HEADLINE = ("pearson", "mse", "accuracy", "roc_auc", "perplexity")


def _headline_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The test split's headline metrics if the pack has them, else validation's."""
    split = "test" if metrics.get("test") else "val"
    chosen = metrics.get(split) or {}
    return {"split": split} | {k: round(chosen[k], 4) for k in HEADLINE if isinstance(chosen.get(k), float)}
