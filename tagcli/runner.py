"""Score a whole file: stream record batches through a TagScorer into an output table.

Memory stays bounded by `window_rows`: each window is read, sorted by length inside the
scorer, scored and written back in input order before the next one is read.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import pyarrow as pa

from tagcli.errors import UsageError
from tagcli.heads import ClassificationHead, TextHead
from tagcli.metrics import classification_metrics, regression_metrics
from tagcli.scorer import STATUS_ERROR, STATUS_INVALID, STATUS_OK, TagScorer
from tagcli.tables import TableReader, TableWriter, open_table


@dataclass
class ScoreSummary:
    rows: int = 0
    ok: int = 0
    invalid: int = 0
    error: int = 0
    seconds: float = 0.0
    output: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "rows_per_second": round(self.rows_per_second, 2)}

    def add(self, status: pa.Array) -> None:
        counts = {v["values"]: v["counts"] for v in status.value_counts().to_pylist()}
        self.rows += len(status)
        self.ok += counts.get(STATUS_OK, 0)
        self.invalid += counts.get(STATUS_INVALID, 0)
        self.error += counts.get(STATUS_ERROR, 0)


def _scored_batches(scorer: TagScorer, reader: TableReader, summary: ScoreSummary) -> Iterator[pa.Table]:
    """Each window of `reader`, scored, with its statuses counted into `summary`."""
    for batch in reader:
        scored = scorer.score(pa.Table.from_batches([batch]), row_offset=summary.rows)
        summary.add(scored.column("status").combine_chunks())
        yield scored


def score_file(
    scorer: TagScorer,
    source: str | Path,
    destination: str | Path,
    window_rows: int = 4096,
    on_start: Callable[[int | None], None] | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> ScoreSummary:
    """Score `source` (CSV/Parquet/'-') into `destination` (written atomically, '-' for stdout)."""
    summary = ScoreSummary(output=str(destination))
    started = time.perf_counter()
    with open_table(source, batch_rows=window_rows) as reader:
        if on_start:
            on_start(reader.total_rows)
        with TableWriter(destination) as writer:
            for scored in _scored_batches(scorer, reader, summary):
                writer.write(scored)
                if on_rows:
                    on_rows(scored.num_rows)
    summary.seconds = time.perf_counter() - started
    return summary


def evaluate_file(scorer: TagScorer, source: str | Path, targets: list[str], window_rows: int = 4096) -> dict[str, Any]:
    """Score a labeled file and compare with its label columns (one per head output, in order).

    Rows the model could not score are counted, not silently dropped from the report.
    """
    if len(scorer.plans) != 1:
        raise UsageError("evaluate one function at a time")
    head = scorer.plans[0].function.head
    outputs = [c for c in head.output_columns() if c not in head.label_columns]
    if isinstance(head, (ClassificationHead, TextHead)):
        outputs = [f"prob_{c}" for c in head.classes] if isinstance(head, ClassificationHead) else head.output_columns()
        if len(targets) != 1:
            raise UsageError(f"a {head.type_name} function takes one --target")
    elif len(targets) != len(outputs):
        raise UsageError(f"function '{scorer.plans[0].function.name}' predicts {len(outputs)} value(s) ({', '.join(outputs)}); pass as many --target columns")
    frames, summary = [], ScoreSummary(output=str(source))
    with open_table(source, batch_rows=window_rows) as reader:
        missing = [t for t in targets if t not in reader.schema.names]
        if missing:
            raise UsageError(f"no target column(s) {', '.join(missing)} in {source}")
        for scored in _scored_batches(scorer, reader, summary):
            frames.append(scored.select([*targets, *outputs, "status"]).to_pandas())
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*targets, *outputs, "status"])
    scored_ok = data[data["status"] == STATUS_OK]
    report: dict[str, Any] = {"rows": summary.rows, "scored": len(scored_ok), "invalid": summary.invalid, "error": summary.error}
    if isinstance(head, TextHead):
        answers = scored_ok[targets[0]].astype(str).str.strip()
        report[targets[0]] = {"n": len(answers), "exact_match": float((answers == scored_ok[outputs[0]].str.strip()).mean()) if len(answers) else float("nan")}
        return report
    if isinstance(head, ClassificationHead):
        index = {c: k for k, c in enumerate(head.classes)}
        labels = scored_ok[targets[0]].astype(str).map(index)
        known = labels.notna()
        report[targets[0]] = classification_metrics(labels[known].to_numpy(int), scored_ok.loc[known, outputs].to_numpy(float))
        return report
    for target, output in zip(targets, outputs):
        truth = pd.to_numeric(scored_ok[target], errors="coerce")
        labeled = truth.notna()
        report[target] = regression_metrics(truth[labeled].to_numpy(), scored_ok.loc[labeled, output].to_numpy(float))
    return report
