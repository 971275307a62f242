"""Readouts, cached features and ensemble heads (issue #12), on the tiny Llama."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from rdkit import Chem
from safetensors.torch import load_file

from helpers import POOLED, SMILES, domain_pack, ensemble_config, regression_head
from tagcli.core.heads import head_from_spec
from tagcli.core.heads.regression import RegressionHead
from tagcli.core.model import TaggedModel
from tagcli.core.prompt import PromptEncoder, PromptTemplate
from tagcli.core.readout import ReadoutSpec
from tagcli.errors import PackError
from tagcli.packs.format import load_pack, save_pack
from tagcli.scoring.scorer import TagScorer
from tagcli.train import features as features_module
from tagcli.train import train
from tagcli.train.data import Examples
from tagcli.train.features import ContextCache, FeatureCache, readouts


def molecules(n: int = 60) -> list[str]:
    return [SMILES[i % len(SMILES)] + "C" * (i // len(SMILES)) for i in range(n)]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    values = molecules()
    path = tmp_path / "train.csv"
    pd.DataFrame({"smiles": values, "y": [float(len(v)) for v in values]}).to_csv(path, index=False)
    return path


def test_readout_spec_parses_and_refuses() -> None:
    spec = ReadoutSpec.parse("input-mean+tag-mean@4,8")
    assert spec == ReadoutSpec(("input-mean", "tag-mean"), (4, 8)) and spec.depth == 8
    assert spec.width(10) == 40 and ReadoutSpec.from_spec(spec.to_spec()) == spec
    assert ReadoutSpec.parse("tag-last") == ReadoutSpec() and ReadoutSpec().depth is None
    for bad in ("mean", "tag-last@0", "tag-last+tag-last", "input-mean@3,3"):
        with pytest.raises(ValueError):
            ReadoutSpec.parse(bad)
    assert ReadoutSpec(("tag-last",), (40,)).check_model(30) is not None


def test_bad_ensemble_specs_are_refused_by_the_pack_reader() -> None:
    spec = {"type": "regression", "targets": [{"name": "y", "mean": 0.0, "std": 1.0}]}
    for extra, message in (
        ({"members": 0}, "members must be"),
        ({"hidden_units": -1}, "hidden_units must be"),
        ({"members": True}, "members must be"),
        ({"readout": {"pools": ["everything"]}}, "readout pools"),
    ):
        with pytest.raises(PackError, match=message):
            head_from_spec({**spec, **extra, "members": extra.get("members", 1)}, 16)


def test_cached_features_equal_fresh_ones_and_resume_by_block(base, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(features_module, "BLOCK_ROWS", 7)
    d = base.hidden_size
    readout = ReadoutSpec.parse(POOLED)
    head = regression_head(d, readout=readout)
    tags = {"smiles": torch.randn(3, d) * 0.3, "fn": torch.randn(2, d) * 0.3}
    model = TaggedModel(base.model, tags, {"fn": head}).eval()
    encoder = PromptEncoder(base.tokenizer, model.tag_table)
    template = PromptTemplate("{tag:smiles}{input:smiles}{tag:fn}")
    inputs = {"smiles": encoder.tokenize_inputs(molecules(20))}
    examples = Examples(encoder.encode(template, inputs), [0.0] * 20, [0.0] * 20, template, inputs)

    cache = FeatureCache(tmp_path, model, head, [examples])
    cached = cache.load(model, encoder, head, examples, "train", batch_size=4)
    fresh = torch.empty_like(cached)
    for chunk, features in readouts(model, encoder, readout, examples, range(20), batch_size=5):
        fresh[chunk] = features
    assert cached.shape == (20, readout.width(d))
    torch.testing.assert_close(cached, fresh, atol=1e-5, rtol=1e-4)

    blocks = sorted(cache.directory.iterdir())
    assert len(blocks) == 3  # 7 + 7 + 6 rows
    first = load_file(blocks[0])["features"]
    blocks[1].unlink()  # as if the run had stopped before the second block
    again = cache.load(model, encoder, head, examples, "train", batch_size=4)
    torch.testing.assert_close(again, cached)
    assert torch.equal(load_file(blocks[0])["features"], first)  # finished blocks are read, not redone

    # Rows whose contexts the tag steps cached only run the suffix, and give the same features.
    shutil.rmtree(cache.directory)
    contexts = ContextCache(model, encoder, examples, [3, 11, 12, 19], batch_size=3)
    reused = cache.load(model, encoder, head, examples, "train", batch_size=4, cached=contexts)
    torch.testing.assert_close(reused, fresh, atol=1e-5, rtol=1e-4)

    other_rows = Examples(examples.rows[:-1], [0.0] * 19, [0.0] * 19, template, inputs)
    assert FeatureCache(tmp_path, model, head, [other_rows]).directory != cache.directory  # other data: new features
    with torch.no_grad():
        model.tags["fn"].add_(0.1)
    assert FeatureCache(tmp_path, model, head, [examples]).directory != cache.directory  # a new tag: new features


@pytest.mark.slow
def test_ensemble_head_trains_round_trips_and_scores_like_its_features(base, data: Path, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    pack = train(ensemble_config(data, tmp_path / "fn"), base)
    loaded = load_pack(tmp_path / "fn")
    assert loaded.manifest.head == pack.head.to_spec()
    assert loaded.manifest.head["readout"] == {"pools": ["input-mean", "tag-mean"], "layers": [1, 2]}
    assert loaded.manifest.head["members"] == 3 and loaded.manifest.head["hidden_units"] == 8
    for key, value in pack.head.state_dict().items():
        torch.testing.assert_close(loaded.head.state_dict()[key], value, msg=key)
    head = loaded.head
    assert head.output_columns() == ["pred_y", "pred_y_std", "domain_score", "in_domain"]
    assert float(head.spread.scale) > 0 and float(head.applicability.threshold) > 0
    # members differ (bootstrap samples, seeds): the spread is real
    x = torch.randn(4, head.readout.width(base.hidden_size))
    assert head.member_outputs(x).std(0).min() > 0

    values = molecules()[:10] + ["not a smiles"]
    scorer = TagScorer("fn", base_model=base, pack_dirs=[str(tmp_path)], device="cpu", dtype="float32")
    assert scorer.model.depth == 2
    # Scoring records no graph: with grad on, a batch of long proteins kept every activation (16 GB).
    assert not any(p.requires_grad for p in scorer.model.parameters())
    modes = []
    encode = scorer.model.encode_context
    scorer.model.encode_context = lambda *a: modes.append(torch.is_inference_mode_enabled()) or encode(*a)
    out = scorer(pa.table({"smiles": values}))
    assert out.column("status").to_pylist() == ["ok"] * 10 + ["invalid"]
    assert modes and all(modes)
    for column in ("pred_y", "pred_y_std", "domain_score"):
        scored = out.column(column).to_pylist()
        assert all(math.isfinite(v) for v in scored[:10]) and scored[10] is None, column
    assert all(isinstance(v, bool) for v in out.column("in_domain").to_pylist()[:10])

    # The scorer's numbers are the head applied to the training path's features of the same rows.
    model = TaggedModel(base.model, {**loaded.tags, "smiles": load_pack(tmp_path / "smiles").tags["smiles"]}, {})
    model.heads["fn"] = head
    encoder = PromptEncoder(base.tokenizer, model.tag_table)
    template = loaded.manifest.prompt_template()
    inputs = {"smiles": encoder.tokenize_inputs(values[:10])}
    examples = Examples(encoder.encode(template, inputs), [0.0] * 10, [0.0] * 10, template, inputs)
    expected = torch.empty(10)
    for chunk, features in readouts(model, encoder, head.readout, examples, range(10)):
        expected[chunk] = head.predict(type("R", (), {"hidden": features})())["pred_y"].float()
    np.testing.assert_allclose(out.column("pred_y").to_pylist()[:10], expected.tolist(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_domain_score_flags_rows_unlike_the_training_rows(base, data: Path, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    train(ensemble_config(data, tmp_path / "fn", members=1, hidden_units=0), base)
    scorer = TagScorer("fn", base_model=base, pack_dirs=[str(tmp_path)], device="cpu", dtype="float32")
    assert "pred_y_std" not in scorer(pa.table({"smiles": ["CCO"]})).column_names  # one member: no spread
    typical = [v for v in scorer(pa.table({"smiles": molecules()[:20]})).column("domain_score").to_pylist() if v]
    unusual = scorer(pa.table({"smiles": ["C" * 70, "c1ccccc1" * 6]})).column("domain_score").to_pylist()
    assert len(typical) >= 15 and min(unusual) > float(np.median(typical))


def test_ensemble_packs_without_the_later_tensors_score_as_before(tmp_path: Path) -> None:
    """Ensemble packs written before the residual term and the fitted spread exponents (specs without
    a version) load with the neutral values: the T²-only domain score and a spread proportional to
    the members' std. A spec with a version is taken as it is."""
    head = regression_head(4, members=3, domain_components=2).requires_grad_(False)
    head.applicability.fit(torch.randn(50, 4), torch.randn(20, 4))
    state = {k: v for k, v in head.state_dict().items() if k not in head.LATER_TENSORS}
    assert head.upgrade_state(head.to_spec(), state) == state
    legacy = {k: v for k, v in head.to_spec().items() if k != "version"}
    upgraded = head.upgrade_state(legacy, state)
    assert float(upgraded["domain_residual"]) == 0.0
    assert upgraded["spread_power"].tolist() == [1.0] and upgraded["domain_power"].tolist() == [0.0]
    assert not upgraded["error_weights"].any() and not upgraded["error_power"].any()
    head.load_state_dict(upgraded)
    x = head.standardise(torch.randn(5, 4))
    domain = head.applicability
    torch.testing.assert_close(domain.score(x), domain.coordinates(x).pow(2).mean(1).sqrt())
    outputs = head.members_on(x)
    score = torch.rand(5) + 0.5
    level = head.error_model.apply(outputs.mean(0), score, domain.coordinates(x))
    assert not level.any()
    torch.testing.assert_close(head.spread.apply(outputs, score, level), outputs.std(0) * head.spread.scale)


