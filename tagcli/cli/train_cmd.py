"""`tagcli train stage1|stage2|stage3`: the three training stages, each writing a tag pack.

The flags are generated from the option dataclasses: `TrainConfig`'s fields (the run), and for the
function stages every registered head kind's and method's `Options` (a head kind registered by a
plugin brings its flags). The TOML `--config` file takes the same keys and `TrainConfig.from_flat`
sorts them, so the CLI, the file and the Python API always agree. A flag not given is None here and
leaves the file's value (or the default) alone: an explicit 0 or `--no-calibrate` always counts.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import threading
import time
import typing
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tagcli.cli.options import slot_columns
from tagcli.cli.output import Output, OutputFormat
from tagcli.core.heads import HEADS
from tagcli.errors import UsageError
from tagcli.options import field_names, flag, hints
from tagcli.train import STAGES, TrainConfig, train
from tagcli.train.methods import METHODS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

app = typer.Typer(
    help="Train tags: stage1 (domain), stage2 (function on one domain), stage3 (function across domains).",
    no_args_is_help=True,
)

# Seconds between plain progress lines when stderr is not a terminal (a log file): a run is never
# silent for longer than this.
LOG_INTERVAL = 30.0


def _fields(stage: int) -> list[tuple[dataclasses.Field, Any]]:
    """(field, type hint) of every flag of a stage: the run's (those of its scope), then each head kind's
    and method's own."""
    run_hints = hints(TrainConfig)
    scopes = ("all", STAGES[stage].trains)
    run = [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("scope") in scopes]
    fields = [(f, run_hints[f.name]) for f in run]
    if STAGES[stage].trains == "function":
        seen = {f.name for f, _ in fields}
        for kind in [*HEADS.values(), *METHODS.values()]:
            kind_hints = hints(kind.Options)
            for field in dataclasses.fields(kind.Options):
                if field.name not in seen:
                    seen.add(field.name)
                    fields.append((field, kind_hints[field.name]))
    return fields


def _owners(name: str) -> str:
    """Which head kinds and methods take an option: "the regression and classification heads"."""
    heads = [k for k, kind in HEADS.items() if name in field_names(kind.Options)]
    methods = [m for m, method in METHODS.items() if name in field_names(method.Options)]
    owners = [f"the {' and '.join(heads)} head{'s' if len(heads) > 1 else ''}"] if heads else []
    owners += [f"the {' and '.join(methods)} method{'s' if len(methods) > 1 else ''}"] if methods else []
    return " and ".join(owners)


def _option(field: dataclasses.Field, hint: Any) -> tuple[Any, Any]:
    """(annotation, typer.Option) for one option field; every default is None: "not given". A head kind's
    or method's option says whose it is, in its help and by its panel in `--help`."""
    help_text, panel = field.metadata.get("help", ""), None
    if field.name not in field_names(TrainConfig):
        owners = _owners(field.name)
        help_text, panel = f"For {owners}: {help_text}", f"Options of {owners}"
    name = flag(field)
    if hint is bool:
        return bool | None, typer.Option(None, f"{name}/--no-{name[2:]}", help=help_text, rich_help_panel=panel)
    origin = typing.get_origin(hint)
    if origin in (list, dict):
        form = f" ({field.metadata['form']})" if field.metadata.get("form") else ""
        help_text = f"{help_text}{form}; repeatable"
        return list[str] | None, typer.Option(None, name, help=help_text, rich_help_panel=panel)
    if origin is typing.Literal:
        help_text = f"{help_text}: {' or '.join(map(str, typing.get_args(hint)))}"
        return str | None, typer.Option(None, name, help=help_text, rich_help_panel=panel)
    base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)  # X | None → X
    return base | None, typer.Option(None, name, help=help_text, rich_help_panel=panel)


class StageCommand:
    """`tagcli train stageN`: its flags are built each time the CLI runs, from the registries then."""

    def __init__(self, stage: int) -> None:
        self.stage = stage
        self.__name__ = f"stage{stage}"
        self.__doc__ = STAGES[stage].help

    def _parameters(self) -> list[tuple[str, Any, Any]]:
        options = [(f.name, *_option(f, hint)) for f, hint in _fields(self.stage)]
        config = typer.Option(None, "--config", help="TOML file with the same keys (command-line values win).")
        fmt = typer.Option(OutputFormat.human, "--format", "-f", help="Summary format.")
        return [*options, ("config", Path | None, config), ("format", OutputFormat, fmt)]

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.Signature(
            [
                inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=o, annotation=a)
                for n, a, o in self._parameters()
            ]
        )

    @property
    def __annotations__(self) -> dict[str, Any]:  # type: ignore[override]
        return {name: annotation for name, annotation, _ in self._parameters()}

    def __call__(self, **options: Any) -> None:
        run_stage(self.stage, options)


