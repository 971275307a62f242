"""Getting archive and index bytes from a URL or path: whole reads, resumable downloads, integrity checks.

Downloads use fsspec, the file-system layer pandas, pyarrow, dask and huggingface_hub build on, so
one code path reads http(s) (through aiohttp, its `fsspec[http]` extra), file:// and local paths,
and other object stores; it does ranged reads, which is what resuming needs. An interrupted download
keeps its `$TAGCLI_HOME/downloads/SHA256.tagpack.part`, and the next pull asks for the remaining bytes
only (an HTTP Range request; servers without Range support send the file again from the start).

Nothing a server sends is trusted to be bounded: an index is read up to the caller's limit, an archive
up to one byte past the size its index entry declares (more is refused and discarded), and a server
that stays silent for `$TAGCLI_NETWORK_TIMEOUT` seconds (default: 30 to connect, 120 between reads)
is given up on.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, BinaryIO

from tagcli.errors import PackError, UsageError, first_line
from tagcli.home import tagcli_home
from tagcli.packs.archive import ARCHIVE_SUFFIX
from tagcli.packs.integrity import sha256_file

CHUNK = 1 << 20  # bytes per read (and per Range request when resuming)
RESUME_HINT = "run the same command again to resume it"
NETWORK_HINT = "check the address and the network"
MISMATCH_HINT = "the archive differs from the one its index entry describes; re-export the registry or ask its owner"
ENV_TIMEOUT = "TAGCLI_NETWORK_TIMEOUT"


class _NoRanges(Exception):
    """The server answered a Range request with the whole file."""


def downloads_dir() -> Path:
    """Where partial and verified downloads wait, named by their sha256 so a retry finds its own."""
    return tagcli_home() / "downloads"


def url_protocol(url: str) -> str:
    """'http', 'file', 's3', … or 'local' for a plain path: what decides whether a URL needs the network."""
    return url.split("://", 1)[0].lower() if "://" in url else "local"


def network_timeouts() -> tuple[float, float]:
    """(connect, read) seconds a registry server may stay silent: $TAGCLI_NETWORK_TIMEOUT for both, else 30, 120."""
    text = os.environ.get(ENV_TIMEOUT, "").strip()
    if not text:
        return 30.0, 120.0
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"{ENV_TIMEOUT} must be a positive number of seconds, not {text[:20]!r}")
    return seconds, seconds


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError:  # pragma: no cover - a dependency
        raise PackError("fsspec is not installed", hint="pip install 'fsspec[http]'") from None
    options: dict[str, Any] = {}
    if url_protocol(url) in ("http", "https"):
        try:
            import aiohttp
        except ImportError:
            raise PackError(f"cannot read {url}: aiohttp is not installed", hint="pip install 'fsspec[http]'") from None
        # No overall limit (archives can be large), but never hang on a dead connection; honour HTTP(S)_PROXY.
        connect, read = network_timeouts()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        options["client_kwargs"] = {"timeout": timeout, "trust_env": True}
    try:
        return url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:
        raise PackError(
            f"cannot read {url}: {first_line(exc)}", hint="install the fsspec package for that protocol"
        ) from None


def read_url(url: str, where: str, max_bytes: int) -> bytes:
    """The content of a small file at a URL or path (an index), but at most `max_bytes` + 1 bytes of it:
    enough for the caller to tell that it is too big, without ever holding more."""
    fs, path = _filesystem(url)
    try:
        if url_protocol(url) in ("http", "https"):
            source = fs.open(path, "rb", block_size=0, size=max_bytes + 1)  # one streamed GET
        else:
            source = fs.open(path, "rb")
        chunks, got = [], 0
        with source:
            while got <= max_bytes:
                chunk = source.read(min(CHUNK, max_bytes + 1 - got))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        return b"".join(chunks)
    except FileNotFoundError:
        raise PackError(
            f"{where}: {url} not found",
            hint="check the registry address (an index.json, its folder, or hf://ORG/REPO)",
        ) from None
    except Exception as exc:
        raise PackError(f"{where}: cannot read {url}: {_describe(exc)}", hint=NETWORK_HINT) from None


def download(url: str, size: int, sha256: str, label: str) -> Path:
    """Download to $TAGCLI_HOME/downloads/SHA256.tagpack.part, resuming a partial one; check size and sha256.

    Returns the verified file. A hash or size mismatch discards the file; an interrupted transfer keeps
    it, so the next call asks only for the rest.
    """
    part = downloads_dir() / f"{sha256}{ARCHIVE_SUFFIX}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    if have < size:
        try:
            _copy(url, part, have, size, label)
        except _NoRanges:
            part.unlink(missing_ok=True)
            _copy(url, part, 0, size, label)
    got = part.stat().st_size
    if got < size:
        raise PackError(f"download of {label} ended early at {got} of {size} bytes", hint=RESUME_HINT)
    check_archive(part, size, sha256, label, discard=True)
    return part


def _open_at(url: str, offset: int, size: int, label: str) -> BinaryIO:
    """`url` opened for reading from `offset`; raises _NoRanges when a resumed read cannot seek."""
    fs, path = _filesystem(url)
    try:
        if url_protocol(url) not in ("http", "https"):
            source = fs.open(path, "rb")
        elif offset == 0:
            return fs.open(path, "rb", block_size=0, size=size)  # one streamed GET
        else:
            # Random access: each read is a Range request for the next bytes (reads never pass `size`, so
            # fsspec can tell a server that ignores Range, and answers with the whole file, from one that does).
            source = fs.open(path, "rb", block_size=CHUNK, size=size, cache_type="none")
        source.seek(offset)
        return source
    except FileNotFoundError:
        raise PackError(
            f"{label}: {url} not found", hint="the registry's index lists an archive its server does not have"
        ) from None
    except ValueError as exc:
        if offset:
            raise _NoRanges() from exc
        raise PackError(f"{label}: cannot download {url}: {_describe(exc)}") from None
    except Exception as exc:
        raise PackError(f"{label}: cannot download {url}: {_describe(exc)}", hint=NETWORK_HINT) from None


def _copy(url: str, part: Path, offset: int, size: int, label: str) -> None:
    """Append the bytes of `url` from `offset` to `part`; a source longer than `size` is refused as soon
    as one byte more has come (`part` is then discarded), so no server can make it grow past size + 1."""
    ranged = url_protocol(url) in ("http", "https") and offset > 0
    written = offset
    with _open_at(url, offset, size, label) as source, open(part, "ab") as out:
        first = True
        while written <= size:
            try:
                # a ranged read stops at `size` by itself; a streamed one is asked for one byte more, to notice it
                chunk = source.read(max(1, min(CHUNK, size - written)) if ranged else min(CHUNK, size + 1 - written))
            except Exception as exc:
                if first and offset and isinstance(exc, ValueError):
                    raise _NoRanges() from exc
                stopped = f"download of {label} stopped at {written} of {size} bytes ({_describe(exc)})"
                raise PackError(stopped, hint=RESUME_HINT) from None
            first = False
            if not chunk:
                return
            out.write(chunk)
            out.flush()
            written += len(chunk)
    part.unlink(missing_ok=True)
    raise PackError(
        f"download of {label}: the server sent more than the {size:,} bytes its index entry says; "
        "discarded, nothing was installed",
        hint=MISMATCH_HINT,
    )


def check_archive(path: Path, size: int, sha256: str, label: str, discard: bool) -> None:
    """Refuse an archive whose size or sha256 differs from its index entry (deleting it if `discard`)."""
    got_size, got = path.stat().st_size, sha256_file(path)
    if got_size == size and got == sha256:
        return
    if discard:
        path.unlink(missing_ok=True)
    if got_size != size:
        what = f"size {got_size} instead of {size} bytes"
    else:
        what = f"sha256 {got[:12]}… instead of {sha256[:12]}…"
    discarded = "discarded, " if discard else ""
    raise PackError(
        f"archive of {label} failed its integrity check ({what}); {discarded}nothing was installed",
        hint=MISMATCH_HINT,
    )


def _describe(exc: BaseException) -> str:
    if "Timeout" in type(exc).__name__ or isinstance(exc, TimeoutError):
        return f"no data for {network_timeouts()[1]:g} s, the ${ENV_TIMEOUT} limit"
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
