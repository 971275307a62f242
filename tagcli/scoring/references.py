"""Add a reference distribution to an existing function pack: score a reference set once, keep the values.

The pack's tags and head are untouched (its predictions stay bit-identical); only its manifest gains a
`reference` (tagcli.packs.reference), which `predict` turns into `<column>_percentile` columns.
"""

from __future__ import annotations

from pathlib import Path

from tagcli.errors import PackError, UsageError
from tagcli.io.tables import open_table
from tagcli.packs.format import record_reference
from tagcli.packs.integrity import is_pulled
from tagcli.packs.reference import Reference, reference_from_predictions
from tagcli.scoring.runner import ScoreSummary, scored_batches
from tagcli.scoring.scorer import STATUS_OK, TagScorer


def score_reference(scorer: TagScorer, data: str | Path, name: str, source: str) -> tuple[Reference, ScoreSummary]:
    """The reference of the scorer's one function over the rows of `data` it scores (ok rows only)."""
    if len(scorer.plans) != 1:
        raise UsageError("add a reference to one function pack at a time")
    head = scorer.plans[0].function.head
    columns = head.ranked_columns()
    if not columns:
        raise UsageError(f"function '{scorer.plans[0].function.name}' has no numeric output a reference can rank")
    values: dict[str, list] = {c: [] for c in columns}
    summary = ScoreSummary(output=str(data))
    with open_table(data) as reader:
        for scored in scored_batches(scorer, reader, summary):
            ok = [s == STATUS_OK for s in scored.column("status").to_pylist()]
            for column in columns:
                values[column] += [v for v, keep in zip(scored.column(column).to_pylist(), ok) if keep]
    return reference_from_predictions(name, source, values), summary


def add_reference(scorer: TagScorer, data: str | Path, name: str, source: str) -> tuple[Reference, ScoreSummary]:
    """Score `data` with the scorer's function (built with percentiles=False) and store the reference in
    that pack's directory, replacing any reference it had."""
    pack = scorer.plans[0].function
    if pack.path is None or not Path(pack.path).is_dir():  # before the scoring, which may take minutes
        raise PackError(f"cannot add a reference to pack '{pack.name}': it is not a pack directory")
    if is_pulled(Path(pack.path)):  # its install record pins the manifest: a change would refuse the pack
        raise PackError(
            f"cannot add a reference to pack '{pack.name}' at {pack.path}: it was pulled from a registry",
            hint="copy its folder elsewhere and add the reference there (--pack-dir it)",
        )
    reference, summary = score_reference(scorer, data, name, source)
    record_reference(pack, reference)
    return reference, summary
