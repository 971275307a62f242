"""Read a scored file once, in windows, into what its report shows: exact counts, a bounded sample.

Memory is bounded whatever the file's size: counts and per-column summaries are exact and streamed;
plots draw from a uniform sample of at most `sample_rows` rows (each row kept with equal chance: the
rows with the smallest seeded random keys), and the report says when they do; the listed flagged rows
are the first few in file order, with the total counted.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tagcli.errors import UsageError
from tagcli.io.tables import DEFAULT_WINDOW_ROWS, open_table
from tagcli.packs.format import TagPack
from tagcli.packs.reference import PERCENTILE_SUFFIX
from tagcli.scoring.scorer import STATUS_OK

SAMPLE_ROWS = 20_000
FLAGGED_SHOWN = 25
REASONS_KEPT = 1000  # distinct invalid/error reasons counted one by one; the rest as "other reasons"
STATUS, ERROR, ROW = "status", "error", "row"
DOMAIN_SCORE, IN_DOMAIN = "domain_score", "in_domain"
OUT_OF_RANGE = "_out_of_range"


@dataclass
class NumberSummary:
    """Exact count, mean, min and max of a numeric column, accumulated window by window."""

    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, values: pa.ChunkedArray) -> None:
        finite = pc.drop_null(values.cast(pa.float64()))
        finite = finite.filter(pc.is_finite(finite))
        if len(finite):
            self.count += len(finite)
            self.total += pc.sum(finite).as_py()
            self.low = min(self.low, pc.min(finite).as_py())
            self.high = max(self.high, pc.max(finite).as_py())

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan


class Sample:
    """A uniform sample of at most `size` rows of a stream (bottom-k of seeded random keys), in row order."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.frame = pd.DataFrame()
        self.keys = np.empty(0)

    def add(self, frame: pd.DataFrame) -> None:
        keys = np.concatenate([self.keys, self.rng.random(len(frame))])
        frame = pd.concat([self.frame, frame], ignore_index=True) if len(self.frame) else frame.reset_index(drop=True)
        if len(frame) > self.size:
            kept = np.sort(np.argpartition(keys, self.size)[: self.size])
            frame, keys = frame.iloc[kept].reset_index(drop=True), keys[kept]
        self.frame, self.keys = frame, keys


@dataclass
class ScoredFile:
    """What a report shows of one scored file."""

    path: str
    packs: list[TagPack]
    columns: list[str]
    targets: dict[str, list[str]]  # function → its label columns present in the file (a labelled file)
    rows: int = 0
    status: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)  # invalid/error reason → rows
    reason_rows: dict[str, int] = field(default_factory=dict)  # reason → its first row (1-based)
    numbers: dict[str, NumberSummary] = field(default_factory=dict)
    flag_counts: Counter = field(default_factory=Counter)  # flag column → ok rows it flags
    flagged: int = 0  # ok rows with any flag
    flagged_rows: pd.DataFrame = field(default_factory=pd.DataFrame)  # the first FLAGGED_SHOWN of them
    sample: Sample = field(default_factory=lambda: Sample(SAMPLE_ROWS))

    @property
    def sampled(self) -> bool:
        return self.rows > len(self.sample.frame)

    def numeric_columns(self) -> list[str]:
        return list(self.numbers)

    def flag_columns(self) -> list[str]:
        domain = [IN_DOMAIN] if IN_DOMAIN in self.columns else []
        return [c for c in self.columns if c.endswith(OUT_OF_RANGE)] + domain


def output_types(packs: list[TagPack]) -> dict[str, pa.DataType]:
    """Every column the packs write, with its type; the percentile columns of their references too."""
    types = {c: kind for pack in packs for c, kind in pack.head.output_types().items()}
    ranked = [c + PERCENTILE_SUFFIX for pack in packs if pack.reference for c in pack.reference.columns]
    return types | dict.fromkeys(ranked, pa.float64())


