"""Text answers: the LM's own head writes the answer after the function tag (no parameters)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from rapidfuzz.distance import Levenshtein

from tagcli.core.heads.base import Columns, Head, Readout
from tagcli.core.heads.classification import class_label
from tagcli.errors import PackError, UsageError
from tagcli.options import Options, option

MAX_ANSWER_TOKENS = 4096  # a longer answer is no prediction; a larger limit in a pack is a broken spec


@dataclass(frozen=True)
class TextOptions(Options):
    max_answer_tokens: int = option(32, "longest answer generated, in tokens", minimum=1, maximum=MAX_ANSWER_TOKENS)


class TextHead(Head):
    """A text answer generated greedily by the LM's own head after the function tag."""

    type_name = "text"
    Options = TextOptions
    objective = "next-token"
    select_by = "loss"  # next-token loss of the reference answers

    def __init__(self, target: str, max_new_tokens: int = 32) -> None:
        super().__init__()
        self.target = target
        self.max_new_tokens = max_new_tokens

    def output_types(self) -> dict[str, pa.DataType]:
        return {f"pred_{self.target}": pa.string()}

    def predict(self, readout: Readout) -> Columns:
        return {f"pred_{self.target}": readout.generate(self.max_new_tokens)}

    def decode(self, raw: Columns, tokenizer: Any) -> dict[str, list]:
        return {c: tokenizer.batch_decode(ids, skip_special_tokens=True) for c, ids in raw.items()}

    @classmethod
    def for_training(
        cls, hidden_size: int, targets: list[str], label_cells: Mapping[str, list], options: TextOptions
    ) -> TextHead:
        if len(targets) != 1:
            raise UsageError("a text function has one --target column (the answer)")
        return cls(targets[0], options.max_answer_tokens)

    def parse_labels(self, label_cells: Sequence[list]) -> list[Any]:
        return [class_label(v) for v in label_cells[0]]

    def answer_tokens(self, label: Any, tokenizer: Any) -> list[int]:
        """The answer's tokens and EOS: what the model learns to write after the prompt."""
        return tokenizer(label, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]

    def target_metrics(self, labels: list[Any], predicted: Mapping[str, list]) -> list[dict[str, Any]]:
        pairs = [
            (label, str(answer).strip())
            for label, answer in zip(labels, predicted[f"pred_{self.target}"])
            if label is not None
        ]
        exact = sum(label == answer for label, answer in pairs) / len(pairs) if pairs else float("nan")
        # Character error rate: edits (insert, delete, substitute) per character of the true answers.
        characters = sum(len(label) for label, _ in pairs)
        edits = sum(Levenshtein.distance(label, answer) for label, answer in pairs)
        return [
            {
                "n": len(pairs),
                "exact_match": exact,
                "char_error_rate": edits / characters if characters else float("nan"),
            }
        ]

    @classmethod
    def card_predicts(cls, spec: Mapping[str, Any], readout: str) -> str:
        limit = spec.get("max_new_tokens")
        return f"`{spec.get('target')}` as text the base model's own head writes (at most {limit} tokens)"

    @classmethod
    def card_limits(cls, spec: Mapping[str, Any]) -> list[str]:
        return ["- Answers are generated text: check them; they may be any string the base model writes."]

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type_name, "target": self.target, "max_new_tokens": self.max_new_tokens}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hidden_size: int) -> TextHead:
        limit = spec.get("max_new_tokens", 32)
        if not isinstance(spec.get("target"), str) or type(limit) is not int or not 1 <= limit <= MAX_ANSWER_TOKENS:
            raise PackError(f"text head spec needs 'target' and a 'max_new_tokens' from 1 to {MAX_ANSWER_TOKENS}")
        return cls(spec["target"], limit)
