"""Heads: what turns the function tag's final hidden state into predictions.

Linear heads (regression, classification) standardise their input feature-wise (LLM hidden
states have a few dimensions with huge constant offsets; without this a linear head trains
slowly) and apply a Linear layer. The text head has no parameters: the LM's own head generates
the answer after the function tag (`TaggedModel.generate`). Heads are registered by type name in
`HEADS`; a pack's manifest stores the spec (`to_spec`) and `heads.safetensors` the tensors.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from tagcli.errors import PackError


class Head(nn.Module):
    type_name: ClassVar[str]

    def output_columns(self) -> list[str]:
        raise NotImplementedError

    @property
    def label_columns(self) -> list[str]:
        """Output columns holding text (class names, answers); all others are floats."""
        return []

    def to_spec(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hidden_size: int) -> Head:
        raise NotImplementedError


class LinearHead(Head):
    """Standardised hidden state → Linear layer (the shared body of regression and classification)."""

    def __init__(self, hidden_size: int, n_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, n_outputs)
        self.register_buffer("feature_mean", torch.zeros(hidden_size))
        self.register_buffer("feature_std", torch.ones(hidden_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Raw head output (standardised targets or logits), computed in float32."""
        features = (hidden.float() - self.feature_mean) / self.feature_std
        return self.linear(features)

    def set_feature_stats(self, hidden: torch.Tensor) -> None:
        """Standardise inputs with statistics of a sample of hidden states."""
        hidden = hidden.float()
        self.feature_mean.copy_(hidden.mean(0))
        self.feature_std.copy_(hidden.std(0).clamp(min=1e-4))

    def predict(self, hidden: torch.Tensor) -> dict[str, torch.Tensor | list[str]]:
        """User-facing columns for a batch of hidden states, in `output_columns` order."""
        raise NotImplementedError

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class RegressionHead(LinearHead):
    """One or more real-valued targets, trained on standardised values (mean/std kept for un-normalising)."""

    type_name = "regression"

    def __init__(self, hidden_size: int, targets: list[dict[str, Any]]) -> None:
        super().__init__(hidden_size, len(targets))
        self.targets = [dict(t) for t in targets]
        self.register_buffer("target_mean", torch.tensor([float(t.get("mean", 0.0)) for t in targets]))
        self.register_buffer("target_std", torch.tensor([float(t.get("std", 1.0)) for t in targets]))

    def set_target_stats(self, values: torch.Tensor) -> None:
        values = values.float().reshape(len(values), -1)
        self.target_mean.copy_(values.mean(0))
        self.target_std.copy_(values.std(0).clamp(min=1e-8))
        for target, mean, std in zip(self.targets, self.target_mean.tolist(), self.target_std.tolist()):
            target.update(mean=mean, std=std)

    def output_columns(self) -> list[str]:
        return [f"pred_{t['name']}" for t in self.targets]

    def predict(self, hidden: torch.Tensor) -> dict[str, torch.Tensor | list[str]]:
        values = self(hidden) * self.target_std + self.target_mean
        return dict(zip(self.output_columns(), values.unbind(dim=1)))

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        standardised = (targets.float().reshape(len(targets), -1) - self.target_mean) / self.target_std
        return F.mse_loss(self(hidden), standardised)

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type_name, "targets": self.targets}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hidden_size: int) -> RegressionHead:
        targets = spec.get("targets")
        if not isinstance(targets, list) or not targets or not all(isinstance(t, dict) and "name" in t for t in targets):
            raise PackError("regression head spec needs a non-empty 'targets' list of {name, mean, std}")
        for target in targets:
            mean, std = target.get("mean", 0.0), target.get("std", 1.0)
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (mean, std)) or std <= 0:
                raise PackError(f"regression target {target['name']!r} needs a finite mean and a positive std")
        return cls(hidden_size, targets)


class ClassificationHead(LinearHead):
    """One categorical target; predicts class probabilities and the most likely class."""

    type_name = "classification"

    def __init__(self, hidden_size: int, target: str, classes: list[str]) -> None:
        super().__init__(hidden_size, len(classes))
        self.target = target
        self.classes = [str(c) for c in classes]

    def output_columns(self) -> list[str]:
        return [f"pred_{self.target}"] + [f"prob_{c}" for c in self.classes]

    @property
    def label_columns(self) -> list[str]:
        return [f"pred_{self.target}"]

    def predict(self, hidden: torch.Tensor) -> dict[str, torch.Tensor | list[str]]:
        probabilities = self(hidden).softmax(dim=-1)
        columns: dict[str, torch.Tensor | list[str]] = {
            f"pred_{self.target}": [self.classes[i] for i in probabilities.argmax(dim=-1).tolist()]
        }
        columns.update({f"prob_{c}": p for c, p in zip(self.classes, probabilities.unbind(dim=1))})
        return columns

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(hidden), targets.long().reshape(-1))

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type_name, "target": self.target, "classes": self.classes}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hidden_size: int) -> ClassificationHead:
        classes = spec.get("classes")
        if not isinstance(classes, list) or len(classes) < 2 or not isinstance(spec.get("target"), str):
            raise PackError("classification head spec needs 'target' and at least two 'classes'")
        return cls(hidden_size, spec["target"], classes)


class TextHead(Head):
    """A text answer generated greedily by the LM's own head after the function tag."""

    type_name = "text"

    def __init__(self, target: str, max_new_tokens: int = 32) -> None:
        super().__init__()
        self.target = target
        self.max_new_tokens = max_new_tokens

    def output_columns(self) -> list[str]:
        return [f"pred_{self.target}"]

    @property
    def label_columns(self) -> list[str]:
        return self.output_columns()

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type_name, "target": self.target, "max_new_tokens": self.max_new_tokens}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hidden_size: int) -> TextHead:
        limit = spec.get("max_new_tokens", 32)
        if not isinstance(spec.get("target"), str) or not isinstance(limit, int) or limit < 1:
            raise PackError("text head spec needs 'target' and a positive 'max_new_tokens'")
        return cls(spec["target"], limit)


HEADS: dict[str, type[Head]] = {cls.type_name: cls for cls in (RegressionHead, ClassificationHead, TextHead)}


def head_from_spec(spec: dict[str, Any], hidden_size: int) -> Head:
    head_type = spec.get("type") if isinstance(spec, dict) else None
    if head_type not in HEADS:
        raise PackError(f"unknown head type {head_type!r}; this tagcli knows {', '.join(HEADS)}")
    return HEADS[head_type].from_spec(spec, hidden_size)
