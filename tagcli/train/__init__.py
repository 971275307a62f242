"""The training loop: Tag-LLM's three stages over a frozen base model, each ending in a tag pack.

    stage 1  domain tag   next-token loss on the domain's own tokens, "{tag:D}{input:D}"
    stage 2  function tag + head on labeled rows of one domain, domain tag frozen
    stage 3  function tag + head on rows with several domains (e.g. protein + SMILES pairs)

Only tag vectors and heads get gradients. In stages 2 and 3 the function tag comes after the
input, so the prefix runs under no_grad and only the tag positions are back-propagated
(`TaggedModel.readout_after_prefix`). Checkpoints hold tensors in safetensors and counters in
JSON (never pickles); `resume` continues from the last one exactly.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from safetensors.torch import load_file, save_file

from tagcli.basemodel.load import BaseModel, load_base_model
from tagcli.basemodel.resolve import DEFAULT_BASE_MODEL
from tagcli.core.domains import INPUT_KINDS, DomainInput
from tagcli.errors import UsageError
from tagcli.core.heads import ClassificationHead, Head, LinearHead, RegressionHead, TextHead
from tagcli.core.metrics import classification_metrics, regression_metrics, summarize_targets
from tagcli.core.model import TaggedModel
from tagcli.packs.format import Manifest, TagPack, check_template, save_pack, tag_digest
from tagcli.core.prompt import EncodedRow, PromptEncoder, PromptTemplate, TaggedBatch, collate, length_batches
from tagcli.scorer import encode_contexts, prepare_inputs
from tagcli.packs.store import PackStore
from tagcli.io.tables import open_table


@dataclass
class TrainConfig:
    """Everything a training run depends on; also the keys a `--config` TOML file may hold."""

    stage: Literal[1, 2, 3] = field(metadata={"help": "1: domain tag, 2: single-domain function tag, 3: cross-domain function tag"})
    data: str = field(metadata={"help": "training table (CSV or Parquet)"})
    out: str = field(metadata={"help": "pack directory to write"})
    domains: list[str] = field(default_factory=list, metadata={"help": "domain tags, in prompt order"})
    function: str | None = field(default=None, metadata={"help": "function tag name (stages 2 and 3)"})
    targets: list[str] = field(default_factory=list, metadata={"help": "label column(s)"})
    task: Literal["regression", "classification", "text"] = field(default="regression", metadata={"help": "head type (text: the LM writes the answer after the function tag)"})
    max_answer_tokens: int = field(default=32, metadata={"help": "text task: longest answer generated, in tokens"})
    method: Literal["tag-llm", "prompt-tuning", "linear-probe"] = field(
        default="tag-llm",
        metadata={"help": "tag-llm, or a baseline in the same harness: prompt-tuning (one soft prompt of p·k vectors in front) or linear-probe (head only, no tags)"},
    )
    columns: dict[str, str] = field(default_factory=dict, metadata={"help": "domain or input kind → input column"})
    input_kind: str | None = field(default=None, metadata={"help": "stage 1: smiles, protein or text (default: the domain name if known)"})
    max_tokens: int = field(default=512, metadata={"help": "stage 1: longest input in tokens the domain accepts"})
    val: str | None = field(default=None, metadata={"help": "validation table; default: a split of --data"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of --data held out when --val is not given"})
    max_rows: int | None = field(default=None, metadata={"help": "use only the first N training rows"})
    max_val_rows: int | None = field(default=1000, metadata={"help": "use only the first N validation rows"})
    base_model: str = field(default=DEFAULT_BASE_MODEL, metadata={"help": "base model name, HF id or dir"})
    template: str | None = field(default=None, metadata={"help": "prompt template; default: domain tags and inputs, then the function tag"})
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
    init_samples: int = field(default=512, metadata={"help": "rows used to standardise and ridge-fit the head"})
    refit_head: bool = field(default=True, metadata={"help": "refit a regression head by ridge at every validation"})
    pack_dirs: list[str] = field(default_factory=list, metadata={"help": "extra folders searched for domain packs"})
    version: str = field(default="0.1.0", metadata={"help": "version written into the pack"})
    description: str = field(default="", metadata={"help": "one line describing the pack"})

    def __post_init__(self) -> None:
        if self.stage not in (1, 2, 3):
            raise UsageError(f"stage must be 1, 2 or 3, not {self.stage}")
        if not self.domains:
            raise UsageError("name at least one --domain")
        if self.stage == 1 and len(self.domains) != 1:
            raise UsageError("stage 1 trains one domain tag at a time")
        if self.stage > 1 and (not self.function or not self.targets):
            raise UsageError(f"stage {self.stage} needs --function and --target")
        if self.stage == 1 and self.method != "tag-llm":
            raise UsageError("baselines (--method) are for stages 2 and 3")
        if self.method == "linear-probe" and self.task == "text":
            raise UsageError("a linear probe has no text output: use --method tag-llm or prompt-tuning for --task text")
        if self.stage == 2 and len(self.domains) != 1:
            raise UsageError("stage 2 has one domain; use stage 3 for several")
        if min(self.batch_size, self.grad_accum, self.tag_length, self.eval_every, self.checkpoint_every) < 1:
            raise UsageError("batch size, grad accumulation, tag length and step intervals must be positive")

    @property
    def tag_name(self) -> str:
        return self.domains[0] if self.stage == 1 else str(self.function)

    @property
    def trained_tag_length(self) -> int:
        """Prompt tuning gets the parameter budget of all k tags of the Tag-LLM prompt; a probe none."""
        return {"tag-llm": self.tag_length, "prompt-tuning": self.tag_length * (len(self.domains) + 1), "linear-probe": 0}[self.method]

    def prompt_template(self) -> PromptTemplate:
        if self.template:
            return PromptTemplate(self.template)
        inputs = " ".join(f"{{input:{d}}}" for d in self.domains)
        layouts = {
            "tag-llm": "".join(f"{{tag:{d}}}{{input:{d}}}" for d in self.domains) + ("" if self.stage == 1 else f"{{tag:{self.function}}}"),
            "prompt-tuning": f"{{tag:{self.function}}}{inputs}",
            "linear-probe": inputs,
        }
        return PromptTemplate(layouts[self.method])


@dataclass
class Examples:
    """Encoded rows of one split with their targets (stage 1: -100-masked next-token targets)."""

    rows: list[EncodedRow]
    targets: list[Any]
    dropped: int
    template: PromptTemplate
    inputs: dict[str, list[list[int]]]  # domain → each kept row's input tokens (what `rows` lay out)


Progress = Callable[[dict[str, Any]], None]
# Validation metric that picks the best step (lower is better). Regression uses the MSE of
# standardised targets: Pearson alone would happily pick a badly calibrated head.
SELECT_BY = {"lm": "loss", "regression": "standardized_mse", "classification": "log_loss", "text": "loss"}


def init_tag(lm: torch.nn.Module, length: int) -> torch.Tensor:
    """The paper's initialisation: the mean token embedding, rescaled to the mean embedding norm."""
    table = lm.get_input_embeddings().weight.detach().float()
    mean = table.mean(0)
    return (mean / mean.norm() * table.norm(dim=1).mean()).expand(length, -1).clone()


