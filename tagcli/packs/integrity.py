"""File hashes, and whether a pulled pack's folder is still what `tagcli pack pull` installed.

A pulled pack carries an install record, `.tagcli-install.json`, beside its files: where it came
from and the sha256 of each file. `file_problems` words how a folder differs from its record (a file
changed or missing, a file that is not part of the pack); `pack verify` lists those problems, and
`check_installed` refuses, in one line, to load a pulled pack that has any (`load_pack` calls it, so
every load does: the scorer's, training's, listings'). Built-in and hand-placed packs have no record.

Loads remember each file's digest by (size, mtime_ns, ctime_ns, inode), so loading the same pack
again in one process re-reads no file that was not touched; `pack verify` always re-hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tagcli.errors import PackError

INSTALL_RECORD = ".tagcli-install.json"  # beside a pulled pack's files: where it came from, per-file sha256
CHUNK = 1 << 20

_digests: dict[str, tuple[tuple[int, int, int, int], str]] = {}  # absolute path → (stat key, sha256)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (archives can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _cached_sha256(path: Path) -> str:
    """sha256_file, remembered while the file's size, times and inode stay the same."""
    key = str(path.absolute())
    with open(path, "rb") as f:
        before = _stat_key(os.fstat(f.fileno()))
        hit = _digests.get(key)
        if hit is not None and hit[0] == before:
            return hit[1]
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
        if _stat_key(os.fstat(f.fileno())) == before:  # not written to while it was read
            _digests[key] = (before, digest.hexdigest())
    return digest.hexdigest()


def is_pulled(pack_dir: Path) -> bool:
    """Whether a pack directory was installed by `tagcli pack pull` (it has an install record)."""
    return (pack_dir / INSTALL_RECORD).is_file()


def read_record(pack_dir: Path) -> dict[str, Any] | None:
    """A pack directory's install record, or None when it has no readable one."""
    try:
        record = json.loads((pack_dir / INSTALL_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def file_problems(path: Path, record: dict[str, Any] | None, *, cached: bool = False) -> list[str]:
    """How a pulled pack's files differ from its install record (empty: untouched since the pull).

    The one wording of these problems, for `pack verify` and for refusing a load. `cached`: reuse the
    digests of files not touched since this process last hashed them.
    """
    if record is None:
        return [f"its install record {INSTALL_RECORD} is not readable"]
    files = record.get("files")
    if not isinstance(files, dict) or not files:
        return ["the install record lists no files"]
    if not all(isinstance(n, str) and n == Path(n).name and isinstance(d, str) for n, d in files.items()):
        return ["the install record's file list is malformed"]
    problems = []
    for name, digest in sorted(files.items()):
        file = path / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif (_cached_sha256(file) if cached else sha256_file(file)) != digest:
            problems.append(f"{name} was changed")
    for extra in sorted(p.name for p in path.iterdir() if p.name not in files and p.name != INSTALL_RECORD):
        problems.append(f"{extra} is not part of the pack")
    return problems


def reinstall_hint(name: str) -> str:
    return f"`tagcli pack pull {name} --force` reinstalls it"


def check_installed(path: Path) -> None:
    """Refuse a pulled pack whose folder differs from its install record; other packs pass untouched."""
    if not path.is_dir() or not is_pulled(path):
        return
    problems = file_problems(path, read_record(path), cached=True)
    if problems:
        raise PackError(f"pack '{path.name}' ({path}): {'; '.join(problems)}", hint=reinstall_hint(path.name))
