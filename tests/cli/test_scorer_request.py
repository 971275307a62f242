"""`ScorerRequest.from_options`: the scoring options of `predict` and `eval`, as click parses them, become
one request (a quick, in-process check of the names and value shapes both commands hand over)."""

from __future__ import annotations

import pytest
import typer

from tagcli.cli.app import app
from tagcli.cli.options import SCORING_OPTIONS
from tagcli.cli.scorer_request import ScorerRequest

REQUIRED = {"predict": ["in.csv", "-F", "qed"], "eval": ["in.csv", "-F", "qed", "-t", "y"]}


def parsed(command: str, args: list[str]) -> ScorerRequest:
    group = typer.main.get_command(app)
    ctx = group.commands[command].make_context(command, REQUIRED[command] + args)
    return ScorerRequest.from_options(["qed"], ctx.params)


@pytest.mark.parametrize("command", REQUIRED)
def test_defaults(command: str) -> None:
    request = parsed(command, [])
    assert request == ScorerRequest(["qed"])


@pytest.mark.parametrize("command", REQUIRED)
def test_every_option(command: str) -> None:
    args = ["--domain", "protein", "--domain", "smiles", "--input", "drug_a=s1", "--smiles-col", "s"]
    args += ["--protein-col", "p", "--both-orders", "--base-model", "tiny", "--device", "cpu", "--dtype", "float32"]
    args += ["-b", "8", "--max-batch-tokens", "512", "--no-clip", "--pack-dir", "a", "--pack-dir", "b"]
    args += ["--registry", "file://r", "--offline"]
    assert parsed(command, args) == ScorerRequest(
        ["qed"],
        ["protein", "smiles"],
        columns={"smiles": "s", "protein": "p"},
        inputs={"drug_a": "s1"},
        base_model="tiny",
        device="cpu",
        dtype="float32",
        batch_size=8,
        max_batch_tokens=512,
        both_orders=True,
        clip=False,
        pack_dirs=["a", "b"],
        registries=["file://r"],
        offline=True,
    )


def test_one_column() -> None:
    assert parsed("predict", ["-c", "text"]).columns == {"*": "text"}


def test_scoring_options_declared_once() -> None:
    """predict and eval take the same scoring options (flags, defaults, help), shown under one heading."""

    def scoring(command: str) -> dict[str, tuple]:
        params = typer.main.get_command(app).commands[command].params
        return {
            p.name: (p.opts, p.secondary_opts, p.default, p.help)
            for p in params
            if getattr(p, "rich_help_panel", None) == "Scoring options"
        }

    assert scoring("predict") == scoring("eval")
    assert list(scoring("eval")) == list(SCORING_OPTIONS)
