"""TagScorer: the one object that scores record batches, used by the CLI, the Python API and runners.

    scorer = TagScorer("qed")                      # domains default to the ones the pack was trained with
    table = scorer(pyarrow_table_or_dataframe)     # + pred_* columns, status (ok|invalid|error), error

Per call: find each domain's input column, clean cells (domains.py), tokenize, sort rows by
token length so batches carry little padding, run the tagged model batch by batch, and put the
results back in input order. Bad rows get a status and a reason; nothing is dropped or zeroed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import pandas as pd
import pyarrow as pa
import torch

from tagcli.basemodel.load import BaseModel, load_base_model
from tagcli.core.domains import INPUT_KINDS, DomainInput
from tagcli.errors import BadRowError, PackError, UsageError
from tagcli.core.heads import TextHead
from tagcli.core.model import SharedContext, TaggedModel
from tagcli.packs.format import TagPack
from tagcli.core.prompt import PromptEncoder, PromptTemplate, collate, length_batches
from tagcli.packs.store import PackStore

STATUS_OK, STATUS_INVALID, STATUS_ERROR = "ok", "invalid", "error"


@dataclass
class FunctionPlan:
    """One function tag with the domain packs it runs behind, and its (possibly renamed) template."""

    function: TagPack
    domains: dict[str, TagPack]  # domain name → pack, in template input order
    template: PromptTemplate
    zero_shot: bool  # the function tag was trained behind other domain tags


def plan_function(store: PackStore, function: str, domains: Sequence[str] | None = None) -> FunctionPlan:
    """Resolve a function pack and its domain packs by name; check they belong together."""
    pack = store.load(function)
    if pack.manifest.kind != "function":
        raise UsageError(f"'{function}' is a {pack.manifest.kind} pack, not a function", hint=f"use --domain {pack.name}")
    trained = list(pack.manifest.domains)
    requested = list(domains or trained)
    if len(requested) != len(trained):
        raise UsageError(f"function '{pack.name}' takes {len(trained)} domain(s) ({', '.join(trained)}), got {', '.join(requested)}")
    # Same domains in any order mean no renaming; otherwise domains are swapped in by position.
    mapping = {t: t for t in trained} if set(requested) == set(trained) else dict(zip(trained, requested))
    loaded = {}
    for trained_name, name in mapping.items():
        domain = store.load(name, near=pack.path)
        if domain.manifest.kind != "domain":
            raise UsageError(f"'{name}' is a {domain.manifest.kind} pack, not a domain")
        pinned = pack.manifest.requires.get(name, {}).get("sha256") if name == trained_name else None
        if pinned and pinned != domain.tag_digest():
            raise PackError(
                f"function '{pack.name}' was trained with a different '{name}' domain tag than the one found at {domain.path}",
                hint=f"install the '{name}' pack version {pack.manifest.requires[name].get('version')} it was trained with",
            )
        loaded[name] = domain
    template = pack.manifest.prompt_template().rename(mapping)
    return FunctionPlan(pack, {name: loaded[name] for name in template.inputs}, template, mapping != {t: t for t in trained})


def find_input_column(names: Sequence[str], domain: str, kind: str, columns: Mapping[str, str]) -> str:
    """The column holding `domain`'s input: named explicitly (by domain, kind or "*"), else by a known name."""
    explicit = columns.get(domain) or columns.get(kind) or columns.get("*")
    if explicit:
        if explicit not in names:
            raise UsageError(f"no column '{explicit}' in the input (columns: {', '.join(names)})")
        return explicit
    by_lower = {name.lower(): name for name in names}
    for candidate in (domain, *INPUT_KINDS[kind].column_names):
        if candidate in by_lower:
            return by_lower[candidate]
    raise UsageError(f"cannot find the {domain} input column among {', '.join(names)}", hint=f"pass --{kind}-col NAME (or --column NAME)")


def prepare_inputs(
    encoder: PromptEncoder, domains: Mapping[str, DomainInput], table: pa.Table, columns: Mapping[str, str], errors: list[str | None]
) -> dict[str, list[list[int] | None]]:
    """Token ids per domain per row (None where the row is invalid); records why in `errors`."""
    tokens: dict[str, list[list[int] | None]] = {}
    for domain, spec in domains.items():
        column = find_input_column(table.column_names, domain, spec.kind, columns)
        cleaned = spec.clean(table.column(column).to_pylist())
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
        tokens[domain] = row_tokens
    return tokens


