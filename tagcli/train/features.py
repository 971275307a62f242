"""Readout features of training rows: computed as the scorer computes them, cached, and fitted on.

Features come from `core.batching.context_batches` (the shared prefix once per batch, each
row's inputs once, then the function suffix), so a head fitted here sees the scorer's numbers.

    ContextCache   the KV contexts of a fixed set of rows, computed once without grad: everything
                   before the function tag is frozen, so tag steps only run the p tag positions
    FeatureCache   readout features of every training row on disk (safetensors blocks), keyed by
                   the tag and readout they came from: a resumed run skips finished blocks
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tagcli.atomic import atomic_path
from tagcli.core.batching import BATCH_ROWS, MAX_BATCH_TOKENS, context_batches, encode_contexts
from tagcli.core.heads import Head
from tagcli.core.model import SharedContext, TaggedModel
from tagcli.core.prompt import PromptEncoder, TaggedBatch, collate
from tagcli.core.readout import ReadoutSpec
from tagcli.train.data import Examples

BLOCK_ROWS = 2048  # rows per cached feature block (the grain of resuming)
RowsDone = Callable[[int], None]  # told how many more rows were encoded (progress)


def _nothing(rows: int) -> None:
    pass


def suffix_batch(model: TaggedModel, encoder: PromptEncoder, examples: Examples) -> TaggedBatch:
    return collate([encoder.encode_suffix(examples.template)], encoder.pad_id).to(model.lm.device)


def contexts(
    model: TaggedModel, encoder: PromptEncoder, examples: Examples, indices: Sequence[int], batch_size: int
) -> Iterator[tuple[list[int], SharedContext]]:
    """Contexts of rows `examples.rows[indices[j]]` in length-sorted batches, as (positions j, context)."""
    inputs = {d: [tokens[i] for i in indices] for d, tokens in examples.inputs.items()}
    suffix_tokens = len(encoder.encode_suffix(examples.template))
    batches = context_batches(model, encoder, examples.template, inputs, batch_size, MAX_BATCH_TOKENS, suffix_tokens)
    yield from encode_contexts(batches)


def readouts(
    model: TaggedModel,
    encoder: PromptEncoder,
    readout: ReadoutSpec,
    examples: Examples,
    indices: Sequence[int],
    batch_size: int = BATCH_ROWS,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """`readout` features of rows `examples.rows[indices[j]]`, batch by batch as (positions j, [n, width])."""
    suffix = suffix_batch(model, encoder, examples)
    with torch.no_grad():
        for chunk, context in contexts(model, encoder, examples, indices, batch_size):
            yield chunk, model.readout_after_context(context, suffix, readout)[0]


class ContextCache:
    """Contexts of `indices` computed once (no grad), reused by every tag step and validation."""

    def __init__(
        self,
        model: TaggedModel,
        encoder: PromptEncoder,
        examples: Examples,
        indices: Sequence[int],
        batch_size: int,
        rows_done: RowsDone = _nothing,
    ) -> None:
        self.model, self.suffix = model, suffix_batch(model, encoder, examples)
        self.batches: list[tuple[list[int], SharedContext]] = []
        with torch.no_grad():
            for chunk, context in contexts(model, encoder, examples, indices, batch_size):
                self.batches.append(([indices[j] for j in chunk], context))
                rows_done(len(chunk))

    def features(self, k: int, head: Head) -> tuple[list[int], torch.Tensor]:
        """Batch k's rows and readout features, with a graph back to the function tag when grad is on."""
        rows, context = self.batches[k]
        features = self.model.readout_after_context(context, self.suffix, head.readout)[0]
        context.rewind()
        return rows, features

    @torch.no_grad()
    def all_features(self, head: Head) -> dict[int, torch.Tensor]:
        """Readout features of every cached row (float32, CPU), by row index."""
        found: dict[int, torch.Tensor] = {}
        for k in range(len(self.batches)):
            rows, features = self.features(k, head)
            found.update(zip(rows, features.float().cpu()))
        return found


class FeatureCache:
    """Readout features of a split's rows on disk, in blocks of `BLOCK_ROWS` rows."""

    def __init__(self, directory: Path, model: TaggedModel, head: Head, splits: Sequence[Examples]) -> None:
        # Features depend on the tags, the readout and the rows: a changed tag or other data (a run
        # with the same --out on another file) must not reuse old blocks.
        digest = hashlib.sha256(repr(head.readout.to_spec()).encode())
        for name, tag in sorted(model.tags.items()):
            digest.update(name.encode() + tag.detach().float().cpu().numpy().tobytes())
        for examples in splits:
            for row in examples.rows:
                digest.update(repr(row.token_ids).encode())
        self.directory = directory / "features" / digest.hexdigest()[:16]

    def load(
        self,
        model: TaggedModel,
        encoder: PromptEncoder,
        head: Head,
        examples: Examples,
        split: str,
        batch_size: int,
        cached: ContextCache | None = None,
        rows_done: RowsDone = _nothing,
    ) -> torch.Tensor:
        """Features [n_rows, width] of every row of `examples`, computed block by block where not on
        disk; rows whose contexts are `cached` (the tag steps' rows) only run the function suffix."""
        blocks = []
        known: dict[int, torch.Tensor] | None = None
        for start in range(0, len(examples.rows), BLOCK_ROWS):
            path = self.directory / f"{split}-{start:09d}.safetensors"
            if not path.is_file():
                if known is None:
                    known = cached.all_features(head) if cached is not None else {}
                stop = min(start + BLOCK_ROWS, len(examples.rows))
                block = torch.empty(stop - start, head.readout.width(model.hidden_size))
                missing = [i for i in range(start, stop) if i not in known]
                for i in set(range(start, stop)) - set(missing):
                    block[i - start] = known[i]
                rows_done(stop - start - len(missing))
                if missing:
                    for chunk, features in readouts(model, encoder, head.readout, examples, missing, batch_size):
                        block[[missing[j] - start for j in chunk]] = features.float().cpu()
                        rows_done(len(chunk))
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as temp:
                    save_file({"features": block}, temp)
            else:
                rows_done(min(BLOCK_ROWS, len(examples.rows) - start))
            blocks.append(load_file(path)["features"])
        return torch.cat(blocks)


@torch.no_grad()
def fit_head(
    model: TaggedModel,
    encoder: PromptEncoder,
    head: Head,
    examples: Examples,
    samples: int,
    seed: int,
    rows_done: RowsDone = _nothing,
) -> None:
    """Fit the head in closed form on the readouts of a seeded sample of training rows.

    Every step of the tag moves its features, so a head fitted to the old tag soon mismatches;
    refitting at each validation keeps the head optimal for the current tag, and gradient steps on
    the tag then only have to make features more predictive.
    """
    if head.objective != "readout":
        return
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randperm(len(examples.rows), generator=generator)[:samples].tolist()
    hidden = torch.empty(len(sample), head.readout.width(model.hidden_size), device=model.lm.device)
    for chunk, readout in readouts(model, encoder, head.readout, examples, sample):
        hidden[chunk] = readout.float()
        rows_done(len(chunk))
    head.fit(hidden, [examples.targets[i] for i in sample], examples.targets)
