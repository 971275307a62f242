"""The trust components of the feature heads (`tagcli.core.heads.trust`): each fitted on generated
data and applied on its own, their tensors through the pack format under the names packs have always
used, and the head spec's layout version (a spec without one is upgraded as before)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import domain_pack, function_pack, regression_head
from tagcli.core.heads import head_from_spec
from tagcli.core.heads.feature import SPEC_VERSION
from tagcli.core.heads.trust import ApplicabilityDomain, EnsembleSpread, ErrorModel, Recalibration, out_of_bag
from tagcli.errors import PackError
from tagcli.packs.format import load_pack, save_pack

# The tensor names of a fitted ensemble regression head in a pack (unchanged since ensembles shipped).
PACK_NAMES = {
    "calibration_offset",
    "calibration_slope",
    "domain_axes",
    "domain_power",
    "domain_residual",
    "domain_scale",
    "domain_threshold",
    "error_bias",
    "error_power",
    "error_weights",
    "feature_mean",
    "feature_std",
    "spread_power",
    "spread_scale",
    "target_mean",
    "target_std",
}


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- applicability domain


def test_applicability_domain_scores_typical_rows_near_one_and_flags_rows_off_the_axes() -> None:
    """A row far along a direction the training rows never vary on is out of domain (the residual
    term), though its coordinates on the principal axes are typical."""
    train = torch.randn(500, 6, generator=generator()) * torch.tensor([3.0, 2.0, 0.1, 0.1, 0.1, 0.1])
    mean, std = train.mean(0), train.std(0)
    standardised = (train - mean) / std
    domain = ApplicabilityDomain(2, 6)
    domain.fit(standardised, standardised[:100])
    assert float(domain.residual) > 0 and domain.components == 2 and domain.enabled
    typical = domain.score(standardised[100:])
    assert float(typical.mean()) == pytest.approx(1.0, rel=0.2)
    off_axes = (torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 3.0]]) - mean) / std
    columns = domain.apply(off_axes)
    assert float(columns["domain_score"]) > 3 * float(domain.threshold) and columns["in_domain"] == [False]
    inside = domain.apply(standardised[:100])["in_domain"]
    assert sum(inside) == 95  # the threshold is the validation rows' 95th percentile


def test_applicability_domain_without_components_adds_nothing() -> None:
    domain = ApplicabilityDomain(0, 4)
    domain.fit(torch.randn(20, 4), torch.randn(10, 4))
    assert not domain.enabled and domain.score(torch.randn(3, 4)) is None
    assert domain.apply(torch.randn(3, 4)) == {} and domain.output_types() == {}
    assert domain.coordinates(torch.randn(3, 4)).shape == (3, 0)


def test_applicability_domain_refuses_tensors_no_fit_gives() -> None:
    domain = ApplicabilityDomain(2, 4)
    assert domain.check() is None
    domain.scale[0] = 0.0
    assert domain.check() == "domain_scale must be positive"
    domain.scale.fill_(1.0)
    domain.residual.fill_(-1.0)
    assert domain.check() == "domain_residual must not be negative"


# --------------------------------------------------------------------------- recalibration


def test_recalibration_fits_a_and_b_on_labeled_rows_only() -> None:
    prediction = torch.randn(400, 2, generator=generator())
    y = torch.stack([1.0 + 0.5 * prediction[:, 0], -0.5 + 3.0 * prediction[:, 1]], 1)
    y[::7, 0] = float("nan")  # unlabeled rows do not count
    recalibration = Recalibration(2)
    torch.testing.assert_close(recalibration.apply(prediction), prediction)  # unfitted: the identity
    recalibration.fit(prediction, y)
    assert recalibration.slope.tolist() == pytest.approx([0.5, 2.0])  # 3.0 is kept at MAX_SLOPE
    assert float(recalibration.offset[0]) == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(recalibration.apply(prediction)[:, 0], 1.0 + 0.5 * prediction[:, 0])


def test_recalibration_keeps_the_identity_without_two_labeled_rows() -> None:
    recalibration = Recalibration(1)
    recalibration.fit(torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [float("nan")]]))
    assert recalibration.slope.tolist() == [1.0] and recalibration.offset.tolist() == [0.0]


def test_recalibration_refuses_tensors_no_fit_gives() -> None:
    recalibration = Recalibration(1)
    recalibration.slope.fill_(5.0)
    assert recalibration.check() == "calibration_slope must lie in [0, 2]"
    recalibration.slope.fill_(1.0)
    recalibration.offset.fill_(float("inf"))
    assert recalibration.check() == "calibration_offset must be finite and at most 1000 in size"


# --------------------------------------------------------------------------- error model


def test_out_of_bag_marks_the_rows_each_member_missed() -> None:
    rows, weight = out_of_bag([torch.tensor([0, 0, 1, 2]), torch.tensor([1, 2, 3, 3])], 5)
    assert rows.tolist() == [True, False, False, True, True]  # rows 1 and 2: both members saw them
    assert weight[:, :, 0].tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]  # rows 0, 3, 4


def test_error_model_learns_where_the_errors_are_large() -> None:
    """Errors that grow with the prediction's size: the level follows them, within its bounds."""
    n = 3000
    prediction = torch.randn(n, 1, generator=generator())
    residual = (0.05 + prediction.abs()) * torch.randn(n, 1, generator=generator(1))
    coordinates = torch.randn(n, 2, generator=generator(2))
    model = ErrorModel(1, 2)
    assert not model.apply(prediction, None, coordinates).any()  # unfitted: level 0
    model.fit(prediction, residual, None, coordinates)
    assert model.weights.shape == (1, 5) and model.check() is None
    level = model.apply(prediction, None, coordinates)[:, 0]
    rank = pd.Series(level.numpy()).corr(pd.Series(residual[:, 0].abs().numpy()), method="spearman")
    assert rank > 0.5
    huge = model.apply(torch.full((1, 1), 1e6), None, torch.zeros(1, 2))
    assert float(huge) == 5.0  # MAX_ERROR_LEVEL: a row far outside never gets an infinite std
    model.bias.fill_(1e4)
    assert model.check() == "error_weights and error_bias must be finite and at most 1000 in size"


