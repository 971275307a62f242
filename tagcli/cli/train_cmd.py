"""`tagcli train stage1|stage2|stage3`: the three training stages, each writing a tag pack.

The options are generated from `TrainConfig`'s fields and help texts, so the CLI, the TOML
`--config` file and the Python API always take the same keys.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tagcli.cli.options import slot_columns
from tagcli.cli.output import Output, OutputFormat
from tagcli.errors import UsageError
from tagcli.train import STAGES, TrainConfig, train

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

app = typer.Typer(
    help="Train tags: stage1 (domain), stage2 (function on one domain), stage3 (function across domains).",
    no_args_is_help=True,
)

# Fields every stage takes, then each stage's own.
COMMON = [
    "data",
    "out",
    "val",
    "val_fraction",
    "max_rows",
    "max_val_rows",
    "base_model",
    "template",
    "tag_length",
    "epochs",
    "max_steps",
    "batch_size",
    "grad_accum",
    "lr",
    "seed",
    "device",
    "dtype",
    "eval_every",
    "patience",
    "checkpoint_every",
    "resume",
    "pack_dirs",
    "columns",
    "version",
    "description",
]
# Each stage's own fields: a domain stage's, or a function stage's.
OWN_FIELDS = {
    "domain": ["domains", "input_kind", "max_tokens"],
    "function": ["domains", "inputs", "symmetric", "function", "targets", "target_ranges", "task", "method"]
    + ["head_lr", "init_samples", "max_answer_tokens", "readout", "members", "hidden_units", "domain_components"]
    + ["calibrate", "tag_rows"],
}
STAGE_FIELDS = {number: OWN_FIELDS[stage.trains] for number, stage in STAGES.items()}
# Plural fields are repeatable singular flags.
FLAGS = {
    "domains": "--domain",
    "targets": "--target",
    "pack_dirs": "--pack-dir",
    "columns": "--column",
    "target_ranges": "--target-range",
    "inputs": "--input",
}


def _option(field: dataclasses.Field) -> tuple[Any, Any]:
    """(annotation, typer.Option) for one TrainConfig field."""
    flag = FLAGS.get(field.name, "--" + field.name.replace("_", "-"))
    help_text = field.metadata.get("help", "")
    hint = typing.get_type_hints(TrainConfig)[field.name]
    if hint is bool:
        return bool, typer.Option(False, flag, help=help_text)
    if field.name in FLAGS:
        extra = {
            "columns": " (COL or DOMAIN=COL)",
            "target_ranges": " (LOW,HIGH or TARGET=LOW,HIGH)",
            "inputs": " (SLOT=COLUMN)",
        }.get(field.name, "")
        return list[str] | None, typer.Option(None, flag, help=f"{help_text}{extra}; repeatable")
    if typing.get_origin(hint) is typing.Literal:
        return str | None, typer.Option(None, flag, help=f"{help_text}: {' or '.join(map(str, typing.get_args(hint)))}")
    base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)  # X | None → X
    return base | None, typer.Option(None, flag, help=help_text)


def _make_command(stage: int) -> Callable[..., None]:
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    parameters, annotations = [], {}
    for name in STAGE_FIELDS[stage] + COMMON:
        annotation, option = _option(fields[name])
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
        )
        annotations[name] = annotation
    extras = {
        "config": (
            Path | None,
            typer.Option(None, "--config", help="TOML file with the same keys (command-line values win)."),
        ),
        "format": (OutputFormat, typer.Option(OutputFormat.human, "--format", "-f", help="Summary format.")),
    }
    for name, (annotation, option) in extras.items():
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
        )
        annotations[name] = annotation

    def command(**options: Any) -> None:
        _run(stage, options)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = annotations
    command.__doc__ = STAGES[stage].help
    return command


def _run(stage: int, options: dict[str, Any]) -> None:
    out = Output(options.pop("format"))
    values = _load_toml(options.pop("config"))
    for name in ("columns", "target_ranges"):
        if options.get(name):
            options[name] = _keyed(options[name])
    if options.get("inputs"):
        options["inputs"] = slot_columns(options["inputs"])
    values.update({k: v for k, v in options.items() if v not in (None, False, [])})
    for required in ("data", "out"):
        if not values.get(required):
            raise UsageError(f"--{required} is required (on the command line or in --config)")
    config = TrainConfig(stage=stage, **values)
    with _progress(out) as bar:
        task = bar.add_task(f"stage {stage}", total=None, loss=float("nan"), rate=0.0)
        pack = train(config, on_progress=lambda event: _show(bar, task, event))
    val = pack.manifest.metrics.get("val") or {}
    record = {
        "pack": str(config.out),
        "name": pack.name,
        "kind": pack.manifest.kind,
        "val": val,
        "seconds": pack.manifest.training["seconds"],
    }
    out.record(
        record,
        f"wrote {pack.manifest.kind} pack '{pack.name}' to {config.out} in {record['seconds']} s "
        f"(validation: {_numbers(val)})",
    )


def _show(bar: Progress, task: Any, event: dict[str, Any]) -> None:
    if event["event"] == "step":
        bar.update(
            task, completed=event["step"], total=event["total"], loss=event["loss"], rate=event["rows_per_second"]
        )
    elif event["event"] == "eval":
        bar.console.print(
            f"step {event['step']}: validation {_numbers(event['metrics'])}{' (best)' if event['improved'] else ''}",
            highlight=False,
        )
    elif event["event"] == "resume":
        bar.console.print(f"resumed from checkpoint at step {event['step']}", highlight=False)


def _numbers(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))


def _progress(out: Output) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.1f} rows/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=out.err,
    )


def _load_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config {path}: {exc}") from None
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - set(TrainConfig.__dataclass_fields__) - {"stage"})
    if unknown:
        raise UsageError(f"config {path}: unknown key(s) {', '.join(unknown)}")
    values.pop("stage", None)
    return values


def _keyed(specs: list[str]) -> dict[str, str]:
    """`--column COL` (any domain) or `--column DOMAIN=COL`; likewise `--target-range [TARGET=]LOW,HIGH`."""
    return dict(spec.split("=", 1) if "=" in spec else ("*", spec) for spec in specs)


for _stage in STAGES:
    app.command(f"stage{_stage}")(_make_command(_stage))
