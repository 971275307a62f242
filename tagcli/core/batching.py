"""Batching: from raw cells to model-ready batches, shared by scoring and training.

    cells ──clean (domains.py)──▶ text ──tokenize──▶ token ids per input slot (`prepare_inputs`)
          ──length_batches──▶ row indices of similar length, within row and token budgets
          ──context_batches──▶ each batch's KV context: shared prefix once, every row's inputs once

Training uses the same path for its readouts (so its features are the scorer's features) and
`epoch_batches` for shuffled, length-grouped micro-batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial

import pyarrow as pa
import torch

from tagcli.core.domains import INPUT_KINDS, DomainInput
from tagcli.core.model import SharedContext, TaggedModel
from tagcli.core.prompt import PromptEncoder, PromptTemplate, collate
from tagcli.errors import InputFileError, UsageError

# Most padded tokens per forward pass (`--max-batch-tokens`): long inputs get smaller batches, so a batch's
# activations stay bounded (scoring, training readouts and validation all use this default).
MAX_BATCH_TOKENS = 32768
# Most rows per forward pass (`--batch-size`), the other budget of a batch.
BATCH_ROWS = 64


def find_input_column(
    names: Sequence[str],
    domain: str,
    kind: str,
    columns: Mapping[str, str],
    slot: str | None = None,
    slots: Mapping[str, str] | None = None,
) -> str:
    """The column holding an input: named explicitly, else found by a known name.

    `slot` is the input slot (default: the domain's own, `{input:DOMAIN}`) and `slots` all the slots of
    the template (slot → domain). `columns` keys are slot names, domains, input kinds or "*" (any input).
    A slot named like its domain keeps the old lookup (domain, kind, "*", then the usual column names);
    a named slot (`{input:drug_a=smiles}`) takes `columns[slot]`, else a column named like the slot; only
    the one slot of its domain also takes the domain's (and its kind's) column and names, and only the one
    slot of the template "*".
    """
    slot = slot or domain
    if slot == domain:
        explicit = columns.get(domain) or columns.get(kind) or columns.get("*")
        candidates: tuple[str, ...] = (domain, *INPUT_KINDS[kind].column_names)
    else:
        others = [d for s, d in (slots or {}).items() if s != slot]
        alone = domain not in others  # the one slot of its domain: the domain's options are its own
        explicit = (
            columns.get(slot)
            or (columns.get(domain) or columns.get(kind) if alone else None)
            or (columns.get("*") if not others else None)
        )
        candidates = (slot, *((domain, *INPUT_KINDS[kind].column_names) if alone else ()))
    where = "" if slot == domain else f"input slot {slot}: "
    if explicit:
        if explicit not in names:
            raise UsageError(f"{where}no column '{explicit}' in the input (columns: {_names(names)})")
        return explicit
    by_lower = {name.lower(): name for name in names}
    for candidate in candidates:
        if candidate in by_lower:
            return by_lower[candidate]
    if slot != domain:
        raise UsageError(
            f"cannot find the column of input slot {slot} ({domain}) among {_names(names)}",
            hint=f"pass --input {slot}=COLUMN",
        )
    raise UsageError(
        f"cannot find the {domain} input column among {_names(names)}",
        hint=f"pass --{kind}-col NAME (or --column NAME)",
    )


def _names(names: Sequence[str]) -> str:
    """Column names for a one-line message: a name with a line break or control character is quoted."""
    return ", ".join(name if name.isprintable() else repr(name) for name in names)


def prepare_inputs(
    encoder: PromptEncoder,
    domains: Mapping[str, DomainInput],
    table: pa.Table,
    columns: Mapping[str, str],
    errors: list[str | None],
    slots: Mapping[str, str] | None = None,
    texts: dict[str, list[str | None]] | None = None,
) -> dict[str, list[list[int] | None]]:
    """Token ids per input slot per row (None where the row is invalid); records why in `errors`, and
    the cleaned text per slot in `texts` when given (what extra features are computed from).

    `domains` maps each input slot to how its cells are cleaned, `slots` each slot to its domain
    (default: every slot is its domain's own, `{input:DOMAIN}`). A row's error names its slot and
    column when the slot has a name of its own ("drug_b (smiles_2): invalid SMILES ..."), its domain
    when there are several ("smiles: ...").
    """
    slots = {slot: (slots or {}).get(slot, slot) for slot in domains}
    tokens: dict[str, list[list[int] | None]] = {}
    for slot, spec in domains.items():
        domain = slots[slot]
        column = find_input_column(table.column_names, domain, spec.kind, columns, slot, slots)
        if table.column_names.count(column) > 1:  # Parquet allows it; which one would be the input?
            raise InputFileError(
                f"the input has {table.column_names.count(column)} columns named {column!r}",
                hint="rename the columns so that each name is unique",
            )
        cleaned = spec.clean(table.column(column).to_pylist())
        if slot != domain:
            label = f"{slot} ({column}): "
        else:
            label = f"{domain}: " if len(domains) > 1 else ""
        valid = [i for i, (text, _) in enumerate(cleaned) if text is not None]
        row_tokens: list[list[int] | None] = [None] * len(cleaned)
        for i, token_ids in zip(valid, encoder.tokenize_inputs([cleaned[i][0] for i in valid])):
            if len(token_ids) > spec.max_tokens:
                cleaned[i] = (None, f"input too long: {len(token_ids)} tokens (limit {spec.max_tokens})")
            else:
                row_tokens[i] = token_ids
        for i, (_, error) in enumerate(cleaned):
            if error is not None and errors[i] is None:
                errors[i] = label + error
        tokens[slot] = row_tokens
        if texts is not None:
            texts[slot] = [text for text, _ in cleaned]
    return tokens


def length_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int, groups: Sequence[object] | None = None
) -> Iterator[list[int]]:
    """Row indices sorted by length, cut into batches within the row and padded-token budgets.

    With `groups`, rows of a group stay together and groups go in order of their shortest row
    (pairs grouped by protein: similar-length proteins share a batch, so leads pad little).
    """
    shortest: dict[object, int] = {}
    for key, length in zip(groups or (), lengths):
        shortest[key] = min(shortest.get(key, length), length)
    first_seen = {key: k for k, key in enumerate(shortest)}
    order = sorted(
        range(len(lengths)),
        key=lambda i: (shortest[groups[i]], first_seen[groups[i]], lengths[i]) if groups else lengths[i],
    )
    chunk: list[int] = []
    width = 0
    for i in order:
        # The longest row so far sets the padded width of the batch.
        if chunk and (len(chunk) == batch_size or (len(chunk) + 1) * max(width, lengths[i]) > max_tokens):
            yield chunk
            chunk, width = [], 0
        chunk.append(i)
        width = max(width, lengths[i])
    if chunk:
        yield chunk


def encode_contexts(
    batches: Iterable[tuple[list[int], Callable[[], SharedContext]]],
) -> Iterator[tuple[list[int], SharedContext]]:
    """`context_batches` with every batch's KV context encoded: each batch's row indices and its context."""
    for chunk, encode in batches:
        yield chunk, encode()


def context_batches(
    model: TaggedModel,
    encoder: PromptEncoder,
    template: PromptTemplate,
    inputs: Mapping[str, Sequence[list[int]]],
    batch_size: int,
    max_tokens: int,
    suffix_tokens: int = 0,
) -> Iterator[tuple[list[int], Callable[[], SharedContext]]]:
    """Rows of `template` in length-sorted batches: each batch's row indices and what encodes its KV
    context when called (a batch already scored, e.g. one a resumed run has in its checkpoint, is skipped).

    The shared prefix runs once per batch and each row's inputs once; `suffix_tokens` (what runs
    after the inputs) counts towards the token budget. Pairs: rows with the same first input (one
    protein, many ligands) are batched together and run that input once.
    """
    split = encoder.encode_split(template, inputs)
    pad, device = encoder.pad_id, model.lm.device
    prefix = collate([split.prefix], pad).to(device)
    shared = len(split.prefix) + suffix_tokens
    leads, rests = encoder.encode_lead_rest(template, inputs) if len(template.inputs) > 1 else (None, None)
    groups = [tuple(r.token_ids) for r in leads] if leads else None

    def encode_leads(chunk: list[int]) -> SharedContext:
        distinct = {key: k for k, key in enumerate(dict.fromkeys(groups[j] for j in chunk))}
        first = {groups[j]: j for j in reversed(chunk)}
        lead_batch = collate([leads[first[key]] for key in distinct], pad).to(device)
        lead_of_row = torch.tensor([distinct[groups[j]] for j in chunk], device=device)
        rest_batch = collate([rests[j] for j in chunk], pad).to(device)
        return model.encode_shared_leads(prefix, lead_batch, lead_of_row, rest_batch)

    def encode(chunk: list[int]) -> SharedContext:
        return model.encode_context(prefix, collate([split.body[j] for j in chunk], pad).to(device))

    for chunk in length_batches([shared + len(r) for r in split.body], batch_size, max_tokens, groups):
        yield chunk, partial(encode_leads if groups else encode, chunk)


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, window: int = 50) -> list[list[int]]:
    """One epoch of micro-batches: every row once, in seeded random order, with rows of similar
    length together (each random window of `window` batches is sorted by length before it is cut,
    then the batches are shuffled). Padding costs compute, and protein lengths vary 100-fold."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    span = window * batch_size
    order = [
        i for start in range(0, len(order), span) for i in sorted(order[start : start + span], key=lambda i: lengths[i])
    ]
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return [batches[k] for k in torch.randperm(len(batches), generator=generator).tolist()]
