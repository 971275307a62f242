"""Readout features of training rows, and the head's closed-form fit on them.

Features are computed exactly as the scorer computes them (`core.batching.encode_contexts`: the
shared prefix once per batch, each distinct first input once), so a head fitted here sees the
same numbers at scoring time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from tagcli.core.batching import encode_contexts
from tagcli.core.heads import Head
from tagcli.core.model import TaggedModel
from tagcli.core.prompt import PromptEncoder, collate
from tagcli.train.data import Examples


def readouts(
    model: TaggedModel, encoder: PromptEncoder, examples: Examples, indices: Sequence[int], batch_size: int = 64
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Readout hidden states of rows `examples.rows[indices[j]]`, batch by batch as (positions j, [n, d])."""
    inputs = {d: [tokens[i] for i in indices] for d, tokens in examples.inputs.items()}
    suffix = collate([encoder.encode_suffix(examples.template)], encoder.pad_id).to(model.lm.device)
    contexts = encode_contexts(model, encoder, examples.template, inputs, batch_size, 32768, suffix.input_ids.shape[1])
    for chunk, context in contexts:
        yield chunk, model.readout_after_context(context, suffix)[0]


@torch.no_grad()
def fit_head(
    model: TaggedModel, encoder: PromptEncoder, head: Head, examples: Examples, samples: int, seed: int
) -> None:
    """Fit the head in closed form on the readouts of a seeded sample of training rows.

    Every step of the tag moves all features, so a head fitted to the old tag soon mismatches;
    refitting at each validation keeps the head optimal for the current tag, and gradient steps on
    the tag then only have to make features more predictive.
    """
    if head.objective != "readout":
        return
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randperm(len(examples.rows), generator=generator)[:samples].tolist()
    hidden = torch.empty(len(sample), model.hidden_size, device=model.lm.device)
    for chunk, readout in readouts(model, encoder, examples, sample):
        hidden[chunk] = readout.float()
    head.fit(hidden, [examples.targets[i] for i in sample], examples.targets)
