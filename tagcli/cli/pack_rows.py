"""How `tagcli pack list` shows packs: one JSON row per listed pack, and the same row made readable.

JSON rows carry every field (path, fingerprint, sha256); people get headline columns with sizes in
kB/MB: a table on a wide terminal, else one stacked block per pack (`list_block`) whose pack name is
never cut. The library (`tagcli.packs.listing`) returns records; only this module decides the row shape.
"""

from __future__ import annotations

from typing import Any

from tagcli.cli.output import Block
from tagcli.packs.index import IndexEntry
from tagcli.packs.listing import AvailablePack, BrokenPack, ListedPack
from tagcli.packs.manifest import Manifest

HEADLINE = ("pearson", "mse", "accuracy", "roc_auc", "exact_match", "char_error_rate", "perplexity")
# Several targets: the unit-free summary (their MSEs and MAEs are in different units).
MULTI_TARGET_HEADLINE = ("pearson", "standardized_mse")


def list_row(item: ListedPack) -> dict[str, Any]:
    """The JSON row of one listed pack (`tagcli pack list --format json`)."""
    if isinstance(item, BrokenPack):
        return {"name": item.name, "kind": "broken", "status": "broken", "error": str(item.error)}
    if isinstance(item, AvailablePack):
        e = item.entry
        row = _described(e, e.outputs) | {
            "size": e.size,
            "status": "available",
            "source": e.source,
            "sha256": e.sha256,
            "url": e.url,
        }
    else:
        pack = item.pack
        assert pack.path is not None
        row = _described(pack.manifest, pack.output_columns()) | {
            "path": str(pack.path),
            "size": item.size,
            "status": item.origin,
            "source": item.record.get("registry") if item.record else str(pack.path.parent),
        }
        if item.record:
            row["sha256"] = item.record.get("archive_sha256")
    return row | {"compatible": item.compatible}


def human_row(row: dict[str, Any]) -> dict[str, Any]:
    """A JSON row made readable for the table: "name version", sizes with units, yes/no, the source."""
    shown = dict(row) | {"pack": f"{row['name']} {row.get('version') or ''}".strip()}
    if isinstance(row.get("size"), int):
        shown["size"] = size_text(row["size"])
    if "compatible" in row:
        shown["compatible"] = "yes" if row["compatible"] else "no"
    if row.get("status") == "available":
        shown["status"] = f"available ({row['source']})"
    if isinstance(row.get("metrics"), dict):
        shown["metrics"] = metrics_text(row["metrics"], separator=None)
    return shown


def list_block(row: dict[str, Any]) -> Block:
    """A JSON row as a stacked block for a narrow terminal: "NAME VERSION  kind, status", then key: value lines."""
    heading = f"{row['name']} {row.get('version') or ''}".strip()
    if row.get("status") == "broken":
        return Block(heading, "broken", [("error", str(row.get("error", "")))])
    domain = row.get("kind") == "domain"
    base = str(row.get("base_model") or "?")
    if "compatible" in row:
        base += ", compatible" if row["compatible"] else ", incompatible"
    fields = [
        ("domain" if domain else "domains", ", ".join(row.get("domains") or [])),
        ("outputs", ", ".join(row.get("outputs") or [])),
        ("method", row["method"] if row.get("method") not in (None, "tag-llm") else ""),
        ("metrics", metrics_text(row.get("metrics") or {})),
        ("base model", base),
        ("size", size_text(row["size"]) if isinstance(row.get("size"), int) else ""),
        ("from", str(row.get("source") or "") if row.get("status") == "available" else ""),
    ]
    return Block(heading, f"{row.get('kind')}, {row.get('status')}", fields)


def metrics_text(headline: dict[str, Any], separator: str | None = ", ") -> Any:
    """Headline metrics for people: "pearson 0.5772, mse 0.0061 (test)"; with no separator, a list of lines."""
    shown = {k: v for k, v in headline.items() if k not in ("split", "targets")}
    values = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()]
    if not values:
        return "" if separator is not None else []
    where = str(headline.get("split", ""))
    if headline.get("targets"):
        where += f", mean of {headline['targets']} targets"
    if separator is None:
        return [f"{where}:", *values]
    return f"{separator.join(values)} ({where})"


def headline_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The test split's headline metrics if the pack has them, else validation's, to 4 decimals. A pack of
    several targets gets their unit-free means and how many there are (`targets`), never a mean MSE."""
    split = "test" if metrics.get("test") else "val"
    chosen = metrics.get(split) or {}
    targets = len(chosen.get("targets") or {}) if isinstance(chosen.get("targets"), dict) else 0
    names = MULTI_TARGET_HEADLINE if targets > 1 else HEADLINE
    headline = {"split": split} | {k: round(chosen[k], 4) for k in names if isinstance(chosen.get(k), float)}
    return headline | ({"targets": targets} if targets > 1 else {})


def size_text(n: float) -> str:
    """Bytes in decimal units (B, kB, MB, GB), as people read them."""
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _described(about: Manifest | IndexEntry, outputs: list[str]) -> dict[str, Any]:
    """The fields an installed pack (its manifest) and an index entry share, in row order."""
    return {
        "name": about.name,
        "kind": about.kind,
        "version": about.version,
        "domains": about.domains or [about.name],
        "outputs": outputs,
        "base_model": about.base_model.get("id"),
        "fingerprint": about.base_model.get("fingerprint"),
        "method": about.method,
        "metrics": headline_metrics(about.metrics),
    }
