"""A registry's index.json: the pack versions it offers, as `IndexEntry` records.

    {"format": "tagcli.index", "format_version": 1,
     "packs": [{"name", "version", "kind", "description", "method", "domains", "outputs", "requires",
                "base_model": {"id", "fingerprint"}, "metrics", "size", "sha256", "url"}, ...]}

`url` is relative to the index (or absolute); `sha256` and `size` are those of the `.tagpack` archive.
One malformed entry makes the whole index unusable: a pull never guesses what an entry meant. A
relative `url` must stay inside the registry (no `..`, no leading `/`, no scheme); an absolute one must
be a network URL (http, https, or an object store), never file:// or a local path. An index is read
only up to MAX_INDEX_BYTES, and lists at most MAX_INDEX_ENTRIES packs.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.version import InvalidVersion, Version

from tagcli.errors import PackError
from tagcli.packs.format import TagPack
from tagcli.packs.integrity import sha256_file
from tagcli.packs.limits import MAX_ARCHIVE_BYTES, MIB, is_int, parse_json
from tagcli.packs.manifest import VERSION_RE, is_name
from tagcli.packs.messages import brief

if TYPE_CHECKING:
    from tagcli.packs.registries import Registry

INDEX_FORMAT = "tagcli.index"
INDEX_FORMAT_VERSION = 1
INDEX_FILE = "index.json"
SHA256_RE = re.compile(r"[0-9a-f]{64}\Z")
FIX_HINT = "fix the index, or re-create it with `tagcli pack export`"
MAX_INDEX_BYTES = 4 * MIB  # an entry is about 1 KB
MAX_INDEX_ENTRIES = 10_000
MAX_INDEX_CONTAINERS = 20 * MAX_INDEX_ENTRIES  # JSON objects and lists, counted before parsing ({} costs 64 bytes)
NETWORK_PROTOCOLS = ("http", "https", "s3", "gs", "gcs", "az", "abfs", "abfss")


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
        label = f"{where}: entry {brief(data.get('name'))} {brief(data.get('version'))}"

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise PackError(f"{label}: {what}", hint=FIX_HINT)

        need(is_name(data.get("name")), "bad or missing name")
        need(isinstance(data.get("version"), str) and bool(VERSION_RE.match(data["version"])), "bad or missing version")
        need(data.get("kind") in ("domain", "function"), "kind must be 'domain' or 'function'")
        sha = data.get("sha256")
        sha = sha.removeprefix("sha256:").lower() if isinstance(sha, str) else ""
        need(bool(SHA256_RE.match(sha)), "sha256 must be 64 hex digits")
        need(is_int(data.get("size"), 1), "size must be a positive integer")
        need(
            data["size"] <= MAX_ARCHIVE_BYTES,
            f"size {data['size']:,} is more than a pack archive may be ({MAX_ARCHIVE_BYTES // MIB} MiB)",
        )
        need(isinstance(data.get("url"), str) and bool(data["url"]), "missing url")
        problem = url_problem(data["url"])
        need(problem is None, f"url {brief(data['url'], 60)} {problem}")
        base = data.get("base_model")
        need(
            isinstance(base, dict)
            and isinstance(base.get("id", ""), str)
            and isinstance(base.get("fingerprint"), str)
            and base["fingerprint"].startswith("sha256:"),
            "base_model needs an id and a sha256: fingerprint",
        )
        requires = data.get("requires") or {}
        need(
            isinstance(requires, dict)
            and all(
                is_name(k) and isinstance(v, dict) and isinstance(v.get("sha256"), str) for k, v in requires.items()
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
            outputs=pack.output_columns(),
            requires=dict(m.requires),
            metrics=dict(m.metrics),
        )


def url_problem(url: str) -> str | None:
    """Why an entry's archive url is not acceptable (None: it is): see the module docstring."""
    if any(ord(c) < 32 for c in url) or "\\" in url or "::" in url:
        return "holds a control character, a backslash or '::'"
    if "://" in url:
        protocol = url.split("://", 1)[0].lower()
        if protocol not in NETWORK_PROTOCOLS:
            return f"points outside the registry (a {protocol[:12]}:// URL, not http(s) or an object store)"
        return None
    if url.startswith("/") or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", url):
        return "points outside the registry (an absolute path or a URL scheme)"
    normal = posixpath.normpath(url)
    if normal == ".." or normal.startswith("../") or normal == ".":
        return "points outside the registry ('..')"
    return None


def parse_index(raw: bytes, where: str) -> list[IndexEntry]:
    """The entries of an index.json's bytes; a format this tagcli does not read is refused, not guessed at.

    Bounded before parsing: at most MAX_INDEX_BYTES, and MAX_INDEX_CONTAINERS JSON objects and lists
    (brackets counted, inside strings too), so parsing cannot take much more memory than that.
    """
    if len(raw) > MAX_INDEX_BYTES:
        raise PackError(
            f"{where}: {INDEX_FILE} is more than {MAX_INDEX_BYTES // MIB} MiB; refusing to read it",
            hint="a registry that large should be split",
        )
    if raw.count(b"{") + raw.count(b"[") > MAX_INDEX_CONTAINERS:
        many = f"more than {MAX_INDEX_CONTAINERS:,} JSON objects and lists"
        raise PackError(f"{where}: {INDEX_FILE} holds {many}; refusing to parse it")
    data = parse_json(raw, where, INDEX_FILE)
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise PackError(f"{where}: not a tagcli pack index (format is {brief(found)})")
    version = data.get("format_version")
    if not is_int(version) or version > INDEX_FORMAT_VERSION:
        raise PackError(
            f"{where}: index format_version {brief(version)} is not one this tagcli reads ({INDEX_FORMAT_VERSION})",
            hint="upgrade tagcli",
        )
    if not isinstance(data.get("packs"), list):
        raise PackError(f"{where}: index has no 'packs' list")
    if len(data["packs"]) > MAX_INDEX_ENTRIES:
        raise PackError(
            f"{where}: index lists {len(data['packs']):,} packs, more than the {MAX_INDEX_ENTRIES:,} tagcli reads",
            hint="a registry that large should be split",
        )
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
