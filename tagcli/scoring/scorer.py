"""TagScorer: the one object that scores record batches, used by the CLI, the Python API and runners.

    scorer = TagScorer("qed")                      # domains default to the ones the pack was trained with
    table = scorer(pyarrow_table_or_dataframe)     # + pred_* columns, status (ok|invalid|error), error

Per call: find each input slot's column (a slot is a domain's input, e.g. `smiles`, or a named one,
e.g. `drug_a` and `drug_b` of domain `smiles`), clean cells (domains.py), tokenize, sort rows by
token length so batches carry little padding, run the tagged model batch by batch, and put the
results back in input order. Bad rows get a status and a reason; nothing is dropped or zeroed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import torch

from tagcli.basemodel.load import BaseModel, load_base_model
from tagcli.core.batching import BATCH_ROWS, MAX_BATCH_TOKENS, context_batches, prepare_inputs
from tagcli.core.heads import Columns
from tagcli.core.model import SharedContext, TaggedModel
from tagcli.core.prompt import PromptEncoder, PromptTemplate, collate
from tagcli.errors import BadRowError, PackError, UsageError
from tagcli.packs.format import TagPack
from tagcli.packs.reference import Reference, percentile_column
from tagcli.packs.store import PackStore

STATUS_OK, STATUS_INVALID, STATUS_ERROR = "ok", "invalid", "error"

# One batch's raw outputs: function → column → (numeric?, the batch's values in batch order), JSON-ready.
BatchOutputs = dict[str, dict[str, tuple[bool, list[Any]]]]


class BatchJournal(Protocol):
    """What a window's batches produced, kept by a file runner (scoring/checkpoints.py) so that a resumed run
    skips them. Keys name a batch within one call of `TagScorer.score`; batches follow from the rows alone."""

    def recall(self, key: str) -> BatchOutputs | None: ...

    def record(self, key: str, outputs: BatchOutputs) -> None: ...


@dataclass
class FunctionPlan:
    """One function tag with the domain packs it runs behind, and its (possibly renamed) template."""

    function: TagPack
    domains: dict[str, TagPack]  # domain name → pack, in template input order
    template: PromptTemplate
    zero_shot: bool  # the function tag was trained behind other domain tags

    @property
    def slots(self) -> dict[str, str]:
        """Input slot → its domain, in template order (`{input:smiles}`: the slot smiles of domain smiles)."""
        return self.template.slots

    @property
    def trained_slots(self) -> dict[str, str]:
        """The slots as the pack was trained (what its head names) → this plan's slots, in order."""
        return dict(zip(self.function.manifest.prompt_template().slots, self.slots))


