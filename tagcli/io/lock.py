"""Run locks: which processes are writing an output's part directory right now.

    out.parquet.parts/_locks/shard-1-of-1.json    a plain run: {"pid", "host", "started", ...}
    out.parquet.parts/_locks/shard-2-of-8.json    shard 2 of 8 of one job (--shard, --devices, launcher ranks)

Every process that scores into a part directory holds the lock file of its shard. The file is
created atomically and never clobbers another (a hard link to a complete temp file; an exclusive
O_EXCL create where the filesystem has no hard links), and it is removed when the process ends,
whether it finishes or fails (Ctrl-C included); only kill -9 and the like leave it behind.

Two processes conflict when their shares of the units overlap: shards I/N and J/M share units
exactly when I = J (mod gcd(N, M)). So two processes claiming the same shard conflict, a plain run
(1/1) conflicts with any shard, and the N shards of one job (1/N .. N/N) never do.

A lock counts as live while its process runs:
- same host (same hostname and PID namespace): the pid exists, is no zombie, and (on Linux) started
  when the lock says, so a pid reused by another process does not count; a killed run's lock is
  stale at once.
- another host: the holder refreshes the file's mtime every HEARTBEAT_SECONDS from a background
  thread; the lock is stale once that heartbeat is older than STALE_AFTER_SECONDS (10 minutes;
  the hosts' clocks must agree to well within that).
A live lock is never taken over, --resume or not: that would make two writers of the same parts.
A stale lock is taken over by a run that continues the parts anyway (`takeover`: --resume, a shard,
or a folder with no manifest yet); otherwise the caller is told (`StaleLock`) and says how to resume.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any

from tagcli.errors import TagcliError
from tagcli.processes import pid_alive, pid_namespace, proc_start

HEARTBEAT_SECONDS = 60.0
STALE_AFTER_SECONDS = 600.0  # a lock from another host with no heartbeat for this long is stale
UNREADABLE_GRACE_SECONDS = 10.0  # an unreadable lock file younger than this may be still being written
_BREAK_STALE_SECONDS = 30.0  # a takeover marker older than this was left by a killed process
_NAME = re.compile(r"shard-(\d+)-of-(\d+)\.json")


class RunLockedError(TagcliError):
    """Another live process is writing the same output (and the same units)."""


class StaleLock(Exception):
    """A lock left by a process that is gone, found by a run that may not take it over."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder  # 'pid 1234 on host x, started 12:03:04'


@dataclass(frozen=True)
class Holder:
    """What a lock file says about the process that holds it."""

    pid: int
    host: str
    started: float  # time.time() when the lock was taken
    shard: str  # "I/N", 1-based
    token: str  # unique per lock: tells a lock from a later one with the same pid
    pid_ns: str | None = None  # Linux PID namespace: same hostname in another container is another host
    proc_start: int | None = None  # Linux start time of the pid (clock ticks after boot)

    @classmethod
    def me(cls, shard: str) -> Holder:
        pid = os.getpid()
        return cls(
            pid, socket.gethostname(), time.time(), shard, secrets.token_hex(8), pid_namespace(), proc_start(pid)
        )

    def describe(self) -> str:
        """'pid 1234 on host x, started 12:03:04' (with the date when not today, and the shard when a shard)."""
        when = time.localtime(self.started)
        today = time.strftime("%Y-%m-%d") == time.strftime("%Y-%m-%d", when)
        started = time.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S", when)
        shard = f"shard {self.shard}: " if self.shard != "1/1" else ""
        return f"{shard}pid {self.pid} on host {self.host}, started {started}"

    def same_machine(self) -> bool:
        return self.host == socket.gethostname() and self.pid_ns == pid_namespace()

    def is_live(self, heartbeat: float) -> bool:
        """Whether the holder still runs (`heartbeat`: the lock file's mtime)."""
        if not self.same_machine():
            return time.time() - heartbeat < STALE_AFTER_SECONDS
        return pid_alive(self.pid, self.proc_start)


@dataclass(frozen=True)
class _Found:
    path: Path
    holder: Holder | None  # None: the file could not be read
    heartbeat: float

    def is_live(self) -> bool:
        if self.holder is None:  # half-written (O_EXCL fallback) or damaged
            return time.time() - self.heartbeat < UNREADABLE_GRACE_SECONDS
        return self.holder.is_live(self.heartbeat)

    def describe(self) -> str:
        return self.holder.describe() if self.holder else f"unreadable lock {self.path.name}"


