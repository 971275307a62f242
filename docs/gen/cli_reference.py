"""The CLI reference page, generated from the Typer app at every docs build (mkdocs-gen-files runs this):
each command's usage, help text, arguments and options, so the page cannot drift from the code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mkdocs_gen_files
import typer

from tagcli.cli.app import app


def commands(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    """Every command under `command` in help order, with its path of names from `tagcli`."""
    yield path, command
    for name in getattr(command, "commands", {}):
        sub = command.commands[name]
        if not getattr(sub, "hidden", False):
            yield from commands(sub, [*path, name])


def cell(text: Any) -> str:
    """Help text for a Markdown table cell: one line, with `|` and `[` (a link to Markdown) escaped."""
    return " ".join(str(text or "").split()).replace("|", "\\|").replace("[", "\\[")


def section(path: list[str], command: Any) -> list[str]:
    """The Markdown of one command: heading, usage, help, and a table of its parameters."""
    arguments = [p.name.upper() for p in command.params if p.param_type_name == "argument"]
    usage = " ".join(["[OPTIONS]", *arguments] if not hasattr(command, "commands") else ["COMMAND [ARGS]..."])
    lines = [f"{'#' * min(len(path) + 1, 4)} `{' '.join(path)}`", "", f"```\n{' '.join(path)} {usage}\n```", ""]
    lines += [cell(command.help).replace("\\|", "|"), ""] if command.help else []
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    if params:
        lines += ["| argument or option | help | default |", "|---|---|---|"]
        for param in params:
            names = ", ".join(f"`{name}`" for name in [*param.opts, *param.secondary_opts])
            if param.param_type_name == "argument":
                names = f"`{param.name.upper()}`"
            default = param.default if param.default not in (None, (), [], False) else ""
            default = getattr(default, "value", default)  # an enum option shows its value
            shown = f"`{default}`" if default != "" and not callable(default) else ""
            lines.append(f"| {names} | {cell(getattr(param, 'help', ''))} | {cell(shown)} |")
        lines.append("")
    return lines


def page() -> str:
    root = typer.main.get_command(app)
    lines = ["# CLI reference", "", "Generated from the Typer app (`tagcli.cli.app`) when the docs are built.", ""]
    for path, command in commands(root, ["tagcli"]):
        if path != ["tagcli"]:
            lines += section(path, command)
    return "\n".join(lines)


with mkdocs_gen_files.open("cli.md", "w") as out:
    out.write(page())
