"""The HTML of a report: one self-contained page (inline CSS and SVG; no script, no link to fetch).

Plots are matplotlib figures written as SVG (fonts as paths, fixed ids and no date, so the same file gives
the same page); the evaluation pictures are `tagcli.plots`' own; pack cards are the Markdown model cards
rendered by markdown-it with raw HTML off (a manifest's text can never become markup).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from tagcli import __version__
from tagcli.packs.card import model_card
from tagcli.packs.reference import PERCENTILE_SUFFIX
from tagcli.plots import evaluation_figure, pyplot
from tagcli.report.collect import DOMAIN_SCORE, ROW, STATUS, ScoredFile
from tagcli.scoring.evaluation import LabeledScores
from tagcli.scoring.runner import ScoreSummary
from tagcli.scoring.scorer import STATUS_ERROR, STATUS_INVALID, STATUS_OK

BINS = 40
REASONS_SHOWN = 15
CELL_CHARACTERS = 60


def render(scored: ScoredFile) -> str:
    """The report page of a scored file."""
    from jinja2 import Environment, select_autoescape
    from markdown_it import MarkdownIt

    plt = pyplot()
    plt.rcParams.update({"svg.hashsalt": "tagcli-report", "svg.fonttype": "path", "font.size": 9})
    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
    environment = Environment(autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
    template = environment.from_string(resources.files("tagcli.report").joinpath("template.html").read_text())
    ok = scored.sample.frame[scored.sample.frame[STATUS] == STATUS_OK] if len(scored.sample.frame) else pd.DataFrame()
    return template.render(
        version=__version__,
        scored=scored,
        sample_rows=len(scored.sample.frame),
        status=[(s, scored.status.get(s, 0)) for s in (STATUS_OK, STATUS_INVALID, STATUS_ERROR)],
        reasons=[(r, n, scored.reason_rows[r]) for r, n in scored.reasons.most_common(REASONS_SHOWN)],
        hidden_reasons=max(0, len(scored.reasons) - REASONS_SHOWN),
        outputs=list(_outputs(plt, scored, ok)),
        trust=list(_trust(plt, scored, ok)),
        flagged=_flagged_table(scored),
        evaluations=list(_evaluations(plt, scored, ok)),
        cards=[(pack.name, markdown.render(model_card(pack.manifest.to_data()))) for pack in scored.packs],
    )


def _svg(plt: Any, figure: Any) -> str:
    """A figure as inline SVG markup (the XML prolog dropped), closed afterwards."""
    buffer = io.StringIO()
    try:
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    finally:
        plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _values(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame:
        return np.empty(0)
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _outputs(plt: Any, scored: ScoredFile, ok: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """Per ranked output (a prediction or class probability): its summary and its histogram, beside the
    pack's reference distribution where it has one."""
    for pack in scored.packs:
        for column in pack.head.ranked_columns():
            if column not in scored.numbers:
                continue
            values = _values(ok, column)
            reference = pack.reference.values.get(column) if pack.reference else None
            figure, axis = plt.subplots(figsize=(6.4, 3.2))
            edges = np.histogram_bin_edges(np.concatenate([values, reference or []]) if len(values) else [0, 1], BINS)
            axis.hist(values, bins=edges, density=True, alpha=0.6, label=f"this file ({len(values)} rows)")
            if reference is not None:
                assert pack.reference is not None
                label = f"reference: {pack.reference.name} ({pack.reference.rows} rows)"
                axis.hist(reference, bins=edges, density=True, histtype="step", linewidth=1.5, label=label)
            axis.set(xlabel=column, ylabel="density", title=f"{pack.name}: {column}")
            axis.legend(loc="best", fontsize=8)
            figure.tight_layout()
            summary = scored.numbers[column]
            yield {
                "column": column,
                "pack": pack.name,
                "summary": summary,
                "percentile": _median(ok, column + PERCENTILE_SUFFIX),
                "reference": pack.reference.name if reference is not None and pack.reference else None,
                "svg": _svg(plt, figure),
            }