def train(config: TrainConfig, base: BaseModel | None = None, on_progress: Progress | None = None) -> TagPack:
    """Run one stage end to end and write its pack to `config.out`."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    base = base or load_base_model(config.base_model, device=config.device, dtype=config.dtype)
    domain_packs = _domain_packs(config, base)
    template = _checked_template(config)
    train_table, val_table = _split(config)
    tags = {name: pack.tags[name] for name, pack in domain_packs.items()}
    if config.trained_tag_length:
        tags[config.tag_name] = init_tag(base.model, config.trained_tag_length)
    head = _new_head(config, base.hidden_size, train_table) if config.stage > 1 else None
    model = TaggedModel(base.model, tags, {config.tag_name: head} if head else {}).to(base.device)
    for name in domain_packs:
        model.tags[name].requires_grad_(False)
    assert not any(p.requires_grad for p in model.lm.parameters()), "the base model must stay frozen"

    encoder = PromptEncoder(base.tokenizer, model.tag_table)
    specs = {d: domain_packs[d].manifest.domain_input() if d in domain_packs else _stage1_input(config) for d in config.domains}
    train_set = _encode(config, encoder, template, specs, train_table, head)
    val_set = _encode(config, encoder, template, specs, val_table, head)
    if not train_set.rows or not val_set.rows:
        raise UsageError(f"no usable rows left (train {len(train_set.rows)}, validation {len(val_set.rows)})")

    if head is not None:
        fit_head(model, encoder, config, train_set)
    trainer = _Trainer(config, model, encoder, train_set, val_set, on_progress)
    trainer.run()
    pack = _make_pack(config, base, model, template, specs, domain_packs, trainer, train_set, val_set, time.perf_counter() - started)
    save_pack(pack, config.out)
    return pack


class _Trainer:
    """Optimizer steps, validation, early stopping and checkpoints for one run."""

    def __init__(self, config: TrainConfig, model: TaggedModel, encoder: PromptEncoder, train_set: Examples, val_set: Examples, on_progress: Progress | None) -> None:
        self.config, self.model, self.encoder = config, model, encoder
        self.train_set, self.val_set = train_set, val_set
        self.on_progress = on_progress or (lambda event: None)
        groups = [{"params": [model.tags[config.tag_name]], "lr": config.lr}] if config.trained_tag_length else []
        head_parameters = list(model.heads[config.tag_name].parameters()) if config.stage > 1 else []
        if head_parameters:
            groups.append({"params": head_parameters, "lr": config.head_lr})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        per_epoch = math.ceil(len(train_set.rows) / (config.batch_size * config.grad_accum))
        # A linear probe's ridge fit is already the best linear head: no gradient steps to take.
        self.total_steps = 0 if not config.trained_tag_length else config.max_steps or max(1, math.ceil(per_epoch * config.epochs))
        self.step = 0
        self.best: dict[str, Any] = {"score": -math.inf, "metrics": None, "step": 0, "state": None}
        self.history: list[dict[str, Any]] = []
        self.bad_evals = 0
        self.rows_seen = 0
        self.checkpoint_dir = Path(str(config.out).rstrip("/") + ".ckpt")
        self._epoch: tuple[int, list[list[int]]] | None = None  # (epoch, its micro-batches)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        if self.config.resume and (self.checkpoint_dir / "state.json").is_file():
            self._load_checkpoint()
        if self.step == 0:
            self._validate()  # the initial state (ridge-initialised head) is a candidate too
        started = time.perf_counter()
        while self.step < self.total_steps:
            loss = self._optimizer_step()
            self.step += 1
            elapsed = time.perf_counter() - started
            self.on_progress({"event": "step", "step": self.step, "total": self.total_steps, "loss": loss, "rows_per_second": self.rows_seen / elapsed if elapsed else 0.0})
            stop = False
            if self.step % self.config.eval_every == 0 or self.step == self.total_steps:
                stop = self._validate()
            if self.step % self.config.checkpoint_every == 0 or stop or self.step == self.total_steps:
                self._save_checkpoint()
            if stop:
                break
        if self.best["state"] is not None:
            self._restore(self.best["state"])

    def _optimizer_step(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(self.config.grad_accum):
            rows = self._micro_batch(self.step * self.config.grad_accum + micro)
            loss = self._loss(rows) / self.config.grad_accum
            loss.backward()
            total += loss.item()
            self.rows_seen += len(rows)
        self.optimizer.step()
        return total

    def _micro_batch(self, index: int) -> list[int]:
        """Rows of micro-batch `index`; a resumed run sees the same order."""
        per_epoch = math.ceil(len(self.train_set.rows) / self.config.batch_size)
        epoch, position = divmod(index, per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            lengths = [len(row) for row in self.train_set.rows]
            self._epoch = (epoch, epoch_batches(lengths, self.config.batch_size, self.config.seed * 1_000_003 + epoch))
        return self._epoch[1][position]

    def _loss(self, indices: list[int]) -> torch.Tensor:
        rows = [self.train_set.rows[i] for i in indices]
        device = self.model.lm.device
        if self.config.stage == 1 or self.config.task == "text":  # next-token loss on the input / the answer
            batch = collate(rows, self.encoder.pad_id).to(device)
            return self.model.next_token_loss(batch, _padded_targets([self.train_set.targets[i] for i in indices], batch).to(device))
        if self.config.method == "tag-llm":  # the trained tag closes the prompt: run the rest without grad
            p = self.config.tag_length
            prefixes = [EncodedRow(r.token_ids[: r.readout + 1 - p], r.slots[: r.readout + 1 - p], 0) for r in rows]
            hidden = self.model.readout_after_prefix(collate(prefixes, self.encoder.pad_id, "left").to(device), self.config.tag_name)
        else:  # a soft prompt in front: gradients flow through the whole row
            hidden = self.model.readout(collate(rows, self.encoder.pad_id).to(device))
        targets = torch.tensor([self.train_set.targets[i] for i in indices], device=device)
        return self.model.heads[self.config.tag_name].loss(hidden, targets)

    # -- validation ------------------------------------------------------------------------
    def _validate(self) -> bool:
        """Score the validation split; remember the best state; True when patience runs out."""
        if self.config.stage > 1 and self.config.refit_head and self.step > 0:
            fit_head(self.model, self.encoder, self.config, self.train_set)
        metrics = evaluate(self.model, self.encoder, self.val_set, self.config)
        score = -metrics[SELECT_BY["lm" if self.config.stage == 1 else self.config.task]]
        score = -math.inf if score != score else score  # NaN never wins
        self.history.append({"step": self.step, **metrics})
        improved = score > self.best["score"]
        if improved:
            self.best = {"score": score, "metrics": metrics, "step": self.step, "state": self._state()}
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        self.on_progress({"event": "eval", "step": self.step, "metrics": metrics, "improved": improved})
        return self.config.patience > 0 and self.bad_evals >= self.config.patience

    # -- state and checkpoints ---------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        state = {"tag": self.model.tags[self.config.tag_name].detach().clone()} if self.config.trained_tag_length else {}
        if self.config.stage > 1:
            state |= {f"head.{k}": v.detach().clone() for k, v in self.model.heads[self.config.tag_name].state_dict().items()}
        return state

    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        if "tag" in state:
            with torch.no_grad():
                self.model.tags[self.config.tag_name].copy_(state["tag"])
        if self.config.stage > 1:
            self.model.heads[self.config.tag_name].load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})

    def _save_checkpoint(self) -> None:
        directory = self.checkpoint_dir
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"current.{k}": v for k, v in self._state().items()}
        if self.best["state"] is not None:
            tensors |= {f"best.{k}": v for k, v in self.best["state"].items()}
        optimizer = self.optimizer.state_dict()
        for index, slots in optimizer["state"].items():
            tensors |= {f"optimizer.{index}.{k}": torch.as_tensor(v).clone() for k, v in slots.items()}
        meta = {
            "step": self.step, "rows_seen": self.rows_seen, "bad_evals": self.bad_evals, "history": self.history,
            "best": {k: v for k, v in self.best.items() if k != "state"},
            "param_groups": optimizer["param_groups"], "config": asdict(self.config),
        }
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, directory / "state.safetensors.tmp")
        (directory / "state.json.tmp").write_text(json.dumps(meta, default=str))
        (directory / "state.safetensors.tmp").replace(directory / "state.safetensors")
        (directory / "state.json.tmp").replace(directory / "state.json")

    def _load_checkpoint(self) -> None:
        meta = json.loads((self.checkpoint_dir / "state.json").read_text())
        tensors = load_file(self.checkpoint_dir / "state.safetensors", device=str(self.model.lm.device))
        self._restore({k[8:]: v for k, v in tensors.items() if k.startswith("current.")})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        self.best = {**meta["best"], "state": best or None}
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.step, self.rows_seen, self.bad_evals, self.history = meta["step"], meta["rows_seen"], meta["bad_evals"], meta["history"]
        self.on_progress({"event": "resume", "step": self.step})


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, window: int = 50) -> list[list[int]]:
    """One epoch of micro-batches: every row once, in seeded random order, with rows of similar
    length together (each random window of `window` batches is sorted by length before it is cut,
    then the batches are shuffled). Padding costs compute, and protein lengths vary 100-fold."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    span = window * batch_size
    order = [i for start in range(0, len(order), span) for i in sorted(order[start : start + span], key=lambda i: lengths[i])]
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return [batches[k] for k in torch.randperm(len(batches), generator=generator).tolist()]