class TagScorer:
    """Scores tables with one or more function tags. Construct once, call on many batches."""

    def __init__(
        self,
        function: str | Sequence[str],
        domains: Sequence[str] | None = None,
        *,
        base_model: str | BaseModel | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 64,
        max_batch_tokens: int = 32768,
        columns: Mapping[str, str] | None = None,  # domain name, input kind or "*" → column
        pack_dirs: Sequence[str] = (),
        strict: bool = False,
    ) -> None:
        if batch_size < 1 or max_batch_tokens < 1:
            raise UsageError("--batch-size and --max-batch-tokens must be positive")
        store = PackStore(pack_dirs)
        functions = [function] if isinstance(function, str) else list(function)
        self.plans = [plan_function(store, f, domains) for f in functions]
        self.groups = group_plans(self.plans)
        if isinstance(base_model, BaseModel):
            self.base = base_model
        else:
            self.base = load_base_model(base_model or self.plans[0].function.manifest.base_model["id"], device=device, dtype=dtype)
        packs = {p.name: p for plan in self.plans for p in (plan.function, *plan.domains.values())}
        for pack in packs.values():
            pack.check_base_model(self.base.id, self.base.fingerprint)
        tags = {name: vectors for pack in packs.values() for name, vectors in pack.tags.items()}
        heads = {plan.function.name: plan.function.head for plan in self.plans}
        self.model = TaggedModel(self.base.model, tags, heads).to(self.base.device).eval()
        self.encoder = PromptEncoder(self.base.tokenizer, self.model.tag_table)
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self.columns = dict(columns or {})
        self.strict = strict

    def describe(self) -> dict:
        """Everything that decides the numbers this scorer writes (recorded with sharded runs)."""
        packs = [pack for plan in self.plans for pack in (plan.function, *plan.domains.values())]
        return {
            "packs": {p.name: {"version": p.manifest.version, "sha256": p.tag_digest()} for p in packs},
            "functions": [{"name": plan.function.name, "domains": list(plan.domains)} for plan in self.plans],
            "base_model": {"id": self.base.id, "fingerprint": self.base.fingerprint},
            "device": self.base.device.type,
            "dtype": str(self.base.dtype).removeprefix("torch."),
            "batch_size": self.batch_size,
            "max_batch_tokens": self.max_batch_tokens,
            "columns": self.columns,
        }

    @property
    def output_columns(self) -> list[str]:
        return [c for plan in self.plans for c in plan.function.head.output_columns()] + ["status", "error"]

    def __call__(self, batch: pa.Table | pa.RecordBatch | pd.DataFrame) -> pa.Table | pd.DataFrame:
        if isinstance(batch, pd.DataFrame):
            scored = self.score(pa.Table.from_pandas(batch, preserve_index=False)).to_pandas()
            scored.index = batch.index
            return scored
        return self.score(pa.table(batch) if isinstance(batch, pa.RecordBatch) else batch)

    def score(self, table: pa.Table, row_offset: int = 0) -> pa.Table:
        """`table` with prediction, status and error columns appended (row order kept)."""
        clash = sorted(set(self.output_columns) & set(table.column_names))
        if clash:
            raise UsageError(f"input already has column(s) {', '.join(clash)}", hint="rename them; tagcli writes these")
        n = table.num_rows
        errors: list[str | None] = [None] * n
        status = [STATUS_OK] * n
        predictions: dict[str, list] = {}
        types: dict[str, pa.DataType] = {}
        for plan in self.plans:
            head = plan.function.head
            types |= {c: pa.string() if c in head.label_columns else pa.float64() for c in head.output_columns()}
        for group in self.groups:
            specs = {d: pack.manifest.domain_input() for d, pack in group[0].domains.items()}
            inputs = prepare_inputs(self.encoder, specs, table, self.columns, errors)
            predictions |= self._predict(group, inputs, errors, status)
        for i, message in enumerate(errors):
            if message is not None and status[i] == STATUS_OK:
                status[i] = STATUS_INVALID
        if self.strict:
            bad = next((i for i, s in enumerate(status) if s != STATUS_OK), None)
            if bad is not None:
                raise BadRowError(f"row {row_offset + bad + 1}: {errors[bad]}", hint="drop --strict to get a status per row")
        for column, values in predictions.items():
            # A row that failed for any function shows no prediction at all, not a partial one.
            values = [v if s == STATUS_OK else None for v, s in zip(values, status)]
            table = table.append_column(column, pa.array(values, types[column]))
        table = table.append_column("status", pa.array(status, pa.string()))
        return table.append_column("error", pa.array(errors, pa.string()))

    def _predict(self, group: list[FunctionPlan], inputs: Mapping[str, list], errors: list[str | None], status: list[str]) -> dict[str, list]:
        """Prediction columns of a group of functions over the rows still without an error.

        The group's functions share everything up to the end of the inputs, so each batch encodes
        the shared prefix once, the rows' inputs once, and then only each function's suffix.
        """
        columns: dict[str, list] = {c: [None] * len(errors) for plan in group for c in plan.function.head.output_columns()}
        ready = [i for i, e in enumerate(errors) if e is None]
        template, row_inputs = group[0].template, {d: [inputs[d][i] for i in ready] for d in group[0].domains}
        pad, device = self.encoder.pad_id, self.base.device
        suffixes = {plan.function.name: collate([self.encoder.encode_suffix(plan.template)], pad).to(device) for plan in group}
        suffix_tokens = max(s.input_ids.shape[1] for s in suffixes.values())
        for chunk, context in encode_contexts(self.model, self.encoder, template, row_inputs, self.batch_size, self.max_batch_tokens, suffix_tokens):
            rows = [ready[j] for j in chunk]
            for plan in group:
                predicted = self.model.predict_after_context(context, suffixes[plan.function.name], plan.function.name)
                self._collect(plan, predicted, rows, columns, errors, status)
        return columns

    def _collect(self, plan: FunctionPlan, predicted: Mapping[str, torch.Tensor | list], rows: list[int], columns: dict[str, list], errors: list[str | None], status: list[str]) -> None:
        """Write one batch's predictions into `columns`; a non-finite value makes the row an error."""
        if isinstance(plan.function.head, TextHead):  # token ids → text
            predicted = {c: self.base.tokenizer.batch_decode(ids, skip_special_tokens=True) for c, ids in predicted.items()}
        finite = torch.ones(len(rows), dtype=torch.bool)
        for values in predicted.values():
            if isinstance(values, torch.Tensor):
                finite &= torch.isfinite(values.float()).cpu()
        for column, values in predicted.items():
            values = values.float().cpu().tolist() if isinstance(values, torch.Tensor) else values
            for row, value in zip(rows, values):
                columns[column][row] = value
        for row, ok in zip(rows, finite.tolist()):
            if not ok:
                status[row], errors[row] = STATUS_ERROR, f"{plan.function.name}: the model produced a non-finite value"


