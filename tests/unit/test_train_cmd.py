"""`tagcli train`'s flags (tagcli.cli.train_cmd), parsed in-process up to training (issue #29, item 2):
every numeric option takes an explicit 0 or refuses it by name, flags given override --config, and the
options a model card shows are the flags that give the same options back (issue #26)."""

from __future__ import annotations

import dataclasses
import shlex
import typing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tagcli.cli.train_cmd as train_cmd
from tagcli.cli.app import app
from tagcli.core.heads import HEADS
from tagcli.core.heads.regression_options import RegressionOptions
from tagcli.errors import UsageError
from tagcli.options import Options, flag
from tagcli.train import TrainConfig


def _numeric_fields() -> list[tuple[str, dataclasses.Field, str]]:
    """(flag, field, a task that takes it) of every numeric option of `train stage2`."""
    fields = []
    for field, hint in train_cmd._fields(2):
        base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
        if base in (int, float):
            owners = [k for k, kind in HEADS.items() if field in dataclasses.fields(kind.Options)]
            fields.append((flag(field), field, owners[0] if owners else "regression"))
    return fields


def parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> TrainConfig | BaseException | None:
    """`tagcli train stage2 ARGS` run in-process up to `train`: the config it would train, or the error."""
    seen: dict[str, Any] = {}

    def capture(config: TrainConfig, on_progress: Any = None) -> None:
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(train_cmd, "train", capture)
    base = ["train", "stage2", "--domain", "smiles", "--function", "fn", "--target", "y"]
    result = CliRunner().invoke(app, [*base, "--data", "d.csv", "--out", str(tmp_path / "out"), *args])
    return seen.get("config") or result.exception


def test_every_numeric_option_takes_an_explicit_zero_or_refuses_it_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fields = _numeric_fields()
    names = {name for name, _, _ in fields}
    assert {"--patience", "--domain-components", "--members", "--max-rows", "--seed", "--lr"} <= names
    assert "--max-answer-tokens" in names  # the text head's own option is a flag too
    for name, field, task in fields:
        got = parsed(monkeypatch, tmp_path, name, "0", "--task", task)
        low = field.metadata.get("min")
        if low is not None and low > 0:
            assert isinstance(got, UsageError) and f"{name} must be" in got.message, (name, got)
        else:
            assert isinstance(got, TrainConfig), (name, got)
            assert got.flat()[field.name] == 0, name  # kept as given, never replaced by a default


def test_explicit_values_override_the_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text("seed = 5\npatience = 4\ncalibrate = true\nmembers = 3\n")
    config = parsed(monkeypatch, tmp_path, "--config", str(toml))
    assert isinstance(config, TrainConfig)
    assert (config.seed, config.patience, config.head_options.calibrate) == (5, 4, True)
    config = parsed(monkeypatch, tmp_path, "--config", str(toml), "--seed", "0", "--patience", "0", "--no-calibrate")
    assert isinstance(config, TrainConfig)
    assert (config.seed, config.patience, config.head_options.calibrate, config.head_options.members) == (
        0,
        0,
        False,
        3,
    )
    toml.write_text("sed = 5\n")
    error = parsed(monkeypatch, tmp_path, "--config", str(toml))
    assert isinstance(error, UsageError) and "unknown key(s) sed" in error.message


def test_a_card_line_is_the_flags_that_give_the_same_options_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    given = ["--readout", "input-mean@2,4", "--members", "3", "--extra-features", "rdkit2d", "--target-range", "0,1"]
    config = parsed(monkeypatch, tmp_path, *given, "--calibrate")
    assert isinstance(config, TrainConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.head_options.members = 2  # type: ignore[misc]
    line = config.head_kind.Options.card_line(dataclasses.asdict(config.head_options), "regression head")
    assert line is not None and line.startswith("- **Options of the regression head:** `--readout input-mean@2,4 ")
    again = parsed(monkeypatch, tmp_path, *shlex.split(line.split("`")[1]))
    assert isinstance(again, TrainConfig) and again.head_options == config.head_options


def test_a_card_line_says_what_was_recorded_and_nothing_else() -> None:
    recorded = {"target_ranges": {"logd": ",4"}, "calibrate": False, "extra_features": [], "seed": 3, "lead": None}
    line = RegressionOptions.card_line(recorded, "regression head")
    assert line == "- **Options of the regression head:** `--target-range logd=,4 --no-calibrate`"
    assert RegressionOptions.card_line({"seed": 3}, "regression head") is None  # an older pack's record
    assert Options.card_line(recorded, "tag-llm method") is None  # no options of its own
