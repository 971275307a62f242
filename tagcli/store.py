"""Where packs are found: explicit pack dirs, the built-in `tagpacks/`, then `$TAGCLI_HOME/packs`.

A pack reference is either a path (a pack directory or `.tagpack` archive) or a bare NAME that is
looked up in each search directory as `DIR/NAME/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import tagpacks
from tagcli.errors import PackError
from tagcli.home import packs_dir
from tagcli.pack import ARCHIVE_SUFFIX, MANIFEST, TagPack, load_pack
from tagcli.prompt import NAME_RE


def builtin_packs_dir() -> Path:
    return Path(tagpacks.__file__).parent


class PackStore:
    def __init__(self, extra_dirs: Sequence[str | Path] = ()) -> None:
        self.search_path = [Path(d) for d in extra_dirs] + [builtin_packs_dir(), packs_dir()]
        self._loaded: dict[Path, TagPack] = {}

    def find(self, ref: str) -> Path:
        """Path of the pack `ref` names (a path, or a NAME in the search path)."""
        as_path = Path(ref).expanduser()
        if as_path.is_dir() or (as_path.is_file() and as_path.suffix == ARCHIVE_SUFFIX):
            return as_path.resolve()
        if not NAME_RE.match(ref):
            raise PackError(f"no tag pack at {ref}")
        for directory in self.search_path:
            if (directory / ref / MANIFEST).is_file():
                return (directory / ref).resolve()
        raise PackError(
            f"no tag pack named '{ref}' (searched {', '.join(str(d) for d in self.search_path)})",
            hint="`tagcli pack list` shows installed packs",
        )

    def load(self, ref: str, near: Path | None = None) -> TagPack:
        """Load a pack once per store; `near` (a pack's folder) is searched first, for sibling packs."""
        path = self._find_near(ref, near) or self.find(ref)
        if path not in self._loaded:
            self._loaded[path] = load_pack(path)
        return self._loaded[path]

    def _find_near(self, ref: str, near: Path | None) -> Path | None:
        if near is None or not NAME_RE.match(ref):
            return None
        sibling = near.parent / ref
        return sibling.resolve() if (sibling / MANIFEST).is_file() else None

    def installed(self) -> dict[str, TagPack | PackError]:
        """Every pack in the search path by name (first occurrence wins); broken ones as their error."""
        packs: dict[str, TagPack | PackError] = {}
        for directory in self.search_path:
            if not directory.is_dir():
                continue
            for candidate in sorted(directory.iterdir()):
                if candidate.name in packs or not (candidate / MANIFEST).is_file():
                    continue
                try:
                    packs[candidate.name] = self.load(str(candidate))
                except PackError as exc:
                    packs[candidate.name] = exc
        return packs
