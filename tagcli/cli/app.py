"""`tagcli` entry point: registers the sub-commands and turns every failure into one line.

Exit codes: 0 success, 1 runtime error (bad file, pack, model), 2 usage error. Set TAGCLI_DEBUG=1
to see full tracebacks.
"""

from __future__ import annotations

import os
import sys

import typer

from tagcli import __version__
from tagcli.cli import eval_cmd, model_cmd, pack_cmd, predict_cmd, report_cmd, train_cmd
from tagcli.cli.output import Output
from tagcli.errors import INTERRUPTED, format_error

try:  # typer >= 0.20 bundles its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import ClickException

app = typer.Typer(
    name="tagcli",
    help="Score molecules and proteins with a frozen LLM and learned tags (Tag-LLM).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("predict")(predict_cmd.predict)
app.command("eval")(eval_cmd.evaluate)
app.command("report")(report_cmd.report)
app.add_typer(pack_cmd.app, name="pack")
app.add_typer(model_cmd.app, name="model")
app.add_typer(train_cmd.app, name="train")


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the tagcli version and exit.")) -> None:
    if version:
        typer.echo(f"tagcli {__version__}")
        raise typer.Exit()


def run(argv: list[str] | None = None) -> None:
    """Run one command; any failure becomes one `error:` line and exit code 1 or 2 (usage)."""
    try:
        # Not standalone: click would turn Ctrl-C into "Aborted!" and exit 1;
        # `format_error` says "interrupted", exit 130.
        result = app(args=argv, standalone_mode=False)
    except typer.Abort:
        raise KeyboardInterrupt from None
    except ClickException as exc:  # usage errors: click's own usage text, exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get("TAGCLI_DEBUG"):
            raise
        message, code = format_error(exc)
        Output().error(message)
        sys.exit(code)
    if result == INTERRUPTED:  # typer turns Ctrl-C inside a command into a silent Exit(130)
        raise KeyboardInterrupt
    sys.exit(result if isinstance(result, int) else 0)  # --help and typer.Exit return their exit code
