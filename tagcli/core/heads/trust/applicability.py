"""The applicability domain: how unlike the training rows a row's features are.

The summary is a few principal directions of the standardised training features and the typical
size of what they leave out, so a row unlike the training rows is flagged without storing any
training row: it either lies far along the principal directions (Hotelling's T²) or far off them
(the residual, Q), each measured in units of a typical training row.
"""

from __future__ import annotations

import math

import pyarrow as pa
import torch

from tagcli.core.heads.trust.base import TrustComponent

# The share of validation rows inside the applicability domain (the threshold's percentile).
IN_DOMAIN_QUANTILE = 0.95
# The lowest domain score the uncertainty reads (its log stays finite for a row at the training mean).
SCORE_FLOOR = 1e-3


class ApplicabilityDomain(TrustComponent):
    """Estimates `domain_score` (≈1 for a typical training row, larger for rows unlike them) and
    `in_domain` (score within the threshold that IN_DOMAIN_QUANTILE of the validation rows meet).
    With no components the head keeps no summary and has neither column."""

    SAVED_NAMES = {
        "axes": "domain_axes",
        "scale": "domain_scale",
        "threshold": "domain_threshold",
        "residual": "domain_residual",
    }

    def __init__(self, components: int, width: int) -> None:
        super().__init__()
        self.register_buffer("axes", torch.zeros(components, width))
        self.register_buffer("scale", torch.ones(components))
        self.register_buffer("threshold", torch.zeros(()))
        # Mean squared residual of a training row off the principal axes (0: T² alone, older packs).
        self.register_buffer("residual", torch.zeros(()))

    @property
    def components(self) -> int:
        return self.axes.shape[0]

    @property
    def enabled(self) -> bool:
        """Whether the head keeps a summary (and so scores rows)."""
        return self.components > 0

    @torch.no_grad()
    def fit(self, train: torch.Tensor, validation: torch.Tensor) -> None:
        """Principal axes of the standardised training features; threshold at a validation quantile."""
        k = self.components
        if not k:
            return
        _, s, v = torch.linalg.svd(train - train.mean(0), full_matrices=False)
        k = min(k, v.shape[0])
        self.axes[:k] = v[:k]
        self.scale[:k] = (s[:k] / math.sqrt(max(len(train) - 1, 1))).clamp(min=1e-6)
        self.scale[k:] = 1.0
        self.residual.fill_(float(self._distances(train)[1].mean().clamp(min=1e-6)))
        self.threshold.fill_(float(torch.quantile(self.score(validation), IN_DOMAIN_QUANTILE)))

    def output_types(self) -> dict[str, pa.DataType]:
        return {"domain_score": pa.float64(), "in_domain": pa.bool_()} if self.enabled else {}

    def apply(self, standardised: torch.Tensor) -> dict[str, torch.Tensor | list]:
        """`domain_score` and `in_domain` of standardised rows (no columns without a summary)."""
        score = self.score(standardised)
        if score is None:
            return {}
        return {"domain_score": score, "in_domain": (score <= self.threshold).tolist()}

    def score(self, standardised: torch.Tensor) -> torch.Tensor | None:
        """RMS of the row's coordinates on the training features' principal axes, in training stds,
        averaged with its squared residual off those axes relative to a training row's (≈1 typical);
        None without a summary."""
        if not self.enabled:
            return None
        along, off = self._distances(standardised)
        if not float(self.residual) > 0:
            return along.sqrt()
        return ((along + off / self.residual) / 2).sqrt()

    def coordinates(self, standardised: torch.Tensor) -> torch.Tensor:
        """Coordinates [n, components] on the principal axes, in training standard deviations."""
        return standardised @ self.axes.T / self.scale

    def _distances(self, standardised: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean squared coordinate in training stds, squared residual off the axes) per row."""
        coordinates = self.coordinates(standardised)
        on_axes = (coordinates * self.scale).pow(2).sum(1)
        return coordinates.pow(2).mean(1), (standardised.pow(2).sum(1) - on_axes).clamp(min=0)

    @torch.no_grad()
    def check(self) -> str | None:
        if not bool((self.scale > 0).all()):
            return "domain_scale must be positive"
        if not float(self.residual) >= 0:
            return "domain_residual must not be negative"
        return None


def log_score(score: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The log domain score [n] the uncertainty reads (floored at SCORE_FLOOR); zeros, shaped and
    typed after `like`'s rows, without a summary."""
    return score.clamp(min=SCORE_FLOOR).log() if score is not None else like.new_zeros(len(like))
