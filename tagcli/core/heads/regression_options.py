"""The training options of the regression head: the feature head's, plus valid ranges and recalibration."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from tagcli.core.heads.feature_options import FeatureOptions
from tagcli.errors import UsageError
from tagcli.options import option


@dataclass(frozen=True)
class RegressionOptions(FeatureOptions):
    """A regression head's training options: the feature head's, valid ranges and recalibration."""

    target_ranges: dict[str, str] = option(
        {},
        "a target's valid range, e.g. 0,1 for QED (either side may be empty); predictions are clipped to it",
        flag="--target-range",
        form="LOW,HIGH or TARGET=LOW,HIGH",
    )
    calibrate: bool = option(
        False,
        "map each prediction to a + b·prediction fitted on the validation rows (for a validation split "
        "shaped like the rows to score, e.g. a cold split)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for text in self.target_ranges.values():
            _range_text(text)

    def for_tag_training(self) -> RegressionOptions:
        """The tag trains with an uncalibrated linear head (see `FeatureOptions.for_tag_training`)."""
        return dataclasses.replace(super().for_tag_training(), calibrate=False)

    def ranges(self, targets: Sequence[str]) -> dict[str, list[float | None]]:
        """`target_ranges` as [low, high] per target ("*": the only target), each side None when open."""
        named = {targets[0] if name == "*" and len(targets) == 1 else name: t for name, t in self.target_ranges.items()}
        unknown = sorted(set(named) - set(targets))
        if unknown:
            raise UsageError(f"--target-range names {', '.join(unknown)}, which is not a --target")
        return {target: _range_text(text) for target, text in named.items()}


def _range_text(text: str) -> list[float | None]:
    try:
        low, high = (float(v) if v.strip() else None for v in str(text).split(","))
    except ValueError:
        raise UsageError(f"--target-range takes LOW,HIGH (or TARGET=LOW,HIGH), not {text!r}") from None
    if low is not None and high is not None and not low < high:
        raise UsageError(f"--target-range {text}: LOW must be below HIGH")
    return [low, high]
