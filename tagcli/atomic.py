"""Atomic file writes: readers, in this process or another, see the old file or the new one, never half.

A write goes to a temp file `.NAME.XXXXXXXX.tmp` beside its destination (the same filesystem, so
the rename is atomic; a killed writer's leftovers match that pattern), is flushed to disk, and is
renamed over the destination only once complete. On any error the temp file is deleted and the
destination is left as it was.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SHARED = 0o644  # caches and packs: readable by every user whatever the umask


def reserve_temp(path: Path, directory: Path | None = None) -> Path:
    """Create an empty temp file for `path` in `directory` (default: beside it; the same filesystem).

    O_EXCL: it never clobbers another file; mode 0o666 lets the umask apply, so the result gets the
    permissions any new file would (mkstemp would make it 0600).
    """
    temp = (directory or path.parent) / f".{path.name}.{secrets.token_hex(4)}.tmp"
    os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    return temp


def commit_temp(temp: Path, path: Path, mode: int | None = None) -> None:
    """Flush a finished temp file to disk and rename it over `path` (first setting `mode`, if given)."""
    if mode is not None:
        temp.chmod(mode)
    fd = os.open(temp, os.O_RDWR)  # fsync needs write access on some systems
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)


@contextmanager
def atomic_path(path: str | Path, *, mode: int | None = None, directory: Path | None = None) -> Iterator[Path]:
    """A temp path to write `path`'s new content to, by any writer (safetensors, tar, a copy); it becomes
    `path` when the block ends, or is deleted if the block raises. `directory`: where the temp file lives
    when not beside `path` (e.g. outside a pack folder whose file list is checked)."""
    path = Path(path)
    temp = reserve_temp(path, directory)
    try:
        yield temp
        commit_temp(temp, path, mode)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str, *, mode: int | None = None, directory: Path | None = None) -> Path:
    with atomic_path(path, mode=mode, directory=directory) as temp:
        temp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: Path, value: Any) -> None:
    """`value` as indented JSON with sorted keys, readable by all; creates missing parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n", mode=SHARED)
