"""tagcli.core.metrics: PR-AUC, balanced accuracy and the Brier score by hand and against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, brier_score_loss

from tagcli.core.metrics import balanced_accuracy, brier, pr_auc, roc_auc


def test_pr_auc_by_hand() -> None:
    # Ranked: + - + -: precision 1 at recall 1/2, then 2/3 at recall 1 → 0.5·1 + 0.5·2/3.
    assert pr_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 + 1 / 3)
    assert pr_auc([1, 1, 0], [3, 2, 1]) == 1.0
    # One tie group holding everything: precision is the positive rate at recall 1.
    assert pr_auc([1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.25)
    assert math.isnan(pr_auc([0, 0], [0.1, 0.2])) and math.isnan(pr_auc([1, 1], [0.1, 0.2]))


def test_pr_auc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 50)
        score = np.round(rng.normal(size=50) + y, 1)  # rounding makes ties
        if 0 < y.sum() < len(y):
            assert pr_auc(y, score) == pytest.approx(average_precision_score(y, score))
            assert roc_auc(y, score) == pytest.approx(
                np.mean([(a > b) + 0.5 * (a == b) for a in score[y == 1] for b in score[y == 0]])
            )


def test_balanced_accuracy_and_brier() -> None:
    y, pred = np.array([1, 1, 1, 0]), np.array([1, 0, 1, 1])
    assert balanced_accuracy(y, pred) == pytest.approx((2 / 3 + 0) / 2)
    assert balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))
    p = np.array([0.9, 0.2, 0.6, 0.5])
    assert brier(y, p) == pytest.approx((0.01 + 0.64 + 0.16 + 0.25) / 4)
    assert brier(y, p) == pytest.approx(brier_score_loss(y, p))
    assert math.isnan(balanced_accuracy([], [])) and math.isnan(brier([], []))
