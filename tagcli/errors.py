"""Errors that tagcli reports to users as one line, with a hint on how to fix them.

Library code raises these; the CLI turns any of them (and a few well-known foreign
exceptions) into a single `error: ...` line and an exit code (see `format_error`).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class TagcliError(Exception):
    """An error with a one-line message, an optional fix hint and a process exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class UsageError(TagcliError):
    """The command line or API call itself is wrong (bad option, unknown column)."""

    exit_code = 2


class PackError(TagcliError):
    """A tag pack is missing, malformed, or does not fit the base model."""


class BaseModelError(TagcliError):
    """A base model cannot be found, converted or loaded."""


class InputFileError(TagcliError):
    """An input or output table cannot be read or written."""


class BadRowError(TagcliError):
    """A row failed validation while `--strict` was set."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type name when it has none)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


INTERRUPTED = 130  # the shell's exit status for a process stopped by SIGINT
# How a run is stopped from outside: Ctrl-C, or a scheduler preempting it (SLURM, Kubernetes and spot
# instances send SIGTERM; a closed terminal sends SIGHUP). Each ends the run like Ctrl-C does.
STOP_SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "terminated"}
# What the line says to do next, by command (`tagcli predict ...`): only commands that can resume say so.
STOP_HINTS = {
    "predict": "rerun with --resume to continue",
    "train": "rerun the same train command with --resume to continue from its last checkpoint",
}

_stop: dict[str, object] = {"signal": None, "hint": None, "deferring": False, "pending": False}


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP. A KeyboardInterrupt, so that every cleanup written for Ctrl-C (locks released,
    finished parts kept, a checkpoint written) runs for a preempted run too."""


def watch_stop_signals(command: str | None = None) -> None:
    """Turn SIGINT, SIGTERM and SIGHUP into exceptions the CLI reports as one line. Libraries may
    re-raise the KeyboardInterrupt as something else (transformers turns one inside its lazy imports
    into a ModuleNotFoundError), so the signal itself is remembered. After a SIGTERM or SIGHUP, repeats
    of either are ignored so that the cleanup they started can finish; a second Ctrl-C still stops it."""
    _stop["hint"] = STOP_HINTS.get(command or "")

    def on_signal(signum: int, frame: object) -> None:
        if signum != signal.SIGINT and _stop["signal"] in (signal.SIGTERM, signal.SIGHUP):
            return
        _stop["signal"] = signum
        if _stop["deferring"]:
            _stop["pending"] = True
            return
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)


@contextmanager
def deferred_stop() -> Iterator[None]:
    """Hold a stop signal until the block ends: work that must not stop halfway (an optimizer step,
    replacing a head's weights) finishes, then the stop is raised."""
    _stop["deferring"], _stop["pending"] = True, False
    try:
        yield
    finally:
        _stop["deferring"] = False
        if _stop["pending"]:
            _stop["pending"] = False
            raise KeyboardInterrupt if _stop["signal"] == signal.SIGINT else Terminated


def set_stop_hint(hint: str | None) -> None:
    """What the stop line suggests (a command that knows better than its name, e.g. the checkpoint step)."""
    _stop["hint"] = hint


def stop_signal() -> int | None:
    """The signal that stopped the run (None: none yet)."""
    return _stop["signal"]  # type: ignore[return-value]


def interrupted(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt) or _stop["signal"] is not None


def stop_line() -> tuple[str, int]:
    """(message, exit code 128 + signal) of a run stopped by a signal (Ctrl-C when none was recorded)."""
    signum = _stop["signal"] if isinstance(_stop["signal"], int) else signal.SIGINT
    message = STOP_SIGNALS.get(signum, "interrupted")
    hint = _stop["hint"]
    return (f"{message} (hint: {hint})" if hint else message), 128 + int(signum)


def format_error(exc: BaseException) -> tuple[str, int]:
    """Map an exception to (one-line message, exit code) for the CLI."""
    if interrupted(exc):
        return stop_line()
    if isinstance(exc, TagcliError):
        return str(exc), exc.exit_code
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename or exc}", 1
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}", 1
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return "out of memory (hint: lower --batch-size or --max-batch-tokens)", 1
    return f"{type(exc).__name__}: {first_line(exc)}", 1