def _median(frame: pd.DataFrame, column: str) -> float | None:
    values = _values(frame, column)
    return float(np.median(values)) if len(values) else None


def _trust(plt: Any, scored: ScoredFile, ok: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """The uncertainty (`*_std`) and applicability-domain (`domain_score`) views of the ok rows."""
    for column in [c for c in scored.numeric_columns() if c.endswith("_std")]:
        values = _values(ok, column)
        figure, axes = plt.subplots(1, 2 if DOMAIN_SCORE in ok else 1, figsize=(9, 3.2), squeeze=False)
        axes[0][0].hist(values, bins=BINS)
        axes[0][0].set(xlabel=column, ylabel="rows", title=f"{column}: the expected error of each prediction")
        if DOMAIN_SCORE in ok:
            rows = ok[[column, DOMAIN_SCORE]].apply(pd.to_numeric, errors="coerce").dropna()
            axes[0][1].scatter(rows[DOMAIN_SCORE], rows[column], s=6, alpha=0.4, linewidths=0)
            axes[0][1].set(xlabel=DOMAIN_SCORE, ylabel=column, title="uncertainty against domain score")
        figure.tight_layout()
        yield {"column": column, "summary": scored.numbers[column], "svg": _svg(plt, figure)}
    if DOMAIN_SCORE in scored.numbers:
        values = _values(ok, DOMAIN_SCORE)
        figure, axis = plt.subplots(figsize=(6.4, 3.2))
        axis.hist(values, bins=BINS)
        axis.set(xlabel=DOMAIN_SCORE, ylabel="rows", title="domain score (about 1 for a typical training row)")
        figure.tight_layout()
        yield {"column": DOMAIN_SCORE, "summary": scored.numbers[DOMAIN_SCORE], "svg": _svg(plt, figure)}


def _flagged_table(scored: ScoredFile) -> dict[str, Any]:
    """The first flagged rows: row number, input columns (cut short), predictions and flags."""
    frame = scored.flagged_rows
    if not len(frame):
        return {"columns": [], "rows": []}
    outputs = set(scored.numbers) | set(scored.flag_columns()) | {STATUS, "error", ROW}
    inputs = [c for c in scored.columns if c not in outputs and not c.startswith(("pred_", "prob_"))][:3]
    shown = [c for c in scored.numbers if not c.endswith(PERCENTILE_SUFFIX)] + scored.flag_columns()
    columns = [ROW, *inputs, *[c for c in shown if c in frame]]
    return {"columns": columns, "rows": [[_cell(row[c]) for c in columns] for _, row in frame.iterrows()]}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    text = "" if value is None else str(value)
    return text if len(text) <= CELL_CHARACTERS else text[: CELL_CHARACTERS - 1] + "…"


def _evaluations(plt: Any, scored: ScoredFile, ok: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """For a labelled file, per function with labels: the head's metrics and its evaluation picture, over
    the sampled ok rows (all of them when the file is within the sample size)."""
    for pack in scored.packs:
        targets = scored.targets.get(pack.name)
        if not targets or not len(ok):
            continue
        head = pack.head
        labels = head.parse_labels([ok[t].tolist() for t in targets])
        predicted = {c: ok[c].tolist() for c in head.output_columns() if c in ok}
        summary = ScoreSummary(rows=len(ok), ok=len(ok))
        scores = LabeledScores(head, targets, labels, predicted, summary)
        if not any(label is not None for label in labels):
            continue
        metrics = scores.report()
        per_target = {t: metrics[t] for t in targets}
        svg = _svg(plt, evaluation_figure(plt, scores, pack.name)) if head.plot_kind else None
        yield {"pack": pack.name, "targets": targets, "metrics": per_target, "labelled": len(labels), "svg": svg}
