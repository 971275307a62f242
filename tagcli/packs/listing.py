"""What packs there are, here and in registries, and their state: list, info, verify, export.

These return data (`list_packs` returns the small records below); how a listing is shown, as JSON
rows or a table, is the CLI's business (`tagcli.cli.pack_rows`).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagcli.atomic import SHARED, atomic_path, write_json_atomic
from tagcli.basemodel.resolve import DEFAULT_BASE_MODEL
from tagcli.core.prompt import NAME_RE
from tagcli.errors import PackError
from tagcli.home import packs_dir
from tagcli.packs.archive import ARCHIVE_SUFFIX, write_archive
from tagcli.packs.folder import MANIFEST
from tagcli.packs.format import TagPack, load_pack
from tagcli.packs.index import INDEX_FILE, IndexEntry, index_document, parse_index
from tagcli.packs.install import find_remote, model_fingerprint
from tagcli.packs.integrity import INSTALL_RECORD, file_problems, is_pulled, read_record
from tagcli.packs.manifest import read_manifest_data
from tagcli.packs.registries import ENV_REGISTRY, Registry, config_path
from tagcli.packs.store import PackStore, builtin_packs_dir, is_pack_folder, split_ref


@dataclass
class InstalledPack:
    """A pack on this machine: the one a bare NAME resolves to."""

    pack: TagPack
    origin: str  # PackStore.origin: 'built-in', 'installed' (pulled), 'local', 'pack-dir' or 'path'
    record: dict[str, Any] | None  # its install record, for a pulled pack
    size: int  # bytes of its files
    compatible: bool  # recorded for the base model the listing checks against


@dataclass
class AvailablePack:
    """A pack version a registry offers that is not what is installed under that name."""

    entry: IndexEntry
    compatible: bool


@dataclass
class BrokenPack:
    """A pack folder on this machine that does not load."""

    name: str
    error: PackError


ListedPack = InstalledPack | AvailablePack | BrokenPack  # what `list_packs` returns, in listing order


def list_packs(
    registries: Sequence[Registry] = (),
    *,
    pack_dirs: Sequence[str] = (),
    available: bool = False,
    base_model: str | None = None,
    offline: bool = False,
) -> tuple[list[ListedPack], list[str]]:
    """Installed packs (and with `available`, those the registries offer), plus warnings about registries.

    With `base_model`, only the packs recorded for that model are listed; without, each is still marked
    compatible or not with the default model.
    """
    store = PackStore(pack_dirs)
    label, fingerprint = reference_fingerprint(base_model)

    def fits(base: dict[str, str]) -> bool:
        return base.get("fingerprint") == fingerprint if fingerprint else base.get("id") == label

    listed: list[ListedPack] = []
    pulled_archives: set[tuple[str, str, Any]] = set()  # (name, version, archive sha256) of pulled packs
    for name, pack in store.installed().items():
        if isinstance(pack, PackError):
            listed.append(BrokenPack(name, pack))
            continue
        assert pack.path is not None
        record = read_record(pack.path) if pack.path.is_dir() else None
        compatible = fits(pack.manifest.base_model)
        listed.append(InstalledPack(pack, store.origin(pack.path), record, _size(pack.path), compatible))
        if record:
            pulled_archives.add((name, pack.manifest.version, record.get("archive_sha256")))
    warnings: list[str] = []
    if available and not registries:
        where = f"--registry, {ENV_REGISTRY}, or `registries` in {config_path()}"
        warnings.append(f"no pack registry is configured ({where})")
    for registry in registries if available else ():
        try:
            entries = registry.entries(offline)
        except PackError as exc:
            warnings.append(str(exc))
            continue
        listed += [
            AvailablePack(entry, fits(entry.base_model))
            for entry in entries
            if (entry.name, entry.version, entry.sha256) not in pulled_archives  # else that archive is installed
        ]
    if base_model:
        listed = [item for item in listed if not isinstance(item, BrokenPack) and item.compatible]
    return listed, warnings


def reference_fingerprint(base_model: str | None) -> tuple[str, str | None]:
    """(label, fingerprint or None) of the model packs are checked against in listings; cheap where possible."""
    spec = base_model or DEFAULT_BASE_MODEL
    if spec.startswith("sha256:"):
        return spec, spec
    if Path(spec).expanduser().is_dir():
        return model_fingerprint(str(Path(spec).expanduser()))
    known = set()
    for directory in (builtin_packs_dir(), packs_dir()):
        for manifest in directory.glob(f"*/{MANIFEST}") if directory.is_dir() else []:
            base = read_manifest_data(manifest.parent, strict=False).get("base_model") or {}
            if base.get("id") == spec and isinstance(base.get("fingerprint"), str):
                known.add(base["fingerprint"])
    return spec, (known.pop() if len(known) == 1 else None)


def _size(path: Path) -> int:
    """Bytes of a pack archive, or of a pack directory's files (its install record not counted)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.name != INSTALL_RECORD)


