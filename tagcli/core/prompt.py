"""The prompt layout: where tags and inputs go, and how a row becomes token ids + tag slots.

A prompt template is plain text with two kinds of placeholder:

    {tag:NAME}          p learned vectors of the tag NAME (a domain or a function tag)
    {input:SLOT=NAME}   the row's value for the input slot SLOT, of the domain NAME: several inputs of
                        one domain, "{tag:smiles}{input:drug_a=smiles}{tag:smiles}{input:drug_b=smiles}{tag:f}"
    {input:NAME}        the row's value for the domain NAME (a SMILES string, a protein sequence): the
                        input slot NAME of the domain NAME

e.g. the QED pack uses ``"{tag:smiles}{input:smiles}{tag:qed}"``. The model reads out the final
position of the prompt (see `TaggedModel.readout`): Tag-LLM templates end with the function tag,
so that is the function tag's last vector; baseline templates (prompt tuning, linear probe) end
with the input, so it is the input's last token.

Each text and input segment is tokenized on its own and the pieces are concatenated, so the
token ids of an input never depend on the text around it (same ids in training and scoring).
Tag positions get `pad_token_id` as a placeholder id and a *slot*: an index into the model's
flat table of tag vectors (`TagTable`). Every other position has slot -1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from tagcli.errors import PackError

NAME = r"[a-z][a-z0-9_-]*"
PLACEHOLDER = re.compile(r"\{(tag|input):(" + NAME + r")(?:=(" + NAME + r"))?\}")
NAME_RE = re.compile(NAME + r"\Z")


@dataclass(frozen=True)
class Segment:
    kind: Literal["text", "tag", "input"]
    value: str  # the text, the tag's name, or the input's slot name
    domain: str = ""  # an input's domain ("" for text and tags)


@dataclass(frozen=True)
class PromptTemplate:
    text: str

    @cached_property
    def segments(self) -> tuple[Segment, ...]:
        segments: list[Segment] = []
        position = 0
        for match in PLACEHOLDER.finditer(self.text):
            if match.start() > position:
                segments.append(Segment("text", self.text[position : match.start()]))
            kind, name, domain = match.groups()
            if kind == "input":
                segments.append(Segment("input", name, domain or name))
            else:  # "{tag:a=b}" is malformed: `validate` says so
                segments.append(Segment("tag", name))
            position = match.end()
        if position < len(self.text):
            segments.append(Segment("text", self.text[position:]))
        return tuple(segments)

    @property
    def tags(self) -> list[str]:
        return [s.value for s in self.segments if s.kind == "tag"]

    @property
    def inputs(self) -> list[str]:
        """The domain of each input slot, in template order (a domain appears once per slot of it)."""
        return [s.domain for s in self.segments if s.kind == "input"]

    @property
    def slots(self) -> dict[str, str]:
        """Input slot name → its domain, in template order (`{input:smiles}` is the slot smiles)."""
        return {s.value: s.domain for s in self.segments if s.kind == "input"}

    @property
    def ends_with_tag(self) -> str | None:
        """The tag that closes the template (Tag-LLM's function tag), if one does."""
        last = self.segments[-1] if self.segments else None
        return last.value if last is not None and last.kind == "tag" else None

    def split(self) -> tuple[tuple[Segment, ...], tuple[Segment, ...], tuple[Segment, ...]]:
        """Segments before the first input, from the first through the last input, and after it."""
        kinds = [s.kind for s in self.segments]
        first, last = kinds.index("input"), len(kinds) - 1 - kinds[::-1].index("input")
        return self.segments[:first], self.segments[first : last + 1], self.segments[last + 1 :]

    def validate(self) -> None:
        """Raise PackError unless every placeholder is well formed, there is an input and no slot is there twice."""
        if "{" in PLACEHOLDER.sub("", self.text) or any(
            m[1] == "tag" and m[3] for m in PLACEHOLDER.finditer(self.text)
        ):
            raise PackError(
                f"prompt template {self.text!r} has a malformed placeholder: "
                "use {tag:NAME}, {input:NAME} or {input:SLOT=NAME}"
            )
        if not self.inputs:
            raise PackError(f"prompt template {self.text!r} has no {{input:NAME}} placeholder")
        names = [s.value for s in self.segments if s.kind == "input"]
        twice = next((name for k, name in enumerate(names) if name in names[:k]), None)
        if twice is not None:
            raise PackError(
                f"prompt template {self.text!r} has the input slot {twice!r} twice",
                hint="name each slot, e.g. {input:drug_a=smiles} and {input:drug_b=smiles}",
            )

    def rename(self, mapping: Mapping[str, str]) -> PromptTemplate:
        """Swap domain names (tags and inputs), e.g. to put a function tag behind another domain.
        Named slots keep their names (`{input:drug_a=smiles}` → `{input:drug_a=selfies}`)."""

        def renamed(m: re.Match) -> str:
            kind, name, domain = m.groups()
            if domain:
                return "{" + f"{kind}:{name}={mapping.get(domain, domain)}" + "}"
            return "{" + f"{kind}:{mapping.get(name, name)}" + "}"

        return PromptTemplate(PLACEHOLDER.sub(renamed, self.text))


class TagTable:
    """Names → slot ranges in the flat [sum(p), d] tensor of all tag vectors."""

    def __init__(self, lengths: Mapping[str, int]) -> None:
        self.names = list(lengths)
        self.offsets: dict[str, range] = {}
        start = 0
        for name, length in lengths.items():
            self.offsets[name] = range(start, start + length)
            start += length
        self.size = start


@dataclass
class EncodedRow:
    token_ids: list[int]
    slots: list[int]  # -1 for a token, else the tag-table slot of the vector placed here
    readout: int  # the prompt's last position: where the head reads the hidden state

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass
class TaggedBatch:
    """A padded batch ready for `TaggedModel`: ids, tag slots, mask, positions, readout index."""

    input_ids: torch.Tensor  # [n, L] long; pad/tag positions hold pad_token_id
    slots: torch.Tensor  # [n, L] long; -1 where a real token sits
    attention_mask: torch.Tensor  # [n, L] long; 0 on padding
    position_ids: torch.Tensor  # [n, L] long; counts real positions only, so left padding is harmless
    readout: torch.Tensor  # [n] long; per-row index of each prompt's last position

    def to(self, device: torch.device) -> TaggedBatch:
        return TaggedBatch(
            *(t.to(device) for t in (self.input_ids, self.slots, self.attention_mask, self.position_ids, self.readout))
        )


class PromptEncoder:
    """Turns rows of input strings into `EncodedRow`s for one template and tag table."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, tag_table: TagTable) -> None:
        self.tokenizer = tokenizer
        self.tag_table = tag_table
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.prefix_ids = self._bos_prefix()
        self._text_ids: dict[str, list[int]] = {}

    def _bos_prefix(self) -> list[int]:
        # Models whose tokenizer adds BOS by default (Llama-2) were trained with it; keep it.
        bos = self.tokenizer.bos_token_id
        ids = self.tokenizer("x").input_ids
        return [bos] if bos is not None and ids and ids[0] == bos else []

    def text_ids(self, text: str) -> list[int]:
        if text not in self._text_ids:
            self._text_ids[text] = self.tokenizer(text, add_special_tokens=False).input_ids
        return self._text_ids[text]

    def tokenize_inputs(self, values: Sequence[str]) -> list[list[int]]:
        """Token ids of each input value (batched through the fast tokenizer)."""
        if not values:
            return []
        return self.tokenizer(list(values), add_special_tokens=False).input_ids

    def _lay_out(
        self, segments: Sequence[Segment], inputs: Mapping[str, Sequence[list[int]]], i: int
    ) -> tuple[list[int], list[int]]:
        """Token ids and slots of `segments` for row i."""
        ids: list[int] = []
        slots: list[int] = []
        for segment in segments:
            if segment.kind == "tag":
                tag_slots = self.tag_table.offsets[segment.value]
                ids += [self.pad_id] * len(tag_slots)
                slots += list(tag_slots)
            else:
                piece = self.text_ids(segment.value) if segment.kind == "text" else inputs[segment.value][i]
                ids += piece
                slots += [-1] * len(piece)
        return ids, slots

    def _row(
        self, segments: Sequence[Segment], inputs: Mapping[str, Sequence[list[int]]], i: int, bos: bool
    ) -> EncodedRow:
        ids, slots = self._lay_out(segments, inputs, i)
        if bos:
            ids, slots = self.prefix_ids + ids, [-1] * len(self.prefix_ids) + slots
        return EncodedRow(ids, slots, len(ids) - 1)

    def encode(self, template: PromptTemplate, inputs: Mapping[str, Sequence[list[int]]]) -> list[EncodedRow]:
        """Lay out each row: `inputs[slot][i]` are row i's token ids for the input slot `slot`."""
        n_rows = len(next(iter(inputs.values())))
        return [self._row(template.segments, inputs, i, bos=True) for i in range(n_rows)]

    def encode_split(self, template: PromptTemplate, inputs: Mapping[str, Sequence[list[int]]]) -> SplitPrompt:
        """Like `encode`, but cut into the part shared by all rows before the inputs, the per-row
        body (first input through last input) and the shared part after the inputs."""
        before, body, after = template.split()
        n_rows = len(next(iter(inputs.values())))
        return SplitPrompt(
            prefix=self._row(before, {}, 0, bos=True),
            body=[self._row(body, inputs, i, bos=False) for i in range(n_rows)],
            suffix=self.encode_suffix(template),
        )

    def encode_lead_rest(
        self, template: PromptTemplate, inputs: Mapping[str, Sequence[list[int]]]
    ) -> tuple[list[EncodedRow], list[EncodedRow]]:
        """The body of a template with several inputs, cut at its second input: per row, the
        *lead* (first input and what follows it up to the second input, e.g. protein + SMILES tag)
        and the *rest*. Rows that share a lead (one protein, many ligands) can share its KV cache."""
        body = template.split()[1]
        second = next(k for k, s in enumerate(body) if s.kind == "input" and k > 0)
        n_rows = len(next(iter(inputs.values())))
        return (
            [self._row(body[:second], inputs, i, bos=False) for i in range(n_rows)],
            [self._row(body[second:], inputs, i, bos=False) for i in range(n_rows)],
        )

    def encode_suffix(self, template: PromptTemplate) -> EncodedRow:
        """The shared part after the last input (the function tag in Tag-LLM templates)."""
        return self._row(template.split()[2], {}, 0, bos=False)


@dataclass
class SplitPrompt:
    """Rows of one template as shared prefix + per-row body + shared suffix (see `encode_split`).

    The prefix (BOS, leading text, domain tag) and the suffix (function tag) are the same for every
    row, so their key/value states can be computed once and shared; only the body differs per row.
    """

    prefix: EncodedRow
    body: list[EncodedRow]
    suffix: EncodedRow


def collate(rows: Sequence[EncodedRow], pad_id: int, padding_side: Literal["left", "right"] = "right") -> TaggedBatch:
    """Pad rows to one length. Position ids skip padding, so both sides give the same hidden states."""
    width = max(len(r) for r in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    slots = torch.full((n, width), -1, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    readout = torch.empty(n, dtype=torch.long)
    for i, row in enumerate(rows):
        start = width - len(row) if padding_side == "left" else 0
        span = slice(start, start + len(row))
        input_ids[i, span] = torch.tensor(row.token_ids)
        slots[i, span] = torch.tensor(row.slots)
        mask[i, span] = 1
        readout[i] = start + row.readout
    position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return TaggedBatch(input_ids, slots, mask, position_ids, readout)