def test_error_model_learns_where_the_errors_are_large() -> None:
    """Errors that grow with the target's size, which the members' spread hardly shows (alone it reaches
    a Spearman of 0.40 here): the error model, fitted on the rows each member left out, carries the
    std (0.53), and the std stays calibrated on unseen rows."""
    generator = torch.Generator().manual_seed(0)

    def rows(n: int) -> tuple[torch.Tensor, list]:
        x = torch.randn(n, 3, generator=generator)
        signal = x[:, 0] + 0.5 * x[:, 1]
        noise = (0.05 + signal.abs()) * torch.randn(n, generator=generator)
        return x, [[float(v)] for v in signal + noise]

    (train, labels), (validation, val_labels), (test, test_labels) = rows(3000), rows(1000), rows(2000)
    head = regression_head(3, mean=0.0, std=1.0, members=5, domain_components=2).requires_grad_(False)
    head.fit_final(train, labels, validation, val_labels, seed=0)
    assert float(head.spread.error_power) > 0.5 and head.check_state() is None
    columns = head.predict(SimpleNamespace(hidden=test))
    error = (columns["pred_y"] - torch.tensor(test_labels)[:, 0]).abs()
    std = columns["pred_y_std"]
    assert pd.Series(std.numpy()).corr(pd.Series(error.numpy()), method="spearman") > 0.47
    assert float(((columns["pred_y"] - torch.tensor(test_labels)[:, 0]) / std).pow(2).mean()) == pytest.approx(
        1.0, abs=0.3
    )


