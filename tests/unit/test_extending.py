"""A new head kind and a new training method plug in with one registration each.

Both are defined here, in the test, each with an option of its own (a frozen `Options` dataclass), and
go through training (the Python API and the `tagcli train` CLI, where their options are flags in a help
panel of their own), the pack format, its model card (`pack info` says each option as its flag),
`TagScorer` scoring and `evaluate_file` without any edit to tagcli.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from torch.nn import functional as F
from typer.testing import CliRunner

from helpers import SMILES, domain_pack, tiny_train_config
from tagcli.cli.app import app
from tagcli.core.heads import HEADS, register_head
from tagcli.core.heads.base import Columns, Readout
from tagcli.core.heads.feature import FeatureHead
from tagcli.core.metrics import regression_metrics
from tagcli.core.prompt import PromptTemplate
from tagcli.errors import UsageError
from tagcli.options import Options, option
from tagcli.packs.format import load_pack, save_pack
from tagcli.scoring.evaluation import evaluate_file
from tagcli.scoring.scorer import TagScorer
from tagcli.train import train
from tagcli.train.methods import METHODS, register_method
from tagcli.train.methods.tag_llm import TagLLM


@dataclass(frozen=True)
class GaussianOptions(Options):
    min_log_variance: float = option(-6.0, "lowest log-variance the head predicts", minimum=-20.0, maximum=5.0)


class GaussianHead(FeatureHead):
    """One real target predicted as a mean and a log-variance, trained by Gaussian NLL."""

    type_name = "gaussian"
    Options = GaussianOptions
    select_by = "nll"

    def __init__(self, hidden_size: int, target: str, min_log_variance: float = -6.0) -> None:
        super().__init__(hidden_size, 2)
        self.target = target
        self.min_log_variance = min_log_variance

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        mean, logvar = super().forward(hidden).unbind(dim=1)
        return torch.stack([mean, logvar.clamp(min=self.min_log_variance)], dim=1)

    def output_types(self) -> dict[str, pa.DataType]:
        return {f"pred_{self.target}": pa.float64(), f"pred_{self.target}_logvar": pa.float64()}

    def predict(self, readout: Readout) -> Columns:
        mean, logvar = self(readout.hidden).unbind(dim=1)
        return dict(zip(self.output_columns(), (mean, logvar)))

    @classmethod
    def for_training(
        cls, hidden_size: int, targets: list[str], label_cells: Mapping[str, list], options: GaussianOptions
    ) -> GaussianHead:
        return cls(hidden_size, targets[0], options.min_log_variance)

    def parse_labels(self, label_cells: Sequence[list]) -> list[Any]:
        return [float(v) if v not in (None, "") else None for v in label_cells[0]]

    def loss(self, hidden: torch.Tensor, labels: list) -> torch.Tensor:
        mean, logvar = self(hidden).unbind(dim=1)
        return F.gaussian_nll_loss(mean, torch.tensor(labels, device=hidden.device), logvar.exp())

    def target_metrics(self, labels: list[Any], predicted: Mapping[str, list]) -> list[dict[str, Any]]:
        truth = np.array(labels, dtype=float)
        mean = np.array(predicted[f"pred_{self.target}"])
        variance = np.exp(np.array(predicted[f"pred_{self.target}_logvar"]))
        nll = float(np.mean(0.5 * (np.log(variance) + (truth - mean) ** 2 / variance + math.log(2 * math.pi))))
        return [{**regression_metrics(truth, mean), "nll": nll}]

    @classmethod
    def card_predicts(cls, spec: Mapping[str, Any], readout: str) -> str:
        return f"`{spec.get('target')}` as a mean and a log-variance (at least {spec.get('min_log_variance')})"

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type_name, "target": self.target, "min_log_variance": self.min_log_variance}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hidden_size: int) -> GaussianHead:
        return cls(hidden_size, spec["target"], spec["min_log_variance"])


@dataclass(frozen=True)
class FunctionOnlyOptions(Options):
    lead_text: str = option("", "text written before the input")


class FunctionOnly(TagLLM):
    """Tag-LLM without domain tags: the plain input, then the function tag."""

    name = "function-only"
    about = "the plain input, then the function tag (no domain tags)"
    Options = FunctionOnlyOptions

    def default_template(self) -> PromptTemplate:
        inputs = "".join(f"{{input:{d}}}" for d in self.config.domains)
        return PromptTemplate(self.config.method_options.lead_text + inputs + f"{{tag:{self.config.function}}}")


@pytest.fixture
def registered() -> Iterator[None]:
    register_head(GaussianHead)
    register_method(FunctionOnly)
    yield
    del HEADS["gaussian"], METHODS["function-only"]


@pytest.fixture
def labeled(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    values = [SMILES[i % len(SMILES)] + "C" * int(rng.integers(0, 5)) for i in range(40)]
    path = tmp_path / "train.csv"
    pd.DataFrame({"smiles": values, "y": [len(v) + rng.normal() for v in values]}).to_csv(path, index=False)
    return path


def panel(help_text: str, title: str) -> str:
    """The flags listed under one titled panel of a command's `--help` (rich draws each in a box)."""
    assert title in help_text, title
    return help_text.split(title, 1)[1].split("╰", 1)[0]


