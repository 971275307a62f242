"""Regression: one or more real-valued targets, trained on standardised values."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch.nn import functional as F

from tagcli.core.heads.base import Columns, Readout, card_number
from tagcli.core.heads.feature import MAX_WEIGHT, FeatureHead, ridge
from tagcli.core.heads.regression_options import RegressionOptions
from tagcli.core.metrics import regression_metrics, summarize_targets
from tagcli.errors import PackError

# A prediction this many training standard deviations from the training mean is not an extrapolation
# but a broken model or input; such a row becomes an error instead of a number.
IMPLAUSIBLE_STDS = 100
# The largest exponent of the spread, the domain score or the error level in the uncertainty (a
# steeper fit is noise).
MAX_POWER = 2.0
# The error model's log-level is kept within ±this (e^5 ≈ 150 times a typical row's error): a row far
# outside the training features must not turn into an infinite or zero std.
MAX_ERROR_LEVEL = 5.0
# The steepest recalibration slope (a steeper fit would stretch the head's predictions, not shrink them).
MAX_SLOPE = 2.0
# Ridge penalty of the error model, relative to the number of rows (its signals are standardised).
ERROR_RIDGE = 1e-3


def bounds(spec: Any) -> tuple[float, float]:
    """A valid range [low, high] (either may be null: open on that side) as two floats; ValueError if bad."""
    if not isinstance(spec, (list, tuple)) or len(spec) != 2:
        raise ValueError(f"a range is [low, high], not {spec!r}")
    if not all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)) for v in spec
    ):
        raise ValueError(f"range bounds must be finite numbers or null, not {spec!r}")
    low, high = (-math.inf if spec[0] is None else float(spec[0])), (math.inf if spec[1] is None else float(spec[1]))
    if not low < high:
        raise ValueError(f"range {spec!r} is empty: low must be below high")
    return low, high


class RegressionHead(FeatureHead):
    """Predicts `pred_<target>` per target; keeps each target's mean/std to un-standardise.

    With `calibrate`, each target's prediction is mapped to a + b·ŷ fitted on the validation rows
    (least squares, b within [0, MAX_SLOPE]): for a validation split shaped like the rows to score,
    e.g. a cold split whose proteins and ligands are all new, where a head fitted on the training
    rows predicts too wide a spread around the wrong mean.

    An ensemble also gives `pred_<target>_std` = scale · spread^a · domain_score^b · exp(c · level):
    `level` is an error model, a ridge fit of log |error| on the training rows each member left out
    of its bootstrap sample (out-of-bag), from the prediction, its square, the log domain score and
    the coordinates on the domain axes; a, b and c are the least-squares slopes of log |error| on
    validation (kept within [0, MAX_POWER]) and the scale makes the mean squared z-score there 1.
    """

    type_name = "regression"
    Options = RegressionOptions
    unusable_label = "a label that is not a finite number"
    select_by = "standardized_mse"  # Pearson alone would happily pick a badly calibrated head
    plot_kind = "parity"

    def __init__(
        self, hidden_size: int, targets: list[dict[str, Any]], calibrate: bool = False, **options: Any
    ) -> None:
        super().__init__(hidden_size, len(targets), **options)
        self.targets = [dict(t) for t in targets]
        self.calibrate = calibrate
        self.register_buffer("calibration_slope", torch.ones(len(targets)))
        self.register_buffer("calibration_offset", torch.zeros(len(targets)))
        self.register_buffer("target_mean", torch.tensor([float(t.get("mean", 0.0)) for t in targets]))
        self.register_buffer("target_std", torch.tensor([float(t.get("std", 1.0)) for t in targets]))
        self.register_buffer("spread_scale", torch.ones(len(targets)))
        self.register_buffer("spread_power", torch.ones(len(targets)))
        self.register_buffer("domain_power", torch.zeros(len(targets)))
        signals = 3 + self.domain_axes.shape[0]  # prediction, its square, log domain score, coordinates
        self.register_buffer("error_weights", torch.zeros(len(targets), signals))
        self.register_buffer("error_bias", torch.zeros(len(targets)))
        self.register_buffer("error_power", torch.zeros(len(targets)))

    @property
    def has_spread(self) -> bool:
        return len(self.members) > 1

    def value_columns(self) -> list[str]:
        return [f"pred_{t['name']}" for t in self.targets]

    def ranked_columns(self) -> list[str]:
        return self.value_columns()

    def ranged(self) -> list[tuple[str, float, float]]:
        """(value column, low, high) of each target with a declared valid range."""
        return [(f"pred_{t['name']}", *bounds(t["range"])) for t in self.targets if t.get("range")]

    def output_types(self) -> dict[str, pa.DataType]:
        flags = {f"{column}_out_of_range": pa.bool_() for column, _, _ in self.ranged()}
        spreads = {f"{column}_std": pa.float64() for column in self.value_columns()} if self.has_spread else {}
        return {column: pa.float64() for column in self.value_columns()} | spreads | flags | self.domain_types()

    def predict(self, readout: Readout) -> Columns:
        x = self.standardise(self.features(readout))
        outputs = self.members_on(x)
        prediction = self.calibrated(self.ensemble_mean(outputs))
        columns = dict(zip(self.value_columns(), (prediction * self.target_std + self.target_mean).unbind(dim=1)))
        domain = self.domain_columns(x)
        if self.has_spread:
            level = self.error_level(x, prediction, domain.get("domain_score"))
            spread = self.uncertainty(outputs, domain.get("domain_score"), level) * self.target_std
            columns |= {f"{column}_std": s for column, s in zip(self.value_columns(), spread.unbind(dim=1))}
        return columns | domain

    def calibrated(self, prediction: torch.Tensor) -> torch.Tensor:
        """The members' mean prediction [n, targets] (standardised) after the validation recalibration."""
        return prediction * self.calibration_slope + self.calibration_offset

    def uncertainty(
        self, outputs: torch.Tensor, domain_score: torch.Tensor | None, level: torch.Tensor
    ) -> torch.Tensor:
        """Standardised std per row and target from the members' spread, the domain score and the
        error model's level."""
        std = self.spread_scale * outputs.std(0).clamp(min=1e-8).pow(self.spread_power)
        std = std * (self.error_power * level).exp()
        if domain_score is None:
            return std
        return std * domain_score.clamp(min=1e-3)[:, None].pow(self.domain_power)

    def error_signals(
        self, standardised: torch.Tensor, prediction: torch.Tensor, domain_score: torch.Tensor | None
    ) -> torch.Tensor:
        """[n, targets, signals]: the standardised prediction, its square, the log domain score and
        the coordinates on the domain axes (the last two shared by all targets)."""
        n, targets = prediction.shape
        log_domain = domain_score.clamp(min=1e-3).log() if domain_score is not None else prediction.new_zeros(n)
        shared = torch.cat([log_domain[:, None], self.domain_coordinates(standardised)], 1)
        own = torch.stack([prediction, prediction.pow(2)], 2)
        return torch.cat([own, shared[:, None].expand(n, targets, -1)], 2)

    def error_level(
        self, standardised: torch.Tensor, prediction: torch.Tensor, domain_score: torch.Tensor | None
    ) -> torch.Tensor:
        """The error model's expected log |error| [n, targets] (0 for packs without one)."""
        signals = self.error_signals(standardised, prediction, domain_score)
        level = (signals * self.error_weights).sum(2) + self.error_bias
        return level.clamp(-MAX_ERROR_LEVEL, MAX_ERROR_LEVEL)

    def decode(self, raw: Columns, tokenizer: Any) -> dict[str, list]:
        """Values, and for a target with a valid range whether the raw value lies outside it."""
        decoded = super().decode(raw, tokenizer)
        for column, low, high in self.ranged():
            decoded[f"{column}_out_of_range"] = [not low <= value <= high for value in decoded[column]]
        return decoded

    def clip(self, decoded: dict[str, list]) -> dict[str, list]:
        for column, low, high in self.ranged():
            decoded[column] = [
                min(max(value, low), high) if math.isfinite(value) else value for value in decoded[column]
            ]
        return decoded

    def row_problems(self, decoded: Mapping[str, list]) -> list[str | None]:
        """Also refuse values so far from the training targets that no extrapolation explains them."""
        problems = super().row_problems(decoded)
        for column, mean, std in zip(self.value_columns(), self.target_mean.tolist(), self.target_std.tolist()):
            for k, value in enumerate(decoded[column]):
                if problems[k] is None and abs(value - mean) > IMPLAUSIBLE_STDS * std:
                    problems[k] = (
                        f"implausible {column} {value:.3g}: "
                        f"over {IMPLAUSIBLE_STDS} standard deviations from the training targets"
                    )
        return problems

    # -- training --------------------------------------------------------------------------
    @classmethod
    def for_training(
        cls, hidden_size: int, targets: list[str], label_cells: Mapping[str, list], options: RegressionOptions
    ) -> RegressionHead:
        ranges = options.ranges(targets)
        specs = [{"name": t} | ({"range": ranges[t]} if t in ranges else {}) for t in targets]
        return cls(hidden_size, specs, calibrate=options.calibrate, **options.head_arguments())

    @property
    def n_labels(self) -> int:
        return len(self.targets)

    def parse_labels(self, label_cells: Sequence[list]) -> list[Any]:
        # CSV cells arrive as text: blanks and non-numbers become NaN, i.e. "missing".
        matrix = np.column_stack(
            [pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(float) for cells in label_cells]
        )
        return [row.tolist() if np.isfinite(row).any() else None for row in matrix]

    def expected_labels(self) -> str:
        return "labels must be numbers"

    def is_complete(self, label: Any) -> bool:
        return label is not None and all(math.isfinite(v) for v in label)

    def label_problem(self, labels: list[Any]) -> str | None:
        values = np.asarray(labels, dtype=float).reshape(len(labels), -1)
        for target, column in zip(self.targets, values.T):
            if len(column) and np.ptp(column) == 0:
                return (
                    f"target '{target['name']}' is {column[0]:g} on every training row: a constant has nothing to learn"
                )
        return None

    def set_target_stats(self, values: torch.Tensor) -> None:
        values = values.float().reshape(len(values), -1)
        self.target_mean.copy_(values.mean(0))
        self.target_std.copy_(values.std(0).clamp(min=1e-8))
        for target, mean, std in zip(self.targets, self.target_mean.tolist(), self.target_std.tolist()):
            target.update(mean=mean, std=std)

    def fit(self, hidden: torch.Tensor, labels: list, all_labels: list) -> None:
        """Standardise features and targets, then set linear members to the ridge solution."""
        super().fit(hidden, labels, all_labels)
        self.set_target_stats(torch.tensor(all_labels, dtype=torch.float32, device=hidden.device))
        self.fit_members(
            self.standardise(hidden), self._standardised(labels, hidden.device), None, F.mse_loss, 0, ridge
        )

    def fit_final(
        self, train: torch.Tensor, labels: list, validation: torch.Tensor, val_labels: list, seed: int
    ) -> None:
        """Fit every member on cached features of all training rows, then the recalibration (when
        asked for), the applicability domain and the spread's scale on validation rows."""
        self.set_feature_stats(train)
        self.set_target_stats(torch.tensor(labels, dtype=torch.float32))
        val_y = self._standardised(val_labels, validation.device)
        checked = (self.standardise(validation), val_y)
        x, y = self.standardise(train), self._standardised(labels, train.device)
        samples = self.fit_members(x, y, checked, F.mse_loss, seed, ridge)
        if self.calibrate:
            self.fit_calibration(*checked)
        self.fit_domain(train, validation)
        if self.has_spread:
            self.fit_error_model(x, y, samples)
            self.fit_uncertainty(validation, val_y)

    @torch.no_grad()
    def check_state(self) -> str | None:
        powers = torch.cat([self.spread_power, self.domain_power, self.error_power])
        if not bool(((powers >= 0) & (powers <= MAX_POWER)).all()):
            return f"spread_power, domain_power and error_power must lie in [0, {MAX_POWER:g}]"
        if not bool(((self.calibration_slope >= 0) & (self.calibration_slope <= MAX_SLOPE)).all()):
            return f"calibration_slope must lie in [0, {MAX_SLOPE:g}]"
        fitted = torch.cat([self.error_weights.flatten(), self.error_bias, self.calibration_offset])
        if not bool((fitted.abs() <= MAX_WEIGHT).all()):
            return f"error_weights, error_bias and calibration_offset must be finite and at most {MAX_WEIGHT:g} in size"
        return super().check_state()

    @torch.no_grad()
    def fit_calibration(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Least-squares a, b of y ≈ a + b·ŷ per target on (standardised) validation rows."""
        prediction = self.ensemble_mean(self.members_on(x)).double()
        for j in range(prediction.shape[1]):
            known = y[:, j].isfinite()
            p, target = prediction[known, j], y[known, j].double()
            if len(p) < 2:
                continue
            centred = p - p.mean()
            slope = float((centred @ (target - target.mean())) / (centred @ centred).clamp(min=1e-12))
            self.calibration_slope[j] = min(max(slope, 0.0), MAX_SLOPE)
            self.calibration_offset[j] = float(target.mean() - self.calibration_slope[j] * p.mean())

    @torch.no_grad()
    def fit_error_model(self, x: torch.Tensor, y: torch.Tensor, samples: list[torch.Tensor]) -> None:
        """Ridge fit of log |out-of-bag error| on the error signals, per target: each training row is
        predicted by the members whose bootstrap sample missed it (rows no member missed are left out)."""
        left_out = torch.ones(len(self.members), len(x), dtype=torch.bool)
        for k, rows in enumerate(samples):
            left_out[k, rows] = False
        rows = left_out.any(0)
        weight = left_out[:, rows, None].float()
        prediction = self.calibrated((self.members_on(x[rows]) * weight).sum(0) / weight.sum(0))
        domain = self.domain_score(x[rows]) if self.has_domain else None
        signals = self.error_signals(x[rows], prediction, domain).double()
        error = (prediction - y[rows]).abs().clamp(min=1e-12).log().double()
        for j in range(error.shape[1]):
            s, target = signals[:, j], error[:, j]
            mean, scale = s.mean(0), s.std(0).clamp(min=1e-9)
            z = (s - mean) / scale
            gram = z.T @ z + ERROR_RIDGE * len(z) * torch.eye(z.shape[1], dtype=z.dtype)
            weights = torch.linalg.solve(gram, z.T @ (target - target.mean())) / scale
            self.error_weights[j] = weights.float()
            self.error_bias[j] = float(target.mean() - mean @ weights)

    @torch.no_grad()
    def fit_uncertainty(self, validation: torch.Tensor, val_y: torch.Tensor) -> None:
        """Slopes of log |error| on log spread, log domain score and the error level, then the scale (z² = 1)."""
        x = self.standardise(validation)
        outputs = self.members_on(x)
        prediction = self.calibrated(self.ensemble_mean(outputs))
        error = (prediction - val_y).abs().double()
        spread = outputs.std(0).clamp(min=1e-8).log().double()
        domain = self.domain_score(x) if self.has_domain else None
        level = self.error_level(x, prediction, domain)
        powers = (self.spread_power, self.domain_power, self.error_power)
        log_domain = (domain.clamp(min=1e-3).log() if domain is not None else level.new_zeros(len(level))).double()
        for j in range(error.shape[1]):
            signals = torch.stack([spread[:, j], log_domain, level[:, j].double()], 1)
            y = error[:, j].clamp(min=1e-12).log()
            slopes = _slopes(signals - signals.mean(0), y - y.mean()).clamp(0.0, MAX_POWER)
            for power, slope in zip(powers, slopes.tolist()):
                power[j] = slope
        self.spread_scale.fill_(1.0)
        z2 = ((prediction - val_y) / self.uncertainty(outputs, domain, level)).pow(2)
        self.spread_scale.copy_(z2.mean(0).sqrt())

    def _standardised(self, labels: list, device: torch.device) -> torch.Tensor:
        targets = torch.tensor(labels, dtype=torch.float32, device=device).reshape(len(labels), -1)
        return (targets - self.target_mean) / self.target_std

    def loss(self, hidden: torch.Tensor, labels: list) -> torch.Tensor:
        return F.mse_loss(self(hidden), self._standardised(labels, hidden.device))

    # -- evaluation ------------------------------------------------------------------------
    def target_metrics(self, labels: list[Any], predicted: Mapping[str, list]) -> list[dict[str, Any]]:
        truth = np.array([label if label is not None else [np.nan] * self.n_labels for label in labels], dtype=float)
        truth = truth.reshape(len(labels), self.n_labels)
        metrics = []
        for k, column in enumerate(self.value_columns()):
            values = np.asarray(predicted[column], dtype=float)
            labeled = np.isfinite(truth[:, k])  # each target on its own labeled rows
            metrics.append(regression_metrics(truth[labeled, k], values[labeled]))
        return metrics

    def summarize(self, per_target: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        n = max((m["n"] for m in per_target.values()), default=0)
        return summarize_targets(dict(per_target), self.target_std.cpu().numpy(), n)

    # -- the model card --------------------------------------------------------------------
    @classmethod
    def card_predicts(cls, spec: Mapping[str, Any], readout: str) -> str:
        targets = [t for t in spec.get("targets") or [] if isinstance(t, dict)]
        named = ", ".join(_target_text(t) for t in targets)
        count = f"{len(targets)} numbers" if len(targets) > 1 else "a number"
        spread = " and its uncertainty (ensemble spread and error model)" if spec.get("members", 1) > 1 else ""
        return f"{count} ({named}){spread}, from {cls.card_head(spec)} on {cls.card_reads(spec, readout)}"

    @classmethod
    def card_limits(cls, spec: Mapping[str, Any]) -> list[str]:
        spread = [
            f"{t.get('name')} {card_number(t['mean'])} ± {card_number(t['std'])}"
            for t in spec.get("targets") or []
            if isinstance(t, dict) and all(isinstance(t.get(k), (int, float)) for k in ("mean", "std"))
        ]
        seen = f" (training mean ± std: {'; '.join(spread)})" if 0 < len(spread) <= 3 else ""
        members = spec.get("members") if isinstance(spec.get("members"), int) else 1
        layer = "small MLPs" if spec.get("hidden_units") else "linear layers"
        kind = (
            f"an ensemble of {members} {layer}"
            if members > 1
            else ("a small MLP" if spec.get("hidden_units") else "linear")
        )
        lines = [
            f"- The head is {kind}: it extrapolates beyond the values seen in training without warning, "
            f"so values far from the training targets{seen} deserve suspicion."
        ]
        if spec.get("calibrated") is True:
            lines.append(
                "- Its predictions are recalibrated on the validation split (a + b·prediction per target): "
                "they assume the rows you score resemble those rows more than the training rows."
            )
        for target in spec.get("targets") or []:
            if isinstance(target, dict) and target.get("range"):
                lines.append(
                    f"- `pred_{target.get('name')}` is clipped to its valid range and "
                    f"`pred_{target.get('name')}_out_of_range` flags where it was outside "
                    "(`tagcli predict --no-clip` keeps the raw value)."
                )
        return lines

    # -- the pack format -------------------------------------------------------------------
    def to_spec(self) -> dict[str, Any]:
        calibrated = {"calibrated": True} if self.calibrate else {}
        return {"type": self.type_name, "targets": self.targets, **self.feature_spec(), **calibrated}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hidden_size: int) -> RegressionHead:
        targets = spec.get("targets")
        if (
            not isinstance(targets, list)
            or not targets
            or not all(isinstance(t, dict) and "name" in t for t in targets)
        ):
            raise PackError("regression head spec needs a non-empty 'targets' list of {name, mean, std}")
        for target in targets:
            mean, std = target.get("mean", 0.0), target.get("std", 1.0)
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (mean, std)) or std <= 0:
                raise PackError(f"regression target {target['name']!r} needs a finite mean and a positive std")
            if target.get("range") is not None:
                try:
                    bounds(target["range"])
                except ValueError as exc:
                    raise PackError(f"regression target {target['name']!r}: {exc}") from None
        if not isinstance(spec.get("calibrated", False), bool):
            raise PackError("regression head spec: 'calibrated' must be true or false")
        return cls(hidden_size, targets, calibrate=spec.get("calibrated", False), **cls.feature_options(spec))


def _slopes(signals: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least-squares slopes of centred `y` on centred signal columns; a constant column (no domain
    summary, no error model) gets 0. Solved without it: LAPACK's default least squares on a
    rank-deficient matrix returned different slopes from run to run (spread power 1.02 or 0)."""
    active = signals.abs().amax(0) > 1e-12
    slopes = signals.new_zeros(signals.shape[1])
    if bool(active.any()):
        slopes[active] = torch.linalg.lstsq(signals[:, active], y, driver="gelsd").solution
    return slopes


def _target_text(target: Mapping[str, Any]) -> str:
    text = f"`{target.get('name')}`"
    bounds = target.get("range")
    if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
        low = "-inf" if bounds[0] is None else card_number(bounds[0])
        high = "inf" if bounds[1] is None else card_number(bounds[1])
        text += f" in [{low}, {high}]"
    return text