def plan_function(store: PackStore, function: str, domains: Sequence[str] | None = None) -> FunctionPlan:
    """Resolve a function pack and its domain packs by name; check they belong together."""
    pack = store.load(function)
    if pack.manifest.kind != "function":
        raise UsageError(
            f"'{function}' is a {pack.manifest.kind} pack, not a function", hint=f"use --domain {pack.name}"
        )
    trained = list(pack.manifest.domains)
    requested = list(domains or trained)
    if len(requested) != len(trained):
        raise UsageError(
            f"function '{pack.name}' takes {len(trained)} domain(s) ({', '.join(trained)}), got {', '.join(requested)}"
        )
    # Same domains in any order mean no renaming; otherwise domains are swapped in by position.
    mapping = {t: t for t in trained} if set(requested) == set(trained) else dict(zip(trained, requested))
    loaded = {}
    for trained_name, name in mapping.items():
        domain = store.load(name, near=pack.path)
        if domain.manifest.kind != "domain":
            raise UsageError(f"'{name}' is a {domain.manifest.kind} pack, not a domain")
        pinned = pack.manifest.requires.get(name, {}).get("sha256") if name == trained_name else None
        if pinned and pinned != domain.tag_digest():
            pinned_version = pack.manifest.requires[name].get("version")
            raise PackError(
                f"function '{pack.name}' was trained with a different '{name}' domain tag "
                f"than the one found at {domain.path}",
                hint=f"install the '{name}' pack version {pinned_version} it was trained with",
            )
        loaded[name] = domain
    template = pack.manifest.prompt_template().rename(mapping)
    return FunctionPlan(
        pack, {name: loaded[name] for name in template.inputs}, template, mapping != {t: t for t in trained}
    )


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
        batch_size: int = BATCH_ROWS,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        columns: Mapping[str, str] | None = None,  # domain name, input kind or "*" → column
        inputs: Mapping[str, str] | None = None,  # input slot → column (`--input SLOT=COLUMN`)
        pack_dirs: Sequence[str] = (),
        store: PackStore | None = None,  # where packs are found (default: `pack_dirs`, then the usual places)
        strict: bool = False,
        clip: bool = True,  # bound predictions to the valid ranges targets declare
        both_orders: bool = False,  # symmetric packs: average the predictions of both orders of their two slots
        percentiles: bool = True,  # rank predictions among a pack's reference set, where it carries one
    ) -> None:
        if batch_size < 1 or max_batch_tokens < 1:
            raise UsageError("--batch-size and --max-batch-tokens must be positive")
        store = store or PackStore(pack_dirs)
        functions = [function] if isinstance(function, str) else list(function)
        self.plans = [plan_function(store, f, domains) for f in functions]
        self.groups = group_plans(self.plans)
        check_slot_options(self.plans, inputs or {}, both_orders)
        if isinstance(base_model, BaseModel):
            self.base = base_model
        else:
            self.base = load_base_model(
                base_model or self.plans[0].function.manifest.base_model["id"], device=device, dtype=dtype
            )
        packs = {p.name: p for plan in self.plans for p in (plan.function, *plan.domains.values())}
        for pack in packs.values():
            pack.check_base_model(self.base.id, self.base.fingerprint)
        for plan in self.plans:
            problem = plan.function.head.readout.check_model(self.base.n_layers)
            if problem:
                raise PackError(
                    f"function '{plan.function.name}': {problem}", hint="use the base model it was trained on"
                )
        tags = {name: vectors for pack in packs.values() for name, vectors in pack.tags.items()}
        heads = {plan.function.name: plan.function.head for plan in self.plans}
        # Scoring never trains: no parameter records a graph (long proteins would keep every activation).
        self.model = TaggedModel(self.base.model, tags, heads).to(self.base.device).eval().requires_grad_(False)
        self.encoder = PromptEncoder(self.base.tokenizer, self.model.tag_table)
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self.columns = dict(columns or {}) | dict(inputs or {})  # a slot's own column first (find_input_column)
        self.strict = strict
        self.clip = clip
        self.both_orders = both_orders
        self.references = {
            plan.function.name: plan.function.reference
            for plan in self.plans
            if plan.function.reference is not None and percentiles
        }

    def describe(self) -> dict:
        """Everything that decides the numbers this scorer writes (recorded with sharded runs)."""
        packs = [pack for plan in self.plans for pack in (plan.function, *plan.domains.values())]
        described = {
            "packs": {p.name: {"version": p.manifest.version, "sha256": p.tag_digest()} for p in packs},
            "functions": [
                {"name": plan.function.name, "domains": list(plan.domains)}
                | ({"slots": plan.slots} if list(plan.slots) != plan.template.inputs else {})
                for plan in self.plans
            ],
            "base_model": {"id": self.base.id, "fingerprint": self.base.fingerprint},
            "device": self.base.device.type,
            "dtype": str(self.base.dtype).removeprefix("torch."),
            "batch_size": self.batch_size,
            "max_batch_tokens": self.max_batch_tokens,
            "columns": self.columns,
            "clip": self.clip,
        } | ({"both_orders": True} if self.both_orders else {})
        return described | self._describe_references()

    def _describe_references(self) -> dict:
        """The reference sets percentiles rank against (a run resumed with others would mix rankings)."""
        if not self.references:
            return {}
        return {"references": {name: ref.digest() for name, ref in self.references.items()}}

    @property
    def output_columns(self) -> list[str]:
        predicted = [c for plan in self.plans for c in plan.function.head.output_columns()]
        ranked = [percentile_column(c) for _, c in self._ranked()]
        return predicted + ranked + ["status", "error"]

    def _ranked(self) -> list[tuple[Reference, str]]:
        """(reference, output column) of every prediction that gets a percentile column."""
        return [(ref, column) for ref in self.references.values() for column in ref.columns]

    def __call__(self, batch: pa.Table | pa.RecordBatch | pd.DataFrame) -> pa.Table | pd.DataFrame:
        if isinstance(batch, pd.DataFrame):
            scored = self.score(pa.Table.from_pandas(batch, preserve_index=False)).to_pandas()
            scored.index = batch.index
            return scored
        return self.score(pa.table(batch) if isinstance(batch, pa.RecordBatch) else batch)

    def score(
        self, table: pa.Table, row_offset: int = 0, journal: BatchJournal | None = None, strict: bool | None = None
    ) -> pa.Table:
        """`table` with prediction, status and error columns appended (row order kept).

        `journal` keeps each batch's outputs and hands back those of batches already run (a resumed
        window); `strict` overrides the scorer's own setting (a runner that checks rows itself)."""
        clash = sorted(set(self.output_columns) & set(table.column_names))
        if clash:
            raise UsageError(f"input already has column(s) {', '.join(clash)}", hint="rename them; tagcli writes these")
        n = table.num_rows
        errors: list[str | None] = [None] * n
        status = [STATUS_OK] * n
        predictions: dict[str, list] = {}
        types: dict[str, pa.DataType] = {}
        for plan in self.plans:
            types |= plan.function.head.output_types()
        for g, group in enumerate(self.groups):
            slots = group[0].slots
            specs = {slot: group[0].domains[domain].manifest.domain_input() for slot, domain in slots.items()}
            texts: dict[str, list[str | None]] = {}
            inputs = prepare_inputs(self.encoder, specs, table, self.columns, errors, slots, texts)
            predictions |= self._predict(group, inputs, texts, errors, status, _Journal(journal, str(g)))
        for i, message in enumerate(errors):
            if message is not None and status[i] == STATUS_OK:
                status[i] = STATUS_INVALID
        bad = next((i for i, s in enumerate(status) if s != STATUS_OK), None)
        if bad is not None and (self.strict if strict is None else strict):
            raise bad_row_error(row_offset + bad, errors[bad])
        for column, values in predictions.items():
            # A row that failed for any function shows no prediction at all, not a partial one.
            values = [v if s == STATUS_OK else None for v, s in zip(values, status)]
            table = table.append_column(column, pa.array(values, types[column]))
        for reference, column in self._ranked():
            ranks = reference.percentiles(column, table.column(column).to_pylist())
            table = table.append_column(percentile_column(column), pa.array(ranks, pa.float64()))
        table = table.append_column("status", pa.array(status, pa.string()))
        return table.append_column("error", pa.array(errors, pa.string()))

    def _predict(
        self,
        group: list[FunctionPlan],
        inputs: Mapping[str, list],
        texts: Mapping[str, list],
        errors: list[str | None],
        status: list[str],
        journal: _Journal,
    ) -> dict[str, list]:
        """Prediction columns of a group of functions over the rows still without an error.

        Heads that read extra features get them first; a row whose features cannot be computed is
        invalid (with the reason) and skips the model. With `both_orders`, the rows also run with
        their two input slots swapped and each function's numeric raw outputs are averaged over the
        two orders (other outputs are the first order's).
        """
        columns: dict[str, list] = {
            c: [None] * len(errors) for plan in group for c in plan.function.head.output_columns()
        }
        ready = [i for i, e in enumerate(errors) if e is None]
        extras, problems = self._extra_features(group, {slot: [texts[slot][i] for i in ready] for slot in texts})
        for i, problem in zip(ready, problems):
            errors[i] = problem
        kept = [j for j, problem in enumerate(problems) if problem is None]
        ready = [ready[j] for j in kept]
        if not ready:
            return columns
        row_inputs = {slot: [inputs[slot][i] for i in ready] for slot in group[0].slots}
        orders = [(row_inputs, {name: None if x is None else x[kept] for name, x in extras.items()})]
        if self.both_orders:
            a, b = row_inputs
            swapped = {a: [texts[b][i] for i in ready], b: [texts[a][i] for i in ready]}
            orders.append(({a: row_inputs[b], b: row_inputs[a]}, self._extra_features(group, swapped)[0]))
        runs = [
            self._raw_outputs(group, order, len(ready), order_extras, journal.within(str(k)))
            for k, (order, order_extras) in enumerate(orders)
        ]
        for plan in group:
            raw = average_orders([run[plan.function.name] for run in runs])
            self._collect(plan, raw, ready, columns, errors, status)
        return columns

    def _extra_features(
        self, group: list[FunctionPlan], row_texts: Mapping[str, list]
    ) -> tuple[dict[str, torch.Tensor | None], list[str | None]]:
        """Each function's extra features of the rows (None: its head reads none), and per row the first
        reason one could not be computed."""
        extras: dict[str, torch.Tensor | None] = {}
        problems: list[str | None] = [None] * len(next(iter(row_texts.values()), []))
        for plan in group:
            # The head names the slots it was trained with; a zero-shot plan may have renamed them.
            texts = {trained: row_texts[slot] for trained, slot in plan.trained_slots.items()}
            values, found = plan.function.head.input_features(texts)
            extras[plan.function.name] = values
            problems = [p or (f and f"{plan.function.name}: {f}") for p, f in zip(problems, found)]
        return extras, problems

    @torch.inference_mode()
    def _raw_outputs(
        self,
        group: list[FunctionPlan],
        row_inputs: Mapping[str, list],
        n: int,
        extras: Mapping[str, torch.Tensor | None],
        journal: _Journal,
    ) -> dict[str, dict[str, RawColumn]]:
        """Each function's raw output columns over `n` rows, in row order: tensors become lists of floats.

        The group's functions share everything up to the end of the inputs, so each batch encodes
        the shared prefix once, the rows' inputs once, and then only each function's suffix. A batch
        the journal already holds is not run again.
        """
        pad, device = self.encoder.pad_id, self.base.device
        suffixes = {
            plan.function.name: collate([self.encoder.encode_suffix(plan.template)], pad).to(device) for plan in group
        }
        suffix_tokens = max(s.input_ids.shape[1] for s in suffixes.values())
        outputs: dict[str, dict[str, RawColumn]] = {plan.function.name: {} for plan in group}
        template = group[0].template
        batches = context_batches(
            self.model, self.encoder, template, row_inputs, self.batch_size, self.max_batch_tokens, suffix_tokens
        )
        for k, (chunk, encode) in enumerate(batches):
            done = journal.recall(str(k))
            if done is None:
                done = self._run_batch(group, chunk, encode(), suffixes, extras)
                journal.record(str(k), done)
            for name, columns in done.items():
                for column, (numeric, values) in columns.items():
                    kept = outputs[name].setdefault(column, RawColumn([None] * n, numeric))
                    for j, value in zip(chunk, values):
                        kept.values[j] = value
        return outputs

    def _run_batch(
        self,
        group: list[FunctionPlan],
        chunk: list[int],
        context: SharedContext,
        suffixes: Mapping[str, Any],
        extras: Mapping[str, torch.Tensor | None],
    ) -> BatchOutputs:
        """Each function's raw outputs over one batch (numeric ones as floats)."""
        done: BatchOutputs = {}
        for plan in group:
            name = plan.function.name
            extra = None if extras[name] is None else extras[name][chunk]
            predicted = self.model.predict_after_context(context, suffixes[name], name, extra)
            done[name] = {
                column: (True, values.float().cpu().tolist()) if isinstance(values, torch.Tensor) else (False, values)
                for column, values in predicted.items()
            }
        return done

    def _collect(
        self,
        plan: FunctionPlan,
        raw: Columns,
        rows: list[int],
        columns: dict[str, list],
        errors: list[str | None],
        status: list[str],
    ) -> None:
        """Write predictions into `columns`; a row the head finds no prediction for is an error."""
        head = plan.function.head
        decoded, problems = head.finish(head.decode(raw, self.base.tokenizer), self.clip)
        for column, values in decoded.items():
            for row, value in zip(rows, values):
                columns[column][row] = value
        for row, problem in zip(rows, problems):
            if problem is not None:
                status[row], errors[row] = STATUS_ERROR, f"{plan.function.name}: {problem}"


