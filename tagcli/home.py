"""Where tagcli keeps converted base models, fingerprints and installed packs."""

from __future__ import annotations

import os
from pathlib import Path

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
