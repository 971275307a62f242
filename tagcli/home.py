"""Where tagcli keeps converted base models, fingerprints and installed packs."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import platformdirs


def tagcli_home() -> Path:
    """`$TAGCLI_HOME`, else the user's cache dir (e.g. ~/.cache/tagcli)."""
    env = os.environ.get("TAGCLI_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("tagcli"))


def models_dir() -> Path:
    return tagcli_home() / "models"


def packs_dir() -> Path:
    return tagcli_home() / "packs"


def make_readable(directory: Path) -> None:
    """mkdtemp/mkstemp create owner-only entries; caches and packs may be shared read-only."""
    directory.chmod(0o755)
    for entry in directory.iterdir():
        entry.chmod(0o644)


def env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def write_json_atomic(path: Path, value: Any) -> None:
    """Write a temp file and rename it, so readers never see half a file (even across processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2, sort_keys=True)
            f.write("\n")
        Path(tmp).chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
