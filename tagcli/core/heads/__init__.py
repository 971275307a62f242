"""Heads: what turns a function tag's readout into predictions, one module per kind.

    base.py            the interface every head kind implements (outputs, readout, decoding,
                       labels, loss, fit, metrics, spec)
    feature.py         the shared body of the heads that read features (ensemble, applicability domain)
    trust/             the trust add-ons those heads compose: applicability domain, recalibration,
                       out-of-bag error model, ensemble spread (each with fit, apply and its own tensors)
    feature_options.py their training options (readout, members, extra features, ...)
    regression.py      real-valued targets (ridge-initialised linear layer)
    classification.py  class probabilities
    text.py            answers written by the LM's own head

Kinds are registered by type name; a pack's manifest stores the spec (`to_spec`) and
`heads.safetensors` the tensors. Training picks a kind by the same name (`--task`); a kind's frozen
`Options` dataclass (`tagcli.options`) gives its `tagcli train` flags, recorded hyperparameters and
card line, and its `card_*` methods its other model-card words.
"""

from __future__ import annotations

from typing import Any

from tagcli.core.heads.base import Columns, Head, Readout
from tagcli.core.heads.classification import ClassificationHead
from tagcli.core.heads.regression import RegressionHead
from tagcli.core.heads.text import TextHead
from tagcli.errors import PackError
from tagcli.registry import Registry

HEADS: Registry[type[Head]] = Registry("task")


def register_head(kind: type[Head]) -> type[Head]:
    """Make a head kind known to packs and training by its `type_name` (usable as a decorator)."""
    return HEADS.register(kind.type_name)(kind)


for _kind in (RegressionHead, ClassificationHead, TextHead):
    register_head(_kind)


def head_from_spec(spec: dict[str, Any], hidden_size: int) -> Head:
    head_type = spec.get("type") if isinstance(spec, dict) else None
    if head_type not in HEADS:
        raise PackError(f"unknown head type {head_type!r}; this tagcli knows {', '.join(HEADS)}")
    return HEADS[head_type].from_spec(spec, hidden_size)


__all__ = [
    "HEADS",
    "ClassificationHead",
    "Columns",
    "Head",
    "Readout",
    "RegressionHead",
    "TextHead",
    "head_from_spec",
    "register_head",
]
