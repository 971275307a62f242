"""A pack folder on disk: its files, whether a folder holds a pack, where a pack may be written and
how it replaces one. tagcli never deletes a file it did not write.

A destination is fine when it does not exist yet (its nearest existing parent must be writable), or
is an empty folder, or holds a tagcli pack and replacing it was asked for. Anything else (a file, a
folder with other files in it) is refused before any work starts. A pack replaces the old one by
renames only once it is complete, so an interrupted or failed write leaves the old pack in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from tagcli.errors import UsageError

MANIFEST, TAGS_FILE, HEADS_FILE = "manifest.json", "tags.safetensors", "heads.safetensors"
PACK_FILES = (MANIFEST, TAGS_FILE, HEADS_FILE)


def holds_pack(path: Path) -> bool:
    """Whether a folder holds a tagcli pack and nothing else (a manifest naming a pack's name and kind)."""
    names = {p.name for p in path.iterdir()}
    if MANIFEST not in names or not names <= set(PACK_FILES):
        return False
    try:
        manifest = json.loads((path / MANIFEST).read_bytes()[: 1 << 20])
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"name", "kind"} <= set(manifest)


def check_destination(path: str | Path, replace: bool) -> None:
    """Refuse a pack destination that would destroy something or cannot be written (one-line error)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise UsageError(f"--out {path} is a file, not a pack folder", hint="name a new folder for the pack")
        others = sorted(p.name for p in path.iterdir() if p.name not in PACK_FILES)
        if others or (any(path.iterdir()) and not holds_pack(path)):
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "") or MANIFEST
            raise UsageError(
                f"--out {path} holds files that are not a tagcli pack ({shown})",
                hint="name a new folder: tagcli never deletes files it did not write",
            )
        if any(path.iterdir()) and not replace:
            raise UsageError(
                f"--out {path} already holds a pack",
                hint="pass --force to replace it once the new one is complete, or name another folder",
            )
    checkpoint = Path(str(path).rstrip("/") + ".ckpt")  # where training keeps its checkpoints
    if checkpoint.exists() and not checkpoint.is_dir():
        raise UsageError(f"{checkpoint} (where training keeps its checkpoints) is a file", hint="move it away")
    _check_writable(path.parent)


def _check_writable(folder: Path) -> None:
    """Write and remove a scratch folder in `folder` (or its nearest existing parent): a read-only
    file system or a missing permission shows now, not after training."""
    existing = folder.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot create {folder}: {existing} is a file")
    try:
        Path(tempfile.mkdtemp(prefix=".tagcli-write-check-", dir=existing)).rmdir()
    except OSError as exc:
        raise UsageError(
            f"cannot write in {existing}: {exc.strerror or exc}", hint="choose an --out on a writable disk"
        ) from None


def replace_folder(new: Path, path: Path) -> None:
    """Put the complete folder `new` at `path` by renames; an existing pack there goes only afterwards."""
    if not (path.exists() or path.is_symlink()):
        os.replace(new, path)
        return
    if not path.is_dir() or (any(path.iterdir()) and not holds_pack(path)):
        raise UsageError(f"{path} holds files that are not a tagcli pack: not replacing it")
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.replace(path, old / path.name)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old / path.name, path)  # put the old pack back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
