"""Evaluation metrics, computed the same way for tag packs and every baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    # ptp, not std: the std of a constant vector can come out as 1e-17 from rounding, giving r = ±1e-17.
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy())


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    error = y_pred - y_true
    return {
        "n": int(len(y_true)),
        "mse": float(np.mean(error**2)),
        "mae": float(np.mean(np.abs(error))),
        "pearson": pearson(y_true, y_pred),
        "spearman": spearman(y_true, y_pred),
    }


def summarize_targets(per_target: dict[str, dict[str, float]], target_std: np.ndarray, n: int) -> dict:
    """A regression head's metrics over its targets, as packs record them: one target's own metrics,
    or for several the mean of each metric plus every target's own (`targets`); both with the
    standardised MSE (each target's MSE over its training variance, averaged), which selects models."""
    standardized_mse = float(np.mean([m["mse"] / s**2 for m, s in zip(per_target.values(), target_std)]))
    if len(per_target) == 1:
        return {**next(iter(per_target.values())), "standardized_mse": standardized_mse}
    means = {m: float(np.mean([v[m] for v in per_target.values()])) for m in ("mse", "mae", "pearson", "spearman")}
    return {"n": n, **means, "standardized_mse": standardized_mse, "targets": per_target}


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Binary ROC-AUC by the rank-sum (Mann–Whitney) identity; ties count half."""
    y_true = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(score, float)).rank().to_numpy()
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, and ROC-AUC (one-vs-rest macro average when there are more than two classes)."""
    y_true = np.asarray(y_true, int)
    probabilities = np.asarray(probabilities, float)
    n_classes = probabilities.shape[1]
    aucs = [roc_auc(y_true == k, probabilities[:, k]) for k in (range(1, 2) if n_classes == 2 else range(n_classes))]
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(probabilities.argmax(1) == y_true)),
        "roc_auc": float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan"),
    }


def pr_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision: the sum over distinct score
    thresholds (highest first) of precision × the recall gained there; tied scores form one step."""
    y_true = np.asarray(y_true).astype(bool)
    n_pos = int(y_true.sum())
    if n_pos == 0 or n_pos == len(y_true):
        return float("nan")
    score = np.asarray(score, float)
    order = np.argsort(-score, kind="stable")
    hits, ranked = np.cumsum(y_true[order]), score[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # last row of each tie group
    precision, recall = hits[last] / (last + 1), hits[last] / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The mean over the classes present in `y_true` of the fraction of their rows predicted right."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return float("nan")
    return float(np.mean([np.mean(y_pred[y_true == k] == k) for k in np.unique(y_true)]))


def brier(y_true: np.ndarray, probability: np.ndarray) -> float:
    """Mean squared difference between the predicted probability of the positive class and the 0/1 truth."""
    y_true, probability = np.asarray(y_true, float), np.asarray(probability, float)
    return float(np.mean((probability - y_true) ** 2)) if len(y_true) else float("nan")
