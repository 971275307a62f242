"""Limits on what a pack (or a registry's index) may make tagcli read, allocate or parse, and the
checks that hold untrusted bytes and JSON to them. Real packs are far below every limit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tagcli.errors import PackError, first_line
from tagcli.packs.folder import HEADS_FILE, MANIFEST, TAGS_FILE

MIB = 1 << 20
MAX_MANIFEST_BYTES = MIB  # metadata only: a few KB
MAX_TENSOR_FILE_BYTES = 256 * MIB  # tags.safetensors, heads.safetensors (a tag is tag_length x hidden floats)
MAX_TENSOR_HEADER_BYTES = MIB  # the JSON header of a safetensors file: names, dtypes, shapes of a few tensors
MAX_FILE_BYTES = {MANIFEST: MAX_MANIFEST_BYTES, TAGS_FILE: MAX_TENSOR_FILE_BYTES, HEADS_FILE: MAX_TENSOR_FILE_BYTES}
MAX_ARCHIVE_BYTES = sum(MAX_FILE_BYTES.values()) + MIB  # the three files, tar headers and padding
MAX_JSON_DEPTH = 32  # of a manifest or index (a head spec nests 4 levels)


def is_int(value: Any, low: int | None = None, high: int | None = None) -> bool:
    """An integer (JSON true/false are not) within [low, high]."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def parse_json(raw: bytes, where: str, name: str) -> Any:
    """JSON from bytes; invalid UTF-8 or JSON, or nesting deeper than MAX_JSON_DEPTH, is one PackError line."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:  # the parser's own limit, for "[[[[…" far deeper than ours
        data, too_deep = None, True
    except ValueError as exc:  # also UnicodeDecodeError, and integers too long to convert
        reason = first_line(exc).split(";")[0]
        raise PackError(f"{where}: {name} is not valid JSON ({reason})") from None
    else:
        too_deep = json_depth(data) > MAX_JSON_DEPTH
    if too_deep:
        raise PackError(f"{where}: {name} nests deeper than {MAX_JSON_DEPTH} levels; refusing it")
    return data


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in parsed JSON (without recursion; stops once past MAX_JSON_DEPTH)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                break
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def too_big(where: str, name: str, size: int) -> str:
    cap = MAX_FILE_BYTES.get(name, MAX_TENSOR_FILE_BYTES)
    return f"{where}: {name} is {size:,} bytes, more than the {cap // MIB} MiB it may be; refusing to read it"


def check_file_size(file: Path, where: str) -> int:
    """The size of a pack file, refused (one PackError line) when over its MAX_FILE_BYTES limit."""
    size = file.stat().st_size
    if size > MAX_FILE_BYTES.get(file.name, MAX_TENSOR_FILE_BYTES):
        raise PackError(too_big(where, file.name, size))
    return size
