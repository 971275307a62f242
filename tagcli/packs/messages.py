"""Message helpers: untrusted values quoted in one short line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def brief(value: Any, width: int = 40) -> str:
    """repr(value) cut to `width` characters: messages quote untrusted values in one short line."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an integer too long to print, or a structure too deep
        text = f"<{type(value).__name__}>"
    return text if len(text) <= width else text[: width - 1] + "…"


def brief_names(names: Iterable[Any], shown: int = 6) -> str:
    """A sorted list of names for a message: the first few, and how many there are in all."""
    items = sorted(str(n) for n in names)
    if len(items) <= shown:
        return "[" + ", ".join(brief(n) for n in items) + "]"
    return "[" + ", ".join(brief(n) for n in items[:shown]) + f", … ({len(items)} in all)]"