class RunLock:
    """The lock of one shard (`index` of `count`, 0-based) on the part directory `folder`.

    `acquire` raises RunLockedError (a live overlapping holder) or StaleLock; `release` (also on
    leaving a `with` block) removes the file if it is still this process's own.
    """

    def __init__(self, folder: Path, index: int, count: int, output: str) -> None:
        self.folder = Path(folder)
        self.index, self.count, self.output = index, count, output
        self.path = self.folder / f"shard-{index + 1}-of-{count}.json"
        self.holder: Holder | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def check(self) -> None:
        """Raise RunLockedError if a live process holds an overlapping lock (takes nothing)."""
        live = [f for f in self._overlapping() if f.is_live()]
        if live:
            raise self._locked(live[0])

    def acquire(self, takeover: bool) -> None:
        for _ in range(200):  # more rounds only while other processes take over stale locks at the same moment
            found = self._overlapping()
            live = [f for f in found if f.is_live()]
            if live:
                raise self._locked(live[0])
            if found:
                if not takeover:
                    raise StaleLock(found[0].describe())
                for stale in found:
                    _remove_stale(stale)
                time.sleep(0.01)
                continue
            holder = Holder.me(f"{self.index + 1}/{self.count}")
            if not _create(self.path, asdict(holder)):
                continue  # another process got there first: look again
            self.holder = holder
            # A process claiming another, overlapping shard at this moment: both see each other and stop.
            live = [f for f in self._overlapping() if f.path != self.path and f.is_live()]
            if live:
                self.release()
                raise self._locked(live[0])
            self._beat = threading.Thread(target=self._heartbeat, name="tagcli-run-lock", daemon=True)
            self._beat.start()
            return
        raise RunLockedError(f"cannot lock {self.path}: other processes keep taking it over")

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None
        if self.holder is not None:
            found = _read(self.path)
            if found and found.holder and found.holder.token == self.holder.token:
                self.path.unlink(missing_ok=True)
            self.holder = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.path)
            except OSError:  # removed with its folder after the merge
                pass

    def alone(self) -> bool:
        """No other live process holds a lock here (no other shard can be merging at this moment)."""
        return not any(f.path != self.path and f.is_live() for f in self._found(lambda index, count: True))

    def _overlapping(self) -> list[_Found]:
        """Lock files here whose shard shares units with this one (this shard's own file included)."""
        return self._found(lambda index, count: _overlap(self.index, self.count, index, count))

    def _found(self, wanted: Callable[[int, int], bool]) -> list[_Found]:
        """Lock files here of the shards (0-based index, count) `wanted` accepts."""
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            match = _NAME.fullmatch(name)
            if match and wanted(int(match.group(1)) - 1, int(match.group(2))):
                lock = _read(self.folder / name)
                if lock is not None:
                    found.append(lock)
        return found

    def _locked(self, found: _Found) -> RunLockedError:
        return RunLockedError(
            f"{self.output} is being written by another tagcli run ({found.describe()})",
            hint="wait for it, or pass a different -o",
        )


_HOLDER_FIELDS = [f.name for f in fields(Holder)]


def _overlap(index: int, count: int, other_index: int, other_count: int) -> bool:
    """Whether shard index/count and shard other_index/other_count own a common unit index."""
    if not (0 <= other_index < other_count):
        return False
    return (index - other_index) % math.gcd(count, other_count) == 0


def _read(path: Path) -> _Found | None:
    """The lock at `path`; None if there is none (any more)."""
    try:
        heartbeat = path.stat().st_mtime
    except OSError:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return _Found(path, None, heartbeat)
    try:
        data = json.loads(text)
        return _Found(path, Holder(**{k: data[k] for k in _HOLDER_FIELDS if k in data}), heartbeat)
    except (ValueError, TypeError):  # half-written, damaged, or missing fields
        return _Found(path, None, heartbeat)


def _create(path: Path, record: dict[str, Any]) -> bool:
    """Create `path` holding `record` unless it exists (then False); readers never see it half-written
    where the filesystem has hard links."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    temp.write_text(text, encoding="utf-8")
    try:
        os.link(temp, path)  # atomic, and never clobbers
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here: an exclusive create instead
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return True
    finally:
        temp.unlink(missing_ok=True)


def _remove_stale(stale: _Found) -> None:
    """Delete a stale lock, unless someone replaced it meanwhile. A marker file created O_EXCL makes
    the check-and-delete one process's job; a marker left by a killed process expires."""
    marker = stale.path.with_name(stale.path.name + ".break")
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        try:
            if time.time() - marker.stat().st_mtime > _BREAK_STALE_SECONDS:
                marker.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        return
    except OSError:
        return
    try:
        now = _read(stale.path)
        same = now is not None and (now.holder == stale.holder if stale.holder else now.heartbeat == stale.heartbeat)
        if same:
            stale.path.unlink(missing_ok=True)
    finally:
        marker.unlink(missing_ok=True)
