"""The head interface: everything that depends on what kind of output a function produces.

A head kind declares its output columns and their Arrow types, how it reads the model out (the
hidden state at the function tag, or generation by the LM's own head), how raw outputs become
user-facing values, how labels are parsed, its training loss and closed-form fit, and its
metrics. The scorer, the file runner and the training loop only ever ask the head; a new kind
is one module and one `register_head` call (see `tagcli.core.heads`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol

import pyarrow as pa
import torch
from torch import nn

from tagcli.core.readout import PAPER, ReadoutSpec
from tagcli.options import Options

Columns = dict[str, Any]  # output column -> a tensor [n] or a list of n values


def card_number(value: Any) -> str:
    """A number as model cards write it (4 significant digits); None as nothing."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Readout(Protocol):
    """What the model offers a head for a batch of rows: its readout features, and generation from them."""

    hidden: torch.Tensor  # [n, width] the head's readout (`Head.readout`) of each row
    extra: torch.Tensor | None  # [n, k] the head's extra features of each row (`Head.input_features`)

    def generate(self, max_new_tokens: int) -> list[list[int]]:
        """Greedy answer token ids per row, continuing after the prompt."""
        ...


class Head(nn.Module):
    type_name: ClassVar[str]
    # "readout": the loss is on the head's output from the readout hidden state;
    # "next-token": the LM's own next-token loss on the answer that follows the prompt.
    objective: ClassVar[Literal["readout", "next-token"]] = "readout"
    # The validation metric (lower is better) that picks the best training step.
    select_by: ClassVar[str]
    # Why a row's label cell, not blank, still gives no label (training counts such rows by this reason).
    unusable_label: ClassVar[str] = "a label this head cannot use"
    # The picture of an evaluation that fits this kind (`tagcli.plots`), or None.
    plot_kind: ClassVar[str | None] = None
    # Which hidden states the head reads (an instance may choose another; recorded in its spec).
    readout: ReadoutSpec = PAPER
    # The kind's own training options (a frozen `tagcli.options.Options`): flags of `tagcli train`, keys
    # of its `--config` file, hyperparameters recorded in the pack, a line of its model card.
    Options: ClassVar[type[Options]] = Options

    # -- inputs ----------------------------------------------------------------------------
    def input_features(self, texts: Mapping[str, Sequence[str]]) -> tuple[torch.Tensor | None, list[str | None]]:
        """Features the head reads beside the model's readout, computed from the rows' cleaned input
        texts (slot → texts): [n, k] or None, and per row why it has none (such a row gets no prediction)."""
        return None, [None] * len(next(iter(texts.values()), []))

    # -- outputs ---------------------------------------------------------------------------
    def output_columns(self) -> list[str]:
        return list(self.output_types())

    def output_types(self) -> dict[str, pa.DataType]:
        raise NotImplementedError

    def ranked_columns(self) -> list[str]:
        """Output columns a reference distribution may rank: numbers whose place among the predictions
        for known inputs means something (`tagcli.packs.reference`; default: none)."""
        return []

    def predict(self, readout: Readout) -> Columns:
        """Raw output columns for a batch (tensors, or token ids for generated text)."""
        raise NotImplementedError

    def decode(self, raw: Columns, tokenizer: Any) -> dict[str, list]:
        """User-facing values per column: floats and strings, one per row."""
        return {c: v.float().cpu().tolist() if isinstance(v, torch.Tensor) else list(v) for c, v in raw.items()}

    def clip(self, decoded: dict[str, list]) -> dict[str, list]:
        """Bound decoded values to the valid ranges the head declares (default: none declared)."""
        return decoded

    def finish(self, decoded: dict[str, list], clip: bool = True) -> tuple[dict[str, list], list[str | None]]:
        """The one rule `predict`, `eval` and training validation share: per row why its values are no
        prediction (judged on the raw values), then the values bound to their declared ranges."""
        problems = self.row_problems(decoded)
        return (self.clip(decoded) if clip else decoded), problems

    def row_problems(self, decoded: Mapping[str, list]) -> list[str | None]:
        """Per row, why its decoded values are not a prediction (None: fine). A non-finite number never is."""
        floats = [c for c, kind in self.output_types().items() if pa.types.is_floating(kind)]
        n = len(next(iter(decoded.values()), []))
        finite = [all(math.isfinite(decoded[c][k]) for c in floats) for k in range(n)]
        return [None if ok else "the model produced a non-finite value" for ok in finite]

    def check_state(self) -> str | None:
        """Why the loaded tensors cannot come from training (None: they can). Called by the pack loader."""
        return None

    # -- training --------------------------------------------------------------------------
    @classmethod
    def for_training(cls, hidden_size: int, targets: list[str], label_cells: Mapping[str, list], options: Any) -> Head:
        """A new, untrained head for `targets` (label columns), given the training rows' label cells and
        the kind's `Options` (resolved)."""
        raise NotImplementedError

    @property
    def n_labels(self) -> int:
        """How many label columns this head is trained and evaluated against."""
        return 1

    def parse_labels(self, label_cells: Sequence[list]) -> list[Any]:
        """One label per row from the label columns' cells (None where the row has no usable label)."""
        raise NotImplementedError

    def expected_labels(self) -> str:
        """What a label cell must hold for this head (a hint for files whose labels it cannot use)."""
        return "check the --target column"

    def is_complete(self, label: Any) -> bool:
        """Whether a parsed label can be trained on (every target present)."""
        return label is not None

    def label_problem(self, labels: list[Any]) -> str | None:
        """Why the training rows' labels (complete ones) give nothing to learn (None: they do)."""
        return None

    def fit(self, hidden: torch.Tensor, labels: list[Any], all_labels: list[Any]) -> None:
        """Closed-form initialisation from readout hidden states of a sample of rows (default: none)."""

    def fit_final(
        self, train: torch.Tensor, labels: list[Any], validation: torch.Tensor, val_labels: list[Any], seed: int
    ) -> None:
        """The head's final fit on cached readout features of all training rows (labels complete),
        with validation rows for early stopping and calibration (default: keep the trained head)."""

    def loss(self, hidden: torch.Tensor, labels: list[Any]) -> torch.Tensor:
        raise NotImplementedError

    def answer_tokens(self, label: Any, tokenizer: Any) -> list[int]:
        """Next-token objective: the token ids the model should write after the prompt."""
        raise NotImplementedError

    # -- evaluation ------------------------------------------------------------------------
    def target_metrics(self, labels: list[Any], predicted: Mapping[str, list]) -> list[dict[str, Any]]:
        """Metrics per label column, from parsed labels and decoded predictions of the same rows."""
        raise NotImplementedError

    def summarize(self, per_target: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        """The metrics a pack records and training selects by, from `target_metrics` keyed by column."""
        return dict(next(iter(per_target.values())))

    # -- the model card --------------------------------------------------------------------
    @classmethod
    def card_predicts(cls, spec: Mapping[str, Any], readout: str) -> str:
        """What a pack with this head spec predicts, for the card's Task section ("a number (`y`) ...")."""
        return f"a {cls.type_name} head's outputs"

    @classmethod
    def card_limits(cls, spec: Mapping[str, Any]) -> list[str]:
        """The card's limits of this head spec, one Markdown bullet each."""
        return []

    @classmethod
    def card_unlike(cls, spec: Mapping[str, Any]) -> str:
        """What flags inputs unlike the training rows, for the card's limits ("nothing flags them")."""
        return "nothing flags them"

    # -- the pack format -------------------------------------------------------------------
    def to_spec(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hidden_size: int) -> Head:
        raise NotImplementedError

    def upgrade_state(self, spec: Mapping[str, Any], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tensors of a pack written by an older tagcli, in this version's names (default: unchanged)."""
        return state