def encode_contexts(
    model: TaggedModel, encoder: PromptEncoder, template: PromptTemplate, inputs: Mapping[str, Sequence[list[int]]],
    batch_size: int, max_tokens: int, suffix_tokens: int = 0,
) -> Iterator[tuple[list[int], SharedContext]]:
    """Rows of `template` in length-sorted batches: each batch's row indices and its KV context.

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
    for chunk in length_batches([shared + len(r) for r in split.body], batch_size, max_tokens, groups):
        if groups:
            distinct = {key: k for k, key in enumerate(dict.fromkeys(groups[j] for j in chunk))}
            first = {groups[j]: j for j in reversed(chunk)}
            lead_batch = collate([leads[first[key]] for key in distinct], pad).to(device)
            lead_of_row = torch.tensor([distinct[groups[j]] for j in chunk], device=device)
            yield chunk, model.encode_shared_leads(prefix, lead_batch, lead_of_row, collate([rests[j] for j in chunk], pad).to(device))
        else:
            yield chunk, model.encode_context(prefix, collate([split.body[j] for j in chunk], pad).to(device))


def group_plans(plans: Sequence[FunctionPlan]) -> list[list[FunctionPlan]]:
    """Plans whose prompts agree up to the end of the inputs, grouped so their inputs run once."""
    groups: dict[tuple, list[FunctionPlan]] = {}
    for plan in plans:
        groups.setdefault(plan.template.split()[:2], []).append(plan)
    return list(groups.values())
