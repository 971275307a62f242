"""The ensemble spread: each prediction's uncertainty from how much the members disagree, shaped
by the domain score and the error model's level, fitted on the validation rows."""

from __future__ import annotations

import torch

from tagcli.core.heads.trust.applicability import SCORE_FLOOR, log_score
from tagcli.core.heads.trust.base import TrustComponent, bounded

# The largest exponent of the spread, the domain score or the error level in the uncertainty (a
# steeper fit is noise).
MAX_POWER = 2.0


class EnsembleSpread(TrustComponent):
    """Estimates the standard deviation of each standardised prediction (`pred_<target>_std` once
    un-standardised): scale · spread^a · domain_score^b · exp(c · level), where spread is the
    members' std and level the error model's. a, b and c are the least-squares slopes of log |error|
    on validation (kept within [0, MAX_POWER]) and the scale makes the mean squared z-score there 1.
    Unfitted (a = 1, b = c = 0, scale 1: packs from before the exponents) it is the members' std."""

    SAVED_NAMES = {
        "scale": "spread_scale",
        "spread_power": "spread_power",
        "applicability_power": "domain_power",
        "error_power": "error_power",
    }

    def __init__(self, targets: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(targets))
        self.register_buffer("spread_power", torch.ones(targets))
        self.register_buffer("applicability_power", torch.zeros(targets))
        self.register_buffer("error_power", torch.zeros(targets))

    @torch.no_grad()
    def fit(
        self, outputs: torch.Tensor, residual: torch.Tensor, score: torch.Tensor | None, level: torch.Tensor
    ) -> None:
        """Exponents, then scale, from validation rows: every member's outputs [members, n, targets],
        the residuals of the head's prediction [n, targets], domain scores [n] (None without a
        summary) and the error model's levels [n, targets]."""
        error = residual.abs().double()
        spread = outputs.std(0).clamp(min=1e-8).log().double()
        log_domain = log_score(score, level).double()
        powers = (self.spread_power, self.applicability_power, self.error_power)
        for j in range(error.shape[1]):
            signals = torch.stack([spread[:, j], log_domain, level[:, j].double()], 1)
            y = error[:, j].clamp(min=1e-12).log()
            slopes = _slopes(signals - signals.mean(0), y - y.mean()).clamp(0.0, MAX_POWER)
            for power, slope in zip(powers, slopes.tolist()):
                power[j] = slope
        self.scale.fill_(1.0)
        z2 = (residual / self.apply(outputs, score, level)).pow(2)
        self.scale.copy_(z2.mean(0).sqrt())

    def apply(self, outputs: torch.Tensor, score: torch.Tensor | None, level: torch.Tensor) -> torch.Tensor:
        """Standardised std per row and target [n, targets]."""
        std = self.scale * outputs.std(0).clamp(min=1e-8).pow(self.spread_power)
        std = std * (self.error_power * level).exp()
        if score is None:
            return std
        return std * score.clamp(min=SCORE_FLOOR)[:, None].pow(self.applicability_power)

    @torch.no_grad()
    def check(self) -> str | None:
        powers = {self.SAVED_NAMES[k]: getattr(self, k) for k in ("spread_power", "applicability_power", "error_power")}
        return bounded(powers, 0.0, MAX_POWER, f"lie in [0, {MAX_POWER:g}]")


def _slopes(signals: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least-squares slopes of centred `y` on centred signal columns; a constant column (no domain
    summary, no error model) gets 0. Solved without it: LAPACK's default least squares on a
    rank-deficient matrix returned different slopes from run to run (spread power 1.02 or 0)."""
    active = signals.abs().amax(0) > 1e-12
    slopes = signals.new_zeros(signals.shape[1])
    if bool(active.any()):
        slopes[active] = torch.linalg.lstsq(signals[:, active], y, driver="gelsd").solution
    return slopes