def test_calibration_fits_the_rows_the_validation_split_resembles() -> None:
    """A cold split in miniature: the training rows' relation (y = 2·x0) holds only weakly, around a
    higher mean, for the validation and test rows (y = 1 + 0.5·x0). Recalibrated on validation, the
    head's test MSE falls below the uncalibrated head's and below a constant at the training mean; the
    fit and the flag survive the pack format, and an absurd slope is refused."""
    generator = torch.Generator().manual_seed(0)

    def rows(n: int, offset: float, slope: float) -> tuple[torch.Tensor, list]:
        x = torch.randn(n, 3, generator=generator)
        return x, [[float(v)] for v in offset + slope * x[:, 0] + 0.3 * torch.randn(n, generator=generator)]

    (train, labels), (validation, val_labels) = rows(2000, 0.0, 2.0), rows(500, 1.0, 0.5)
    test, test_labels = rows(2000, 1.0, 0.5)
    truth = torch.tensor(test_labels)[:, 0]

    def test_mse(calibrate: bool) -> tuple[float, RegressionHead]:
        head = regression_head(3, members=3, calibrate=calibrate).requires_grad_(False)
        head.fit_final(train, labels, validation, val_labels, seed=0)
        return float((head.predict(SimpleNamespace(hidden=test))["pred_y"] - truth).pow(2).mean()), head

    plain, _ = test_mse(False)
    calibrated, head = test_mse(True)
    constant = float((truth - torch.tensor(labels).mean()).pow(2).mean())
    assert calibrated < 0.2 * plain and calibrated < 0.5 * constant
    assert float(head.recalibration.slope) == pytest.approx(0.25, abs=0.05)  # 0.5 / 2 on standardised values
    assert head.check_state() is None
    spec = head.to_spec()
    assert spec["calibrated"] is True
    loaded = RegressionHead.from_spec(spec, 3)
    loaded.load_state_dict(head.state_dict())
    assert loaded.calibrate
    torch.testing.assert_close(
        loaded.predict(SimpleNamespace(hidden=test))["pred_y"], head.predict(SimpleNamespace(hidden=test))["pred_y"]
    )
    head.recalibration.slope.fill_(5.0)
    assert "calibration_slope" in head.check_state()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tag-llm", "prompt-tuning", "linear-probe"])
