"""The training-method interface: how a function is conditioned, and the readout its loss flows through.

A method owns its prompt layout (default template and the rules a custom `--template` must
follow), the length of the tag it learns, and whether everything before the function suffix is
frozen (then the loop computes those contexts once and back-propagates through the suffix only).
Stages, heads and the loop are shared by every method.
"""

from __future__ import annotations

from typing import ClassVar

from tagcli.core.prompt import PromptTemplate
from tagcli.errors import UsageError
from tagcli.options import Options
from tagcli.train.config import TrainConfig


class TrainingMethod:
    name: ClassVar[str]
    about: ClassVar[str]  # what the method does, in a few words (the model card's Method line)
    baseline: ClassVar[bool] = False  # a method the quality table compares Tag-LLM with
    # The method's own training options (a frozen `tagcli.options.Options`: flags, TOML keys, recorded
    # values, a line of the model card).
    Options: ClassVar[type[Options]] = Options
    # True when the learned tag follows the inputs: the contexts (prefix + inputs) do not depend on it.
    frozen_context: ClassVar[bool] = True

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.validate()

    def validate(self) -> None:
        """Refuse configurations this method cannot train (default: all are fine)."""

    @classmethod
    def card_limits(cls) -> list[str]:
        """What the model card says about packs this method trained (Markdown bullets)."""
        if cls.baseline:
            return [f"- {cls.name} is a baseline method: compare against the tag-llm pack for the same task."]
        return []

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

    def refuse(self, template: PromptTemplate, problem: str) -> None:
        raise UsageError(f"prompt template {template.text!r} does not fit the {self.name} method: {problem}")
