"""The `tagcli` command line: thin Typer commands over the library API.

`main` is the entry point. It imports the commands (torch, transformers, ...) only inside its own
error handling, so that Ctrl-C during that slow start-up ends with one line too, not a traceback.
"""

from __future__ import annotations

import os
import sys

from tagcli.errors import format_error, watch_stop_signals


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    watch_stop_signals(next((a for a in args if not a.startswith("-")), None))
    try:
        from tagcli.cli.app import run

        run(argv)
    except (Exception, KeyboardInterrupt) as exc:  # what `run` did not report: Ctrl-C, a failed import
        if os.environ.get("TAGCLI_DEBUG"):
            raise
        message, code = format_error(exc)
        sys.stderr.write(f"error: {message}\n")
        sys.exit(code)
