"""Evaluate a function on a labeled file: score it, then compare with its label columns.

The metrics are the head's own (`Head.target_metrics`), the same code training validates with.
Rows the model could not score are counted, not silently dropped from the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from tagcli.core.heads import Head
from tagcli.errors import UsageError
from tagcli.io.tables import DEFAULT_WINDOW_ROWS, open_table
from tagcli.scoring.runner import ScoreSummary, scored_batches
from tagcli.scoring.scorer import STATUS_OK, TagScorer


@dataclass
class LabeledScores:
    """A function's predictions on the rows it scored, with their parsed labels (what plots draw)."""

    head: Head
    targets: list[str]  # label columns, one per head label
    labels: list[Any]
    predicted: dict[str, list]  # output column -> values, row for row with `labels`
    summary: ScoreSummary  # all rows: ok / invalid / error counts
    unusable_cells: list[Any] = field(default_factory=list)  # a few label cells that gave no label
    group_col: str | None = None  # `--group-col`: metrics also per value of this column
    groups: list[Any] = field(default_factory=list)  # its value, row for row with `labels`

    @property
    def unlabeled(self) -> int:
        """Scored rows whose label cells give no label (blank, or a value the head cannot use)."""
        return sum(label is None for label in self.labels)

    def report(self) -> dict[str, Any]:
        """Row counts and the metrics per label column; with a group column also `groups`: the same
        metrics per value of it ("cliff_mol=1": {...}), computed on that group's rows alone."""
        counts = {"rows": self.summary.rows, "scored": len(self.labels), "unlabeled": self.unlabeled}
        report = {**counts, "invalid": self.summary.invalid, "error": self.summary.error, **self._metrics()}
        if self.group_col is not None:
            values = sorted({str(v) for v in self.groups})
            report["groups"] = {
                f"{self.group_col}={v}": self._metrics([str(g) == v for g in self.groups]) for v in values
            }
        return report

    def _metrics(self, rows: list[bool] | None = None) -> dict[str, Any]:
        """The head's metrics per label column, over all rows or those marked in `rows`."""
        labels = self.labels if rows is None else [x for x, keep in zip(self.labels, rows) if keep]
        predicted = {
            c: v if rows is None else [x for x, keep in zip(v, rows) if keep] for c, v in self.predicted.items()
        }
        return dict(zip(self.targets, self.head.target_metrics(labels, predicted)))

    def check_labels(self, source: str | Path) -> str | None:
        """Refuse a file none of whose scored rows has a usable label; a warning line when some lack one."""
        if not self.labels or not self.unlabeled:
            return None
        seen = ", ".join(sorted({str(v) for v in self.unusable_cells})[:5])
        found = f" (found: {seen})" if seen else ""
        columns = ", ".join(self.targets)
        if self.unlabeled == len(self.labels):
            raise UsageError(
                f"none of the {len(self.labels)} scored rows of {source} has a usable label in {columns}{found}",
                hint=self.head.expected_labels(),
            )
        share = f"{self.unlabeled} of {len(self.labels)} scored rows"
        return f"{share} have no usable label in {columns}{found}: they are left out of the metrics"


def score_labeled(
    scorer: TagScorer,
    source: str | Path,
    targets: list[str],
    window_rows: int = DEFAULT_WINDOW_ROWS,
    group_col: str | None = None,
) -> LabeledScores:
    """Score a labeled file with the scorer's one function and keep predictions and labels of the ok
    rows (and their `group_col` values)."""
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
    predicted: dict[str, list] = {c: [] for c in head.output_columns()}
    scores = LabeledScores(head, targets, [], predicted, ScoreSummary(output=str(source)), group_col=group_col)
    with open_table(source, batch_rows=window_rows) as reader:
        missing = [t for t in targets if t not in reader.schema.names]
        if missing:
            raise UsageError(f"no target column(s) {', '.join(missing)} in {source}")
        if group_col and group_col not in reader.schema.names:
            raise UsageError(
                f"no --group-col column '{group_col}' in {source} (columns: {', '.join(reader.schema.names)})"
            )
        for scored in scored_batches(scorer, reader, scores.summary):
            ok = scored.filter(pc.equal(scored.column("status"), STATUS_OK))
            cells = [ok.column(t).to_pylist() for t in targets]
            labels = head.parse_labels(cells)
            scores.labels += labels
            if len(scores.unusable_cells) < 100:  # examples for the message about unusable labels
                for i in (i for i, label in enumerate(labels) if label is None):
                    scores.unusable_cells += [column[i] for column in cells if column[i] is not None]
            for column, values in scores.predicted.items():
                values += ok.column(column).to_pylist()
            if group_col:
                scores.groups += ok.column(group_col).to_pylist()
    return scores


def evaluate_file(
    scorer: TagScorer, source: str | Path, targets: list[str], window_rows: int = DEFAULT_WINDOW_ROWS
) -> dict[str, Any]:
    """Metrics of the scorer's function on a labeled file: row counts, then per label column."""
    return score_labeled(scorer, source, targets, window_rows).report()


def pack_metrics(report: dict[str, Any], targets: list[str], head: Head) -> dict[str, Any]:
    """An `evaluate_file` report in the shape training records in a manifest (`Manifest.metrics[split]`):
    the row counts plus the head's summary of its per-target metrics."""
    counts = {k: report[k] for k in ("rows", "scored", "invalid", "error")}
    return {**counts, **head.summarize({t: report[t] for t in targets})}
