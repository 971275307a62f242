"""What training refuses, and what it warns about, before it spends the time.

Before the model loads: options (TrainConfig), the --out folder (`tagcli.packs.folder`), the tables
and their target columns (`data.split_tables`). Once rows are encoded: rows dropped (counted by
reason, printed), splits left without usable rows, labels with nothing to learn, validation rows
that are training rows. A refusal is one line; a warning goes to `on_progress` as
{"event": "warning", "message": ...}.
"""

from __future__ import annotations

from typing import Any

from tagcli.core.heads import Head
from tagcli.errors import UsageError
from tagcli.packs.folder import check_destination
from tagcli.train.config import TrainConfig
from tagcli.train.data import Examples
from tagcli.train.loop import Progress

__all__ = ["check_destination", "check_examples", "check_labels", "check_leakage"]


def check_examples(config: TrainConfig, train: Examples, val: Examples, report: Progress) -> None:
    """Warn about dropped rows (how many, why); refuse a split left with none."""
    for split in (train, val):
        if split.dropped:
            report({"event": "warning", "message": dropped_text(split)})
    empty = [split for split in (train, val) if not split.rows]
    if empty:
        split = empty[0]
        name = "training" if split is train else "validation"
        reasons = f": {dropped_text(split)}" if split.dropped else ""
        raise UsageError(
            f"no usable {name} rows left (train {len(train.rows)}, validation {len(val.rows)}){reasons}",
            hint=_empty_hint(split, train),
        )


def dropped_text(split: Examples) -> str:
    """ "train.csv: 40 of 100 rows dropped (40%): 30 missing label, 10 invalid SMILES (row 3: ...)"."""
    total = sum(split.dropped.values())
    reasons = ", ".join(f"{n} {reason}" for reason, n in split.dropped.most_common())
    first = split.first_dropped[split.dropped.most_common(1)[0][0]]
    share = f"{total / split.read:.0%}" if split.read else "all"
    return f"{split.source}: {total} of {split.read} rows dropped ({share}): {reasons} (first: {first})"


def _empty_hint(split: Examples, train: Examples) -> str:
    unusable = [reason for reason in split.dropped if reason.startswith("a label that is not")]
    if unusable and split is not train:
        return "the validation labels must be values the training labels also have"
    return "check the input and target columns"


def check_labels(config: TrainConfig, head: Head, train: Examples) -> None:
    """Refuse training labels with nothing to learn (the head kind decides what that means)."""
    problem = head.label_problem(train.labels)
    if problem:
        raise UsageError(f"{config.data}: {problem}", hint="check the --target column")


def check_leakage(config: TrainConfig, train: Examples, val: Examples, report: Progress) -> None:
    """Validation rows whose inputs are training rows' inputs measure memory, not prediction: a `--val`
    file made of training rows is refused; otherwise the count is a warning (a share of --data may
    repeat rows the data itself repeats)."""
    seen = set(_rows(train))
    shared = sum(row in seen for row in _rows(val))
    if not shared:
        return
    if shared == len(val.rows) and config.val:
        raise UsageError(
            f"every validation row's input is also a training row's ({val.source} vs {train.source}): "
            "the validation metrics would measure memory, not prediction",
            hint="validate on held-out rows",
        )
    report(
        {
            "event": "warning",
            "message": f"{shared} of {len(val.rows)} validation rows have the input of a training row: "
            "the validation metrics are optimistic",
        }
    )


def _rows(examples: Examples) -> list[tuple[Any, ...]]:
    """Each row's inputs (token ids per slot): equal for the same cleaned input."""
    slots = list(examples.inputs)
    return [tuple(tuple(examples.inputs[s][i]) for s in slots) for i in range(len(examples.rows))]