@torch.no_grad()
def evaluate(model: TaggedModel, encoder: PromptEncoder, examples: Examples, config: TrainConfig, batch_size: int = 64) -> dict[str, float]:
    """Validation metrics: regression/classification metrics (stages 2–3) or next-token loss (stage 1)."""
    device = model.lm.device
    head = model.heads[config.tag_name] if config.stage > 1 else None
    if head is None or isinstance(head, TextHead):
        losses, counts = [], []
        for chunk in length_batches([len(r) for r in examples.rows], batch_size, 32768):
            batch = collate([examples.rows[i] for i in chunk], encoder.pad_id).to(device)
            targets = _padded_targets([examples.targets[i] for i in chunk], batch).to(device)
            losses.append(float(model.next_token_loss(batch, targets)) * len(chunk))
            counts.append(len(chunk))
        loss = sum(losses) / sum(counts)
        metrics = {"n": len(examples.rows), "loss": loss, "perplexity": math.exp(min(loss, 50))}
        return metrics | ({"exact_match": _exact_match(model, encoder, examples, head, batch_size)} if head else {})
    outputs = torch.empty(len(examples.rows), head.linear.out_features)
    for chunk, hidden in readouts(model, encoder, examples, range(len(examples.rows)), batch_size):
        outputs[chunk] = head(hidden).float().cpu()
    targets = np.asarray(examples.targets, dtype=float)
    if isinstance(head, ClassificationHead):
        log_loss = float(torch.nn.functional.cross_entropy(outputs, torch.as_tensor(targets).long()))
        return {**classification_metrics(targets, outputs.softmax(-1).numpy()), "log_loss": log_loss}
    predictions = (outputs * head.target_std.cpu() + head.target_mean.cpu()).numpy()
    targets = targets.reshape(len(targets), -1)
    per_target = {t["name"]: regression_metrics(targets[:, k], predictions[:, k]) for k, t in enumerate(head.targets)}
    return summarize_targets(per_target, head.target_std.cpu().numpy(), len(targets))


