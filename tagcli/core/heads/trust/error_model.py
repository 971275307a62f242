"""The out-of-bag error model: where an ensemble's errors are large, learned on the training rows
each member did not see."""

from __future__ import annotations

import torch

from tagcli.core.heads.trust.applicability import log_score
from tagcli.core.heads.trust.base import TrustComponent, too_large

# The error model's log-level is kept within ±this (e^5 ≈ 150 times a typical row's error): a row far
# outside the training features must not turn into an infinite or zero std.
MAX_ERROR_LEVEL = 5.0
# Ridge penalty of the error model, relative to the number of rows (its signals are standardised).
ERROR_RIDGE = 1e-3
# Signals per target besides the applicability coordinates: the prediction, its square, the log domain score.
OWN_SIGNALS = 3


class ErrorModel(TrustComponent):
    """Estimates each row's expected log |error| per target, its `level`: a ridge fit of log |error|
    on the standardised prediction, its square, the log domain score and the coordinates on the
    applicability axes, fitted on out-of-bag rows (each predicted by the members whose bootstrap
    sample missed it). Unfitted (zero weights, as in packs from before it) the level is 0."""

    SAVED_NAMES = {"weights": "error_weights", "bias": "error_bias"}

    def __init__(self, targets: int, coordinates: int) -> None:
        super().__init__()
        self.register_buffer("weights", torch.zeros(targets, OWN_SIGNALS + coordinates))
        self.register_buffer("bias", torch.zeros(targets))

    @torch.no_grad()
    def fit(
        self, prediction: torch.Tensor, residual: torch.Tensor, score: torch.Tensor | None, coordinates: torch.Tensor
    ) -> None:
        """Ridge fit per target on out-of-bag rows: their predictions [n, targets], residuals
        (prediction - target), domain scores [n] (None without a summary) and coordinates [n, k]."""
        signals = _signals(prediction, score, coordinates).double()
        error = residual.abs().clamp(min=1e-12).log().double()
        for j in range(error.shape[1]):
            s, target = signals[:, j], error[:, j]
            mean, scale = s.mean(0), s.std(0).clamp(min=1e-9)
            z = (s - mean) / scale
            gram = z.T @ z + ERROR_RIDGE * len(z) * torch.eye(z.shape[1], dtype=z.dtype)
            weights = torch.linalg.solve(gram, z.T @ (target - target.mean())) / scale
            self.weights[j] = weights.float()
            self.bias[j] = float(target.mean() - mean @ weights)

    def apply(self, prediction: torch.Tensor, score: torch.Tensor | None, coordinates: torch.Tensor) -> torch.Tensor:
        """The expected log |error| [n, targets], within ±MAX_ERROR_LEVEL."""
        level = (_signals(prediction, score, coordinates) * self.weights).sum(2) + self.bias
        return level.clamp(-MAX_ERROR_LEVEL, MAX_ERROR_LEVEL)

    @torch.no_grad()
    def check(self) -> str | None:
        return too_large({self.SAVED_NAMES["weights"]: self.weights, self.SAVED_NAMES["bias"]: self.bias})


def out_of_bag(samples: list[torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of n rows some member's bootstrap sample (row indices) missed [n] and, for those rows,
    each member's weight in their out-of-bag mean [members, rows, 1] (1 where it missed the row)."""
    missed = torch.ones(len(samples), n, dtype=torch.bool)
    for k, rows in enumerate(samples):
        missed[k, rows] = False
    rows = missed.any(0)
    return rows, missed[:, rows, None].float()


def _signals(prediction: torch.Tensor, score: torch.Tensor | None, coordinates: torch.Tensor) -> torch.Tensor:
    """[n, targets, signals]: the standardised prediction, its square, the log domain score and the
    coordinates on the applicability axes (the last two shared by all targets)."""
    n, targets = prediction.shape
    shared = torch.cat([log_score(score, prediction)[:, None], coordinates], 1)
    own = torch.stack([prediction, prediction.pow(2)], 2)
    return torch.cat([own, shared[:, None].expand(n, targets, -1)], 2)
