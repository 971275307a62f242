"""Errors that tagcli reports to users as one line, with a hint on how to fix them.

Library code raises these; the CLI turns any of them (and a few well-known foreign
exceptions) into a single `error: ...` line and an exit code (see `format_error`).
"""

from __future__ import annotations

import signal


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


_sigint = {"received": False}


def watch_ctrl_c() -> None:
    """Remember that Ctrl-C was pressed: libraries may re-raise the KeyboardInterrupt as something else
    (transformers turns one inside its lazy imports into a ModuleNotFoundError)."""

    def on_sigint(signum: int, frame: object) -> None:
        _sigint["received"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)


def interrupted(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt) or _sigint["received"]


def format_error(exc: BaseException) -> tuple[str, int]:
    """Map an exception to (one-line message, exit code) for the CLI."""
    if interrupted(exc):
        return "interrupted (hint: rerun a file run with --resume to continue it)", INTERRUPTED
    if isinstance(exc, TagcliError):
        return str(exc), exc.exit_code
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename or exc}", 1
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}", 1
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return "out of memory (hint: lower --batch-size or --max-batch-tokens)", 1
    return f"{type(exc).__name__}: {first_line(exc)}", 1
