"""The training loop: optimizer steps on the learned tag (and head), validation, early stopping and
checkpoints. Only tag vectors and heads get gradients; the base model stays frozen.

Checkpoints hold tensors in safetensors and counters in JSON (never pickles); `resume` continues
from the last one exactly (same micro-batches, optimizer state and best state so far).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tagcli.atomic import atomic_path, write_text_atomic
from tagcli.core.batching import BATCH_ROWS, MAX_BATCH_TOKENS, epoch_batches, length_batches
from tagcli.core.heads import Head
from tagcli.core.model import TaggedModel
from tagcli.core.prompt import EncodedRow, PromptEncoder, TaggedBatch, collate
from tagcli.errors import deferred_stop, set_stop_hint
from tagcli.train.config import TrainConfig
from tagcli.train.data import Examples
from tagcli.train.features import ContextCache, FeatureCache, contexts, fit_head, readouts, suffix_batch
from tagcli.train.methods import TrainingMethod

Progress = Callable[[dict[str, Any]], None]


def checkpoint_dir(out: str) -> Path:
    """Where a run writing the pack `out` keeps its checkpoints and cached features: `OUT.ckpt`."""
    return Path(str(out).rstrip("/") + ".ckpt")


class Trainer:
    """Optimizer steps, validation, early stopping and checkpoints for one run."""

    def __init__(
        self,
        config: TrainConfig,
        method: TrainingMethod,
        model: TaggedModel,
        encoder: PromptEncoder,
        train_set: Examples,
        val_set: Examples,
        on_progress: Progress | None = None,
    ) -> None:
        self.config, self.method, self.model, self.encoder = config, method, model, encoder
        self.train_set, self.val_set = train_set, val_set
        self.head: Head | None = model.heads[config.tag_name] if config.tag_name in model.heads else None
        self.on_progress = on_progress or (lambda event: None)
        groups = [{"params": [model.tags[config.tag_name]], "lr": config.lr}] if method.tag_length else []
        head_parameters = list(self.head.parameters()) if self.head is not None else []
        if head_parameters:
            groups.append({"params": head_parameters, "lr": config.head_lr})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        per_epoch = math.ceil(len(train_set.rows) / (config.batch_size * config.grad_accum))
        # A method that learns no tag (the linear probe) is done once its head is fitted.
        self.total_steps = (
            0
            if not method.tag_length
            else config.max_steps
            if config.max_steps is not None
            else max(1, math.ceil(per_epoch * config.epochs))
        )
        self.step = 0
        self.best: dict[str, Any] = {"score": -math.inf, "metrics": None, "step": 0, "state": None}
        self.history: list[dict[str, Any]] = []
        self.bad_evals = 0
        self.rows_seen = 0
        self.checkpoint_dir = checkpoint_dir(config.out)
        self._epoch: tuple[int, list[list[int]]] | None = None  # (epoch, its micro-batches)
        self.train_contexts: ContextCache | None = None
        self.val_contexts: ContextCache | None = None

    @property
    def objective(self) -> str:
        """Next-token loss for a domain tag and for heads that write text; the head's loss otherwise."""
        return self.head.objective if self.head is not None else "next-token"

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        """Steps until done or out of patience. A stop signal (Ctrl-C, SIGTERM, SIGHUP) checkpoints the
        last finished step first, so `--resume` loses nothing."""
        if self.config.resume and (self.checkpoint_dir / "state.json").is_file():
            self._load_checkpoint()
        try:
            self._run()
        except KeyboardInterrupt:
            if self.step > 0:
                self._save_checkpoint()
                set_stop_hint(f"rerun the same train command with --resume to continue from step {self.step}")
            raise
        if self.best["state"] is not None:
            self._restore(self.best["state"])

    def _run(self) -> None:
        if self.step >= self.total_steps > 0:  # resumed after its last step: nothing to encode or train
            return
        # Everything before the function tag is frozen: contexts of the tag-step rows and of the
        # validation rows are computed once; each step then runs only the tag positions.
        if self.objective == "readout" and self.method.frozen_context and self.method.tag_length > 0:
            rows = min(len(self.train_set.rows), self.config.tag_rows)
            size = self.config.batch_size
            self.on_progress({"event": "phase", "phase": "encoding the tag steps' rows", "total": rows})
            self.train_contexts = ContextCache(
                self.model, self.encoder, self.train_set, range(rows), size, self.rows_done
            )
            self.on_progress(
                {"event": "phase", "phase": "encoding the validation rows", "total": len(self.val_set.rows)}
            )
            self.val_contexts = ContextCache(
                self.model, self.encoder, self.val_set, range(len(self.val_set.rows)), 64, self.rows_done
            )
        if self.step == 0:
            if self.head is not None and self.head.objective == "readout":
                self._refit_head()  # the tag starts with the best head for it, fitted in closed form
            self._validate()  # the initial state is a candidate too
        started = time.perf_counter()
        self.on_progress({"event": "phase", "phase": "tag steps", "total": self.total_steps})
        while self.step < self.total_steps:
            with deferred_stop():  # a step is all or nothing
                loss = self._optimizer_step()
                self.step += 1
            elapsed = time.perf_counter() - started
            rate = self.rows_seen / elapsed if elapsed else 0.0
            self.on_progress(
                {"event": "step", "step": self.step, "total": self.total_steps, "loss": loss, "rows_per_second": rate}
            )
            stop = False
            if self.step % self.config.eval_every == 0 or self.step == self.total_steps:
                stop = self._validate()
            if self.step % self.config.checkpoint_every == 0 or stop or self.step == self.total_steps:
                self._save_checkpoint()
            if stop:
                break

    def rows_done(self, rows: int) -> None:
        """Progress: `rows` more rows encoded."""
        self.on_progress({"event": "rows", "rows": rows})

    def _optimizer_step(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(self.config.grad_accum):
            loss, rows = self._loss(self._micro_batch(self.step * self.config.grad_accum + micro))
            loss = loss / self.config.grad_accum
            loss.backward()
            total += loss.item()
            self.rows_seen += rows
        self.optimizer.step()
        return total

    def _micro_batch(self, index: int) -> list[int]:
        """Rows of micro-batch `index` (cached contexts: the batch number); a resumed run sees the same order."""
        seed = self.config.seed * 1_000_003
        if self.train_contexts is not None:
            epoch, position = divmod(index, len(self.train_contexts.batches))
            order = torch.randperm(
                len(self.train_contexts.batches), generator=torch.Generator().manual_seed(seed + epoch)
            )
            return [int(order[position])]
        per_epoch = math.ceil(len(self.train_set.rows) / self.config.batch_size)
        epoch, position = divmod(index, per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            lengths = [len(row) for row in self.train_set.rows]
            self._epoch = (epoch, epoch_batches(lengths, self.config.batch_size, seed + epoch))
        return self._epoch[1][position]

    def _loss(self, indices: list[int]) -> tuple[torch.Tensor, int]:
        """The loss of a micro-batch and its number of rows."""
        if self.train_contexts is not None:  # indices: one cached context batch
            assert self.head is not None
            rows, features = self.train_contexts.features(indices[0], self.head)
            return self.head.loss(features, [self.train_set.targets[i] for i in rows]), len(rows)
        targets = [self.train_set.targets[i] for i in indices]
        if self.objective == "next-token":
            batch = collate([self.train_set.rows[i] for i in indices], self.encoder.pad_id).to(self.model.lm.device)
            loss = self.model.next_token_loss(batch, padded_targets(targets, batch).to(batch.input_ids.device))
            return loss, len(indices)
        assert self.head is not None  # a tag in front of the inputs (prompt tuning): contexts with grad
        suffix = suffix_batch(self.model, self.encoder, self.train_set)
        losses = []
        for chunk, context in contexts(self.model, self.encoder, self.train_set, indices, len(indices)):
            features = self.model.readout_after_context(context, suffix, self.head.readout)[0]
            losses.append(self.head.loss(features, [targets[j] for j in chunk]) * len(chunk))
        return torch.stack(losses).sum() / len(indices), len(indices)

    # -- validation ------------------------------------------------------------------------
    def _validate(self) -> bool:
        """Score the validation split; remember the best state; True when patience runs out."""
        if self.head is not None and self.config.refit_head and self.step > 0:
            self._refit_head()
        metrics = validation_metrics(
            self.model, self.encoder, self.head, self.val_set, self.config.targets, self.val_contexts
        )
        select_by = self.head.select_by if self.head is not None else "loss"
        score = -metrics[select_by]
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

    @torch.no_grad()
    def _refit_head(self) -> None:
        """Refit the head in closed form for the current tag: on the cached contexts' rows when there
        are (they are encoded already), else on a seeded sample of `init_samples` training rows."""
        assert self.head is not None
        if self.train_contexts is None:
            if self.step == 0:
                rows = min(self.config.init_samples, len(self.train_set.rows))
                self.on_progress({"event": "phase", "phase": "fitting the head the tag starts with", "total": rows})
            config = self.config
            fit_head(
                self.model, self.encoder, self.head, self.train_set, config.init_samples, config.seed, self.rows_done
            )
            return
        batches = [self.train_contexts.features(k, self.head) for k in range(len(self.train_contexts.batches))]
        rows = [i for chunk, _ in batches for i in chunk]
        hidden = torch.cat([features for _, features in batches]).float()
        # Cached batches are sorted by length: shuffled (seeded) so the ridge's holdout is a fair sample.
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(self.config.seed)).tolist()
        with deferred_stop():  # the head is replaced whole or not at all
            self.head.fit(hidden[order], [self.train_set.targets[rows[j]] for j in order], self.train_set.targets)

    def fit_final_head(self, final: Head) -> None:
        """Replace the head the tag was trained with by `final`, fitted on cached readout features of
        every training row (the best tag is in place), and record its validation metrics."""
        name = self.config.tag_name
        cache = FeatureCache(self.checkpoint_dir, self.model, final, (self.train_set, self.val_set))
        size = max(self.config.batch_size, 64)
        loads = (("train", self.train_set, self.train_contexts), ("val", self.val_set, self.val_contexts))
        features = {}
        for split, examples, cached in loads:
            phase = f"final head: features of the {'training' if split == 'train' else 'validation'} rows"
            self.on_progress({"event": "phase", "phase": phase, "total": len(examples.rows)})
            features[split] = cache.load(self.model, self.encoder, final, examples, split, size, cached, self.rows_done)
        self.on_progress({"event": "phase", "phase": "final head: fitting"})
        train, val = (_with_extra(features[split], examples.extra) for split, examples, _ in loads)
        final.fit_final(train, self.train_set.targets, val, self.val_set.targets, self.config.seed)
        self.model.heads[name] = self.head = final.to(self.model.lm.device)
        with torch.no_grad():  # the validation rows' features are at hand: no second pass over them
            raw = final.predict(_Hidden(features["val"], self.val_set.extra))
        metrics = head_metrics(final, self.val_set, self.config.targets, [(range(len(self.val_set.rows)), raw)])
        self.history.append({"step": self.step, "head": "final", **metrics})
        self.best = {**self.best, "metrics": metrics, "state": self._state()}
        self.on_progress({"event": "eval", "step": self.step, "metrics": metrics, "improved": True})

    # -- state and checkpoints ---------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        name = self.config.tag_name
        state = {"tag": self.model.tags[name].detach().clone()} if self.method.tag_length else {}
        if self.head is not None:
            state |= {f"head.{k}": v.detach().clone() for k, v in self.head.state_dict().items()}
        return state

    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        if "tag" in state:
            with torch.no_grad():
                self.model.tags[self.config.tag_name].copy_(state["tag"])
        if self.head is not None:
            self.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})

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
            "step": self.step,
            "rows_seen": self.rows_seen,
            "bad_evals": self.bad_evals,
            "history": self.history,
            "best": {k: v for k, v in self.best.items() if k != "state"},
            "param_groups": optimizer["param_groups"],
            "config": asdict(self.config),
        }
        with atomic_path(directory / "state.safetensors") as temp:
            save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, temp)
        write_text_atomic(directory / "state.json", json.dumps(meta, default=str))

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
        self.step, self.rows_seen, self.bad_evals, self.history = (
            meta["step"],
            meta["rows_seen"],
            meta["bad_evals"],
            meta["history"],
        )
        self.on_progress({"event": "resume", "step": self.step})


