"""Prompt layout: template parsing, tag splicing, padding, per-row readout, length batching, BOS."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from tokenizers import processors
from transformers import AutoTokenizer

from tagcli.core.batching import length_batches
from tagcli.core.prompt import EncodedRow, PromptEncoder, PromptTemplate, TagTable, collate
from tagcli.errors import PackError

QED = PromptTemplate("{tag:smiles}{input:smiles}{tag:qed}")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def bos_tokenizer(tiny_model_dir: Path):
    """The tiny tokenizer made to prepend <s> by default, like Llama-2's."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)]
    )
    assert tok("x").input_ids[0] == tok.bos_token_id
    return tok


TABLE = TagTable({"smiles": 3, "protein": 4, "qed": 2, "bind": 2})


# --------------------------------------------------------------------------- templates


def test_template_segments_tags_inputs_and_function_tag() -> None:
    template = PromptTemplate("Molecule {tag:smiles}{input:smiles} has {tag:qed}.")
    kinds = [(s.kind, s.value) for s in template.segments]
    assert kinds == [
        ("text", "Molecule "),
        ("tag", "smiles"),
        ("input", "smiles"),
        ("text", " has "),
        ("tag", "qed"),
        ("text", "."),
    ]
    assert template.tags == ["smiles", "qed"]
    assert template.inputs == ["smiles"]
    assert template.ends_with_tag is None  # text closes it: the readout is the final "."
    template.validate()


def test_two_domain_template() -> None:
    template = PromptTemplate("{tag:protein}{input:protein}{tag:smiles}{input:smiles}{tag:bind}")
    template.validate()
    assert template.inputs == ["protein", "smiles"]
    assert template.ends_with_tag == "bind"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{tag:Smiles}{input:smiles}{tag:qed}", "malformed placeholder"),  # upper case is not a NAME
        ("{tag smiles}{input:smiles}{tag:qed}", "malformed placeholder"),
        ("{tag:smiles}{input:smiles}{tag:qed", "malformed placeholder"),
        ("{text:x}{input:smiles}{tag:qed}", "malformed placeholder"),
        ("{tag:smiles} and {tag:qed}", "no {input:NAME}"),
    ],
)
def test_template_validation_errors(text: str, problem: str) -> None:
    with pytest.raises(PackError) as info:
        PromptTemplate(text).validate()
    message = str(info.value)
    assert problem in message and "\n" not in message
    assert repr(text) in message


def test_rename_swaps_domain_tags_and_inputs_but_not_the_function() -> None:
    renamed = QED.rename({"smiles": "protein"})
    assert renamed.text == "{tag:protein}{input:protein}{tag:qed}"
    assert renamed.ends_with_tag == "qed"
    # Plain text that spells a domain name is left alone.
    assert (
        PromptTemplate("smiles: {input:smiles}{tag:qed}").rename({"smiles": "x"}).text == "smiles: {input:x}{tag:qed}"
    )


def test_tag_table_offsets_are_contiguous() -> None:
    assert TABLE.names == ["smiles", "protein", "qed", "bind"]
    assert TABLE.offsets == {"smiles": range(0, 3), "protein": range(3, 7), "qed": range(7, 9), "bind": range(9, 11)}
    assert TABLE.size == 11


# --------------------------------------------------------------------------- splicing


def test_encode_places_tag_slots_and_pad_ids(tokenizer) -> None:
    encoder = PromptEncoder(tokenizer, TABLE)
    assert encoder.prefix_ids == []  # the tiny tokenizer adds no BOS
    values = ["CCO", "CC(=O)Oc1ccccc1C(=O)O"]
    tokens = encoder.tokenize_inputs(values)
    assert tokens == [tokenizer(v, add_special_tokens=False).input_ids for v in values]
    rows = encoder.encode(QED, {"smiles": tokens})
    pad = tokenizer.pad_token_id
    for row, ids in zip(rows, tokens):
        n = len(ids)
        assert row.token_ids == [pad] * 3 + ids + [pad] * 2
        assert row.slots == [0, 1, 2] + [-1] * n + [7, 8]
        assert row.readout == 3 + n + 1
        assert row.slots[row.readout] == TABLE.offsets["qed"][-1]
        assert len(row) == 3 + n + 2


