"""Prompt tuning (Lester et al. 2021): one soft prompt in front of the plain inputs, as a baseline.

It gets the parameter budget of all k + 1 tags of the Tag-LLM prompt (p·(k+1) vectors), so the
comparison isolates the layout, not the number of trained vectors.
"""

from __future__ import annotations

from tagcli.core.prompt import PromptTemplate
from tagcli.train.methods.base import TrainingMethod


class PromptTuning(TrainingMethod):
    name = "prompt-tuning"
    about = "one learned soft prompt in front of the plain inputs (a baseline; the base model stays frozen)"
    baseline = True
    frozen_context = False  # the soft prompt is in front: gradients flow through whole rows

    @property
    def tag_length(self) -> int:
        return self.config.tag_length * (len(self.config.domains) + 1)

    def default_template(self) -> PromptTemplate:
        inputs = " ".join(f"{{input:{d}}}" for d in self.config.domains)
        return PromptTemplate(f"{{tag:{self.config.function}}}{inputs}")

    def check_template(self, template: PromptTemplate) -> None:
        if template.tags != [self.config.function]:
            self.refuse(template, f"it has exactly one tag, {{tag:{self.config.function}}}")