def typed(table: pa.Table, types: dict[str, pa.DataType], source: str) -> pa.Table:
    """`table` with the packs' output columns in their own types (a CSV holds text; a blank cell is null)."""
    for k, name in enumerate(table.column_names):
        kind = types.get(name)
        if kind is None or table.schema.field(k).type == kind:
            continue
        column = table.column(k)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)
        try:
            table = table.set_column(k, name, column.cast(kind))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise UsageError(
                f"{source}: column {name} does not hold {kind} values as tagcli predict writes them",
                hint="report on the file tagcli predict wrote, unchanged",
            ) from None
    return table


def check_scored(columns: list[str], source: str) -> None:
    if STATUS not in columns or ERROR not in columns:
        raise UsageError(
            f"{source} is not a scored file: it has no status and error columns",
            hint="score it first: tagcli predict --function NAME FILE",
        )


def read_scored(
    path: str | Path,
    packs: list[TagPack],
    targets: dict[str, list[str]],
    window_rows: int = DEFAULT_WINDOW_ROWS,
    sample_rows: int = SAMPLE_ROWS,
) -> ScoredFile:
    """Stream `path` (a `tagcli predict` output of `packs`) into a ScoredFile."""
    with open_table(path, batch_rows=window_rows) as reader:
        names = reader.schema.names
        check_scored(names, str(path))
        types = output_types(packs)
        kept = [c for c in dict.fromkeys([*types, *sum(targets.values(), [])]) if c in names]
        scored = ScoredFile(str(path), packs, names, targets, sample=Sample(sample_rows))
        for batch in reader:
            _add_window(scored, typed(pa.Table.from_batches([batch]), types, str(path)), kept)
    return scored


def _add_window(scored: ScoredFile, table: pa.Table, kept: list[str]) -> None:
    first = scored.rows
    scored.rows += table.num_rows
    status = table.column(STATUS).cast(pa.string())
    states = status.to_pylist()
    scored.status.update(states)
    _count_reasons(scored, states, table.column(ERROR).cast(pa.string()).to_pylist(), first)
    ok = pc.equal(status, STATUS_OK)
    for column in kept:
        kind = table.schema.field(column).type
        if pa.types.is_floating(kind) or pa.types.is_integer(kind):
            scored.numbers.setdefault(column, NumberSummary()).add(table.column(column).filter(ok))
    rows = pa.array(range(first + 1, first + 1 + table.num_rows), pa.int64())
    frame = table.select(kept + [STATUS]).append_column(ROW, rows).to_pandas()
    scored.sample.add(frame)
    _add_flags(scored, table, ok, rows)


def _count_reasons(scored: ScoredFile, status: list, errors: list, first: int) -> None:
    for k, (state, reason) in enumerate(zip(status, errors)):
        if state == STATUS_OK:
            continue
        reason = f"{state}: {reason or '(no reason given)'}"
        if reason not in scored.reasons and len(scored.reasons) >= REASONS_KEPT:
            reason = f"{state}: other reasons"
        scored.reasons[reason] += 1
        scored.reason_rows.setdefault(reason, first + k + 1)


def _add_flags(scored: ScoredFile, table: pa.Table, ok: pa.ChunkedArray, rows: pa.Array) -> None:
    """Count the ok rows each flag marks (out of range, or outside the training domain) and keep the first few."""
    flags = {c: pc.fill_null(table.column(c), False) for c in scored.flag_columns() if c.endswith(OUT_OF_RANGE)}
    if IN_DOMAIN in scored.columns:
        flags[IN_DOMAIN] = pc.invert(pc.fill_null(table.column(IN_DOMAIN), True))
    if not flags:
        return
    flagged = None
    for column, marked in flags.items():
        marked = pc.and_(marked, ok)
        scored.flag_counts[column] += pc.sum(marked.cast(pa.int64())).as_py() or 0
        flagged = marked if flagged is None else pc.or_(flagged, marked)
    scored.flagged += pc.sum(flagged.cast(pa.int64())).as_py() or 0
    room = FLAGGED_SHOWN - len(scored.flagged_rows)
    if room > 0:
        chosen = table.append_column(ROW, rows).filter(flagged).slice(0, room).to_pandas()
        scored.flagged_rows = pd.concat([scored.flagged_rows, chosen], ignore_index=True)
