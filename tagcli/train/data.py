"""Training data: read and split the tables, clean and encode rows, parse labels with the head.

Rows with a bad input or an incomplete label are dropped and counted by reason (printed as a
warning, and recorded in the pack's manifest and card); nothing is silently zeroed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from tagcli.core.batching import prepare_inputs
from tagcli.core.domains import DomainInput
from tagcli.core.heads import Head
from tagcli.core.heads.classification import class_label
from tagcli.core.prompt import EncodedRow, PromptEncoder, PromptTemplate
from tagcli.errors import UsageError
from tagcli.io.tables import open_table
from tagcli.train.config import TrainConfig


@dataclass
class Examples:
    """Encoded rows of one split with what their loss needs.

    `targets` are the head's parsed labels (readout objective) or next-token targets, -100 where
    no loss is taken (next-token objective: stage 1 and text answers); `labels` are the parsed
    labels for metrics (empty in stage 1).
    """

    rows: list[EncodedRow]
    targets: list[Any]
    labels: list[Any]
    template: PromptTemplate
    inputs: dict[str, list[list[int]]]  # input slot → each kept row's input tokens (what `rows` lay out)
    extra: torch.Tensor | None = None  # [n, k] the final head's extra features of each kept row, if any
    source: str = ""  # the file the rows came from (for messages)
    read: int = 0  # rows read from it
    dropped: Counter[str] = field(default_factory=Counter)  # why rows were dropped → how many
    first_dropped: dict[str, str] = field(default_factory=dict)  # reason → the first such row's full error


def read_table(path: str, limit: int | None) -> pa.Table:
    batches, rows = [], 0
    with open_table(path) as reader:
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if limit is not None and rows >= limit:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    return table.slice(0, limit) if limit is not None else table


def split_tables(config: TrainConfig) -> tuple[pa.Table, pa.Table]:
    """(train, validation): `--val` if given, else a seeded `val_fraction` of `--data`; both checked
    for the target columns."""
    if config.val:
        if Path(config.val).resolve() == Path(config.data).resolve():
            raise UsageError(
                f"--val {config.val} is the training file itself: its metrics would be measured on training rows",
                hint="pass a held-out file, or leave --val out to hold out a share of --data",
            )
        train, val = read_table(config.data, config.max_rows), read_table(config.val, config.max_val_rows)
    else:
        table = read_table(config.data, config.max_rows)
        order = np.random.default_rng(config.seed).permutation(table.num_rows)
        n_val = max(1, int(round(table.num_rows * config.val_fraction)))
        val = table.take(order[:n_val])
        train = table.take(np.sort(order[n_val:]))
        val = val.slice(0, config.max_val_rows) if config.max_val_rows else val
    check_targets(config, train, config.data)
    check_targets(config, val, config.val or config.data)
    return train, val


def check_targets(config: TrainConfig, table: pa.Table, where: str) -> None:
    missing = [c for c in config.targets if c not in table.column_names]
    if missing:
        raise UsageError(f"no target column '{missing[0]}' in {where} (columns: {', '.join(table.column_names)})")


def encode_examples(
    config: TrainConfig,
    encoder: PromptEncoder,
    template: PromptTemplate,
    specs: Mapping[str, DomainInput],
    table: pa.Table,
    head: Head | None,
    source: str = "",
    final: Head | None = None,
) -> Examples:
    """Clean, tokenize and lay out rows; rows with a bad input or a missing label are dropped and counted.

    `specs` says how each domain's cells are cleaned; the template's input slots (several may share a
    domain: `{input:drug_a=smiles}{input:drug_b=smiles}`) take their columns from `config.inputs`.
    """
    slots = template.slots  # checked against --input and --symmetric before the model loaded
    errors: list[str | None] = [None] * table.num_rows
    slot_specs = {slot: specs[domain] for slot, domain in slots.items()}
    texts: dict[str, list[str | None]] = {}
    tokens = prepare_inputs(encoder, slot_specs, table, config.columns | config.inputs, errors, slots, texts)
    extra = _extra_features(final, texts, errors) if final is not None else None
    cells = [table.column(c).to_pylist() for c in config.targets]
    labels = head.parse_labels(cells) if head is not None else []
    for i, label in enumerate(labels):
        if errors[i] is None and not head.is_complete(label):  # type: ignore[union-attr]
            blank = all(class_label(column[i]) is None for column in cells)
            errors[i] = "missing label" if blank else head.unusable_label  # type: ignore[union-attr]
    keep = [i for i, e in enumerate(errors) if e is None]
    inputs = {slot: [tokens[slot][i] for i in keep] for slot in slots}
    rows = encoder.encode(template, inputs)
    kept_labels = [labels[i] for i in keep] if head is not None else []
    if head is None:  # stage 1: predict the input's own tokens, which end the row
        domain_tokens = inputs[next(iter(slots))]
        targets: list[Any] = [[-100] * (len(r) - len(t)) + t for r, t in zip(rows, domain_tokens)]
    elif head.objective == "next-token":  # the answer follows the prompt; only it carries a loss
        answers = [head.answer_tokens(label, encoder.tokenizer) for label in kept_labels]
        targets = [[-100] * len(r) + answer for r, answer in zip(rows, answers)]
        rows = [EncodedRow(r.token_ids + a, r.slots + [-1] * len(a), r.readout) for r, a in zip(rows, answers)]
    else:
        targets = kept_labels
    kept_extra = extra[keep] if extra is not None else None
    examples = Examples(rows, targets, kept_labels, template, inputs, kept_extra, source, table.num_rows)
    for i, error in enumerate(errors):
        if error is not None:
            reason = drop_reason(error)
            examples.dropped[reason] += 1
            examples.first_dropped.setdefault(reason, f"row {i + 1}: {error}")
    return examples


def _extra_features(final: Head, texts: dict[str, list[str | None]], errors: list[str | None]) -> torch.Tensor | None:
    """The final head's extra features of every row (rows already invalid get placeholders); a row whose
    features cannot be computed gets the reason in `errors`."""
    valid = [i for i, e in enumerate(errors) if e is None]
    values, problems = final.input_features({slot: [column[i] for i in valid] for slot, column in texts.items()})
    if values is None:
        return None
    extra = torch.full((len(errors), values.shape[1]), float("nan"))
    extra[valid] = values
    for i, problem in zip(valid, problems):
        errors[i] = problem
    return extra


def drop_reason(error: str) -> str:
    """A row error without what is particular to the row: "invalid SMILES 'C1CC': unclosed ring" →
    "invalid SMILES" (reasons are counted)."""
    return re.split(r"['\"]|\s\d", error, maxsplit=1)[0].rstrip(" :,") or error


def check_slots(config: TrainConfig, template: PromptTemplate) -> dict[str, str]:
    """The template's input slots (slot → domain), once `--input` and `--symmetric` are checked against them."""
    slots = template.slots
    unknown = [slot for slot in config.inputs if slot not in slots]
    if unknown:
        raise UsageError(
            f"--input {unknown[0]}=...: the template {template.text!r} has no input slot {unknown[0]!r}",
            hint=f"its slots: {', '.join(slots)}",
        )
    if config.symmetric and (len(slots) != 2 or len(set(slots.values())) != 1):
        raise UsageError(f"--symmetric needs two input slots of one domain; the template has {', '.join(slots)}")
    return slots
