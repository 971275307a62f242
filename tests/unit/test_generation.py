"""Text heads generate through the scorer's shared context (prefix once, bodies once, suffix on top).

The greedy tokens must be the ones the Hugging Face model's own `generate` writes after the same prompt.
Tags are made of token embeddings (a tag vector = the embedding of a token), so the same prompt is a
plain token sequence for `generate`; rows of different lengths share padded batches.
"""

from __future__ import annotations

import pytest
import torch

from helpers import SMILES
from tagcli.core.batching import context_batches, encode_contexts
from tagcli.core.heads import TextHead
from tagcli.core.model import TaggedModel
from tagcli.core.prompt import PromptEncoder, PromptTemplate, collate

MAX_NEW = 12
TAG_TOKENS = {"smiles": [20, 21, 22], "answer": [30, 31]}  # each tag: the embeddings of these tokens

TEMPLATES = {
    "tags": "The {tag:smiles}{input:smiles} is{tag:answer}",
    "no-tags": "The {input:smiles} is",
    "two-slots": "{tag:smiles}{input:drug_a=smiles} and{tag:smiles}{input:drug_b=smiles}{tag:answer}",
}


def reference(lm, ids: list[int], eos: int, pad: int) -> list[int]:
    """`generate`'s greedy answer after the prompt `ids` (one row, no padding), cut at EOS."""
    prompt = torch.tensor([ids])
    out = lm.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        max_new_tokens=MAX_NEW,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    new = out[0, len(ids) :].tolist()
    return new[: new.index(eos)] if eos in new else new


@pytest.mark.parametrize("layout", list(TEMPLATES))
def test_shared_context_generation_equals_generate(base, layout: str) -> None:
    lm, tokenizer = base.model, base.tokenizer
    embeddings = lm.get_input_embeddings().weight.detach()
    template = PromptTemplate(TEMPLATES[layout])
    tags = {name: embeddings[ids].clone() for name, ids in TAG_TOKENS.items() if name in template.tags}
    model = TaggedModel(lm, tags, {"answer": TextHead("answer", MAX_NEW)}).eval()
    encoder = PromptEncoder(tokenizer, model.tag_table)
    values = {"smiles": SMILES, "drug_a": SMILES, "drug_b": SMILES[::-1]}
    inputs = {slot: encoder.tokenize_inputs(values[slot]) for slot in template.slots}

    suffix = collate([encoder.encode_suffix(template)], encoder.pad_id)
    shared: dict[int, list[int]] = {}
    batches = encode_contexts(context_batches(model, encoder, template, inputs, 3, 10**6, suffix.input_ids.shape[1]))
    for chunk, context in batches:
        answers = model.predict_after_context(context, suffix, "answer")["pred_answer"]
        shared.update(zip(chunk, answers))

    rows = encoder.encode(template, inputs)
    whole = model.generate(collate(rows, encoder.pad_id), MAX_NEW)  # the one-forward path, right-padded
    token_of_slot = {
        slot: TAG_TOKENS[name][k] for name, slots in model.tag_table.offsets.items() for k, slot in enumerate(slots)
    }
    eos, pad = lm.config.eos_token_id, encoder.pad_id
    generated_something = False
    for i, row in enumerate(rows):
        plain = [token_of_slot[s] if s >= 0 else t for t, s in zip(row.token_ids, row.slots)]
        expected = reference(lm, plain, eos, pad)
        assert shared[i] == expected, (i, shared[i], expected)
        assert whole[i] == expected
        generated_something |= len(expected) > 2
    assert generated_something
