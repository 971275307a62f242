"""TaggedModel on the tiny Llama: padding invariance, mixed tags per batch, prefix-cached readout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import PROTEINS, SMILES, random_tag, regression_head
from tagcli.core.batching import MAX_BATCH_TOKENS, context_batches, encode_contexts
from tagcli.core.model import TaggedModel
from tagcli.core.prompt import EncodedRow, PromptEncoder, PromptTemplate, collate
from tagcli.core.readout import PAPER, ReadoutSpec

QED = PromptTemplate("{tag:smiles}{input:smiles}{tag:qed}")
AFF = PromptTemplate("{tag:protein}{input:protein}{tag:aff}")
BIND = PromptTemplate("{tag:protein}{input:protein}{tag:smiles}{input:smiles}{tag:bind}")
ATOL = 1e-5


@pytest.fixture
def model(base) -> TaggedModel:
    d = base.hidden_size
    tags = {
        "smiles": random_tag(3, d, 1, scale=0.5),
        "protein": random_tag(4, d, 2, scale=0.5),
        "qed": random_tag(2, d, 3, scale=0.5),
        "aff": random_tag(3, d, 4, scale=0.5),
        "bind": random_tag(2, d, 5, scale=0.5),
    }
    heads = {"qed": regression_head(d, ["y"], seed=1), "aff": regression_head(d, ["a", "b"], seed=2)}
    return TaggedModel(base.model, tags, heads).eval()


@pytest.fixture
def encoder(base, model) -> PromptEncoder:
    return PromptEncoder(base.tokenizer, model.tag_table)


def smiles_rows(encoder: PromptEncoder, values=SMILES) -> list[EncodedRow]:
    return encoder.encode(QED, {"smiles": encoder.tokenize_inputs(values)})


def alone(model: TaggedModel, encoder: PromptEncoder, rows: list[EncodedRow]) -> torch.Tensor:
    return torch.cat([model.readout(collate([r], encoder.pad_id)) for r in rows])


@torch.no_grad()
def test_readout_is_the_same_under_left_and_right_padding(model, encoder) -> None:
    rows = smiles_rows(encoder)
    assert len({len(r) for r in rows}) > 3  # rows really are padded
    right = model.readout(collate(rows, encoder.pad_id, "right"))
    left = model.readout(collate(rows, encoder.pad_id, "left"))
    assert right.shape == (len(rows), model.hidden_size)
    torch.testing.assert_close(left, right, atol=ATOL, rtol=0)
    torch.testing.assert_close(alone(model, encoder, rows), right, atol=ATOL, rtol=0)
    # and the readout is not trivially constant across rows
    assert (right[0] - right[1]).abs().max() > 1e-3


@torch.no_grad()
def test_readout_is_the_function_tags_last_hidden_state(model, encoder) -> None:
    rows = smiles_rows(encoder, SMILES[:3])
    batch = collate(rows, encoder.pad_id, "right")
    hidden = model.hidden_states(batch)
    expected = torch.stack([hidden[i, r.readout] for i, r in enumerate(rows)])
    torch.testing.assert_close(model.readout(batch), expected, atol=0, rtol=0)


@torch.no_grad()
def test_embed_writes_tag_vectors_only_at_tag_positions(model, encoder) -> None:
    rows = smiles_rows(encoder, SMILES[:2])
    batch = collate(rows, encoder.pad_id, "left")
    embedded = model.embed(batch)
    tokens = model.lm.get_input_embeddings()(batch.input_ids)
    flat = torch.cat(list(model.tags.values()))
    for i in range(2):
        for j in range(batch.input_ids.shape[1]):
            slot = batch.slots[i, j].item()
            expected = flat[slot] if slot >= 0 else tokens[i, j]
            assert torch.equal(embedded[i, j], expected)


@torch.no_grad()
def test_tags_change_the_readout(model, encoder) -> None:
    rows = smiles_rows(encoder, SMILES[:2])
    batch = collate(rows, encoder.pad_id)
    before = model.readout(batch).clone()
    model.tags["smiles"].add_(1.0)
    after_domain = model.readout(batch).clone()
    model.tags["qed"].add_(1.0)
    after_function = model.readout(batch)
    assert (before - after_domain).abs().max() > 1e-3
    assert (after_domain - after_function).abs().max() > 1e-3


@torch.no_grad()
def test_rows_with_different_tags_share_a_batch(model, encoder) -> None:
    qed = smiles_rows(encoder, SMILES[:3])
    aff = encoder.encode(AFF, {"protein": encoder.tokenize_inputs(PROTEINS[:2])})
    bind = encoder.encode(
        BIND, {"protein": encoder.tokenize_inputs(PROTEINS[2:4]), "smiles": encoder.tokenize_inputs(SMILES[3:5])}
    )
    # Same smiles as qed[0] behind another function tag: the readout must differ.
    other = encoder.encode(
        PromptTemplate("{tag:smiles}{input:smiles}{tag:bind}"), {"smiles": encoder.tokenize_inputs(SMILES[:1])}
    )
    rows = [qed[0], aff[0], bind[0], qed[1], other[0], aff[1], bind[1], qed[2]]
    separate = alone(model, encoder, rows)
    for side in ("left", "right"):
        mixed = model.readout(collate(rows, encoder.pad_id, side))
        torch.testing.assert_close(mixed, separate, atol=ATOL, rtol=0)
    assert (separate[0] - separate[4]).abs().max() > 1e-3


def _context_readout(
    model: TaggedModel, encoder: PromptEncoder, template: PromptTemplate, inputs: dict, readout: ReadoutSpec = PAPER
) -> torch.Tensor:
    """Readout through the scorer's path: contexts without grad, then the function suffix (with grad)."""
    suffix = collate([encoder.encode_suffix(template)], encoder.pad_id)
    features = torch.empty(len(next(iter(inputs.values()))), readout.width(model.hidden_size))
    with torch.no_grad():
        batches = list(encode_contexts(context_batches(model, encoder, template, inputs, 3, MAX_BATCH_TOKENS)))
    out = []
    for chunk, context in batches:
        out.append((chunk, model.readout_after_context(context, suffix, readout)[0]))
        context.rewind()
    order = [j for chunk, _ in out for j in chunk]
    features = torch.cat([f for _, f in out])
    return features[torch.argsort(torch.tensor(order))]