def run(base, labeled: Path, out: Path, **overrides: Any):
    return train(tiny_train_config(labeled, out, **({"function": out.name, "head_lr": 1e-2} | overrides)), base)


@pytest.mark.slow
def test_a_new_head_kind_trains_scores_and_evaluates(base, registered, labeled: Path, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    pack = run(base, labeled, tmp_path / "noisy", task="gaussian")
    loaded = load_pack(tmp_path / "noisy")
    assert loaded.manifest.head == {"type": "gaussian", "target": "y", "min_log_variance": -6.0}
    assert set(pack.manifest.metrics["val"]) >= {"nll", "pearson"}
    scorer = TagScorer("noisy", base_model=base, pack_dirs=[str(tmp_path)])
    out = scorer(pa.table({"smiles": SMILES[:3] + ["C1CC"]}))
    assert out.column_names[-4:] == ["pred_y", "pred_y_logvar", "status", "error"]
    assert out.column("status").to_pylist() == ["ok", "ok", "ok", "invalid"]
    assert all(np.isfinite(v) for v in out.column("pred_y_logvar").to_pylist()[:3])
    report = evaluate_file(scorer, labeled, ["y"])
    assert (
        report["scored"] + report["invalid"] == 40
        and report["scored"] > 30
        and set(report["y"]) >= {"nll", "pearson", "mse"}
    )


@pytest.mark.slow
def test_a_new_method_trains_and_its_pack_scores(base, registered, labeled: Path, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")  # how its inputs are cleaned
    pack = run(base, labeled, tmp_path / "plain", method="function-only")
    loaded = load_pack(tmp_path / "plain")
    assert loaded.manifest.method == "function-only" and loaded.manifest.template == "{input:smiles}{tag:plain}"
    assert loaded.manifest.requires == {} and loaded.tags["plain"].shape == (2, base.hidden_size)
    assert pack.manifest.training["steps"] == 3
    out = TagScorer("plain", base_model=base, pack_dirs=[str(tmp_path)])(pa.table({"smiles": SMILES[:4]}))
    assert out.column("status").to_pylist() == ["ok"] * 4 and len(set(out.column("pred_y").to_pylist())) == 4


def test_own_options_are_flags_recorded_and_on_the_card(
    base, registered, labeled: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    runner = CliRunner()
    help_text = " ".join(runner.invoke(app, ["train", "stage2", "--help"], env={"COLUMNS": "400"}).output.split())
    assert "--min-log-variance" in help_text and "For the gaussian head: lowest log-variance" in help_text
    assert "--lead-text" in help_text and "For the function-only method: text written" in help_text
    assert "--min-log-variance" in panel(help_text, "Options of the gaussian head")  # grouped by who takes them
    assert "--lead-text" in panel(help_text, "Options of the function-only method")
    assert "--calibrate" not in panel(help_text, "Options of the gaussian head")
    args = ["train", "stage2", "--domain", "smiles", "--target", "y", "--data", str(labeled), "--max-steps", "2"]
    args += ["--tag-length", "2", "--base-model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32"]
    noisy = ["--function", "noisy", "--out", str(tmp_path / "noisy"), "--task", "gaussian"]
    result = runner.invoke(app, [*args, *noisy, "--min-log-variance", "-3", "--method", "function-only"])
    assert result.exit_code == 0, (result.output, result.exception)
    result = runner.invoke(app, [*args, "--function", "plain", "--out", str(tmp_path / "plain")] + [
        "--method", "function-only", "--lead-text", "Molecule: ", "--members", "2"
    ])  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)

    noisy_pack, plain_pack = load_pack(tmp_path / "noisy"), load_pack(tmp_path / "plain")
    assert noisy_pack.manifest.head["min_log_variance"] == -3.0
    assert noisy_pack.manifest.training["hyperparameters"]["min_log_variance"] == -3.0
    assert plain_pack.manifest.template == "Molecule: {input:smiles}{tag:plain}"
    assert plain_pack.manifest.training["hyperparameters"]["lead_text"] == "Molecule: "
    card = " ".join(runner.invoke(app, ["pack", "info", "noisy", "--pack-dir", str(tmp_path)]).output.split())
    assert (
        "`y` as a mean and a log-variance (at least -3.0)" in card.replace("'", "`")
        or "as a mean and a log-variance (at least -3.0)" in card
    )
    assert "the plain input, then the function tag" in card
    assert "Options of the gaussian head: --min-log-variance -3.0" in card  # as the flag that reproduces it
    plain_card = " ".join(runner.invoke(app, ["pack", "info", "plain", "--pack-dir", str(tmp_path)]).output.split())
    assert "Options of the function-only method: --lead-text 'Molecule: '" in plain_card
    assert "Options of the regression head: --readout input-mean+tag-mean@1 --members 2 --hidden-units" in plain_card

    wrong = runner.invoke(app, [*args, *noisy, "--calibrate"])
    assert isinstance(wrong.exception, UsageError)
    assert "--calibrate is an option of the regression head; this run trains a gaussian head" in str(wrong.exception)
    bound = runner.invoke(app, [*args, *noisy, "--min-log-variance", "9"])
    assert "--min-log-variance must be from -20 to 5, got 9.0" in str(bound.exception)