# -- data -------------------------------------------------------------------------------------
def _read(path: str, limit: int | None) -> pa.Table:
    batches, rows = [], 0
    with open_table(path) as reader:
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if limit is not None and rows >= limit:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    return table.slice(0, limit) if limit is not None else table


def _split(config: TrainConfig) -> tuple[pa.Table, pa.Table]:
    if config.val:
        return _read(config.data, config.max_rows), _read(config.val, config.max_val_rows)
    table = _read(config.data, config.max_rows)
    order = np.random.default_rng(config.seed).permutation(table.num_rows)
    n_val = max(1, int(round(table.num_rows * config.val_fraction)))
    val = table.take(order[:n_val])
    return table.take(np.sort(order[n_val:])), val.slice(0, config.max_val_rows) if config.max_val_rows else val


def _checked_template(config: TrainConfig) -> PromptTemplate:
    template = config.prompt_template()
    if config.stage > 1:
        check_template(template, config.tag_name, config.domains, config.method)
    elif template.tags != config.domains or template.inputs != config.domains or template.segments[-1].kind != "input":
        # Stage-1 targets are the input's own tokens, taken from the end of each row.
        raise UsageError(f"a stage-1 template needs one {{tag:D}} and ends with {{input:D}}; got {template.text!r}")
    return template


