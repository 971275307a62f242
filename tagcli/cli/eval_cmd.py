"""`tagcli eval`: score a labeled file and report metrics against its label columns."""

from __future__ import annotations

import typer

from tagcli.cli.options import scoring_command
from tagcli.cli.output import Output, OutputFormat
from tagcli.cli.scorer_request import ScorerRequest
from tagcli.packs.format import record_metrics
from tagcli.scoring.evaluation import pack_metrics, score_labeled


@scoring_command
def evaluate(
    ctx: typer.Context,
    input: str = typer.Argument(..., help="Labeled CSV or Parquet file."),
    function: str = typer.Option(..., "--function", "-F", help="Function pack (name or path)."),
    target: list[str] = typer.Option(..., "--target", "-t", help="Label column; one per predicted value, in order."),
    record: str = typer.Option(
        None,
        "--record",
        help="Also store the metrics in the function pack's manifest under this split name (e.g. test).",
    ),
    plot: str = typer.Option(
        None,
        "--plot",
        help="Also draw the evaluation into this file (.png/.svg/.pdf): a parity plot with residuals "
        "(regression) or ROC curves (classification). Needs the plot extra (matplotlib).",
    ),
    group_col: str = typer.Option(
        None,
        "--group-col",
        help="Also report the metrics per value of this column (e.g. cliff_mol: activity-cliff compounds vs the rest).",
    ),
    *,
    format: OutputFormat,
) -> None:
    """Print MSE, MAE, Pearson and Spearman (classification: accuracy, ROC-AUC) per target."""
    out = Output(format)
    request = ScorerRequest.from_options([function], ctx.params)
    request.pull_missing(out)
    scorer = request.scorer()
    scores = score_labeled(scorer, input, target, group_col=group_col)
    unlabeled = scores.check_labels(input)
    if unlabeled:
        out.warn(unlabeled)
    report = scores.report()
    if plot:
        from tagcli.plots import write_plot  # matplotlib only when asked for

        written = write_plot(scores, plot, title=f"{function} on {input}")
        out.err.print(f"wrote {written}", highlight=False)
    if record:
        pack = scorer.plans[0].function
        # The numerics the metrics were measured with: bf16 and fp32 features differ slightly.
        numerics = {"device": scorer.base.device.type, "dtype": str(scorer.base.dtype).removeprefix("torch.")}
        record_metrics(pack, record, {**pack_metrics(report, target, pack.head), "data": str(input), **numerics})
        out.err.print(f"recorded {record} metrics in {pack.path}", highlight=False)
    if format is OutputFormat.json:
        out.json(report)
        return
    groups = {"all rows": report} | report.get("groups", {})
    rows = [{"rows": group, "target": t, **metrics[t]} for group, metrics in groups.items() for t in target]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if not group_col:
        columns.remove("rows")
    out.table(rows, columns, title=f"{function} on {input}: {report['scored']} of {report['rows']} rows scored")
