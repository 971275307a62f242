"""Where packs are found on this machine. Registries to pull from are `tagcli.packs.registries`.

A pack reference is a path (a pack directory or `.tagpack` archive), a bare NAME, or NAME@VERSION.
A NAME is looked up as `DIR/NAME/` in this order:

  1. the `--pack-dir` folders, in the order given;
  2. packs *pulled* from a registry into `$TAGCLI_HOME/packs` (they carry an install record,
     `.tagcli-install.json`, written by `tagcli pack pull`, and every load re-checks their files
     against it: `tagcli.packs.integrity`);
  3. the built-in `tagpacks/`;
  4. any other pack under `$TAGCLI_HOME/packs` (copied there by hand).

So a pulled pack replaces the built-in of the same name: pulling is an explicit choice, and
`tagcli pack rm NAME` brings the built-in back. Hand-placed packs keep the documented order
(built-in first). NAME@VERSION takes the first pack in that order whose manifest has that
version (e.g. `smiles@0.1.0` reaches the built-in behind a pulled `smiles` 0.2.0); when none
has it, the error says which versions are there. A function pack's domain packs are looked up
next to it first (`sibling_pack`), so a pulled function runs with the domain packs pulled with it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import tagpacks
from tagcli.core.prompt import NAME_RE
from tagcli.errors import PackError
from tagcli.home import packs_dir
from tagcli.packs.archive import ARCHIVE_SUFFIX
from tagcli.packs.folder import MANIFEST
from tagcli.packs.format import TagPack, load_pack
from tagcli.packs.integrity import is_pulled, read_record
from tagcli.packs.manifest import VERSION_RE, read_manifest_data


def builtin_packs_dir() -> Path:
    """The packs shipped inside tagcli (the `tagpacks` package), so `predict -F qed` works offline."""
    return Path(tagpacks.__file__).parent


def split_ref(ref: str) -> tuple[str, str | None]:
    """'NAME' or 'NAME@VERSION' → (name, version or None); anything else is a one-line PackError."""
    name, at, version = ref.partition("@")
    if not NAME_RE.match(name) or (at and not VERSION_RE.match(version)):
        raise PackError(
            f"bad pack reference {ref!r}",
            hint="use NAME or NAME@VERSION (lowercase letters, digits, - and _), or a pack path",
        )
    return name, (version if at else None)


def is_pack_folder(path: Path) -> bool:
    """A folder with a manifest, or a pulled one (which, missing its manifest, fails to load, saying so)."""
    return (path / MANIFEST).is_file() or is_pulled(path)


def _record_version(pack_dir: Path) -> str | None:
    return (read_record(pack_dir) or {}).get("version") if is_pulled(pack_dir) else None


def sibling_pack(beside: Path, name: str) -> Path | None:
    """The pack `name` in the folder of the pack at `beside`, or None: a function's domain packs are
    looked for there first, so a pulled function gets the domain packs pulled with it."""
    if not NAME_RE.match(name):
        return None
    sibling = beside.parent / name
    return sibling.resolve() if is_pack_folder(sibling) else None


class PackStore:
    """The packs on this machine, by name or path, in the lookup order above; each loaded once."""

    def __init__(self, extra_dirs: Sequence[str | Path] = ()) -> None:
        self.extra_dirs = [Path(d) for d in extra_dirs]
        self.search_path = self.extra_dirs + [builtin_packs_dir(), packs_dir()]
        self._loaded: dict[Path, TagPack] = {}

    def candidates(self, name: str) -> Iterator[Path]:
        """Where a pack called `name` may be, in lookup order (see the module docstring)."""
        for directory in self.extra_dirs:
            yield directory / name
        installed = packs_dir() / name
        if is_pulled(installed):
            yield installed
        yield builtin_packs_dir() / name
        if not is_pulled(installed):
            yield installed

    def origin(self, path: Path) -> str:
        """'pack-dir', 'installed' (pulled), 'built-in', 'local' (under $TAGCLI_HOME by hand) or 'path'."""
        parent = Path(path).resolve().parent
        if any(parent == d.resolve() for d in self.extra_dirs):
            return "pack-dir"
        if parent == builtin_packs_dir().resolve():
            return "built-in"
        if parent == packs_dir().resolve():
            return "installed" if is_pulled(Path(path)) else "local"
        return "path"

    def find(self, ref: str) -> Path:
        """Path of the pack `ref` names (a path, NAME or NAME@VERSION)."""
        as_path = Path(ref).expanduser()
        if as_path.is_dir() or (as_path.is_file() and as_path.suffix == ARCHIVE_SUFFIX):
            return as_path.resolve()
        if not NAME_RE.match(ref.partition("@")[0]):
            raise PackError(f"no tag pack at {ref}")
        name, version = split_ref(ref)
        seen = []
        for candidate in self.candidates(name):
            if not is_pack_folder(candidate):
                continue
            if version is None:
                return candidate.resolve()
            found = read_manifest_data(candidate, strict=False).get("version") or _record_version(candidate)
            if found == version:
                return candidate.resolve()
            seen.append(f"{found} in {candidate.parent}")
        if seen:
            raise PackError(
                f"no version {version} of tag pack '{name}' is installed (found {'; '.join(seen)})",
                hint=f"`tagcli pack pull {name}@{version}` installs it from a registry",
            )
        raise PackError(
            f"no tag pack named '{name}' (searched {', '.join(str(d) for d in self.search_path)})",
            hint="`tagcli pack list --available` shows installed packs and those in registries; "
            "`tagcli pack pull NAME` installs one",
        )

    def load(self, ref: str, near: Path | None = None) -> TagPack:
        """Load a pack once per store; with `near` (a function pack's path), the pack beside it comes first."""
        path = (sibling_pack(near, ref) if near is not None else None) or self.find(ref)
        if path not in self._loaded:
            self._loaded[path] = load_pack(path)
        return self._loaded[path]

    def installed(self) -> dict[str, TagPack | PackError]:
        """Every pack on this machine by name (the one a bare NAME resolves to); broken ones as their error."""
        packs: dict[str, TagPack | PackError] = {}
        for directory in self.search_path:
            if not directory.is_dir():
                continue
            for candidate in sorted(directory.iterdir()):
                if candidate.name in packs or not NAME_RE.match(candidate.name) or not is_pack_folder(candidate):
                    continue
                try:
                    packs[candidate.name] = self.load(str(self.find(candidate.name)))
                except PackError as exc:
                    packs[candidate.name] = exc
        return packs
