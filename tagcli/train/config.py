"""What a training run depends on: `TrainConfig` (also the keys of a `--config` TOML file and the CLI
options) and the three stages of Tag-LLM as data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tagcli.basemodel.resolve import DEFAULT_BASE_MODEL
from tagcli.core.readout import ReadoutSpec
from tagcli.errors import UsageError
from tagcli.packs.format import VERSION_RE


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
    """Everything a training run depends on; also the keys a `--config` TOML file may hold."""

    stage: int = field(metadata={"help": "1: domain tag, 2: single-domain function tag, 3: cross-domain function tag"})
    data: str = field(metadata={"help": "training table (CSV or Parquet)"})
    out: str = field(metadata={"help": "pack directory to write"})
    domains: list[str] = field(default_factory=list, metadata={"help": "domain tags, in prompt order"})
    function: str | None = field(default=None, metadata={"help": "function tag name (stages 2 and 3)"})
    targets: list[str] = field(default_factory=list, metadata={"help": "label column(s)"})
    target_ranges: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "a target's valid range, e.g. 0,1 for QED (either side may be empty); predictions are clipped to it"
        },
    )
    task: str = field(
        default="regression",
        metadata={
            "help": "head kind: regression, classification or text (the LM writes the answer after the function tag)"
        },
    )
    max_answer_tokens: int = field(default=32, metadata={"help": "text task: longest answer generated, in tokens"})
    method: str = field(
        default="tag-llm",
        metadata={
            "help": "tag-llm, or a baseline in the same harness: prompt-tuning (one soft prompt of p·k vectors in "
            "front) or linear-probe (head only, no tags)"
        },
    )
    columns: dict[str, str] = field(default_factory=dict, metadata={"help": "domain or input kind → input column"})
    inputs: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "input slot → column, e.g. drug_a=smiles_1 (default: a column named like the slot)"},
    )
    symmetric: bool = field(
        default=False,
        metadata={"help": "the template's two input slots of one domain may trade places (the pack says so)"},
    )
    input_kind: str | None = field(
        default=None, metadata={"help": "stage 1: smiles, protein or text (default: the domain name if known)"}
    )
    max_tokens: int = field(default=512, metadata={"help": "stage 1: longest input in tokens the domain accepts"})
    val: str | None = field(default=None, metadata={"help": "validation table; default: a split of --data"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of --data held out when --val is not given"})
    max_rows: int | None = field(default=None, metadata={"help": "use only the first N training rows"})
    max_val_rows: int | None = field(default=1000, metadata={"help": "use only the first N validation rows"})
    base_model: str = field(default=DEFAULT_BASE_MODEL, metadata={"help": "base model name, HF id or dir"})
    template: str | None = field(default=None, metadata={"help": "prompt template; default: the method's own layout"})
    tag_length: int = field(default=10, metadata={"help": "p, vectors per tag"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training rows"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps"})
    batch_size: int = field(default=16, metadata={"help": "rows per micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate of the tag vectors"})
    head_lr: float = field(default=1e-4, metadata={"help": "learning rate of the head"})
    seed: int = field(default=0, metadata={"help": "seed for initialisation, split and data order"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, ..."})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16"})
    eval_every: int = field(default=50, metadata={"help": "validate every N optimizer steps"})
    patience: int = field(default=5, metadata={"help": "stop after N validations without improvement (0: never)"})
    checkpoint_every: int = field(default=50, metadata={"help": "checkpoint every N optimizer steps"})
    resume: bool = field(default=False, metadata={"help": "continue from OUT.ckpt if it exists"})
    readout: str = field(
        default="tag-last",
        metadata={
            "help": "hidden states the head reads: POOL[+POOL][@LAYERS] with pools tag-last (the paper), tag-mean, "
            "input-mean and decoder layers from 1, e.g. input-mean+tag-mean@4,8,12,16 (default: the final layer)"
        },
    )
    members: int = field(default=1, metadata={"help": "heads in the ensemble (bootstrap samples); >1 adds pred_*_std"})
    hidden_units: int = field(default=0, metadata={"help": "hidden units of each head member's MLP (0: linear)"})
    domain_components: int = field(
        default=16, metadata={"help": "principal axes of the applicability-domain summary (0: none)"}
    )
    calibrate: bool = field(
        default=False,
        metadata={
            "help": "regression: map each prediction to a + b·prediction fitted on the validation rows "
            "(for a validation split shaped like the rows to score, e.g. a cold split)"
        },
    )
    tag_rows: int = field(default=4096, metadata={"help": "rows whose frozen contexts tag steps cycle through"})
    init_samples: int = field(default=512, metadata={"help": "rows used to standardise and ridge-fit the head"})
    refit_head: bool = field(default=True, metadata={"help": "refit a regression head by ridge at every validation"})
    pack_dirs: list[str] = field(default_factory=list, metadata={"help": "extra folders searched for domain packs"})
    version: str = field(default="0.1.0", metadata={"help": "version written into the pack"})
    description: str = field(default="", metadata={"help": "one line describing the pack"})

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise UsageError(f"stage must be one of {', '.join(map(str, STAGES))}, not {self.stage}")
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
        if stage.trains == "domain" and self.method != "tag-llm":
            raise UsageError("baselines (--method) are for stages 2 and 3")
        if not VERSION_RE.match(str(self.version)):
            raise UsageError(f"bad --version {self.version!r}: up to 64 letters, digits, '.', '+', '_' and '-'")
        self.readout_spec()
        if min(self.members, self.tag_rows) < 1 or min(self.hidden_units, self.domain_components) < 0:
            raise UsageError("members and tag rows must be positive; hidden units and domain components not negative")
        if min(self.batch_size, self.grad_accum, self.tag_length, self.eval_every, self.checkpoint_every) < 1:
            raise UsageError("batch size, grad accumulation, tag length and step intervals must be positive")
        if self.calibrate and self.task != "regression":
            raise UsageError(f"--calibrate recalibrates regression predictions; this is a {self.task} task")

    def readout_spec(self) -> ReadoutSpec:
        try:
            return ReadoutSpec.parse(self.readout)
        except ValueError as exc:
            raise UsageError(f"--readout {self.readout!r}: {exc}") from None

    def ranges(self) -> dict[str, list[float | None]]:
        """`target_ranges` as [low, high] per target ("*": the only target), each side None when open."""
        ranges = {}
        for name, text in self.target_ranges.items():
            target = self.targets[0] if name == "*" and len(self.targets) == 1 else name
            try:
                low, high = (float(v) if v.strip() else None for v in str(text).split(","))
            except ValueError:
                raise UsageError(f"--target-range takes LOW,HIGH (or TARGET=LOW,HIGH), not {text!r}") from None
            if low is not None and high is not None and not low < high:
                raise UsageError(f"--target-range {text}: LOW must be below HIGH")
            ranges[target] = [low, high]
        return ranges

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
