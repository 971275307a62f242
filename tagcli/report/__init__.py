"""`tagcli report`: one self-contained HTML page about a scored file (a `tagcli predict` output).

    from tagcli.report import write_report
    write_report("out/molecules.scored.csv", "out/molecules.report.html")

The page shows rows by status and why rows have no prediction, each prediction's distribution beside the
pack's reference set, the uncertainty and domain-score views with the flagged rows, the pack cards and,
for a file with label columns, the `eval` metrics and plots. The file is streamed (collect.py); the page
has no script and fetches nothing (render.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tagcli.errors import TagcliError, UsageError
from tagcli.io.tables import open_table
from tagcli.packs.format import TagPack
from tagcli.packs.store import PackStore
from tagcli.report.collect import SAMPLE_ROWS, ScoredFile, check_scored, read_scored
from tagcli.report.render import render


@dataclass
class ReportSummary:
    output: str
    rows: int
    sampled_rows: int
    functions: list[str]
    labelled: list[str]  # functions evaluated against label columns in the file
    flagged: int

    def as_dict(self) -> dict:
        return dict(vars(self))


def write_report(
    source: str | Path,
    output: str | Path,
    *,
    functions: Sequence[str] = (),
    targets: Sequence[str] = (),
    store: PackStore | None = None,
    sample_rows: int = SAMPLE_ROWS,
) -> ReportSummary:
    """Write the report of the scored file `source` to `output` (HTML). `functions`: the packs that scored it
    (default: the installed function packs whose output columns the file has); `targets`: its label
    columns, for one function (default: the columns the pack was trained on, where the file has them)."""
    if sample_rows < 1:
        raise UsageError(f"--sample-rows must be positive, got {sample_rows}")
    if str(source) == "-":
        raise UsageError(
            "tagcli report reads a scored file, not standard input", hint="save the scores to a file first"
        )
    with open_table(source) as reader:
        columns = reader.schema.names
    check_scored(columns, str(source))
    packs = find_packs(columns, functions, store or PackStore(), str(source))
    scored = read_scored(source, packs, label_columns(packs, columns, targets), sample_rows=sample_rows)
    page = render(scored)
    try:
        Path(output).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise TagcliError(f"cannot write {output}: {exc.strerror or exc}", hint="choose a writable path") from None
    return summary_of(scored, str(output))


def find_packs(columns: Sequence[str], functions: Sequence[str], store: PackStore, source: str) -> list[TagPack]:
    """The function packs whose outputs the file holds: those named, or every installed one that fits."""
    if functions:
        packs = [store.load(name) for name in functions]
        for pack in packs:
            missing = [c for c in pack.head.output_columns() if c not in columns] if pack.head else ["(a head)"]
            if pack.manifest.kind != "function" or missing:
                raise UsageError(f"{source} was not scored by '{pack.name}': it lacks {', '.join(missing)}")
        return packs
    fitting = [
        pack
        for pack in store.installed().values()
        if isinstance(pack, TagPack) and pack.head is not None and set(pack.head.output_columns()) <= set(columns)
    ]
    if not fitting:
        raise UsageError(
            f"no installed function pack writes the prediction columns of {source}",
            hint="name the packs that scored it with --function (and --pack-dir where they are)",
        )
    written: dict[str, str] = {}
    for pack in fitting:
        for column in pack.head.output_columns():
            if column in written and not column.startswith(("domain_", "in_domain")):
                raise UsageError(
                    f"both '{written[column]}' and '{pack.name}' write {column}: which scored {source}?",
                    hint="name the packs with --function",
                )
            written[column] = pack.name
    return fitting


def label_columns(packs: Sequence[TagPack], columns: Sequence[str], targets: Sequence[str]) -> dict[str, list[str]]:
    """Function → its label columns in the file: `targets` (one function), else those it was trained on."""
    if targets:
        if len(packs) != 1:
            raise UsageError("--target needs exactly one --function")
        missing = [t for t in targets if t not in columns]
        if missing:
            raise UsageError(f"no target column(s) {', '.join(missing)} in the file")
        return {packs[0].name: list(targets)}
    found = {}
    for pack in packs:
        data = pack.manifest.training.get("data") if isinstance(pack.manifest.training.get("data"), dict) else {}
        trained = data.get("targets") if isinstance(data.get("targets"), list) else []
        if trained and all(isinstance(t, str) and t in columns for t in trained):
            found[pack.name] = list(trained)
    return found


def summary_of(scored: ScoredFile, output: str) -> ReportSummary:
    return ReportSummary(
        output=output,
        rows=scored.rows,
        sampled_rows=len(scored.sample.frame),
        functions=[pack.name for pack in scored.packs],
        labelled=list(scored.targets),
        flagged=scored.flagged,
    )
