"""Whether a process on this machine still runs: the one PID-liveness check (run locks, pull leftovers).

On Linux a pid is told from a later process that reused it by its start time, and an exited but
unreaped process (a zombie) does not count; elsewhere only `kill(pid, 0)` is asked.
"""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int, started: int | None = None) -> bool:
    """Whether process `pid` runs; `started`: its `proc_start` when it was seen, so that a pid reused by
    another process does not count (None: any process with that pid counts)."""
    if pid == os.getpid():
        return started is None or started == proc_start(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        pass
    if _proc_state(pid) in ("Z", "X"):  # exited, not yet reaped
        return False
    now = proc_start(pid)
    return started is None or now is None or now == started


def pid_namespace() -> str | None:
    """This process's Linux PID namespace: the same hostname in another container is another machine."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def proc_start(pid: int) -> int | None:
    """The Linux start time of `pid` (clock ticks after boot); None where /proc does not say."""
    fields = _proc_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None  # field 22: starttime


def _proc_state(pid: int) -> str | None:
    fields = _proc_fields(pid)
    return fields[0] if fields else None


def _proc_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces): field 3 (state) onward."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()