def _encode(config: TrainConfig, encoder: PromptEncoder, template: PromptTemplate, specs: dict[str, DomainInput], table: pa.Table, head: Head | None) -> Examples:
    """Clean, tokenize and lay out rows; rows with a bad input or a missing label are dropped and counted."""
    errors: list[str | None] = [None] * table.num_rows
    tokens = prepare_inputs(encoder, specs, table, config.columns, errors)
    labels = _labels(config, table, errors, head) if head is not None else []
    keep = [i for i, e in enumerate(errors) if e is None]
    inputs = {d: [tokens[d][i] for i in keep] for d in config.domains}
    rows = encoder.encode(template, inputs)
    if head is None:  # stage 1: predict the input's own tokens, which end the row
        targets = [[-100] * (len(r) - len(tokens[config.domains[0]][i])) + tokens[config.domains[0]][i] for r, i in zip(rows, keep)]
    elif isinstance(head, TextHead):  # the answer (and EOS) follows the prompt; only it carries a loss
        answers = encoder.tokenize_inputs([labels[i] for i in keep])
        eos = encoder.tokenizer.eos_token_id
        targets = [[-100] * len(r) + answer + [eos] for r, answer in zip(rows, answers)]
        rows = [EncodedRow(r.token_ids + answer + [eos], r.slots + [-1] * (len(answer) + 1), r.readout) for r, answer in zip(rows, answers)]
    else:
        targets = [labels[i] for i in keep]
    return Examples(rows, targets, table.num_rows - len(keep), template, inputs)


