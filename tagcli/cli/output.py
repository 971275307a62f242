"""One output sink for every command: Rich tables for people, JSON for programs.

Results go to stdout; progress, warnings and errors go to stderr, so
`tagcli ... --format json | jq` always sees clean JSON. A table that would not fit the terminal
without squeezing its cells can fall back to stacked blocks (`Block`: one per record), and Markdown
(a pack's model card) is rendered to the terminal's width.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from rich.console import Console, RenderableType
from rich.markdown import Markdown
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

UNBOUNDED = 100_000  # the width a table is measured at to learn how wide it wants to be


@dataclass
class Block:
    """One record shown stacked: a bold heading (e.g. "qed 0.1.0"), a plain note after it, then indented
    `key: value` lines, values wrapped under themselves (never cut). Fields with empty values are left out."""

    heading: str
    note: str = ""
    fields: list[tuple[str, str]] = field(default_factory=list)


class OutputFormat(str, Enum):
    human = "human"
    json = "json"


class Output:
    def __init__(self, fmt: OutputFormat = OutputFormat.human) -> None:
        self.format = fmt
        self.out = Console(soft_wrap=True)
        self.err = Console(stderr=True, soft_wrap=True)

    def table(
        self,
        rows: Sequence[dict[str, Any]],
        columns: Sequence[str],
        title: str | None = None,
        *,
        blocks: Sequence[Block] | None = None,
    ) -> None:
        """Print records as a table (human) or as a JSON list (json).

        With `blocks` (the same records, stacked), people get the table only where it fits the terminal
        with no cell wrapped (list values one per line), and the blocks otherwise.
        """
        if self.format is OutputFormat.json:
            self.json(list(rows))
            return
        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        separator = ", " if blocks is None else "\n"
        for row in rows:
            table.add_row(*(_cell(row.get(column), separator) for column in columns))
        if blocks is None or self.fits(table):
            self.out.print(table)
        else:
            self.blocks(blocks, title)

    def fits(self, renderable: RenderableType) -> bool:
        """Whether `renderable` fits the terminal's width at its natural width (nothing wrapped or cut)."""
        options = self.out.options.update_width(UNBOUNDED)
        return Measurement.get(self.out, options, renderable).maximum <= self.out.width

    def blocks(self, blocks: Sequence[Block], title: str | None = None) -> None:
        """Print records stacked, one `Block` each, separated by blank lines."""
        if title:
            self.out.print(Text(title, style="italic"), soft_wrap=False)
        for i, block in enumerate(blocks):
            if i or title:
                self.out.print()
            heading = Text.assemble((block.heading, "bold"), ("  " + block.note) if block.note else "")
            self.out.print(heading, soft_wrap=False, overflow="fold")
            grid = Table.grid(padding=(0, 1))
            grid.add_column(no_wrap=True)
            grid.add_column(overflow="fold")
            for key, value in block.fields:
                if value:
                    grid.add_row(f"{key}:", value)
            if grid.row_count:
                self.out.print(Padding(grid, (0, 0, 0, 2), expand=False))

    def markdown(self, text: str) -> None:
        """Render Markdown for people (a model card), wrapped to the terminal; JSON has no Markdown."""
        self.out.print(Markdown(text), soft_wrap=False)

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


def _cell(value: Any, separator: str = ", ") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return separator.join(_cell(v) for v in value)
    if isinstance(value, dict):
        return separator.join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)
