"""Linear probe: a head on the frozen model's readout of the plain inputs, no tags, as a baseline."""

from __future__ import annotations

from tagcli.core.heads import HEADS
from tagcli.core.prompt import PromptTemplate
from tagcli.errors import UsageError
from tagcli.train.methods.base import TrainingMethod


class LinearProbe(TrainingMethod):
    """The head's closed-form (ridge) fit is already the best linear head: no gradient steps."""

    name = "linear-probe"
    about = "no tags: a head on the frozen base model's reading of the plain inputs (a baseline)"
    baseline = True

    def validate(self) -> None:
        kind = HEADS.get(self.config.task)
        if kind is not None and kind.objective != "readout":
            raise UsageError("a linear probe has no text output: use --method tag-llm or prompt-tuning for --task text")

    @property
    def tag_length(self) -> int:
        return 0

    def default_template(self) -> PromptTemplate:
        return PromptTemplate(" ".join(f"{{input:{d}}}" for d in self.config.domains))

    def check_template(self, template: PromptTemplate) -> None:
        if template.tags:
            self.refuse(template, "a linear-probe template has no tags")
