"""tagcli.processes.pid_alive: the one PID-liveness check of run locks and pull leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tagcli.processes import pid_alive, proc_start


def test_this_process_is_alive_unless_the_start_time_is_another_processes() -> None:
    assert pid_alive(os.getpid())
    start = proc_start(os.getpid())
    if start is None:
        pytest.skip("no /proc here: start times are unknown")
    assert pid_alive(os.getpid(), start)
    assert not pid_alive(os.getpid(), start + 1)  # the pid, reused by a later process


def test_a_reaped_process_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="zombies are told by /proc")
def test_an_exited_unreaped_process_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while pid_alive(child.pid) and time.monotonic() < deadline:  # a zombie until waited for
        time.sleep(0.05)
    try:
        assert not pid_alive(child.pid)
        assert os.waitpid(child.pid, os.WNOHANG)[0] == child.pid  # it was a zombie: not yet reaped
    finally:
        child.poll()
