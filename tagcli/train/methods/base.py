"""The training-method interface: how a function is conditioned, and the readout its loss flows through.

A method owns its prompt layout (default template and the rules a custom `--template` must
follow), the length of the tag it learns, and how a training batch reaches the readout hidden
state (which parts run without grad). Stages, heads and the loop are shared by every method.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from tagcli.core.model import TaggedModel
from tagcli.core.prompt import EncodedRow, PromptTemplate, collate
from tagcli.errors import UsageError
from tagcli.train.config import TrainConfig


class TrainingMethod:
    name: ClassVar[str]

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.validate()

    def validate(self) -> None:
        """Refuse configurations this method cannot train (default: all are fine)."""

    @property
    def tag_length(self) -> int:
        """Vectors of the tag this method learns (0: it learns no tag, only the head)."""
        return self.config.tag_length

    def default_template(self) -> PromptTemplate:
        raise NotImplementedError

    def check_template(self, template: PromptTemplate) -> None:
        """Raise UsageError unless `template` has the layout this method needs."""

    def template(self) -> PromptTemplate:
        template = PromptTemplate(self.config.template) if self.config.template else self.default_template()
        template.validate()
        if sorted(set(template.inputs)) != sorted(set(self.config.domains)):
            raise UsageError(
                f"prompt template {template.text!r} does not fit: "
                f"its inputs {template.inputs} differ from the domains {self.config.domains}"
            )
        self.check_template(template)
        return template

    def readout(self, model: TaggedModel, rows: list[EncodedRow], pad_id: int) -> torch.Tensor:
        """Readout hidden states [n, d] of training rows, with a graph back to the learned tag."""
        return model.readout(collate(rows, pad_id).to(model.lm.device))

    def refuse(self, template: PromptTemplate, problem: str) -> None:
        raise UsageError(f"prompt template {template.text!r} does not fit the {self.name} method: {problem}")
