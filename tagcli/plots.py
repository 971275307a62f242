"""Pictures of an evaluation: a parity plot with residuals (regression), ROC curves and a calibration
curve (classification).

The head kind says which picture fits it (`Head.plot_kind`); this module draws it with matplotlib,
an optional extra (`pip install 'tagcli[plot]'`), imported only when a plot is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tagcli.core.metrics import classification_metrics, regression_metrics
from tagcli.errors import TagcliError, UsageError
from tagcli.scoring.evaluation import LabeledScores


def write_plot(scores: LabeledScores, path: str | Path, title: str = "") -> Path:
    """Draw the picture that fits the head's kind into `path` (PNG, SVG or PDF, by its suffix)."""
    plt = pyplot()
    figure = evaluation_figure(plt, scores, title)
    path = Path(path)
    try:
        figure.savefig(path, dpi=120)
    except (OSError, ValueError) as exc:
        raise TagcliError(
            f"cannot write plot {path}: {exc}", hint="use a .png, .svg or .pdf path in a writable folder"
        ) from None
    finally:
        plt.close(figure)
    return path


def evaluation_figure(plt: Any, scores: LabeledScores, title: str = "") -> Any:
    """The matplotlib figure of the picture that fits the head's kind (the caller closes it)."""
    kind = scores.head.plot_kind
    if kind not in PLOTS:
        raise UsageError(f"a {scores.head.type_name} function has no plot")
    if not scores.labels:
        raise UsageError("no row was scored with a label: nothing to plot")
    figure = PLOTS[kind](plt, scores)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend; a one-line error where matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise TagcliError(
            "drawing plots needs matplotlib, which is not installed", hint="pip install 'tagcli[plot]'"
        ) from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def parity(plt: Any, scores: LabeledScores) -> Any:
    """Per target: predicted vs true with the y = x line (r, MAE and n in the title), and the residuals."""
    head = scores.head
    columns = head.value_columns()
    figure, axes = plt.subplots(len(columns), 2, figsize=(9, 4 * len(columns)), squeeze=False)
    truth = np.array([label if label is not None else [np.nan] * len(columns) for label in scores.labels], dtype=float)
    for k, (column, target) in enumerate(zip(columns, scores.targets)):
        predicted = np.asarray(scores.predicted[column], dtype=float)
        labeled = np.isfinite(truth[:, k])
        x, y = truth[labeled, k], predicted[labeled]
        m = regression_metrics(x, y)
        scatter, histogram = axes[k]
        scatter.scatter(x, y, s=6, alpha=0.4, linewidths=0)
        low, high = float(np.nanmin([x.min(), y.min()])), float(np.nanmax([x.max(), y.max()]))
        scatter.plot([low, high], [low, high], color="black", linewidth=0.8)
        scatter.set(
            xlabel=f"true {target}", ylabel=column, title=f"r = {m['pearson']:.3f}, MAE = {m['mae']:.3g}, n = {m['n']}"
        )
        histogram.hist(y - x, bins=50)
        histogram.set(xlabel=f"{column} − true {target}", ylabel="rows", title="residuals")
    return figure


def roc(plt: Any, scores: LabeledScores) -> Any:
    """ROC curve of each class against the rest (the positive class only, for two classes), and the
    calibration curve: the observed share of a class against its predicted probability, in bins."""
    head = scores.head
    classes = head.classes
    known = [i for i, label in enumerate(scores.labels) if label is not None]
    truth = np.array([scores.labels[i] for i in known], dtype=int)
    probabilities = np.array([[scores.predicted[f"prob_{c}"][i] for c in classes] for i in known], dtype=float)
    figure, (axis, calibration) = plt.subplots(1, 2, figsize=(10, 5))
    shown = [head.positive] if len(classes) == 2 else range(len(classes))
    for k in shown:
        fpr, tpr = _roc_curve(truth == k, probabilities[:, k])
        axis.plot(fpr, tpr, label=classes[k])
    axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    m = classification_metrics(truth, probabilities, head.positive)
    axis.set(
        xlabel="false positive rate", ylabel="true positive rate", title=f"ROC-AUC = {m['roc_auc']:.3f}, n = {m['n']}"
    )
    axis.legend(loc="lower right")
    for k in shown:
        predicted, observed, counts = _calibration(truth == k, probabilities[:, k])
        calibration.plot(predicted, observed, marker="o", label=f"{classes[k]} ({counts.sum()} rows)")
    calibration.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    calibration.set(
        xlabel="predicted probability",
        ylabel="observed share",
        title=f"calibration: Brier = {m['brier']:.3f}",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    calibration.legend(loc="upper left")
    return figure


def _calibration(positive: np.ndarray, probability: np.ndarray, bins: int = 10) -> tuple[np.ndarray, ...]:
    """Mean predicted probability and observed share of positives per non-empty bin of equal width."""
    which = np.minimum((probability * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    filled = counts > 0
    predicted = np.bincount(which, weights=probability, minlength=bins)[filled] / counts[filled]
    observed = np.bincount(which, weights=positive.astype(float), minlength=bins)[filled] / counts[filled]
    return predicted, observed, counts[filled]


def _roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-score, kind="stable")
    hits = positive[order]
    tpr = np.concatenate([[0.0], np.cumsum(hits) / max(hits.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(~hits) / max((~hits).sum(), 1)])
    return fpr, tpr


PLOTS: dict[str, Callable[[Any, LabeledScores], Any]] = {"parity": parity, "roc": roc}
