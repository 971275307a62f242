"""What a training run depends on: `TrainConfig`, the run's own settings (also the keys of a `--config`
TOML file and the `tagcli train` flags), with the head kind's and the method's typed options inside,
and the three stages of Tag-LLM as data.

The head kind (`--task`) and the method (`--method`) each declare an `Options` dataclass
(`tagcli.options`); `TrainConfig.from_flat` sorts flat keys (flags, TOML keys) into the run's fields
and those two, so a new head kind's option becomes a flag, a TOML key and a recorded hyperparameter
without an edit here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tagcli.basemodel.resolve import DEFAULT_BASE_MODEL
from tagcli.core.heads import HEADS
from tagcli.errors import UsageError
from tagcli.options import Options, build, check_bounds, field_names, option
from tagcli.packs.manifest import VERSION_RE


@dataclass(frozen=True)
class Stage:
    """One stage of Tag-LLM training: which tag it learns and how many domains its rows have."""

    number: int
    trains: Literal["domain", "function"]
    min_domains: int
    max_domains: int | None  # None: any number
    help: str


STAGES = {
    1: Stage(1, "domain", 1, 1, "Learn a domain tag by next-token prediction on unlabeled domain text."),
    2: Stage(2, "function", 1, 1, "Learn a function tag + head on labeled rows of one domain (domain tag frozen)."),
    3: Stage(
        3,
        "function",
        1,
        None,
        "Learn a function tag + head on rows with several domains, e.g. --domain protein --domain smiles.",
    ),
}


@dataclass
class TrainConfig:
    """The run's own settings; the head's and the method's options are typed objects inside."""

    stage: int = option(2, "1: domain tag, 2: single-domain function tag, 3: cross-domain function tag", scope="api")
    data: str = option("", "training table (CSV or Parquet)")
    out: str = option("", "pack directory to write (an existing pack is replaced only with --force)")
    domains: list[str] = option([], "domain tags, in prompt order", flag="--domain")
    function: str | None = option(None, "function tag name (stages 2 and 3)", scope="function")
    targets: list[str] = option([], "label column(s)", flag="--target", scope="function")
    task: str = option(
        "regression",
        "head kind: regression, classification or text (the LM writes the answer after the tag)",
        scope="function",
    )
    method: str = option(
        "tag-llm",
        "tag-llm, or a baseline in the same harness: prompt-tuning (one soft prompt of p·k vectors in front) "
        "or linear-probe (head only, no tags)",
        scope="function",
        recorded=True,
    )
    columns: dict[str, str] = option(
        {}, "domain or input kind → input column", flag="--column", form="COL or DOMAIN=COL"
    )
    inputs: dict[str, str] = option(
        {},
        "input slot → column, e.g. drug_a=smiles_1 (default: a column named like the slot)",
        flag="--input",
        form="SLOT=COLUMN",
        scope="function",
    )
    symmetric: bool = option(
        False, "the template's two input slots of one domain may trade places (the pack says so)", scope="function"
    )
    input_kind: str | None = option(
        None, "stage 1: smiles, protein or text (default: the domain name if known)", scope="domain"
    )
    max_tokens: int = option(512, "stage 1: longest input in tokens the domain accepts", minimum=1, scope="domain")
    val: str | None = option(None, "validation table; default: a split of --data")
    val_fraction: float = option(
        0.1, "share of --data held out for validation when --val is not given", minimum=0.01, maximum=0.9
    )
    max_rows: int | None = option(None, "use only the first N training rows", minimum=1)
    max_val_rows: int | None = option(1000, "use only the first N validation rows", minimum=1)
    base_model: str = option(DEFAULT_BASE_MODEL, "base model name, HF id or dir")
    template: str | None = option(None, "prompt template; default: the method's own layout")
    tag_length: int = option(10, "p, vectors per tag", minimum=1, maximum=1024, recorded=True)
    epochs: float = option(1.0, "passes over the training rows", minimum=0.01, recorded=True)
    max_steps: int | None = option(
        None, "stop after this many optimizer steps (0: no tag steps, head only)", minimum=0, recorded=True
    )
    batch_size: int = option(16, "rows per micro-batch", minimum=1, recorded=True)
    grad_accum: int = option(1, "micro-batches per optimizer step", minimum=1, recorded=True)
    lr: float = option(3e-3, "learning rate of the tag vectors", minimum=1e-8, maximum=10.0, recorded=True)
    head_lr: float = option(
        1e-4,
        "learning rate of the head the tag trains with",
        minimum=1e-8,
        maximum=10.0,
        scope="function",
        recorded=True,
    )
    seed: int = option(0, "seed for initialisation, split and data order", minimum=0)
    device: str = option("auto", "auto, cpu, cuda, ...")
    dtype: str = option("auto", "auto, float32, bfloat16")
    eval_every: int = option(50, "validate every N optimizer steps", minimum=1, recorded=True)
    patience: int = option(5, "stop after N validations without improvement (0: never)", minimum=0, recorded=True)
    checkpoint_every: int = option(50, "checkpoint every N optimizer steps", minimum=1)
    resume: bool = option(False, "continue from OUT.ckpt if it exists")
    force: bool = option(False, "replace the pack already at --out (only a tagcli pack is ever replaced)")
    tag_rows: int = option(
        2048, "rows whose frozen contexts the tag steps cycle through", minimum=1, scope="function", recorded=True
    )
    init_samples: int = option(
        2048,
        "rows used to standardise and ridge-fit the head the tag trains with",
        minimum=1,
        scope="function",
        recorded=True,
    )
    refit_head: bool = option(True, "refit a regression head by ridge at every validation", scope="api")
    pack_dirs: list[str] = option([], "extra folders searched for domain packs", flag="--pack-dir")
    version: str = option("0.1.0", "version written into the pack")
    description: str = option("", "one line describing the pack")
    head_options: Any = None  # the head kind's Options (a mapping is turned into them)
    method_options: Any = None  # the method's Options (likewise)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise UsageError(f"stage must be one of {', '.join(map(str, STAGES))}, not {self.stage}")
        for required in ("data", "out"):
            if not getattr(self, required):
                raise UsageError(f"--{required} is required (on the command line or in --config)")
        check_bounds(self)
        stage = self.stage_info
        if not self.domains:
            raise UsageError("name at least one --domain")
        if len(self.domains) < stage.min_domains or (
            stage.max_domains is not None and len(self.domains) > stage.max_domains
        ):
            raise UsageError(
                "stage 1 trains one domain tag at a time"
                if stage.trains == "domain"
                else "stage 2 has one domain; use stage 3 for several"
            )
        if stage.trains == "function" and (not self.function or not self.targets):
            raise UsageError(f"stage {self.stage} needs --function and --target")
        repeated = sorted({t for t in self.targets if self.targets.count(t) > 1})
        if repeated:
            raise UsageError(f"--target {repeated[0]} is given more than once")
        if stage.trains == "domain" and self.method != "tag-llm":
            raise UsageError("baselines (--method) are for stages 2 and 3")
        if not VERSION_RE.match(str(self.version)):
            raise UsageError(f"bad --version {self.version!r}: up to 64 letters, digits, '.', '+', '_' and '-'")
        self.head_options = self._typed(self.head_options, self.head_kind.Options, f"the {self.task} head")
        self.method_options = self._typed(self.method_options, self.method_kind.Options, f"the {self.method} method")

    def _typed(self, given: Any, cls: type, owner: str) -> Any:
        if given is None or isinstance(given, Mapping):
            values = dict(given or {})
            if values and not self.trains_function:
                raise UsageError(f"stage {self.stage} trains a domain tag: it has no head or method options")
            return build(cls, values, owner)
        if not isinstance(given, cls):
            raise UsageError(f"{owner} takes {cls.__name__}, not {type(given).__name__}")
        check_bounds(given)
        return given

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> TrainConfig:
        """A config from flat keys (CLI flags, TOML keys, keyword arguments): the run's fields, then the
        chosen head kind's options and the method's; a key that is none of these is refused, naming who
        takes it."""
        values = dict(values)
        own = {k: values.pop(k) for k in list(values) if k in field_names(cls)}
        kind = HEADS.choose(own.get("task", "regression"))
        method = _methods().choose(own.get("method", "tag-llm"))
        head = dict(own.pop("head_options", None) or {})
        head |= {k: values.pop(k) for k in list(values) if k in field_names(kind.Options)}
        chosen = dict(own.pop("method_options", None) or {})
        chosen |= {k: values.pop(k) for k in list(values) if k in field_names(method.Options)}
        if values:
            raise UsageError(_not_here(next(iter(values)), own.get("task", "regression"), method.name))
        return cls(**own, head_options=head, method_options=chosen)

    def flat(self) -> dict[str, Any]:
        """The run's fields with the head's and the method's options beside them (what a pack records)."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        own.pop("head_options"), own.pop("method_options")
        return own | dataclasses.asdict(self.head_options) | dataclasses.asdict(self.method_options)

    @property
    def head_kind(self) -> type:
        return HEADS.choose(self.task) if self.trains_function else _NoHead

    @property
    def method_kind(self) -> type:
        return _methods().choose(self.method)

    @property
    def stage_info(self) -> Stage:
        return STAGES[self.stage]

    @property
    def trains_function(self) -> bool:
        return self.stage_info.trains == "function"

    @property
    def tag_name(self) -> str:
        """The tag this run learns: the domain's (stage 1) or the function's."""
        return str(self.function) if self.trains_function else self.domains[0]


class _NoHead:
    """What a domain stage trains instead of a head: nothing with options."""

    Options = Options


def _methods():
    from tagcli.train.methods import METHODS  # the methods import this module

    return METHODS


def _not_here(key: str, task: str, method: str) -> str:
    """Why an option does not apply: which head kinds or methods take it."""
    owners = [f"the {name} head" for name, kind in HEADS.items() if key in field_names(kind.Options)]
    owners += [f"the {name} method" for name, m in _methods().items() if key in field_names(m.Options)]
    flag = "--" + key.replace("_", "-")
    if not owners:
        return f"unknown option {flag}"
    return f"{flag} is an option of {' and '.join(owners)}; this run trains a {task} head with the {method} method"
