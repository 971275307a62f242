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
from tagcli.core.heads.feature import FeatureHead, ridge
from tagcli.core.heads.regression_options import RegressionOptions
from tagcli.core.heads.trust import EnsembleSpread, ErrorModel, Recalibration, out_of_bag
from tagcli.core.metrics import regression_metrics, summarize_targets
from tagcli.errors import PackError

# A prediction this many training standard deviations from the training mean is not an extrapolation
# but a broken model or input; such a row becomes an error instead of a number.
IMPLAUSIBLE_STDS = 100


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

    With `calibrate`, each target's prediction is recalibrated on the validation rows
    (`trust.Recalibration`). An ensemble also gives `pred_<target>_std` (`trust.EnsembleSpread`),
    shaped by the domain score (`trust.ApplicabilityDomain`) and by the error model's level
    (`trust.ErrorModel`, fitted on the rows each member left out of its bootstrap sample).
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
        self.recalibration = Recalibration(len(targets))
        self.register_buffer("target_mean", torch.tensor([float(t.get("mean", 0.0)) for t in targets]))
        self.register_buffer("target_std", torch.tensor([float(t.get("std", 1.0)) for t in targets]))
        self.spread = EnsembleSpread(len(targets))
        self.error_model = ErrorModel(len(targets), self.applicability.components)

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
        values = {column: pa.float64() for column in self.value_columns()}
        return values | spreads | flags | self.applicability.output_types()

    def predict(self, readout: Readout) -> Columns:
        x = self.standardise(self.features(readout))
        outputs = self.members_on(x)
        prediction = self.recalibration.apply(self.ensemble_mean(outputs))
        columns = dict(zip(self.value_columns(), (prediction * self.target_std + self.target_mean).unbind(dim=1)))
        applicability_columns = self.applicability.apply(x)
        if self.has_spread:
            score = applicability_columns.get("domain_score")
            level = self.error_model.apply(prediction, score, self.applicability.coordinates(x))
            spread = self.spread.apply(outputs, score, level) * self.target_std
            columns |= {f"{column}_std": s for column, s in zip(self.value_columns(), spread.unbind(dim=1))}
        return columns | applicability_columns

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
        """Fit every member on cached features of all training rows, then the trust components: the
        recalibration (when asked for) and the applicability domain on validation rows; with an
        ensemble, the error model on the rows each member left out and the spread on validation rows."""
        self.set_feature_stats(train)
        self.set_target_stats(torch.tensor(labels, dtype=torch.float32))
        val_y = self._standardised(val_labels, validation.device)
        val_x = self.standardise(validation)
        x, y = self.standardise(train), self._standardised(labels, train.device)
        samples = self.fit_members(x, y, (val_x, val_y), F.mse_loss, seed, ridge)
        with torch.no_grad():
            if self.calibrate:
                self.recalibration.fit(self.ensemble_mean(self.members_on(val_x)), val_y)
            self.applicability.fit(x, val_x)
            if self.has_spread:
                self._fit_error_model(x, y, samples)
                self._fit_spread(val_x, val_y)

    def _fit_error_model(self, x: torch.Tensor, y: torch.Tensor, samples: list[torch.Tensor]) -> None:
        """The error model on standardised training rows, each predicted by the members whose
        bootstrap sample (`samples`) missed it (rows no member missed are left out)."""
        rows, weight = out_of_bag(samples, len(x))
        prediction = self.recalibration.apply((self.members_on(x[rows]) * weight).sum(0) / weight.sum(0))
        score = self.applicability.score(x[rows])
        self.error_model.fit(prediction, prediction - y[rows], score, self.applicability.coordinates(x[rows]))

    def _fit_spread(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The spread's exponents and scale on standardised validation rows."""
        outputs = self.members_on(x)
        prediction = self.recalibration.apply(self.ensemble_mean(outputs))
        score = self.applicability.score(x)
        level = self.error_model.apply(prediction, score, self.applicability.coordinates(x))
        self.spread.fit(outputs, prediction - y, score, level)

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


def _target_text(target: Mapping[str, Any]) -> str:
    text = f"`{target.get('name')}`"
    bounds = target.get("range")
    if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
        low = "-inf" if bounds[0] is None else card_number(bounds[0])
        high = "inf" if bounds[1] is None else card_number(bounds[1])
        text += f" in [{low}, {high}]"
    return text