def _labels(config: TrainConfig, table: pa.Table, errors: list[str | None], head: Head) -> list[Any]:
    if isinstance(head, TextHead):
        labels = [_class_label(v) for v in table.column(config.targets[0]).to_pylist()]
    elif isinstance(head, ClassificationHead):
        index = {c: k for k, c in enumerate(head.classes)}
        labels = [index.get(label) if (label := _class_label(v)) is not None else None for v in table.column(config.targets[0]).to_pylist()]
    else:
        # CSV cells arrive as text: blanks and non-numbers become NaN, i.e. "missing label".
        matrix = np.column_stack([pd.to_numeric(table.column(c).to_pandas(), errors="coerce").to_numpy(float) for c in config.targets])
        labels = [row.tolist() if np.isfinite(row).all() else None for row in matrix]
    for i, label in enumerate(labels):
        if label is None and errors[i] is None:
            errors[i] = "missing label"
    return labels


def _exact_match(model: TaggedModel, encoder: PromptEncoder, examples: Examples, head: TextHead, batch_size: int) -> float:
    """Share of rows whose greedy answer equals the reference answer token for token."""
    prompts = [EncodedRow(r.token_ids[: r.readout + 1], r.slots[: r.readout + 1], r.readout) for r in examples.rows]
    hits = 0
    for chunk in length_batches([len(r) for r in prompts], batch_size, 32768):
        batch = collate([prompts[i] for i in chunk], encoder.pad_id).to(model.lm.device)
        for i, answer in zip(chunk, model.generate(batch, head.max_new_tokens)):
            hits += answer == [t for t in examples.targets[i] if t != -100][:-1]  # reference without its EOS
    return hits / len(prompts)


def _class_label(value: Any) -> str | None:
    """A class label as text; None, NaN and blank cells are missing labels."""
    if value is None or (isinstance(value, float) and value != value) or not str(value).strip():
        return None
    return str(value).strip()


def _padded_targets(targets: list[list[int]], batch: TaggedBatch) -> torch.Tensor:
    """Right-padded stage-1 targets matching a right-padded batch."""
    out = torch.full(batch.input_ids.shape, -100, dtype=torch.long)
    for i, row in enumerate(targets):
        out[i, : len(row)] = torch.tensor(row)
    return out


# -- heads and packs --------------------------------------------------------------------------
def _new_head(config: TrainConfig, hidden_size: int, train_table: pa.Table) -> Head:
    for column in config.targets:
        if column not in train_table.column_names:
            raise UsageError(f"no target column '{column}' (columns: {', '.join(train_table.column_names)})")
    if config.task == "text":
        if len(config.targets) != 1:
            raise UsageError("a text function has one --target column (the answer)")
        return TextHead(config.targets[0], config.max_answer_tokens)
    if config.task == "classification":
        classes = sorted({label for v in train_table.column(config.targets[0]).to_pylist() if (label := _class_label(v)) is not None})
        if len(classes) < 2:
            raise UsageError(f"classification needs at least two classes in '{config.targets[0]}', found {classes}")
        return ClassificationHead(hidden_size, config.targets[0], classes)
    return RegressionHead(hidden_size, [{"name": t} for t in config.targets])


@torch.no_grad()
def fit_head(model: TaggedModel, encoder: PromptEncoder, config: TrainConfig, train_set: Examples) -> None:
    """Standardise the head's inputs and targets and (regression) fit its linear layer by ridge.

    Hidden states have a few huge constant dimensions; without standardising, a linear head
    spends most of its budget learning offsets. Every step of the tag moves all features, so a
    head fitted to the old tag soon mismatches; refitting in closed form at each validation
    (`refit_head`) keeps the head optimal for the current tag, and gradient steps on the tag then
    only have to make features more linearly predictive.
    """
    head = model.heads[config.tag_name]
    if not isinstance(head, LinearHead):
        return
    generator = torch.Generator().manual_seed(config.seed)
    sample = torch.randperm(len(train_set.rows), generator=generator)[: config.init_samples].tolist()
    device = model.lm.device
    hidden = torch.empty(len(sample), model.hidden_size, device=device)
    for chunk, readout in readouts(model, encoder, train_set, sample):
        hidden[chunk] = readout.float()
    head.set_feature_stats(hidden)
    if isinstance(head, RegressionHead):
        head.set_target_stats(torch.tensor(train_set.targets, dtype=torch.float32, device=device))
        targets = torch.tensor([train_set.targets[i] for i in sample], dtype=torch.float32, device=device)
        features = (hidden - head.feature_mean) / head.feature_std
        standardised = (targets.reshape(len(targets), -1) - head.target_mean) / head.target_std
        head.linear.weight.copy_(ridge(features, standardised).T)
        head.linear.bias.zero_()