def test_cached_context_readout_matches_readout_in_value_and_gradient(model, encoder) -> None:
    rows = smiles_rows(encoder)
    weights = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(0))

    full = model.readout(collate(rows, encoder.pad_id, "right"))
    (full @ weights).pow(2).sum().backward()
    grad_full = model.tags["qed"].grad.clone()
    model.zero_grad(set_to_none=True)

    cached = _context_readout(model, encoder, QED, {"smiles": encoder.tokenize_inputs(SMILES)})
    (cached @ weights).pow(2).sum().backward()
    grad_cached = model.tags["qed"].grad.clone()

    torch.testing.assert_close(cached.detach(), full.detach(), atol=1e-5, rtol=1e-4)
    assert grad_full.abs().max() > 0
    torch.testing.assert_close(grad_cached, grad_full, atol=1e-6, rtol=1e-4)
    # the contexts ran without a graph: the domain tag gets no gradient from the cached path
    grad = model.tags["smiles"].grad
    assert grad is None or not grad.any()


def test_cached_context_readout_with_two_domains(model, encoder) -> None:
    inputs = {"protein": encoder.tokenize_inputs(PROTEINS[:4]), "smiles": encoder.tokenize_inputs(SMILES[:4])}
    with torch.no_grad():
        full = model.readout(collate(encoder.encode(BIND, inputs), encoder.pad_id))
        cached = _context_readout(model, encoder, BIND, inputs)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_pooled_layer_readout_matches_a_reference_forward(base, model, encoder) -> None:
    """input-mean / tag-mean / tag-last of block 1 equal the same pools of the full prompt's states."""
    readout = ReadoutSpec(("input-mean", "tag-mean", "tag-last"), (1,))
    model.heads["pooled"] = regression_head(model.hidden_size, readout=readout)
    assert model.depth is None  # the other heads read the final layer
    values = SMILES[:5]
    inputs = {"smiles": encoder.tokenize_inputs(values)}
    features = _context_readout(model, encoder, QED, inputs, readout)
    assert features.shape == (len(values), 3 * model.hidden_size)
    p = len(model.tags["qed"])
    for i, row in enumerate(encoder.encode(QED, inputs)):
        batch = collate([row], encoder.pad_id)
        states = model.lm.base_model(inputs_embeds=model.embed(batch), output_hidden_states=True).hidden_states[1][0]
        n_input = len(inputs["smiles"][i])
        start = len(row) - p - n_input
        expected = torch.cat([states[start : start + n_input].mean(0), states[-p:].mean(0), states[-1]])
        torch.testing.assert_close(features[i], expected, atol=1e-5, rtol=1e-4)
    # Only that head left: the model stops after block 1, and the numbers do not change.
    model.heads = torch.nn.ModuleDict({"pooled": model.heads["pooled"]})
    assert model.depth == 1
    torch.testing.assert_close(_context_readout(model, encoder, QED, inputs, readout), features)


def test_backbone_has_no_trainable_parameters(tiny_model_dir: Path) -> None:
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert any(p.requires_grad for p in lm.parameters())  # a fresh model would train
    d = lm.get_input_embeddings().embedding_dim
    model = TaggedModel(lm, {"smiles": random_tag(2, d, 0), "qed": random_tag(2, d, 1)}, {"qed": regression_head(d)})
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"tags.smiles", "tags.qed", "heads.qed.members.0.weight", "heads.qed.members.0.bias"}
    assert not any(p.requires_grad for p in model.lm.parameters())
    assert all(t.dtype == torch.float32 for t in model.tags.values())


