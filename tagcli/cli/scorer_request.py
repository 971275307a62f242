"""What `predict` and `eval` share: which packs to score with, where they come from, how to run them,
and the one way those options become a `TagScorer` (missing packs pulled first unless --offline)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tagcli.cli.options import input_columns, slot_columns
from tagcli.cli.output import Output
from tagcli.core.batching import BATCH_ROWS, MAX_BATCH_TOKENS
from tagcli.packs.install import ensure_packs
from tagcli.packs.store import PackStore
from tagcli.scoring.scorer import TagScorer


@dataclass
class ScorerRequest:
    functions: list[str]
    domains: list[str] | None = None
    columns: dict[str, str] = field(default_factory=dict)  # domain, input kind or "*" → column
    inputs: dict[str, str] = field(default_factory=dict)  # input slot → column
    base_model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = BATCH_ROWS
    max_batch_tokens: int = MAX_BATCH_TOKENS
    both_orders: bool = False
    clip: bool = True
    pack_dirs: list[str] = field(default_factory=list)
    registries: list[str] = field(default_factory=list)
    offline: bool = False

    @classmethod
    def from_options(cls, functions: list[str], options: Mapping[str, Any]) -> ScorerRequest:
        """The request of a scoring command's options by parameter name (its `ctx.params`, where a repeated
        option comes as a tuple, empty when not given); an option named like a field is that field as given."""
        as_given = {f.name: options[f.name] for f in fields(cls) if f.name in options}
        domains = list(options["domain"] or ()) or None
        return cls(
            functions,
            domains,
            columns=input_columns(options["column"], options["smiles_col"], options["protein_col"], domains),
            inputs=slot_columns(options["input_slot"]),
            pack_dirs=list(options["pack_dir"] or ()),
            registries=list(options["registry"] or ()),
            **as_given,
        )

    def __post_init__(self) -> None:
        self.store = PackStore(self.pack_dirs)

    def pull_missing(self, out: Output) -> None:
        """Install the packs that are not here (and the domain packs they need) from the registries, unless
        --offline; afterwards `functions` and `domains` name what the scorer loads from the same store."""
        self.functions, self.domains = ensure_packs(
            self.functions,
            self.domains or None,
            registries=self.registries,
            store=self.store,
            offline=self.offline,
            base_model=self.base_model,
            on_pull=lambda r: out.err.print(f"pulled {r['name']} {r['version']} from {r['registry']}", highlight=False),
        )

    def scorer(self, **options: Any) -> TagScorer:
        """The scorer, with the command's own options (`strict`, `percentiles`) added."""
        return TagScorer(
            self.functions,
            self.domains or None,
            base_model=self.base_model,
            device=self.device,
            dtype=self.dtype,
            batch_size=self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
            columns=self.columns,
            inputs=self.inputs,
            both_orders=self.both_orders,
            store=self.store,
            clip=self.clip,
            **options,
        )
