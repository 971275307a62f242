"""Evaluate a function on a labeled file: score it, then compare with its label columns.

The metrics are the head's own (`Head.target_metrics`), the same code training validates with.
Rows the model could not score are counted, not silently dropped from the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from tagcli.core.heads import Head
from tagcli.errors import UsageError
from tagcli.io.runner import ScoreSummary, scored_batches
from tagcli.io.tables import open_table
from tagcli.scorer import STATUS_OK, TagScorer


@dataclass
class LabeledScores:
    """A function's predictions on the rows it scored, with their parsed labels (what plots draw)."""

    head: Head
    targets: list[str]  # label columns, one per head label
    labels: list[Any]
    predicted: dict[str, list]  # output column -> values, row for row with `labels`
    summary: ScoreSummary  # all rows: ok / invalid / error counts

    def report(self) -> dict[str, Any]:
        per_target = dict(zip(self.targets, self.head.target_metrics(self.labels, self.predicted)))
        counts = {"rows": self.summary.rows, "scored": len(self.labels)}
        return {**counts, "invalid": self.summary.invalid, "error": self.summary.error, **per_target}


def score_labeled(scorer: TagScorer, source: str | Path, targets: list[str], window_rows: int = 4096) -> LabeledScores:
    """Score a labeled file with the scorer's one function and keep predictions and labels of the ok rows."""
    if len(scorer.plans) != 1:
        raise UsageError("evaluate one function at a time")
    function = scorer.plans[0].function
    head = function.head
    if len(targets) != head.n_labels:
        outputs = ", ".join(head.output_columns())
        raise UsageError(
            f"function '{function.name}' ({head.type_name}: {outputs}) "
            f"takes {head.n_labels} --target column(s), got {len(targets)}"
        )
    scores = LabeledScores(head, targets, [], {c: [] for c in head.output_columns()}, ScoreSummary(output=str(source)))
    with open_table(source, batch_rows=window_rows) as reader:
        missing = [t for t in targets if t not in reader.schema.names]
        if missing:
            raise UsageError(f"no target column(s) {', '.join(missing)} in {source}")
        for scored in scored_batches(scorer, reader, scores.summary):
            ok = scored.filter(pc.equal(scored.column("status"), STATUS_OK))
            scores.labels += head.parse_labels([ok.column(t).to_pylist() for t in targets])
            for column, values in scores.predicted.items():
                values += ok.column(column).to_pylist()
    return scores


def evaluate_file(scorer: TagScorer, source: str | Path, targets: list[str], window_rows: int = 4096) -> dict[str, Any]:
    """Metrics of the scorer's function on a labeled file: row counts, then per label column."""
    return score_labeled(scorer, source, targets, window_rows).report()


def pack_metrics(report: dict[str, Any], targets: list[str], head: Head) -> dict[str, Any]:
    """An `evaluate_file` report in the shape training records in a manifest (`Manifest.metrics[split]`):
    the row counts plus the head's summary of its per-target metrics."""
    counts = {k: report[k] for k in ("rows", "scored", "invalid", "error")}
    return {**counts, **head.summarize({t: report[t] for t in targets})}
