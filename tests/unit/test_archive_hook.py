"""The archive checks rest on a private tarfile hook (`TarInfo._proc_member`, tagcli.packs.archive).

A Python release may rename or bypass a private method without notice, and then archives would be
extracted unchecked. So the versions on which the hook is known to behave are pinned, and a Python
not among them fails here until someone has checked the hook on it.
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

from tagcli.errors import PackError
from tagcli.packs.archive import HOOK_PYTHONS, MAX_EXTENDED_HEADER_BYTES, extract_archive


def test_this_python_is_one_the_tar_hook_is_known_to_work_on() -> None:
    version = sys.version_info[:2]
    if version not in HOOK_PYTHONS:
        known = ", ".join(f"{major}.{minor}" for major, minor in HOOK_PYTHONS)
        pytest.fail(
            f"tagcli.packs.archive checks tar headers in tarfile.TarInfo._proc_member, a private hook known "
            f"to behave on Python {known}, and this is Python {version[0]}.{version[1]}. Read this Python's "
            "tarfile.py (every header, pax and GNU extended ones included, must still pass through "
            "_proc_member before its data is read), run tests/hostile/test_hostile_packs.py, then add the "
            "version to HOOK_PYTHONS."
        )


def _tar(path: Path, pax_headers: dict[str, str]) -> Path:
    info = tarfile.TarInfo("manifest.json")
    info.size, info.pax_headers = 2, pax_headers
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"{}"))
    return path


def test_tarfile_reads_every_header_through_the_hook(tmp_path: Path) -> None:
    seen: list[bytes] = []

    class Spy(tarfile.TarInfo):
        def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            seen.append(self.type)
            return super()._proc_member(tar)  # type: ignore[misc]

    with tarfile.open(_tar(tmp_path / "a.tar", {"comment": "x"}), "r:", tarinfo=Spy) as tar:
        assert tar.getnames() == ["manifest.json"]
    assert seen == [tarfile.XHDTYPE, tarfile.REGTYPE]  # the pax header itself, then the member it describes


def test_an_oversized_extended_header_is_refused_by_the_hook(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tagpack", {"comment": "x" * 2 * MAX_EXTENDED_HEADER_BYTES})
    with pytest.raises(PackError, match="an extended tar header of"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
