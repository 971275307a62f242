"""Recalibration (`--calibrate`): each target's prediction mapped to a + b·prediction, fitted on
the validation rows."""

from __future__ import annotations

import torch

from tagcli.core.heads.trust.base import TrustComponent, bounded, too_large

# The steepest recalibration slope (a steeper fit would stretch the head's predictions, not shrink them).
MAX_SLOPE = 2.0


class Recalibration(TrustComponent):
    """Estimates the target from the members' mean prediction as a + b·prediction per target
    (standardised values; least squares, b within [0, MAX_SLOPE]): for a validation split shaped
    like the rows to score, e.g. a cold split whose proteins and ligands are all new, where a head
    fitted on the training rows predicts too wide a spread around the wrong mean. Unfitted it is
    the identity (b = 1, a = 0)."""

    SAVED_NAMES = {"slope": "calibration_slope", "offset": "calibration_offset"}

    def __init__(self, targets: int) -> None:
        super().__init__()
        self.register_buffer("slope", torch.ones(targets))
        self.register_buffer("offset", torch.zeros(targets))

    @torch.no_grad()
    def fit(self, prediction: torch.Tensor, y: torch.Tensor) -> None:
        """Least-squares a, b of y ≈ a + b·prediction per target on (standardised) validation rows
        [n, targets]; a target with fewer than two labeled rows keeps the identity."""
        prediction = prediction.double()
        for j in range(prediction.shape[1]):
            known = y[:, j].isfinite()
            p, target = prediction[known, j], y[known, j].double()
            if len(p) < 2:
                continue
            centred = p - p.mean()
            slope = float((centred @ (target - target.mean())) / (centred @ centred).clamp(min=1e-12))
            self.slope[j] = min(max(slope, 0.0), MAX_SLOPE)
            self.offset[j] = float(target.mean() - self.slope[j] * p.mean())

    def apply(self, prediction: torch.Tensor) -> torch.Tensor:
        """The members' mean prediction [n, targets] (standardised) after the recalibration."""
        return prediction * self.slope + self.offset

    @torch.no_grad()
    def check(self) -> str | None:
        slope = bounded({self.SAVED_NAMES["slope"]: self.slope}, 0.0, MAX_SLOPE, f"lie in [0, {MAX_SLOPE:g}]")
        return slope or too_large({self.SAVED_NAMES["offset"]: self.offset})
