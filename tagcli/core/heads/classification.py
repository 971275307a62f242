"""Classification: one categorical target; class probabilities and the most likely class."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.nn import functional as F

from tagcli.core.heads.base import Columns, Readout
from tagcli.core.heads.feature import FeatureHead
from tagcli.core.heads.feature_options import FeatureOptions
from tagcli.core.metrics import classification_metrics
from tagcli.errors import PackError, UsageError

POSITIVE_NAMES = frozenset({"1", "true", "yes", "active", "positive", "pos"})


def class_label(value: Any) -> str | None:
    """A class label (or text answer) as text; None, NaN and blank cells are missing labels."""
    if value is None or (isinstance(value, float) and value != value) or not str(value).strip():
        return None
    return str(value).strip()


class ClassificationHead(FeatureHead):
    type_name = "classification"
    unusable_label = "a label that is not one of the training classes"
    select_by = "log_loss"
    plot_kind = "roc"

    def __init__(self, hidden_size: int, target: str, classes: list[str], **options: Any) -> None:
        super().__init__(hidden_size, len(classes), **options)
        self.target = target
        self.classes = [str(c) for c in classes]

    @property
    def positive(self) -> int:
        """The class PR-AUC and the Brier score of two classes are about: one named like a positive
        ("1", "true", "yes", "active", "BBB+"), else the second in sorted order (as for 0/1 labels)."""
        named = [k for k, c in enumerate(self.classes) if c.lower() in POSITIVE_NAMES or c.endswith("+")]
        return named[0] if len(named) == 1 else min(1, len(self.classes) - 1)

    def output_types(self) -> dict[str, pa.DataType]:
        probabilities = {f"prob_{c}": pa.float64() for c in self.classes}
        return {f"pred_{self.target}": pa.string()} | probabilities | self.applicability.output_types()

    def ranked_columns(self) -> list[str]:
        return [f"prob_{c}" for c in self.classes]

    def predict(self, readout: Readout) -> Columns:
        x = self.standardise(self.features(readout))
        probabilities = self.ensemble_mean(self.members_on(x)).softmax(dim=-1)
        columns: Columns = {f"pred_{self.target}": [self.classes[i] for i in probabilities.argmax(dim=-1).tolist()]}
        columns.update({f"prob_{c}": p for c, p in zip(self.classes, probabilities.unbind(dim=1))})
        return columns | self.applicability.apply(x)

    @classmethod
    def for_training(
        cls, hidden_size: int, targets: list[str], label_cells: Mapping[str, list], options: FeatureOptions
    ) -> ClassificationHead:
        if len(targets) != 1:
            raise UsageError("a classification function has one --target column")
        classes = sorted({label for v in label_cells[targets[0]] if (label := class_label(v)) is not None})
        if len(classes) < 2:
            raise UsageError(f"classification needs at least two classes in '{targets[0]}', found {classes}")
        return cls(hidden_size, targets[0], classes, **options.head_arguments())

    def parse_labels(self, label_cells: Sequence[list]) -> list[Any]:
        index = {c: k for k, c in enumerate(self.classes)}
        return [index.get(label) if (label := class_label(v)) is not None else None for v in label_cells[0]]

    def expected_labels(self) -> str:
        return f"the pack's classes are {', '.join(self.classes)}"

    def loss(self, hidden: torch.Tensor, labels: list) -> torch.Tensor:
        return F.cross_entropy(self(hidden), torch.tensor(labels, dtype=torch.long, device=hidden.device))

    def fit_final(
        self, train: torch.Tensor, labels: list, validation: torch.Tensor, val_labels: list, seed: int
    ) -> None:
        """Train every member on cached features of all training rows; the applicability domain on
        validation rows."""
        self.set_feature_stats(train)
        x, val_x = self.standardise(train), self.standardise(validation)
        checked = (val_x, torch.tensor(val_labels, dtype=torch.long))
        self.fit_members(x, torch.tensor(labels, dtype=torch.long), checked, F.cross_entropy, seed)
        self.applicability.fit(x, val_x)

    def target_metrics(self, labels: list[Any], predicted: Mapping[str, list]) -> list[dict[str, Any]]:
        known = [i for i, label in enumerate(labels) if label is not None]  # unknown classes are not scored
        truth = np.array([labels[i] for i in known], dtype=int)
        probabilities = np.array([[predicted[f"prob_{c}"][i] for c in self.classes] for i in known], dtype=float)
        probabilities = probabilities.reshape(len(known), len(self.classes))
        metrics = classification_metrics(truth, probabilities, self.positive)
        chosen = probabilities[np.arange(len(truth)), truth] if len(truth) else np.array([])
        log_loss = float(-np.mean(np.log(np.clip(chosen, 1e-12, 1.0)))) if len(truth) else math.nan
        return [{**metrics, "log_loss": log_loss}]

    @classmethod
    def card_predicts(cls, spec: Mapping[str, Any], readout: str) -> str:
        classes = ", ".join(str(c) for c in spec.get("classes") or [])
        head, reads = cls.card_head(spec), cls.card_reads(spec, readout)
        return f"`{spec.get('target')}`, one of {classes}, with a probability per class ({head} on {reads})"

    @classmethod
    def card_limits(cls, spec: Mapping[str, Any]) -> list[str]:
        return ["- Class probabilities are not calibrated beyond what the validation metrics show."]

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type_name, "target": self.target, "classes": self.classes, **self.feature_spec()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hidden_size: int) -> ClassificationHead:
        classes = spec.get("classes")
        if not isinstance(classes, list) or len(classes) < 2 or not isinstance(spec.get("target"), str):
            raise PackError("classification head spec needs 'target' and at least two 'classes'")
        return cls(hidden_size, spec["target"], classes, **cls.feature_options(spec))
