"""The shared body of the regression and classification heads: standardised features → Linear."""

from __future__ import annotations

import torch
from torch import nn

from tagcli.core.heads.base import Head

# Ridge and gradient training on standardised features give weights below ~1; a pack whose weights
# are orders of magnitude larger was not produced by training (tampered, or a broken export).
MAX_WEIGHT = 1e3


class LinearHead(Head):
    """Standardise the hidden state feature-wise, then apply a Linear layer.

    LLM hidden states have a few dimensions with huge constant offsets; without standardising, a
    linear head spends most of its training budget learning them.
    """

    def __init__(self, hidden_size: int, n_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, n_outputs)
        self.register_buffer("feature_mean", torch.zeros(hidden_size))
        self.register_buffer("feature_std", torch.ones(hidden_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Raw head output (standardised targets or logits), computed in float32."""
        return self.linear(self.standardise(hidden))

    def standardise(self, hidden: torch.Tensor) -> torch.Tensor:
        return (hidden.float() - self.feature_mean) / self.feature_std

    def set_feature_stats(self, hidden: torch.Tensor) -> None:
        """Standardise inputs with statistics of a sample of hidden states."""
        hidden = hidden.float()
        self.feature_mean.copy_(hidden.mean(0))
        self.feature_std.copy_(hidden.std(0).clamp(min=1e-4))

    def fit(self, hidden: torch.Tensor, labels: list, all_labels: list) -> None:
        self.set_feature_stats(hidden)

    @torch.no_grad()
    def check_state(self) -> str | None:
        largest = float(max(self.linear.weight.abs().max(), self.linear.bias.abs().max()))
        if largest > MAX_WEIGHT:
            return (
                f"its linear weights reach {largest:.3g}; "
                f"training on standardised features gives far less (at most {MAX_WEIGHT:g})"
            )
        if not bool((self.feature_std > 0).all()):
            return "feature_std must be positive"
        return None


def ridge(
    features: torch.Tensor, targets: torch.Tensor, alphas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
) -> torch.Tensor:
    """Ridge weights [d, k] (no intercept: inputs are standardised), penalty picked on a 20% holdout."""
    x, y = features.double(), targets.double()

    def solve(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        return torch.linalg.solve(x.T @ x + alpha * len(x) * eye, x.T @ y)

    cut = max(1, int(len(x) * 0.8))
    if cut < len(x):
        alpha = min(alphas, key=lambda a: float(((x[cut:] @ solve(x[:cut], y[:cut], a) - y[cut:]) ** 2).mean()))
    else:
        alpha = max(alphas)
    return solve(x, y, alpha).float()
