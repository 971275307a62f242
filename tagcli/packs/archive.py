"""`.tagpack` archives: one uncompressed tar of a pack's files, written for transport and extracted
only after every header has been checked (no links, devices, sparse or oversized members, nothing
compressed). The header checks hook a private tarfile method, `TarInfo._proc_member`, which any
Python release may change: `HOOK_PYTHONS` lists the versions on which it is known to behave, and
tests/unit/test_archive_hook.py fails on any other until the hook has been checked there."""

from __future__ import annotations

import tarfile
from collections.abc import Collection
from pathlib import Path

from tagcli.errors import PackError, first_line
from tagcli.packs.folder import PACK_FILES
from tagcli.packs.limits import MAX_FILE_BYTES, MIB
from tagcli.packs.messages import brief

ARCHIVE_SUFFIX = ".tagpack"
# Pythons whose tarfile builds every member, extended headers included, through `TarInfo._proc_member`
# (read in their tarfile.py; tests/hostile/test_hostile_packs.py run on 3.11).
HOOK_PYTHONS = ((3, 10), (3, 11), (3, 12), (3, 13))


def write_archive(pack_dir: str | Path, archive: str | Path) -> Path:
    """Pack a pack directory into one uncompressed tar (safetensors do not compress)."""
    pack_dir, archive = Path(pack_dir), Path(archive)
    with tarfile.open(archive, "w") as tar:
        for name in PACK_FILES:
            if (pack_dir / name).is_file():
                tar.add(pack_dir / name, arcname=name)
    return archive


COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
MAX_EXTENDED_HEADER_BYTES = 8 << 10  # a pax or GNU long-name header: a path and a time stamp
MAX_EXTENDED_HEADERS = 16
KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.DIRTYPE: "a directory",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CHRTYPE: "a device",
    tarfile.BLKTYPE: "a device",
    tarfile.CONTTYPE: "a contiguous file",
}


class _Refused(tarfile.TarError):
    """A member refused while its header is read (its data is never read)."""


class _CheckedTarInfo(tarfile.TarInfo):
    """Refuses, before tarfile reads them, the headers whose data tarfile would hold in memory or loop
    over: oversized or too many pax / GNU long-name headers, and sparse members (GNU or pax), whose maps
    let a small archive expand into a huge file. (tarfile's `_proc_member` hook: see HOOK_PYTHONS.)"""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _Refused(f"member {brief(self.name)} is a sparse file")
        if self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, *tarfile.GNU_TYPES):
            seen = getattr(tar, "_tagcli_extended", 0) + 1
            tar._tagcli_extended = seen  # type: ignore[attr-defined]
            if seen > MAX_EXTENDED_HEADERS:
                raise _Refused(f"more than {MAX_EXTENDED_HEADERS} extended tar headers")
            if self.size > MAX_EXTENDED_HEADER_BYTES:
                raise _Refused(f"an extended tar header of {self.size:,} bytes (at most {MAX_EXTENDED_HEADER_BYTES:,})")
            if self.type not in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                fileobj = tar.fileobj
                assert fileobj is not None
                start = fileobj.tell()
                data = fileobj.read(self.size)
                fileobj.seek(start)
                if b"GNU.sparse" in data:
                    raise _Refused("a sparse member (pax GNU.sparse header)")
        return super()._proc_member(tar)  # type: ignore[misc]


def _member_problem(member: tarfile.TarInfo, seen: Collection[str]) -> str | None:
    """Why a `.tagpack` member may not be extracted (None: it may): only the pack's files, as plain files,
    once each, each within its size limit."""
    if member.name not in PACK_FILES:
        return f"unexpected member {brief(member.name)} (a pack holds only {', '.join(PACK_FILES)})"
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return f"unexpected member {member.name!r} ({KINDS.get(member.type, 'not a plain file')})"
    if member.name in seen:
        return f"member {member.name!r} appears twice"
    if member.size > MAX_FILE_BYTES[member.name]:
        cap = MAX_FILE_BYTES[member.name] // MIB
        return f"member {member.name!r} is {member.size:,} bytes, more than the {cap} MiB it may be"
    return None


def extract_archive(archive: Path, dest: Path, only: Collection[str] = PACK_FILES, *, label: str | None = None) -> None:
    """Extract a `.tagpack` (an uncompressed tar) into `dest`; `only`: just these of its files.

    Every header is checked before anything is written: a member that is not one of the pack's files,
    not a plain file (a link, directory, device or sparse file), there twice, or larger than its
    MAX_FILE_BYTES limit refuses the whole archive, as does a compressed one (nothing is decompressed).
    Refusals name the archive as `label` (default: "pack archive PATH").
    """
    where = label or f"pack archive {archive}"
    try:
        with open(archive, "rb") as f:
            magic = f.read(8)
    except OSError as exc:
        raise PackError(f"cannot read {where}: {first_line(exc)}") from None
    for prefix, kind in COMPRESSED.items():
        if magic.startswith(prefix):
            raise PackError(
                f"{where} is {kind}-compressed; a .tagpack is a plain tar file",
                hint="re-create it with `tagcli pack export`",
            )
    try:
        with tarfile.open(archive, "r:", tarinfo=_CheckedTarInfo) as tar:
            members: dict[str, tarfile.TarInfo] = {}
            while (member := tar.next()) is not None:
                problem = _member_problem(member, members)
                if problem:
                    raise PackError(f"{where}: {problem}; refusing to extract")
                members[member.name] = member
            wanted = [m for name, m in members.items() if name in only]
            tar.extractall(dest, members=wanted, filter="data")
    except _Refused as exc:
        raise PackError(f"{where}: {exc}; refusing to extract") from None
    except (tarfile.TarError, ValueError, EOFError, RecursionError, UnicodeError) as exc:
        # tarfile raises more than TarError on crafted headers (a ValueError from a bad sparse map, …)
        raise PackError(f"{where} is not a readable tar file ({first_line(exc)})") from None
