"""Training methods, one module each, registered by name (`--method`).

    tag_llm.py        the paper's method: domain tags before inputs, the function tag after them
    prompt_tuning.py  baseline: one soft prompt of the same budget in front of the inputs
    linear_probe.py   baseline: the head alone on the plain prompt's readout

A new method is a `TrainingMethod` subclass in its own module plus one `register_method` call.
"""

from __future__ import annotations

from tagcli.registry import Registry
from tagcli.train.config import TrainConfig
from tagcli.train.methods.base import TrainingMethod
from tagcli.train.methods.linear_probe import LinearProbe
from tagcli.train.methods.prompt_tuning import PromptTuning
from tagcli.train.methods.tag_llm import TagLLM

METHODS: Registry[type[TrainingMethod]] = Registry("method")


def register_method(method: type[TrainingMethod]) -> type[TrainingMethod]:
    """Make a method available to `train` and `--method` by its name (usable as a decorator)."""
    return METHODS.register(method.name)(method)


for _method in (TagLLM, PromptTuning, LinearProbe):
    register_method(_method)


def method_for(config: TrainConfig) -> TrainingMethod:
    return METHODS.choose(config.method)(config)


__all__ = ["METHODS", "TrainingMethod", "method_for", "register_method"]