def run_stage(stage: int, options: dict[str, Any]) -> None:
    out = Output(options.pop("format"))
    values = _load_toml(options.pop("config"))
    for name in ("columns", "target_ranges"):
        if options.get(name):
            options[name] = _keyed(options[name])
    if options.get("inputs"):
        options["inputs"] = slot_columns(options["inputs"])
    values.update({k: v for k, v in options.items() if v is not None})
    config = TrainConfig.from_flat({**values, "stage": stage})
    with TrainingProgress(out) as progress:
        pack = train(config, on_progress=progress)
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


class TrainingProgress:
    """Training events for people: a live bar on a terminal; on anything else (a log file, a pipe)
    plain lines, one per phase, evaluation and warning, and at least every `LOG_INTERVAL` seconds
    (a heartbeat thread repeats the current phase's line through steps that report nothing, such as
    fitting the final head's members)."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.live = out.err.is_terminal
        self.bar: Progress | None = None  # started with the first event: early errors come alone
        self.task: Any = None
        self.phase, self.total, self.done, self.loss, self.rate = "", None, 0, float("nan"), 0.0
        self.phase_started = self.started = time.monotonic()
        self.last_line = 0.0
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def __enter__(self) -> TrainingProgress:
        if not self.live:
            threading.Thread(target=self._heartbeat, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        if self.bar is not None:
            self.bar.stop()

    def _heartbeat(self) -> None:
        while not self.stopped.wait(1.0):
            if self.phase and time.monotonic() - self.last_line >= LOG_INTERVAL:
                self._print(self._line())

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "phase":
            self.phase, self.total, self.done = event["phase"], event.get("total"), 0
            self.phase_started = time.monotonic()
            self._show(force=True)
        elif kind == "rows":
            self.done += event["rows"]
            self._show()
        elif kind == "step":
            self.done, self.total, self.loss, self.rate = (
                event["step"],
                event["total"],
                event["loss"],
                event["rows_per_second"],
            )
            self._show()
        elif kind == "eval":
            best = " (best)" if event["improved"] else ""
            self._print(f"step {event['step']}: validation {_numbers(event['metrics'])}{best}")
        elif kind == "warning":
            self._print(f"warning: {event['message']}")
        elif kind == "resume":
            self._print(f"resumed from checkpoint at step {event['step']}")

    def _show(self, force: bool = False) -> None:
        if self.live:
            self._bar().update(self.task, description=self.phase, completed=self.done, total=self.total, loss=self.loss)
        elif force or time.monotonic() - self.last_line >= LOG_INTERVAL:
            self._print(self._line())

    def _line(self) -> str:
        """ "tag steps: 40/200 (12.3 rows/s, loss 0.5120), elapsed 3:20, phase ETA 13:20"."""
        now = time.monotonic()
        spent = now - self.phase_started
        parts = [f"{self.done}/{self.total}" if self.total else (str(self.done) if self.done else "")]
        rate = self.rate if self.phase == "tag steps" else (self.done / spent if spent > 0 else 0.0)
        if self.done:
            parts.append(f"{rate:.1f} rows/s" + (f", loss {self.loss:.4f}" if self.phase == "tag steps" else ""))
        parts.append(f"elapsed {_clock(now - self.started)}")
        if self.total and self.done:
            parts.append(f"phase ETA {_clock(spent / self.done * (self.total - self.done))}")
        return f"{self.phase}: " + ", ".join(p for p in parts if p)

    def _print(self, line: str) -> None:
        with self.lock:
            self.last_line = time.monotonic()
            console = self._bar().console if self.live else self.out.err
            console.print(line, highlight=False, markup=False)

    def _bar(self) -> Progress:
        if self.bar is None:
            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.out.err,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.phase, total=self.total, loss=self.loss)
        return self.bar


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def _numbers(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))


def _load_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config {path}: {exc}") from None
    values = {k.replace("-", "_"): v for k, v in values.items()}
    values.pop("stage", None)
    known = {f.name for stage in STAGES for f, _ in _fields(stage)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"config {path}: unknown key(s) {', '.join(unknown)}")
    return values


def _keyed(specs: list[str]) -> dict[str, str]:
    """`--column COL` (any domain) or `--column DOMAIN=COL`; likewise `--target-range [TARGET=]LOW,HIGH`."""
    return dict(spec.split("=", 1) if "=" in spec else ("*", spec) for spec in specs)


for _stage in STAGES:
    app.command(f"stage{_stage}")(StageCommand(_stage))
