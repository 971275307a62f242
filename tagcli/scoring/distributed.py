"""Ray Data over a file's scoring windows: each actor scores whole windows of the file, so a cluster
writes what `tagcli predict` writes, bit for bit in bf16 too. (`ds.map_batches(TagScorer, ...)` over
`read_parquet` also works, but Ray decides which rows share a batch, and in bf16 that moves numbers.)

    import ray
    from tagcli.scoring.distributed import WindowScorer, window_dataset

    windows = window_dataset("/shared/big.parquet")          # one row per window: where to read it
    scored = windows.map_batches(
        WindowScorer,
        fn_constructor_kwargs={"function": "qed", "device": "cuda"},
        compute=ray.data.ActorPoolStrategy(size=8),
        num_gpus=1,
        batch_size=1,                                          # one window per call
        batch_format="pyarrow",
    )
    scored.write_parquet("/shared/scored/")

Every actor reads its windows from `path` itself, so the file must be on storage all nodes see.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from tagcli.io.tables import DEFAULT_WINDOW_ROWS, open_table
from tagcli.io.workunits import WorkUnit, plan_units
from tagcli.scoring.scorer import TagScorer

if TYPE_CHECKING:
    import ray.data


def window_dataset(path: str | Path, window_rows: int = DEFAULT_WINDOW_ROWS) -> ray.data.Dataset:
    """A Ray dataset with one row per window of `path` (rows [k*W, (k+1)*W), as `predict` cuts them)."""
    import ray.data

    plan = plan_units(path, window_rows, window_rows)  # units of one window each
    return ray.data.from_items([_describe(str(path), window_rows, unit) for unit in plan.units])


def _describe(path: str, window_rows: int, unit: WorkUnit) -> dict[str, Any]:
    byte_range = list(unit.byte_range) if unit.byte_range else None
    return {"path": path, "window_rows": window_rows, "index": unit.index, "first_row": unit.first_row,
            "num_rows": unit.num_rows, "byte_range": byte_range}  # fmt: skip


class WindowScorer:
    """A Ray Data callable class: reads each window a batch names and scores it as one window. Takes
    `TagScorer`'s arguments."""

    def __init__(self, **scorer_options: Any) -> None:
        self.scorer = TagScorer(**scorer_options)

    def __call__(self, windows: pa.Table) -> pa.Table:
        return pa.concat_tables([self._score(window) for window in windows.to_pylist()])

    def _score(self, window: dict[str, Any]) -> pa.Table:
        """The rows `window` names, scored window by window (a `.csv.gz` file is one unit of many windows)."""
        byte_range = tuple(window["byte_range"]) if window["byte_range"] else None
        unit = WorkUnit(window["index"], window["first_row"], window["num_rows"], byte_range)
        scored, first_row = [], window["first_row"]
        with open_table(window["path"], batch_rows=window["window_rows"], unit=unit) as reader:
            for batch in reader:
                scored.append(self.scorer.score(pa.Table.from_batches([batch]), row_offset=first_row))
                first_row += batch.num_rows
        return pa.concat_tables(scored)