def test_encode_text_segments_are_tokenized_on_their_own(tokenizer) -> None:
    encoder = PromptEncoder(tokenizer, TABLE)
    template = PromptTemplate("The molecule {tag:smiles}{input:smiles} is {tag:qed}")
    ids = encoder.tokenize_inputs(["CCO"])[0]
    (row,) = encoder.encode(template, {"smiles": [ids]})
    head = tokenizer("The molecule ", add_special_tokens=False).input_ids
    middle = tokenizer(" is ", add_special_tokens=False).input_ids
    pad = tokenizer.pad_token_id
    assert row.token_ids == head + [pad] * 3 + ids + middle + [pad] * 2
    assert row.slots == [-1] * len(head) + [0, 1, 2] + [-1] * (len(ids) + len(middle)) + [7, 8]
    assert row.readout == len(row) - 1


def test_encode_two_domains(tokenizer) -> None:
    encoder = PromptEncoder(tokenizer, TABLE)
    template = PromptTemplate("{tag:protein}{input:protein}{tag:smiles}{input:smiles}{tag:bind}")
    protein, smiles = encoder.tokenize_inputs(["MKTAY"])[0], encoder.tokenize_inputs(["CCO"])[0]
    (row,) = encoder.encode(template, {"protein": [protein], "smiles": [smiles]})
    assert row.slots == [3, 4, 5, 6] + [-1] * len(protein) + [0, 1, 2] + [-1] * len(smiles) + [9, 10]
    assert row.readout == len(row) - 1


def _rows(tokenizer) -> tuple[PromptEncoder, list[EncodedRow]]:
    encoder = PromptEncoder(tokenizer, TABLE)
    values = ["CCO", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "c1ccccc1", "C"]
    return encoder, encoder.encode(QED, {"smiles": encoder.tokenize_inputs(values)})


@pytest.mark.parametrize("side", ["left", "right"])
def test_collate_keeps_slots_ids_and_positions_under_padding(tokenizer, side: str) -> None:
    encoder, rows = _rows(tokenizer)
    batch = collate(rows, encoder.pad_id, side)
    width = max(len(r) for r in rows)
    assert (
        batch.input_ids.shape
        == batch.slots.shape
        == batch.attention_mask.shape
        == batch.position_ids.shape
        == (4, width)
    )
    for i, row in enumerate(rows):
        start = width - len(row) if side == "left" else 0
        span = slice(start, start + len(row))
        assert batch.input_ids[i, span].tolist() == row.token_ids
        assert batch.slots[i, span].tolist() == row.slots
        assert batch.attention_mask[i].tolist() == [0] * start + [1] * len(row) + [0] * (width - start - len(row))
        assert batch.position_ids[i, span].tolist() == list(range(len(row)))
        # padding never carries a tag slot
        outside = torch.ones(width, dtype=torch.bool)
        outside[span] = False
        assert (batch.slots[i][outside] == -1).all()
        # every tag position holds the pad id as its placeholder token
        tag_positions = batch.slots[i] >= 0
        assert (batch.input_ids[i][tag_positions] == encoder.pad_id).all()
        assert batch.slots[i][tag_positions].tolist() == [0, 1, 2, 7, 8]
        # the readout is this row's own last function-tag position
        assert batch.readout[i].item() == start + row.readout
        assert batch.slots[i, batch.readout[i]].item() == TABLE.offsets["qed"][-1]


def test_readout_is_per_row_not_per_batch(tokenizer) -> None:
    encoder, rows = _rows(tokenizer)
    batch = collate(rows, encoder.pad_id, "right")
    assert batch.readout.tolist() == [r.readout for r in rows]
    assert len(set(batch.readout.tolist())) == len(rows)  # rows of different lengths


