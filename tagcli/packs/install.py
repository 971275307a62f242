"""Installing packs from registries under $TAGCLI_HOME/packs: resolve, pull, auto-pull for predict, remove.

Installing is all-or-nothing: every archive of a pull (the pack and the domain packs it needs) is
downloaded to `$TAGCLI_HOME/downloads/SHA256.tagpack.part`, checked against the index's size and
sha256, extracted into a staging folder inside `$TAGCLI_HOME/packs` (the extractor refuses, before
writing anything, members other than the pack's three files, links, devices, sparse or duplicate
members and members over their size limit), loaded and validated, matched against its index entry
(name, version, base model fingerprint, and the domain tag digests a function pins), and only then
renamed into place as `$TAGCLI_HOME/packs/NAME/` with an install record (`.tagcli-install.json`:
source, version, archive sha256, per-file sha256) that `pack verify` re-hashes against. A failure at
any step leaves the installed packs as they were. Nothing is unpickled anywhere: JSON, tar and
safetensors only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagcli import __version__
from tagcli.basemodel.resolve import fingerprint_model_dir, resolve_model_dir, short_fingerprint
from tagcli.core.prompt import NAME_RE
from tagcli.errors import PackError, UsageError
from tagcli.home import make_readable, packs_dir
from tagcli.packs.archive import extract_archive
from tagcli.packs.folder import MANIFEST
from tagcli.packs.format import TagPack, load_pack
from tagcli.packs.index import IndexEntry, version_key
from tagcli.packs.integrity import INSTALL_RECORD, file_problems, is_pulled, read_record, sha256_file
from tagcli.packs.manifest import read_manifest_data
from tagcli.packs.registries import ENV_REGISTRY, Registry, config_path, configured_registries
from tagcli.packs.store import PackStore, builtin_packs_dir, is_pack_folder, sibling_pack, split_ref
from tagcli.packs.transport import downloads_dir
from tagcli.processes import pid_alive

# --------------------------------------------------------------------------- resolving


def find_remote(name: str, version: str | None, registries: Sequence[Registry], offline: bool = False) -> IndexEntry:
    """The entry for NAME (newest version in the first registry that has it) or NAME@VERSION."""
    errors: list[PackError] = []
    other_versions: list[str] = []
    for registry in registries:
        try:
            entries = registry.entries(offline)
        except PackError as exc:
            errors.append(exc)
            continue
        matching = [e for e in entries if e.name == name]
        if not matching:
            continue
        if version is None:
            return max(matching, key=lambda e: version_key(e.version))
        for entry in matching:
            if entry.version == version:
                return entry
        other_versions += [f"{e.version} in {registry.spec}" for e in matching]
    if other_versions:
        raise PackError(
            f"no version {version} of pack '{name}' in any registry (there: {', '.join(other_versions)})",
            hint=f"`tagcli pack pull {name}` takes the newest",
        )
    if errors:
        raise PackError(f"pack '{name}' not found: {errors[0].message}", hint=errors[0].hint)
    if not registries:
        raise PackError(
            f"tag pack '{name}' is not installed and no registry is configured",
            hint=f"pass --registry (hf://ORG/REPO, https://…/index.json or a folder), set {ENV_REGISTRY}, "
            f"or list registries in {config_path()}",
        )
    raise PackError(
        f"no pack named '{name}' in {', '.join(r.spec for r in registries)}",
        hint="`tagcli pack list --available` shows what they offer",
    )


@dataclass
class PullItem:
    """One archive a pull installs, and why."""

    entry: IndexEntry
    wanted_by: str | None = None  # the function pack that needs this domain pack; None if asked for


def plan_pull(
    refs: Sequence[str], registries: Sequence[Registry], store: PackStore, offline: bool = False
) -> list[PullItem]:
    """The entries to install for `refs`, plus the domain packs they need that are not already here."""
    plan: dict[str, PullItem] = {}
    queue: list[tuple[str, str | None, str | None]] = [(*split_ref(ref), None) for ref in refs]
    while queue:
        name, version, wanted_by = queue.pop(0)
        if name in plan:
            planned = plan[name].entry
            if version and planned.version != version:
                raise PackError(
                    f"pack '{name}' is wanted at versions {planned.version} and {version} at once",
                    hint="pull them one at a time",
                )
            continue
        entry = find_remote(name, version, registries, offline)
        plan[name] = PullItem(entry, wanted_by)
        for domain, pin in entry.requires.items():
            if domain not in plan and not requirement_met(domain, pin, store, beside=packs_dir() / entry.name):
                queue.append((domain, pin.get("version") or None, entry.name))
    return list(plan.values())


def requirement_met(domain: str, pin: dict[str, str], store: PackStore, beside: Path) -> bool:
    """Whether the domain pack the scorer would use for a function at `beside` is the pinned one."""
    try:
        path = sibling_pack(beside, domain) or store.find(domain)
        return load_pack(path).tag_digest() == pin.get("sha256")
    except (PackError, KeyError):  # missing, broken, or a pack without a tag of that name
        return False


# --------------------------------------------------------------------------- installing


def install(items: Sequence[PullItem], offline: bool = False, force: bool = False) -> list[dict[str, Any]]:
    """Download, verify and install `items` all together (see the module docstring); one record per item."""
    root = packs_dir()
    root.mkdir(parents=True, exist_ok=True)
    _clean_stale(root)
    results: list[dict[str, Any]] = []
    todo = []
    for item in items:
        if not force and _same_install(root / item.entry.name, item.entry):
            results.append(_result(item, root / item.entry.name, "already installed"))
        else:
            todo.append(item)
    if not todo:
        return results
    staging = Path(tempfile.mkdtemp(prefix=f".incoming-{os.getpid()}-", dir=root))
    downloaded: list[Path] = []
    try:
        staged: list[tuple[PullItem, Path, TagPack]] = []
        for item in todo:
            entry = item.entry
            assert entry.registry is not None
            archive = entry.registry.fetch(entry, offline)
            if archive.parent == downloads_dir():
                downloaded.append(archive)
            target = staging / entry.name
            target.mkdir()
            extract_archive(archive, target, label=f"archive of {entry.name} {entry.version} from {entry.source}")
            pack = load_pack(target)
            _check_matches(pack, entry)
            _write_record(target, item)
            make_readable(target)
            staged.append((item, target, pack))
        _check_pins(staged)
        for item, target, _ in staged:
            results.append(_result(item, _move_into_place(target, root / item.entry.name), "installed"))
    finally:
        # Verified downloads are not kept (installed, or refused); only an interrupted one stays, to resume.
        shutil.rmtree(staging, ignore_errors=True)
        for path in downloaded:
            path.unlink(missing_ok=True)
    return results


def pull(
    refs: Sequence[str],
    registries: Sequence[Registry],
    *,
    pack_dirs: Sequence[str] = (),
    offline: bool = False,
    force: bool = False,
) -> list[dict[str, Any]]:
    """`tagcli pack pull`: install the registry copies of `refs` (and missing domain packs) under $TAGCLI_HOME."""
    if not refs:
        raise UsageError("name at least one pack to pull")
    return install(plan_pull(refs, registries, PackStore(pack_dirs), offline), offline=offline, force=force)


def _check_matches(pack: TagPack, entry: IndexEntry) -> None:
    """An archive must hold the pack its index entry describes, for the same base model."""
    m, where = pack.manifest, f"archive of {entry.name} {entry.version} from {entry.source}"
    if (m.name, m.version) != (entry.name, entry.version):
        raise PackError(f"{where} holds pack '{m.name}' {m.version}, not what its index entry says; refusing it")
    if m.base_model.get("fingerprint") != entry.base_model.get("fingerprint"):
        raise PackError(f"{where} records another base model fingerprint than its index entry; refusing it")


def _check_pins(staged: list[tuple[PullItem, Path, TagPack]]) -> None:
    """A staged function must pin the very domain tags staged with it."""
    digests = {item.entry.name: pack.tag_digest() for item, _, pack in staged if pack.name in pack.tags}
    versions = {item.entry.name: item.entry.version for item, _, _ in staged}
    for item, _, pack in staged:
        for domain, pin in pack.manifest.requires.items():
            if domain in digests and digests[domain] != pin.get("sha256"):
                raise PackError(
                    f"{item.entry.name} {item.entry.version} was trained with another '{domain}' tag than the "
                    f"{domain} {versions[domain]} in {item.entry.source}; nothing was installed",
                    hint=f"the registry should offer {domain} {pin.get('version')}",
                )


def _write_record(target: Path, item: PullItem) -> None:
    """The install record: where the pack came from and the sha256 of each file, for `pack verify`."""
    entry = item.entry
    record = {
        "name": entry.name,
        "version": entry.version,
        "registry": entry.source,
        "url": entry.url,
        "archive_sha256": entry.sha256,
        "archive_size": entry.size,
        "files": {p.name: sha256_file(p) for p in sorted(target.iterdir()) if p.is_file()},
        "wanted_by": item.wanted_by,
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tagcli_version": __version__,
    }
    (target / INSTALL_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _same_install(path: Path, entry: IndexEntry) -> bool:
    record = read_record(path) if is_pulled(path) else None
    return record is not None and record.get("archive_sha256") == entry.sha256 and not file_problems(path, record)


def _move_into_place(staged: Path, dest: Path) -> Path:
    """Rename the staged pack to its place; a pack already there is swapped out, then deleted."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.parent / f".old-{os.getpid()}-{dest.name}-{os.urandom(4).hex()}"
        os.replace(dest, old)
    try:
        os.replace(staged, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        _delete(old)
    return dest


def _delete(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _clean_stale(root: Path) -> None:
    """Remove staging/old folders left by pulls that were killed (their process is gone)."""
    for entry in root.glob(".*-*-*"):
        match = re.match(r"\.(incoming|old|removing)-(\d+)-", entry.name)
        if match and not pid_alive(int(match.group(2))):
            _delete(entry)


def _result(item: PullItem, path: Path, status: str) -> dict[str, Any]:
    e = item.entry
    return {
        "name": e.name,
        "version": e.version,
        "kind": e.kind,
        "status": status,
        "registry": e.source,
        "sha256": e.sha256,
        "size": e.size,
        "wanted_by": item.wanted_by,
        "path": str(path),
    }


def remove(name: str) -> dict[str, Any]:
    """`tagcli pack rm NAME`: delete an installed pack (never a built-in); reports packs that need it."""
    pack_name, _ = split_ref(name)
    path = packs_dir() / pack_name
    builtin = (builtin_packs_dir() / pack_name / MANIFEST).is_file()
    if not is_pack_folder(path):
        if builtin:
            raise PackError(
                f"'{pack_name}' is a built-in pack, not an installed one; there is nothing to remove",
                hint="built-in packs ship with tagcli",
            )
        raise PackError(
            f"no installed pack named '{pack_name}' in {packs_dir()}", hint="`tagcli pack list` shows installed packs"
        )
    version = read_manifest_data(path, strict=False).get("version") or (read_record(path) or {}).get("version")
    needed_by = sorted(
        other.name
        for other in packs_dir().iterdir()
        if other.name != pack_name and pack_name in (read_manifest_data(other, strict=False).get("requires") or {})
    )
    trash = path.parent / f".removing-{os.getpid()}-{os.urandom(4).hex()}"
    os.replace(path, trash)  # gone from the store at once, even if deleting the files is interrupted
    _delete(trash)
    return {
        "name": pack_name,
        "version": version,
        "path": str(path),
        "needed_by": needed_by,
        "builtin_now_used": builtin,
    }


# --------------------------------------------------------------------------- predict: pull what is missing


def ensure_packs(
    functions: Sequence[str],
    domains: Sequence[str] | None,
    *,
    registries: Sequence[str] = (),
    store: PackStore | None = None,
    offline: bool = False,
    base_model: str | None = None,
    on_pull: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[str], list[str] | None]:
    """Make the packs a `predict` names available, pulling missing ones unless `offline`.

    Returns the function and domain references to hand to the scorer (a function's NAME@VERSION
    becomes the resolved path; a domain's becomes its NAME). `registries` are --registry values; they
    and the configured ones are read only when something is missing. A local function pack whose domain
    packs are nowhere to be found gets the pinned versions pulled. Pulled packs must fit the base
    model the run will use (`base_model`, else the first function's own, as the scorer does): one
    that does not is refused before anything is installed. Pass the `store` the scorer will use, so
    that packs are looked up (and loaded) once.
    """
    store = store or PackStore()
    wanted: list[str] = []
    local: dict[str, Path] = {}
    for ref in functions:
        path = _find_local(store, ref)
        if path is None:
            wanted.append(ref)
            continue
        local[ref] = path
        if not domains:
            for domain, pin in (read_manifest_data(path, strict=False).get("requires") or {}).items():
                if sibling_pack(path, domain) is None and _find_local(store, domain) is None:
                    pinned = isinstance(pin, dict) and pin.get("version")
                    wanted.append(f"{domain}@{pin['version']}" if pinned else domain)
    wanted += [ref for ref in domains or () if _find_local(store, ref) is None]
    out_domains = None
    if domains:
        out_domains = [ref if Path(ref).expanduser().exists() else split_ref(ref)[0] for ref in domains]
    installed: dict[str, str] = {}
    if wanted:
        if offline:
            raise PackError(
                f"tag pack '{wanted[0]}' is not installed, and --offline forbids pulling it",
                hint=f"run `tagcli pack pull {wanted[0]}` first, or drop --offline",
            )
        plan = plan_pull(wanted, configured_registries(registries), store)
        by_name = {item.entry.name: item.entry for item in plan}
        spec = base_model
        if spec is None and functions:  # the scorer runs on the first function's own base model
            first = functions[0]
            if first in local:
                spec = (read_manifest_data(local[first], strict=False).get("base_model") or {}).get("id")
            else:
                spec = by_name[split_ref(first)[0]].base_model.get("id")
        if spec:
            _check_base_model(plan, *model_fingerprint(spec))
        for result in install(plan):
            installed[result["name"]] = result["path"]
            if on_pull and result["status"] == "installed":
                on_pull(result)
    out_functions = []
    for ref in functions:
        if "@" not in ref or Path(ref).expanduser().exists():
            out_functions.append(ref)
        else:
            out_functions.append(str(local[ref]) if ref in local else installed[split_ref(ref)[0]])
    return out_functions, out_domains


def _check_base_model(plan: Sequence[PullItem], model_id: str, fingerprint: str) -> None:
    """Refuse, before installing anything, a planned pack recorded for another base model."""
    for item in plan:
        expected = item.entry.base_model
        if expected.get("fingerprint") != fingerprint:
            raise PackError(
                f"pack '{item.entry.name}' {item.entry.version} in {item.entry.source} was trained for base model "
                f"{expected.get('id')} ({short_fingerprint(expected.get('fingerprint', ''))}), "
                f"not {model_id} ({short_fingerprint(fingerprint)}); not pulled",
                hint=f"pass --base-model {expected.get('id')}",
            )


def _find_local(store: PackStore, ref: str) -> Path | None:
    """The local pack `ref` names, or None when a NAME[@VERSION] is not here; other failures raise."""
    try:
        return store.find(ref)
    except PackError:
        if not NAME_RE.match(ref.partition("@")[0]) or Path(ref).expanduser().exists():
            raise
        split_ref(ref)  # a malformed NAME@VERSION is an error, not something to pull
        return None


def model_fingerprint(spec: str) -> tuple[str, str]:
    """(id, fingerprint) of a base model spec, as the scorer will see it (fingerprints are cached)."""
    model_id, path = resolve_model_dir(spec)
    return model_id, fingerprint_model_dir(path)