@torch.no_grad()
def validation_metrics(
    model: TaggedModel,
    encoder: PromptEncoder,
    head: Head | None,
    examples: Examples,
    targets: list[str],
    cached: ContextCache | None = None,
    batch_size: int = BATCH_ROWS,
) -> dict[str, Any]:
    """Metrics of one split: the next-token loss where that is the objective, plus the head's own
    metrics of its decoded predictions (the same `Head.target_metrics` that `tagcli eval` reports)."""
    metrics: dict[str, Any] = {}
    if head is None or head.objective == "next-token":
        metrics = next_token_metrics(model, encoder, examples, batch_size)
    if head is None:
        return metrics
    predictions = head_predictions(model, encoder, head, examples, batch_size, cached)
    return {**metrics, **head_metrics(head, examples, targets, predictions, encoder.tokenizer)}


def head_metrics(
    head: Head, examples: Examples, targets: list[str], predictions: Iterable, tokenizer: Any = None
) -> dict[str, Any]:
    """The head's summary metrics of its raw outputs, given per batch of rows as (rows, raw columns).

    Values are finished as `predict` and `eval` finish them (`Head.finish`: clipped to declared ranges,
    rows that give no prediction left out), so validation and `eval --record` follow one rule."""
    predicted: dict[str, list] = {c: [None] * len(examples.rows) for c in head.output_columns()}
    kept = [True] * len(examples.rows)
    for chunk, raw in predictions:
        decoded, problems = head.finish(head.decode(raw, tokenizer))
        for column, values in decoded.items():
            for j, value in zip(chunk, values):
                predicted[column][j] = value
        for j, problem in zip(chunk, problems):
            kept[j] = problem is None
    labels = [label for label, keep in zip(examples.labels, kept) if keep]
    predicted = {c: [v for v, keep in zip(values, kept) if keep] for c, values in predicted.items()}
    per_target = dict(zip(targets, head.target_metrics(labels, predicted)))
    return head.summarize(per_target)


