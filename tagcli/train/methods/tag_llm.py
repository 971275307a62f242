"""Tag-LLM (Shen et al. 2024): domain tags in front of each input, the function tag after them all."""

from __future__ import annotations

import torch

from tagcli.core.model import TaggedModel
from tagcli.core.prompt import EncodedRow, PromptTemplate, collate
from tagcli.train.methods.base import TrainingMethod


class TagLLM(TrainingMethod):
    """`{tag:D}{input:D}` per domain, then `{tag:F}`; stage 1 learns a domain tag on `{tag:D}{input:D}`."""

    name = "tag-llm"

    def default_template(self) -> PromptTemplate:
        domains = "".join(f"{{tag:{d}}}{{input:{d}}}" for d in self.config.domains)
        return PromptTemplate(domains + (f"{{tag:{self.config.function}}}" if self.config.trains_function else ""))

    def check_template(self, template: PromptTemplate) -> None:
        domains = self.config.domains
        if not self.config.trains_function:
            # Stage-1 targets are the input's own tokens, taken from the end of each row.
            if template.tags != domains or template.inputs != domains or template.segments[-1].kind != "input":
                self.refuse(template, "a stage-1 template needs one {tag:D} and ends with {input:D}")
            return
        function = str(self.config.function)
        if template.ends_with_tag != function:
            self.refuse(template, f"it must end with the function tag {{tag:{function}}}")
        if not set(template.tags) <= set(domains) | {function}:
            self.refuse(template, "it uses tags that are neither its domains nor its function")

    def readout(self, model: TaggedModel, rows: list[EncodedRow], pad_id: int) -> torch.Tensor:
        # The function tag closes the prompt and everything before it is frozen: run that prefix
        # without grad (left-padded) and back-propagate through the p tag positions only.
        p = self.tag_length
        prefixes = [EncodedRow(r.token_ids[: r.readout + 1 - p], r.slots[: r.readout + 1 - p], 0) for r in rows]
        return model.readout_after_prefix(collate(prefixes, pad_id, "left").to(model.lm.device), self.config.tag_name)