@dataclass
class _Journal:
    """A `BatchJournal` seen from inside one call: keys prefixed by function group and order (none: no journal)."""

    journal: BatchJournal | None
    prefix: str

    def within(self, name: str) -> _Journal:
        return _Journal(self.journal, f"{self.prefix}.{name}")

    def recall(self, key: str) -> BatchOutputs | None:
        return None if self.journal is None else self.journal.recall(f"{self.prefix}.{key}")

    def record(self, key: str, outputs: BatchOutputs) -> None:
        if self.journal is not None:
            self.journal.record(f"{self.prefix}.{key}", outputs)


def bad_row_error(row: int, reason: str | None) -> BadRowError:
    """--strict's error for the row at 0-based position `row` of the input."""
    return BadRowError(f"row {row + 1}: {reason}", hint="drop --strict to get a status per row")


@dataclass
class RawColumn:
    """One raw output column gathered over batches: floats (from tensors) or other values per row."""

    values: list
    numeric: bool


def average_orders(runs: Sequence[Mapping[str, RawColumn]]) -> Columns:
    """Raw columns of one or more orders of the same rows: numeric columns averaged, others the first's."""
    merged: Columns = {}
    for column, first in runs[0].items():
        if first.numeric:
            values = [sum(v) / len(v) for v in zip(*(run[column].values for run in runs))]
            merged[column] = torch.tensor(values, dtype=torch.float64 if len(runs) > 1 else torch.float32)
        else:
            merged[column] = first.values
    return merged


