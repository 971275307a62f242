"""tagcli.atomic: a destination is replaced whole or not at all, and no temp file is left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tagcli.atomic import SHARED, atomic_path, write_json_atomic, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_bytes(b"half of the new")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_the_temp_file_is_beside_its_target_until_it_replaces_it(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".out.bin.") and temp.name.endswith(".tmp")
        temp.write_bytes(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new" and not temp.exists()


def test_text_written_through_another_directory(tmp_path: Path) -> None:
    folder, outside = tmp_path / "pack", tmp_path
    folder.mkdir()
    write_text_atomic(folder / "manifest.json", "{}\n", directory=outside)
    assert (folder / "manifest.json").read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack"]


def test_json_is_sorted_indented_and_shared(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_json_atomic(tmp_path / "a" / "b.json", {"b": 1, "a": [2]})
        write_text_atomic(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    path = tmp_path / "a" / "b.json"
    assert path.read_text() == json.dumps({"a": [2], "b": 1}, indent=2) + "\n"
    assert path.stat().st_mode & 0o777 == SHARED  # readable by all whatever the umask
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600  # plain writes follow the umask