def test_next_token_loss_uses_only_positions_with_targets(model, encoder) -> None:
    rows = encoder.encode(PromptTemplate("{tag:smiles}{input:smiles}"), {"smiles": encoder.tokenize_inputs(SMILES[:3])})
    batch = collate(rows, encoder.pad_id)
    targets = torch.full_like(batch.input_ids, -100)
    for i, row in enumerate(rows):
        targets[i, 3 : len(row)] = torch.tensor(row.token_ids[3:])
    with torch.no_grad():
        loss = model.next_token_loss(batch, targets)
        logits = model.lm(
            inputs_embeds=model.embed(batch), attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).logits
        expected = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1), ignore_index=-100
        )
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_forward_and_predict_use_the_named_head(model, encoder) -> None:
    rows = smiles_rows(encoder, SMILES[:3])
    batch = collate(rows, encoder.pad_id)
    raw = model(batch, "qed")
    assert raw.shape == (3, 1)
    predicted = model.predict(batch, "qed")
    assert list(predicted) == ["pred_y"]
    head = model.heads["qed"]
    torch.testing.assert_close(predicted["pred_y"], raw.detach()[:, 0] * head.target_std + head.target_mean)
    assert list(model.predict(batch, "aff")) == ["pred_a", "pred_b"]


# --------------------------------------------------------------------------- shared prefix + several suffixes

TEXT_QED = PromptTemplate("Molecule: {tag:smiles}{input:smiles}. Its drug-likeness {tag:qed} is")


@pytest.mark.parametrize(
    "template",
    [QED, TEXT_QED, BIND, PromptTemplate("{input:smiles}")],
    ids=["tags", "text", "pair", "no-prefix-no-suffix"],
)
def test_shared_context_readout_matches_the_full_prompt(model, encoder, template: PromptTemplate) -> None:
    inputs = {"smiles": encoder.tokenize_inputs(SMILES[:4])}
    if "protein" in template.inputs:
        inputs["protein"] = encoder.tokenize_inputs(PROTEINS)
    full = model.readout(collate(encoder.encode(template, inputs), encoder.pad_id))
    split = encoder.encode_split(template, inputs)
    assert len({len(r) for r in split.body}) > 1  # bodies really are padded
    context = model.encode_context(collate([split.prefix], encoder.pad_id), collate(split.body, encoder.pad_id))
    shared, _, _ = model.readout_after_context(context, collate([split.suffix], encoder.pad_id))
    torch.testing.assert_close(shared, full, atol=ATOL, rtol=1e-4)


def test_several_suffixes_on_one_context_match_each_alone(model, encoder) -> None:
    """K function tags after the same inputs: the inputs run once, each suffix as if it were alone."""
    inputs = {"smiles": encoder.tokenize_inputs(SMILES[:5])}
    split = encoder.encode_split(QED, inputs)
    context = model.encode_context(collate([split.prefix], encoder.pad_id), collate(split.body, encoder.pad_id))
    for name in ("qed", "aff", "qed"):  # the repeat checks that the cache was rewound
        template = PromptTemplate("{tag:smiles}{input:smiles}{tag:" + name + "}")
        full = model.predict(collate(encoder.encode(template, inputs), encoder.pad_id), name)
        shared = model.predict_after_context(context, collate([encoder.encode_suffix(template)], encoder.pad_id), name)
        assert list(shared) == list(full)
        for column in full:
            torch.testing.assert_close(shared[column], full[column], atol=ATOL, rtol=1e-4)
    assert context.cache.get_seq_length() == context.mask.shape[1]  # every suffix was rewound


def test_shared_leads_match_the_full_prompt(model, encoder) -> None:
    """Rows whose first input repeats: each distinct lead runs once, the rows reuse its cache."""
    proteins = [PROTEINS[i] for i in (0, 1, 0, 2, 1, 0)]
    inputs = {"protein": encoder.tokenize_inputs(proteins), "smiles": encoder.tokenize_inputs(SMILES[:6])}
    full = model.readout(collate(encoder.encode(BIND, inputs), encoder.pad_id))
    split = encoder.encode_split(BIND, inputs)
    leads, rests = encoder.encode_lead_rest(BIND, inputs)
    distinct = [leads[0], leads[1], leads[3]]
    context = model.encode_shared_leads(
        collate([split.prefix], encoder.pad_id),
        collate(distinct, encoder.pad_id),
        torch.tensor([0, 1, 0, 2, 1, 0]),
        collate(rests, encoder.pad_id),
    )
    shared, _, _ = model.readout_after_context(context, collate([split.suffix], encoder.pad_id))
    torch.testing.assert_close(shared, full, atol=ATOL, rtol=1e-4)