def check_slot_options(plans: Sequence[FunctionPlan], inputs: Mapping[str, str], both_orders: bool) -> None:
    """`--input SLOT=COLUMN` must name a slot of the functions; `--both-orders` needs symmetric packs."""
    slots = list(dict.fromkeys(slot for plan in plans for slot in plan.slots))
    unknown = [slot for slot in inputs if slot not in slots]
    if unknown:
        functions = ", ".join(plan.function.name for plan in plans)
        raise UsageError(
            f"--input {unknown[0]}=...: {functions} has no input slot {unknown[0]!r} (its slots: {', '.join(slots)})"
        )
    if both_orders:
        for plan in plans:
            if not plan.function.manifest.symmetric:
                raise UsageError(
                    f"--both-orders: function '{plan.function.name}' is not symmetric in its input slots "
                    f"({', '.join(plan.slots)})",
                    hint="only a pack whose manifest says symmetric: true may average both orders",
                )


def group_plans(plans: Sequence[FunctionPlan]) -> list[list[FunctionPlan]]:
    """Plans whose prompts agree up to the end of the inputs, grouped so their inputs run once."""
    groups: dict[tuple, list[FunctionPlan]] = {}
    for plan in plans:
        groups.setdefault(plan.template.split()[:2], []).append(plan)
    return list(groups.values())