@pytest.mark.parametrize("stage", [2, 3])
def test_every_method_trains_a_pooled_ensemble_head(base, tmp_path: Path, method: str, stage: int) -> None:
    """Pooled layered readouts work for every method, one input or a pair sharing its protein (leads)."""
    from helpers import PROTEINS

    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    save_pack(domain_pack(base, "protein", seed=4), tmp_path / "protein")
    values = molecules(48)
    frame = pd.DataFrame({"smiles": values, "protein": [PROTEINS[i % 2] for i in range(48)]})
    frame["y"] = [float(len(v)) for v in values]
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    domains = ["smiles"] if stage == 2 else ["protein", "smiles"]
    train(ensemble_config(tmp_path / "pairs.csv", tmp_path / "fn", stage, method=method, domains=domains), base)
    scorer = TagScorer("fn", domains, base_model=base, pack_dirs=[str(tmp_path)], device="cpu", dtype="float32")
    out = scorer(frame.head(6))
    assert out["status"].tolist() == ["ok"] * 6
    assert all(math.isfinite(v) for v in out["pred_y"]) and all(v >= 0 for v in out["pred_y_std"])


def test_composition_matrix_by_hand_and_as_the_columns() -> None:
    from tagcli.core.extra_features import _composition_columns, composition, composition_matrix, ecfp4_counts

    columns = _composition_columns()
    row = dict(zip(columns, composition_matrix(["ACA"])[0]))
    assert row["aa_A"] == pytest.approx(2 / 3) and row["aa_C"] == pytest.approx(1 / 3)
    assert row["dp_AC"] == row["dp_CA"] == 0.5 and sum(row.values()) == pytest.approx(2.0)
    rare = dict(zip(columns, composition_matrix(["AXa"])[0]))  # rare and lower-case letters: length only
    assert rare["aa_A"] == pytest.approx(1 / 3) and sum(v for k, v in rare.items() if k.startswith("dp_")) == 0
    assert composition("ACA") == row and composition_matrix([]).shape == (0, 420)
    assert np.array_equal(ecfp4_counts(["CCO"]), ecfp4_counts([Chem.MolFromSmiles("CCO")]))