def readouts(model: TaggedModel, encoder: PromptEncoder, examples: Examples, indices: Sequence[int], batch_size: int = 64) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Readout hidden states of rows `examples.rows[indices[j]]`, batch by batch as (positions j, [n, d]).

    Same numbers as `model.readout` on the full rows, computed the way the scorer does: the shared
    prefix once per batch and, for pairs, each distinct first input (protein) once.
    """
    inputs = {d: [tokens[i] for i in indices] for d, tokens in examples.inputs.items()}
    suffix = collate([encoder.encode_suffix(examples.template)], encoder.pad_id).to(model.lm.device)
    for chunk, context in encode_contexts(model, encoder, examples.template, inputs, batch_size, 32768, suffix.input_ids.shape[1]):
        yield chunk, model.readout_after_context(context, suffix)[0]


def ridge(features: torch.Tensor, targets: torch.Tensor, alphas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)) -> torch.Tensor:
    """Ridge weights [d, k] (no intercept: inputs are standardised), penalty picked on a 20% holdout."""
    x, y = features.double(), targets.double()

    def fit(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
        return torch.linalg.solve(x.T @ x + alpha * len(x) * torch.eye(x.shape[1], dtype=x.dtype, device=x.device), x.T @ y)

    cut = max(1, int(len(x) * 0.8))
    if cut < len(x):
        alpha = min(alphas, key=lambda a: float(((x[cut:] @ fit(x[:cut], y[:cut], a) - y[cut:]) ** 2).mean()))
    else:
        alpha = max(alphas)
    return fit(x, y, alpha).float()


def _stage1_input(config: TrainConfig) -> DomainInput:
    kind = config.input_kind or (config.domains[0] if config.domains[0] in INPUT_KINDS else "text")
    if kind not in INPUT_KINDS:
        raise UsageError(f"unknown input kind {kind!r}; choose from {', '.join(INPUT_KINDS)}")
    return DomainInput(kind=kind, max_tokens=config.max_tokens)


def _domain_packs(config: TrainConfig, base: BaseModel) -> dict[str, TagPack]:
    if config.stage == 1:
        return {}
    store = PackStore([*config.pack_dirs, Path(config.out).resolve().parent])
    packs = {}
    for name in config.domains:
        pack = store.load(name)
        if pack.manifest.kind != "domain":
            raise UsageError(f"'{name}' is a {pack.manifest.kind} pack, not a domain")
        pack.check_base_model(base.id, base.fingerprint)
        packs[name] = pack
    return packs


def _make_pack(config, base, model, template, specs, domain_packs, trainer, train_set, val_set, seconds) -> TagPack:
    name = config.tag_name
    manifest = Manifest(
        name=name,
        kind="domain" if config.stage == 1 else "function",
        version=config.version,
        tag_length=config.trained_tag_length,
        hidden_size=base.hidden_size,
        base_model={"id": base.id, "fingerprint": base.fingerprint},
        description=config.description,
        domains=[] if config.stage == 1 else list(config.domains),
        input=asdict(specs[name]) if config.stage == 1 else None,
        template=None if config.stage == 1 else template.text,
        requires={d: {"version": p.manifest.version, "sha256": tag_digest(p.tags[d])} for d, p in domain_packs.items() if d in template.tags},
        method=config.method,
        training={
            "stage": config.stage,
            "data": {"train": config.data, "val": config.val or f"{config.val_fraction:.0%} of train", "train_rows": len(train_set.rows), "val_rows": len(val_set.rows), "dropped_rows": train_set.dropped + val_set.dropped, "targets": config.targets},
            "hyperparameters": {k: getattr(config, k) for k in ("method", "tag_length", "epochs", "max_steps", "batch_size", "grad_accum", "lr", "head_lr", "init_samples", "eval_every", "patience")},
            "seed": config.seed,
            "steps": trainer.step,
            "best_step": trainer.best["step"],
            "seconds": round(seconds, 1),
            "device": str(base.device),
            "dtype": str(base.dtype).removeprefix("torch."),
            "history": trainer.history,
        },
        metrics={"val": trainer.best["metrics"] or {}},
    )
    head = model.heads[name] if config.stage > 1 else None
    tags = {name: model.tags[name].detach().float().cpu()} if config.trained_tag_length else {}
    return TagPack(manifest, tags, head.cpu() if head else None)
