"""Tag-LLM (Shen et al. 2024): domain tags in front of each input, the function tag after them all."""

from __future__ import annotations

from tagcli.core.prompt import PromptTemplate
from tagcli.train.methods.base import TrainingMethod


class TagLLM(TrainingMethod):
    """`{tag:D}{input:D}` per domain, then `{tag:F}`; stage 1 learns a domain tag on `{tag:D}{input:D}`."""

    name = "tag-llm"
    about = "a learned function tag after learned domain tags around each input; the base model stays frozen"

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