# --------------------------------------------------------------------------- ensemble spread


def _two_members(noise_scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs of members x0 + x1 and x0 - x1 [2, n, 1] (mean x0, spread ∝ |x1|) and the residuals of
    their mean against targets whose noise is scaled by `noise_scale(x)`."""
    x = torch.randn(4000, 2, generator=generator())
    outputs = torch.stack([x[:, :1] + x[:, 1:], x[:, :1] - x[:, 1:]])
    y = x[:, :1] + noise_scale(x) * torch.randn(4000, 1, generator=generator(1))
    return outputs, outputs.mean(0) - y


def test_spread_follows_the_members_when_the_errors_do_and_is_calibrated() -> None:
    outputs, residual = _two_members(lambda x: x[:, 1:].abs())
    spread, level = EnsembleSpread(1), torch.zeros(4000, 1)
    torch.testing.assert_close(spread.apply(outputs, None, level), outputs.std(0))  # unfitted: the members' std
    spread.fit(outputs, residual, None, level)
    assert 0.8 < float(spread.spread_power) < 1.2 and float(spread.applicability_power) == 0.0
    std = spread.apply(outputs, None, level)
    assert float((residual / std).pow(2).mean()) == pytest.approx(1.0, rel=1e-4)
    error = residual.abs().squeeze(1).numpy()
    assert pd.Series(std.squeeze(1).numpy()).corr(pd.Series(error), method="spearman") > 0.3


def test_spread_ignores_members_that_do_not_track_the_errors() -> None:
    outputs, residual = _two_members(lambda x: torch.full_like(x[:, 1:], 0.5))
    spread = EnsembleSpread(1)
    spread.fit(outputs, residual, None, torch.zeros(4000, 1))
    assert float(spread.spread_power) < 0.1
    std = spread.apply(outputs, None, torch.zeros(4000, 1))
    assert float(std.max() / std.min()) < 10.0  # near constant: the spread carried no information
    spread.error_power.fill_(3.0)
    assert spread.check() == "spread_power, domain_power and error_power must lie in [0, 2]"


# --------------------------------------------------------------------------- the head and the pack format


def fitted_head(calibrate: bool = True):
    """An ensemble regression head on 8 features with every trust component fitted."""
    x = torch.randn(600, 8, generator=generator())
    y = x[:, :1] + (0.1 + x[:, 1:2].abs()) * torch.randn(600, 1, generator=generator(1))
    head = regression_head(8, members=3, hidden_units=0, domain_components=3, calibrate=calibrate)
    labels = [[float(v)] for v in y[:, 0]]
    head.fit_final(x[:400], labels[:400], x[400:], labels[400:], seed=0)
    return head.requires_grad_(False)


def test_the_head_saves_its_components_under_the_pack_names_and_loads_them_back() -> None:
    head = fitted_head()
    state = head.state_dict()
    assert {k for k in state if not k.startswith("members.")} == PACK_NAMES
    torch.testing.assert_close(state["domain_axes"], head.applicability.axes)
    torch.testing.assert_close(state["domain_power"], head.spread.applicability_power)
    fresh = head_from_spec(head.to_spec(), 8)
    fresh.load_state_dict(state)
    for name, component in head.trust_components().items():
        for key, value in component.state_dict().items():
            assert torch.equal(getattr(fresh, name).state_dict()[key], value), f"{name}.{key}"


def test_trust_components_round_trip_through_the_pack_format(base, tmp_path: Path) -> None:
    torch.manual_seed(0)
    head = regression_head(base.hidden_size, members=3, hidden_units=0, domain_components=2, calibrate=True)
    x = torch.randn(300, base.hidden_size, generator=generator())
    labels = [[float(v)] for v in x[:, 0] + 0.3 * torch.randn(300, generator=generator(1))]
    head.fit_final(x[:200], labels[:200], x[200:], labels[200:], seed=0)
    smiles = domain_pack(base, "smiles", seed=1)
    save_pack(smiles, tmp_path / "smiles")
    save_pack(function_pack(base, "fn", [smiles], head), tmp_path / "fn")
    assert json.loads((tmp_path / "fn" / "manifest.json").read_text())["head"]["version"] == SPEC_VERSION
    assert {k for k in load_file(tmp_path / "fn" / "heads.safetensors") if ".members." not in k} == {
        f"fn.{k}" for k in PACK_NAMES
    }
    loaded = load_pack(tmp_path / "fn").head
    for name, component in head.trust_components().items():
        for key, value in component.state_dict().items():
            assert torch.equal(getattr(loaded, name).state_dict()[key], value), f"{name}.{key}"
    rows = SimpleNamespace(hidden=torch.randn(5, base.hidden_size), extra=None)
    for column, values in head.predict(rows).items():
        expected = values if isinstance(values, list) else values.tolist()
        got = loaded.predict(rows)[column]
        assert (got if isinstance(got, list) else got.tolist()) == expected, column


def _legacy_pack(base, tmp_path: Path, drop: tuple[str, ...]) -> Path:
    """A pack as an older tagcli wrote it: no version in its head spec, without the tensors `drop`."""
    head = regression_head(base.hidden_size, members=3, hidden_units=0, domain_components=2)
    smiles = domain_pack(base, "smiles", seed=1)
    save_pack(smiles, tmp_path / "smiles")
    save_pack(function_pack(base, "fn", [smiles], head), tmp_path / "fn")
    manifest = json.loads((tmp_path / "fn" / "manifest.json").read_text())
    del manifest["head"]["version"]
    (tmp_path / "fn" / "manifest.json").write_text(json.dumps(manifest))
    tensors = load_file(tmp_path / "fn" / "heads.safetensors")
    save_file(
        {k: v for k, v in tensors.items() if k.removeprefix("fn.") not in drop}, tmp_path / "fn" / "heads.safetensors"
    )
    return tmp_path / "fn"


def test_a_legacy_spec_loads_with_the_neutral_values_of_what_it_lacks(base, tmp_path: Path) -> None:
    """Ensemble packs from before the recalibration (the qed, protein-descriptors and tanimoto packs
    ship so) and before the error model load as they always did."""
    path = _legacy_pack(base, tmp_path, ("calibration_slope", "calibration_offset", "error_weights", "error_bias"))
    head = load_pack(path).head
    assert head.recalibration.slope.tolist() == [1.0] and head.recalibration.offset.tolist() == [0.0]
    assert not head.error_model.weights.any() and head.error_model.weights.shape == (1, 5)


def test_a_versioned_spec_must_hold_every_tensor(base, tmp_path: Path) -> None:
    path = _legacy_pack(base, tmp_path, ("calibration_slope",))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["head"]["version"] = SPEC_VERSION
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackError, match=r"lacks \['fn.calibration_slope'\]"):
        load_pack(path)


@pytest.mark.parametrize("version", [SPEC_VERSION + 1, "2", 2.0, True])
def test_a_spec_version_this_tagcli_does_not_read_is_refused(version) -> None:
    spec = {**regression_head(4).to_spec(), "version": version}
    with pytest.raises(PackError, match="version must be 2") as info:
        head_from_spec(spec, 4)
    assert (info.value.hint is not None) == (version == SPEC_VERSION + 1)  # a newer tagcli: upgrade