def pack_info(
    ref: str, registries: Sequence[Registry] = (), *, pack_dirs: Sequence[str] = (), offline: bool = False
) -> dict[str, Any]:
    """One pack's manifest (installed), or its index entry (in a registry)."""
    store = PackStore(pack_dirs)
    try:
        pack = store.load(ref)
    except PackError as local_error:
        if Path(ref).expanduser().exists() or not registries:
            raise
        try:
            name, version = split_ref(ref)
        except PackError:
            raise local_error from None
        entry = find_remote(name, version, registries, offline)
        return entry.to_dict() | {"status": "available", "registry": entry.source}
    assert pack.path is not None
    info = pack.manifest.to_data() | {
        "path": str(pack.path),
        "tag_sha256": pack.tag_digest() if pack.name in pack.tags else None,
        "status": store.origin(pack.path),
    }
    record = read_record(pack.path) if pack.path.is_dir() else None
    if record:
        kept = ("registry", "url", "archive_sha256", "installed_at", "wanted_by")
        info["installed_from"] = {k: record.get(k) for k in kept}
    return info


def verify(name: str | None = None, *, pack_dirs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Re-hash installed packs against their install records (built-in and hand-placed packs: load them)."""
    store = PackStore(pack_dirs)
    if name is not None:
        found = store.find(name)
        paths = {found.name.removesuffix(ARCHIVE_SUFFIX): found}
    else:
        root = packs_dir()
        candidates = sorted(root.iterdir()) if root.is_dir() else []
        paths = {p.name: p for p in candidates if NAME_RE.match(p.name) and is_pack_folder(p)}
    rows = []
    for pack_name, path in paths.items():
        pulled = path.is_dir() and is_pulled(path)
        record = read_record(path) if pulled else None
        row: dict[str, Any] = {
            "name": pack_name,
            "version": None,
            "status": "ok",
            "problems": [],
            "path": str(path),
            "origin": store.origin(path),
        }
        if pulled:  # the same problems a load of the pack refuses it for (integrity.check_installed)
            row["version"] = (record or {}).get("version")
            row["problems"] = file_problems(path, record)
        try:
            pack = load_pack(path, check_install=False)
            row["version"] = row["version"] or pack.manifest.version
        except PackError as exc:
            row["problems"].append(exc.message)
        if row["problems"]:
            row["status"] = "failed"
        elif not pulled:
            row["status"] = "ok (loads; no install record to compare)"
        rows.append(row)
    return rows


def export(ref: str, to_dir: str | Path, *, pack_dirs: Sequence[str] = ()) -> dict[str, Any]:
    """Write a pack's `.tagpack` and its model card (`NAME-VERSION.md`, `card.model_card`) into `to_dir`,
    and add (or replace) its entry in `to_dir/index.json` (which does not mention the card)."""
    from tagcli.packs.card import CARD_SUFFIX, write_card

    pack = PackStore(pack_dirs).load(ref)
    assert pack.path is not None
    to_dir = Path(to_dir).expanduser()
    to_dir.mkdir(parents=True, exist_ok=True)
    index_path = to_dir / INDEX_FILE
    entries = parse_index(index_path.read_bytes(), f"index {index_path}") if index_path.is_file() else []
    m = pack.manifest
    filename = f"{m.name}-{m.version}{ARCHIVE_SUFFIX}"
    with atomic_path(to_dir / filename, mode=SHARED) as temp:
        if pack.path.is_file():
            shutil.copyfile(pack.path, temp)
        else:
            write_archive(pack.path, temp)
        entry = IndexEntry.from_pack(pack, temp, filename)
    card = to_dir / f"{m.name}-{m.version}{CARD_SUFFIX}"
    write_card(card, vars(m) | {"outputs": entry.outputs})
    entries = [e for e in entries if (e.name, e.version) != (m.name, m.version)] + [entry]
    write_json_atomic(index_path, index_document(entries))
    return entry.to_dict() | {"archive": str(to_dir / filename), "card": str(card), "index": str(index_path)}
