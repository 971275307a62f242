"""One output sink for every command: Rich tables for people, JSON for programs.

Results go to stdout; progress, warnings and errors go to stderr, so
`tagcli ... --format json | jq` always sees clean JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import Enum
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


class OutputFormat(str, Enum):
    human = "human"
    json = "json"


class Output:
    def __init__(self, fmt: OutputFormat = OutputFormat.human) -> None:
        self.format = fmt
        self.out = Console(soft_wrap=True)
        self.err = Console(stderr=True, soft_wrap=True)

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
        """Print records as a table (human) or as a JSON list (json)."""
        if self.format is OutputFormat.json:
            self.json(list(rows))
            return
        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(_cell(row.get(column)) for column in columns))
        self.out.print(table)

    def record(self, record: dict[str, Any], line: str) -> None:
        """A single result: `line` for people, the record as JSON for programs."""
        if self.format is OutputFormat.json:
            self.json(record)
        else:
            self.out.print(Text(line))

    def json(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def warn(self, message: str) -> None:
        self.err.print(Text.assemble(("warning: ", "yellow"), message))

    def error(self, message: str) -> None:
        # Text, not markup: messages quote user data that may contain [brackets].
        self.err.print(Text.assemble(("error: ", "bold red"), message))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)
