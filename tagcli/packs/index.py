"""A registry's index.json: the pack versions it offers, as `IndexEntry` records.

    {"format": "tagcli.index", "format_version": 1,
     "packs": [{"name", "version", "kind", "description", "method", "domains", "outputs", "requires",
                "base_model": {"id", "fingerprint"}, "metrics", "size", "sha256", "url"}, ...]}

`url` is relative to the index (or absolute); `sha256` and `size` are those of the `.tagpack` archive.
One malformed entry makes the whole index unusable: a pull never guesses what an entry meant.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.version import InvalidVersion, Version

from tagcli.core.prompt import NAME_RE
from tagcli.errors import PackError
from tagcli.packs.format import TagPack
from tagcli.packs.integrity import sha256_file
from tagcli.packs.store import VERSION_RE

if TYPE_CHECKING:
    from tagcli.packs.registries import Registry

INDEX_FORMAT = "tagcli.index"
INDEX_FORMAT_VERSION = 1
INDEX_FILE = "index.json"
SHA256_RE = re.compile(r"[0-9a-f]{64}\Z")
FIX_HINT = "fix the index, or re-create it with `tagcli pack export`"


@dataclass
class IndexEntry:
    """One pack version a registry offers (one element of index.json's "packs")."""

    name: str
    version: str
    kind: str
    sha256: str  # of the .tagpack archive, hex
    size: int  # of the .tagpack archive, bytes
    url: str  # relative to the index, or absolute
    base_model: dict[str, str]
    description: str = ""
    method: str = "tag-llm"
    domains: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    requires: dict[str, dict[str, str]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    registry: Registry | None = field(default=None, compare=False, repr=False)

    KEYS = (
        "name",
        "version",
        "kind",
        "description",
        "method",
        "domains",
        "outputs",
        "requires",
        "base_model",
        "metrics",
        "size",
        "sha256",
        "url",
    )

    def to_dict(self) -> dict[str, Any]:
        """The entry as index.json holds it (without the registry it was read from)."""
        return {key: getattr(self, key) for key in self.KEYS}

    @property
    def source(self) -> str:
        """The spec of the registry the entry came from: what install records and listings name."""
        return self.registry.spec if self.registry else "?"

    @classmethod
    def from_dict(cls, data: Any, where: str) -> IndexEntry:
        """Validate one JSON entry; any defect is a one-line PackError naming the entry."""
        if not isinstance(data, dict):
            raise PackError(f"{where}: a pack entry is not a JSON object")
        label = f"{where}: entry {data.get('name')!r} {data.get('version')!r}"

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise PackError(f"{label}: {what}", hint=FIX_HINT)

        need(isinstance(data.get("name"), str) and bool(NAME_RE.match(data["name"])), "bad or missing name")
        need(isinstance(data.get("version"), str) and bool(VERSION_RE.match(data["version"])), "bad or missing version")
        need(data.get("kind") in ("domain", "function"), "kind must be 'domain' or 'function'")
        sha = str(data.get("sha256", "")).removeprefix("sha256:").lower()
        need(bool(SHA256_RE.match(sha)), "sha256 must be 64 hex digits")
        need(isinstance(data.get("size"), int) and data["size"] > 0, "size must be a positive integer")
        need(isinstance(data.get("url"), str) and bool(data["url"]), "missing url")
        base = data.get("base_model")
        need(
            isinstance(base, dict) and str(base.get("fingerprint", "")).startswith("sha256:"),
            "base_model needs an id and a sha256: fingerprint",
        )
        requires = data.get("requires") or {}
        need(
            isinstance(requires, dict)
            and all(
                NAME_RE.match(str(k)) and isinstance(v, dict) and isinstance(v.get("sha256"), str)
                for k, v in requires.items()
            ),
            "requires must map domain names to {version, sha256}",
        )
        typed = (("domains", list), ("outputs", list), ("metrics", dict), ("description", str), ("method", str))
        for key, kind in typed:
            need(data.get(key) is None or isinstance(data[key], kind), f"{key} must be a {kind.__name__}")
        return cls(
            name=data["name"],
            version=data["version"],
            kind=data["kind"],
            sha256=sha,
            size=data["size"],
            url=data["url"],
            base_model={"id": str(base.get("id", "")), "fingerprint": base["fingerprint"]},
            description=data.get("description") or "",
            method=data.get("method") or "tag-llm",
            domains=list(data.get("domains") or []),
            outputs=list(data.get("outputs") or []),
            requires={k: dict(v) for k, v in requires.items()},
            metrics=dict(data.get("metrics") or {}),
        )

    @classmethod
    def from_pack(cls, pack: TagPack, archive: Path, url: str) -> IndexEntry:
        """The entry describing `archive`, the `.tagpack` of `pack`, published at `url`."""
        m = pack.manifest
        return cls(
            name=m.name,
            version=m.version,
            kind=m.kind,
            sha256=sha256_file(archive),
            size=archive.stat().st_size,
            url=url,
            base_model=dict(m.base_model),
            description=m.description,
            method=m.method,
            domains=list(m.domains),
            outputs=pack.head.output_columns() if pack.head else [],
            requires=dict(m.requires),
            metrics=dict(m.metrics),
        )


def parse_index(raw: bytes, where: str) -> list[IndexEntry]:
    """The entries of an index.json's bytes; a format this tagcli does not read is refused, not guessed at."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackError(f"{where}: {INDEX_FILE} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise PackError(f"{where}: not a tagcli pack index (format is {found!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or version > INDEX_FORMAT_VERSION:
        raise PackError(
            f"{where}: index format_version {version!r} is not one this tagcli reads ({INDEX_FORMAT_VERSION})",
            hint="upgrade tagcli",
        )
    if not isinstance(data.get("packs"), list):
        raise PackError(f"{where}: index has no 'packs' list")
    return [IndexEntry.from_dict(item, where) for item in data["packs"]]


def index_document(entries: Iterable[IndexEntry]) -> dict[str, Any]:
    """The index.json object for `entries`, ordered by name and version so exports diff cleanly."""
    ordered = sorted(entries, key=lambda e: (e.name, version_key(e.version)))
    return {"format": INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION, "packs": [e.to_dict() for e in ordered]}


def version_key(version: str) -> tuple[int, Version | str]:
    """Order versions the PEP 440 way where they parse, else as text (and below those that parse)."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)
