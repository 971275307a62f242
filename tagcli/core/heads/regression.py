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

from tagcli.core.heads.base import Columns, Readout
from tagcli.core.heads.linear import LinearHead, ridge
from tagcli.core.metrics import regression_metrics, summarize_targets
from tagcli.errors import PackError

# A prediction this many training standard deviations from the training mean is not an extrapolation
# but a broken model or input; such a row becomes an error instead of a number.
IMPLAUSIBLE_STDS = 100


class RegressionHead(LinearHead):
    """Predicts `pred_<target>` per target; keeps each target's mean/std to un-standardise."""

    type_name = "regression"
    select_by = "standardized_mse"  # Pearson alone would happily pick a badly calibrated head

    def __init__(self, hidden_size: int, targets: list[dict[str, Any]]) -> None:
        super().__init__(hidden_size, len(targets))
        self.targets = [dict(t) for t in targets]
        self.register_buffer("target_mean", torch.tensor([float(t.get("mean", 0.0)) for t in targets]))
        self.register_buffer("target_std", torch.tensor([float(t.get("std", 1.0)) for t in targets]))

    def output_types(self) -> dict[str, pa.DataType]:
        return {f"pred_{t['name']}": pa.float64() for t in self.targets}

    def predict(self, readout: Readout) -> Columns:
        values = self(readout.hidden) * self.target_std + self.target_mean
        return dict(zip(self.output_columns(), values.unbind(dim=1)))

    def row_problems(self, decoded: Mapping[str, list]) -> list[str | None]:
        """Also refuse values so far from the training targets that no extrapolation explains them."""
        problems = super().row_problems(decoded)
        for column, mean, std in zip(self.output_columns(), self.target_mean.tolist(), self.target_std.tolist()):
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
        cls, hidden_size: int, targets: list[str], label_cells: Mapping[str, list], **options: Any
    ) -> RegressionHead:
        return cls(hidden_size, [{"name": t} for t in targets])

    @property
    def n_labels(self) -> int:
        return len(self.targets)

    def parse_labels(self, label_cells: Sequence[list]) -> list[Any]:
        # CSV cells arrive as text: blanks and non-numbers become NaN, i.e. "missing".
        matrix = np.column_stack(
            [pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(float) for cells in label_cells]
        )
        return [row.tolist() if np.isfinite(row).any() else None for row in matrix]

    def is_complete(self, label: Any) -> bool:
        return label is not None and all(math.isfinite(v) for v in label)

    def set_target_stats(self, values: torch.Tensor) -> None:
        values = values.float().reshape(len(values), -1)
        self.target_mean.copy_(values.mean(0))
        self.target_std.copy_(values.std(0).clamp(min=1e-8))
        for target, mean, std in zip(self.targets, self.target_mean.tolist(), self.target_std.tolist()):
            target.update(mean=mean, std=std)

    def fit(self, hidden: torch.Tensor, labels: list, all_labels: list) -> None:
        """Standardise features and targets, then set the Linear layer to the ridge solution."""
        super().fit(hidden, labels, all_labels)
        device = hidden.device
        self.set_target_stats(torch.tensor(all_labels, dtype=torch.float32, device=device))
        targets = torch.tensor(labels, dtype=torch.float32, device=device).reshape(len(labels), -1)
        standardised = (targets - self.target_mean) / self.target_std
        with torch.no_grad():
            self.linear.weight.copy_(ridge(self.standardise(hidden), standardised).T)
            self.linear.bias.zero_()

    def loss(self, hidden: torch.Tensor, labels: list) -> torch.Tensor:
        targets = torch.tensor(labels, dtype=torch.float32, device=hidden.device).reshape(len(labels), -1)
        return F.mse_loss(self(hidden), (targets - self.target_mean) / self.target_std)

    # -- evaluation ------------------------------------------------------------------------
    def target_metrics(self, labels: list[Any], predicted: Mapping[str, list]) -> list[dict[str, Any]]:
        truth = np.array([label if label is not None else [np.nan] * self.n_labels for label in labels], dtype=float)
        truth = truth.reshape(len(labels), self.n_labels)
        metrics = []
        for k, column in enumerate(self.output_columns()):
            values = np.asarray(predicted[column], dtype=float)
            labeled = np.isfinite(truth[:, k])  # each target on its own labeled rows
            metrics.append(regression_metrics(truth[labeled, k], values[labeled]))
        return metrics

    def summarize(self, per_target: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        n = max((m["n"] for m in per_target.values()), default=0)
        return summarize_targets(dict(per_target), self.target_std.cpu().numpy(), n)

    # -- the pack format -------------------------------------------------------------------
    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type_name, "targets": self.targets}

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
        return cls(hidden_size, targets)
