"""What every trust component of a feature head is: an `nn.Module` with its own tensors, fitted
after the members (`fit`) and applied when rows are scored (`apply`)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

# Ridge and gradient training on standardised features give weights below ~1; a pack whose weights
# are orders of magnitude larger was not produced by training (tampered, or a broken export).
MAX_WEIGHT = 1e3


class TrustComponent(nn.Module):
    """A trust add-on of a feature head. Its `fit` and `apply` take what it needs (their arguments
    differ by component); the head composes them. Each buffer is saved in a pack under the name in
    `SAVED_NAMES`, the name it had before the components existed, so every pack loads as before."""

    SAVED_NAMES: ClassVar[dict[str, str]] = {}

    def check(self) -> str | None:
        """Why the loaded tensors cannot come from `fit` (None: they can). Called by the pack loader."""
        return None


def bounded(tensors: dict[str, torch.Tensor], low: float, high: float, what: str) -> str | None:
    """Why these tensors (pack names → values) cannot come from a fit, as "NAMES must WHAT": a value
    outside [low, high] or not finite (None: all lie inside)."""
    values = torch.cat([t.flatten() for t in tensors.values()])
    if bool(((values >= low) & (values <= high)).all()):
        return None
    names = list(tensors)
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"{listed} must {what}"


def too_large(tensors: dict[str, torch.Tensor]) -> str | None:
    """Why fitted weights (pack names → values) cannot come from a fit on standardised values (None: they can)."""
    return bounded(tensors, -MAX_WEIGHT, MAX_WEIGHT, f"be finite and at most {MAX_WEIGHT:g} in size")