def head_predictions(
    model: TaggedModel,
    encoder: PromptEncoder,
    head: Head,
    examples: Examples,
    batch_size: int,
    cached: ContextCache | None = None,
):
    """Raw head outputs per batch of rows: from the shared-context readout (cached contexts when
    given), or by generation after each prompt (text answers: rows are cut back to their prompt)."""
    indices = range(len(examples.rows))
    if head.objective == "readout":
        batches = (
            (cached.features(k, head) for k in range(len(cached.batches)))
            if cached is not None
            else readouts(model, encoder, head.readout, examples, indices, batch_size)
        )
        for chunk, hidden in batches:
            extra = examples.extra[chunk] if examples.extra is not None else None
            yield chunk, head.predict(_Hidden(hidden, extra))
        return
    prompts = [EncodedRow(r.token_ids[: r.readout + 1], r.slots[: r.readout + 1], r.readout) for r in examples.rows]
    for chunk in length_batches([len(r) for r in prompts], batch_size, MAX_BATCH_TOKENS):
        batch = collate([prompts[i] for i in chunk], encoder.pad_id).to(model.lm.device)
        yield chunk, head.predict(model.full_readout(batch))


def _with_extra(features: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
    """A final head's input: the readout features, then the rows' extra features (if it reads any)."""
    return features if extra is None else torch.cat([features, extra], dim=1)


class _Hidden:
    """A readout that only offers hidden states and extra features (validation of heads that do not generate)."""

    def __init__(self, hidden: torch.Tensor, extra: torch.Tensor | None = None) -> None:
        self.hidden = hidden
        self.extra = extra

    def generate(self, max_new_tokens: int) -> list[list[int]]:
        raise RuntimeError("this readout cannot generate")


def next_token_metrics(
    model: TaggedModel, encoder: PromptEncoder, examples: Examples, batch_size: int
) -> dict[str, Any]:
    losses, counts = [], []
    for chunk in length_batches([len(r) for r in examples.rows], batch_size, MAX_BATCH_TOKENS):
        batch = collate([examples.rows[i] for i in chunk], encoder.pad_id).to(model.lm.device)
        targets = padded_targets([examples.targets[i] for i in chunk], batch).to(batch.input_ids.device)
        losses.append(float(model.next_token_loss(batch, targets)) * len(chunk))
        counts.append(len(chunk))
    loss = sum(losses) / sum(counts)
    return {"n": len(examples.rows), "loss": loss, "perplexity": math.exp(min(loss, 50))}


def padded_targets(targets: list[list[int]], batch: TaggedBatch) -> torch.Tensor:
    """Right-padded next-token targets matching a right-padded batch."""
    out = torch.full(batch.input_ids.shape, -100, dtype=torch.long)
    for i, row in enumerate(targets):
        out[i, : len(row)] = torch.tensor(row)
    return out
