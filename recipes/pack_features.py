"""Readout features of a table's rows under a function pack's tags, computed as training computes them
(`tagcli.train.features.readouts`: the shared prefix once, each row's input once, then the suffix).

For recipes that fit or compare several heads on the same rows (recipes/levers.py, recipes/moleculeace.py)
without encoding the rows once per head.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import torch

from tagcli.basemodel.load import BaseModel
from tagcli.core.batching import prepare_inputs
from tagcli.core.heads import HEADS
from tagcli.core.model import TaggedModel
from tagcli.core.prompt import PromptEncoder
from tagcli.core.readout import ReadoutSpec
from tagcli.packs.format import TagPack, load_pack
from tagcli.train.data import Examples
from tagcli.train.features import readouts


def domain_tags(packs: Path, domains: Iterable[str]) -> dict[str, str]:
    """The digests of the domain tags in `packs` (as function packs pin them): recorded with a result so
    that a table can tell one measured on the shipped tags from one measured before a rebuild."""
    return {domain: load_pack(packs / domain, check_install=False).tag_digest() for domain in domains}


def readout_features(
    base: BaseModel,
    function: TagPack,
    domain: TagPack,
    texts: Sequence[str],
    readout: ReadoutSpec,
    batch_size: int = 32,
) -> tuple[torch.Tensor, list[str | None]]:
    """Features [n, width] of each input text (float32; NaN rows where the input is refused) and why."""
    probe = HEADS["regression"](base.hidden_size, [{"name": "probe"}], readout=readout)
    tags = {**domain.tags, **function.tags}
    model = TaggedModel(base.model, tags, {function.name: probe}).to(base.device).eval()
    encoder = PromptEncoder(base.tokenizer, model.tag_table)
    template = function.manifest.prompt_template()
    slot = domain.name
    errors: list[str | None] = [None] * len(texts)
    table = pa.table({"input": list(texts)})
    tokens = prepare_inputs(encoder, {slot: domain.manifest.domain_input()}, table, {"*": "input"}, errors)
    valid = [i for i, e in enumerate(errors) if e is None]
    inputs = {slot: [tokens[slot][i] for i in valid]}
    examples = Examples(encoder.encode(template, inputs), [], [], template, inputs)
    hidden = torch.full((len(texts), readout.width(base.hidden_size)), float("nan"))
    with torch.no_grad():
        for chunk, features in readouts(model, encoder, readout, examples, range(len(valid)), batch_size):
            hidden[[valid[j] for j in chunk]] = features.float().cpu()
    return hidden, errors