def test_readout_follows_each_rows_own_function_tag(tokenizer) -> None:
    """Rows of two different functions (and domains) share a batch; each reads its own tag."""
    encoder = PromptEncoder(tokenizer, TABLE)
    qed_rows = encoder.encode(QED, {"smiles": encoder.tokenize_inputs(["CCO", "c1ccccc1"])})
    bind = PromptTemplate("{tag:protein}{input:protein}{tag:smiles}{input:smiles}{tag:bind}")
    bind_rows = encoder.encode(
        bind, {"protein": encoder.tokenize_inputs(["MKTAYIAK"]), "smiles": encoder.tokenize_inputs(["CCO"])}
    )
    rows = [qed_rows[0], bind_rows[0], qed_rows[1]]
    for side in ("left", "right"):
        batch = collate(rows, encoder.pad_id, side)
        read = batch.slots[torch.arange(3), batch.readout].tolist()
        assert read == [TABLE.offsets["qed"][-1], TABLE.offsets["bind"][-1], TABLE.offsets["qed"][-1]]


def test_batch_to_keeps_every_field(tokenizer) -> None:
    encoder, rows = _rows(tokenizer)
    batch = collate(rows, encoder.pad_id)
    moved = batch.to(torch.device("cpu"))
    for name in ("input_ids", "slots", "attention_mask", "position_ids", "readout"):
        assert torch.equal(getattr(moved, name), getattr(batch, name)), name


# --------------------------------------------------------------------------- BOS


def test_bos_prefix_is_kept_when_the_tokenizer_adds_it(bos_tokenizer) -> None:
    encoder = PromptEncoder(bos_tokenizer, TABLE)
    bos = bos_tokenizer.bos_token_id
    assert encoder.prefix_ids == [bos]
    ids = encoder.tokenize_inputs(["CCO"])[0]
    assert bos not in ids  # inputs are tokenized without special tokens
    assert encoder.text_ids("hello ") == bos_tokenizer("hello ", add_special_tokens=False).input_ids
    (row,) = encoder.encode(QED, {"smiles": [ids]})
    pad = encoder.pad_id
    assert row.token_ids == [bos] + [pad] * 3 + ids + [pad] * 2
    assert row.slots == [-1, 0, 1, 2] + [-1] * len(ids) + [7, 8]
    assert row.readout == 1 + 3 + len(ids) + 1


def test_pad_id_falls_back_to_eos(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token = None
    assert tok.pad_token_id is None
    assert PromptEncoder(tok, TABLE).pad_id == tok.eos_token_id


# --------------------------------------------------------------------------- length batches


def _check_batches(lengths: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    batches = list(length_batches(lengths, batch_size, max_tokens))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every row exactly once
    for chunk in batches:
        assert 1 <= len(chunk) <= batch_size
        width = max(lengths[i] for i in chunk)
        assert len(chunk) == 1 or len(chunk) * width <= max_tokens
    return batches


def test_length_batches_respect_row_and_token_budgets() -> None:
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 300) for _ in range(rng.randint(0, 60))]
        _check_batches(lengths, rng.randint(1, 16), rng.randint(1, 2000))


def test_length_batches_examples() -> None:
    assert list(length_batches([], 4, 100)) == []
    assert _check_batches([5, 1, 3, 2], 2, 1000) == [[1, 3], [2, 0]]  # sorted by length
    assert _check_batches([10] * 5, 64, 30) == [[0, 1, 2], [3, 4]]  # 3 rows x 10 tokens fit 30
    # a row longer than the token budget still gets scored, alone
    assert _check_batches([500, 1, 1], 64, 100) == [[1, 2], [0]]
    assert _check_batches([7, 7, 7], 1, 10_000) == [[0], [1], [2]]


def test_length_batches_keep_groups_together_and_respect_budgets() -> None:
    lengths = [5, 1, 9, 2, 7, 3, 8]
    groups = ["a", "b", "a", "b", "a", "c", "b"]
    batches = list(length_batches(lengths, batch_size=2, max_tokens=100, groups=groups))
    # groups in order of their shortest row (b: 1, c: 3, a: 5), rows by length within a group
    assert [[groups[i] for i in b] for b in batches] == [["b", "b"], ["b", "c"], ["a", "a"], ["a"]]
    assert sorted(i for b in batches for i in b) == list(range(7))
    # the padded-token budget uses the widest row so far, whatever the order
    for batch in length_batches(lengths, batch_size=10, max_tokens=16, groups=groups):
        assert len(batch) * max(lengths[i] for i in batch) <= 16 or len(batch) == 1
