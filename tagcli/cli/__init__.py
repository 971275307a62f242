"""The `tagcli` command line: thin Typer commands over the library API.

`main` is the entry point. It imports the commands (torch, transformers, ...) only inside its own
error handling, so that Ctrl-C during that slow start-up ends with one line too, not a traceback.
"""

from __future__ import annotations

import os
import sys

INTERRUPTED = 130  # the shell's exit status for a process stopped by SIGINT


def main(argv: list[str] | None = None) -> None:
    try:
        from tagcli.cli.app import run

        run(argv)
    except KeyboardInterrupt:
        if os.environ.get("TAGCLI_DEBUG"):
            raise
        sys.stderr.write("error: interrupted (hint: rerun a file run with --resume to continue it)\n")
        sys.exit(INTERRUPTED)
