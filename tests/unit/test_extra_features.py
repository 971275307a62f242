"""Extra input features beside the tags (issue #24): computed from the input, recorded in the pack,
and scored identically by the head, `TagScorer`, shards and resumed runs; a molecule the descriptor
code cannot handle is a row status, never a crash or a zero."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from helpers import SMILES, Crash, crash_after, domain_pack, ensemble_config
from tagcli.core.extra_features import EXTRA_FEATURES, ExtraFeatures, composition
from tagcli.errors import PackError, UsageError
from tagcli.io.workunits import Shard
from tagcli.packs.card import model_card
from tagcli.packs.format import load_pack, save_pack
from tagcli.scoring.runner import score_file
from tagcli.scoring.scorer import TagScorer
from tagcli.train import train
from tagcli.train.features import readouts
from tagcli.train.loop import _Hidden

LITHIUM = "[Li]"  # RDKit has no Gasteiger charges for it: its BCUT2D descriptors are NaN


def test_rdkit2d_values_are_finite_and_named_and_a_metal_is_a_reason() -> None:
    rdkit2d = EXTRA_FEATURES["rdkit2d"]
    columns = rdkit2d.all_columns()
    assert "MolLogP" in columns and "Ipc" not in columns and len(columns) == len(set(columns))
    values, problems = rdkit2d.compute(["CCO", LITHIUM, "c1ccccc1"], columns)
    assert values.shape == (3, len(columns)) and values.dtype == np.float32
    assert problems[0] is None and problems[2] is None and np.isfinite(values[[0, 2]]).all()
    assert problems[1] == "rdkit2d: BCUT2D_MWHI is not a finite number for this input"
    assert np.isnan(values[1]).all()  # no numbers for it at all, never a zero
    weight = columns.index("MolWt")  # signed log scale: sign(x) log(1 + |x|)
    assert values[0, weight] == pytest.approx(math.log1p(46.069), rel=1e-4)


def test_ecfp_counts_and_composition() -> None:
    ecfp = EXTRA_FEATURES["ecfp4"]
    values, problems = ecfp.compute(["CCO", "CCCCO"], ecfp.all_columns())
    assert problems == [None, None] and values.shape == (2, 2048)
    assert values.sum(1)[1] > values.sum(1)[0] > 0  # more atoms, more environments
    fractions = composition("ACA")
    assert fractions["aa_A"] == pytest.approx(2 / 3) and fractions["dp_AC"] == fractions["dp_CA"] == 0.5
    protein = EXTRA_FEATURES["composition"]
    values, problems = protein.compute(["ACDA", "MK"], protein.all_columns())
    assert problems == [None, None] and values[:, :20].sum(1) == pytest.approx([1.0, 1.0])


def test_extra_feature_specs_round_trip_and_refuse_what_this_tagcli_cannot_compute() -> None:
    bound = ExtraFeatures.bind("rdkit2d", "smiles")
    assert ExtraFeatures.from_spec(bound.to_spec()) == bound and bound.library.startswith("rdkit ")
    with pytest.raises(ValueError, match="'morgan9' are unknown here"):
        ExtraFeatures.from_spec({"name": "morgan9", "slot": "smiles", "columns": ["a"]})
    with pytest.raises(ValueError, match="need 1 column.*cannot compute .*NewDescriptor2031"):
        ExtraFeatures.from_spec(
            {"name": "rdkit2d", "slot": "smiles", "columns": ["MolWt", "NewDescriptor2031"], "library": "rdkit 2031.1"}
        )
    with pytest.raises(ValueError, match="standardized as 'tautomer', which this tagcli does not know"):
        ExtraFeatures.from_spec({**bound.to_spec(), "standardize": "tautomer"})


SODIUM_VALPROATE = "CCCC(CCC)C(=O)[O-].[Na+]"  # [Na+] has no Gasteiger charges: NaN BCUT2D as a whole
VALPROATE = "CCCC(CCC)C(=O)[O-]"


def test_rdkit2d_reads_a_salts_largest_fragment_and_older_packs_the_whole_input() -> None:
    bound = ExtraFeatures.bind("rdkit2d", "smiles")
    assert bound.standardize == "largest-fragment" and bound.to_spec()["standardize"] == "largest-fragment"
    salts, problems = bound.compute({"smiles": [SODIUM_VALPROATE, "Cl.CN1CCC[C@H]1c1cccnc1", "O.CCO", "CCO"]})
    parents, _ = bound.compute({"smiles": [VALPROATE, "CN1CCC[C@H]1c1cccnc1", "CCO", "CCO"]})
    assert problems == [None] * 4 and np.array_equal(salts, parents)
    assert "of smiles, largest fragment (rdkit " in bound.describe()

    # A pack written before `standardize` existed scores the whole input, as it was trained.
    older = {k: v for k, v in bound.to_spec().items() if k != "standardize"}
    whole = ExtraFeatures.from_spec(older)
    assert whole.standardize == "none" and "standardize" not in whole.to_spec()
    _, problems = whole.compute({"smiles": [SODIUM_VALPROATE]})
    assert problems == ["rdkit2d: BCUT2D_MWHI is not a finite number for this input"]
    # One fragment is read exactly as written, whatever the standardization.
    one = ["C[C@H](N)C(=O)O", "c1ccc2[nH]ccc2c1", "not a smiles"]
    (a, pa_), (b, pb) = bound.compute({"smiles": one}), whole.compute({"smiles": one})
    assert np.array_equal(a, b, equal_nan=True) and pa_ == pb and pb[2] == "rdkit2d: RDKit cannot read this SMILES"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    values = [
        "C" * int(rng.integers(1, 10)) + str(rng.choice(["O", "N", "Cl", "C(=O)O", "c1ccccc1"])) for _ in range(60)
    ]
    values[5] = LITHIUM  # dropped from training with its reason
    frame = pd.DataFrame({"smiles": values, "y": [len(v) + 0.5 * v.count("O") for v in values]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    return tmp_path / "train.csv"


@pytest.fixture
def trained(base, data: Path, tmp_path: Path):
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    warnings: list[str] = []

    def on_progress(event: dict) -> None:
        if event["event"] == "warning":
            warnings.append(event["message"])

    config = ensemble_config(data, tmp_path / "fn", extra_features=["rdkit2d"])
    return train(config, base, on_progress), warnings


@pytest.mark.slow
def test_a_head_with_extra_features_trains_records_and_scores_like_its_features(
    base, trained, data: Path, tmp_path: Path
) -> None:
    pack, warnings = trained
    assert any("1 rdkit2d: BCUT2D_MWHI is not a finite number for this input" in w for w in warnings), warnings
    manifest = load_pack(tmp_path / "fn").manifest
    spec = manifest.head
    (extra,) = spec["extra_features"]
    card = " ".join(model_card(vars(manifest)).split())
    described = f"with RDKit's {len(extra['columns'])} 2D descriptors (signed log scale) of smiles, largest fragment"
    assert described in card
    assert extra["name"] == "rdkit2d" and extra["slot"] == "smiles" and "MolLogP" in extra["columns"]
    assert pack.manifest.training["hyperparameters"]["extra_features"] == ["smiles=rdkit2d"]
    width = 2 * 2 * base.hidden_size  # two pools at two layers (helpers.POOLED)
    assert pack.head.members[0][0].in_features == width + len(extra["columns"])

    smiles = SMILES[:6] + [LITHIUM]
    scorer = TagScorer("fn", base_model=base, pack_dirs=[str(tmp_path)], device="cpu", dtype="float32")
    out = scorer(pa.table({"smiles": smiles}))
    assert out.column("status").to_pylist() == ["ok"] * 6 + ["invalid"]
    assert out.column("error").to_pylist()[6] == "fn: rdkit2d: BCUT2D_MWHI is not a finite number for this input"
    assert out.column("pred_y").to_pylist()[6] is None

    # What the head computes from the readout features and the extra features of the same rows.
    head = pack.head
    model, encoder = scorer.model, scorer.encoder
    examples = _examples(encoder, scorer.plans[0].template, smiles[:6])
    hidden = torch.empty(6, head.readout.width(base.hidden_size))
    for chunk, features in readouts(model, encoder, head.readout, examples, range(6)):
        hidden[chunk] = features
    extra_values, _ = head.input_features({"smiles": smiles[:6]})
    with torch.no_grad():
        expected = head.predict(_Hidden(hidden, extra_values))
    np.testing.assert_allclose(out.column("pred_y").to_pylist()[:6], expected["pred_y"].numpy(), rtol=1e-5, atol=1e-5)


def _examples(encoder, template, smiles: list[str]):
    from tagcli.train.data import Examples

    inputs = {"smiles": encoder.tokenize_inputs(smiles)}
    return Examples(encoder.encode(template, inputs), [0.0] * len(smiles), [0.0] * len(smiles), template, inputs)


@pytest.mark.slow
def test_shards_and_resume_give_the_one_run_output(base, trained, tmp_path: Path) -> None:
    rows = [SMILES[i % len(SMILES)] + "C" * (i % 4) for i in range(40)]
    rows[7], rows[21] = LITHIUM, "C1CC"
    source = tmp_path / "mols.parquet"
    pq.write_table(pa.table({"smiles": rows}), source, row_group_size=8)

    def scorer() -> TagScorer:
        return TagScorer("fn", base_model=base, pack_dirs=[str(tmp_path)], device="cpu", dtype="float32", batch_size=4)

    settings = {"window_rows": 6, "unit_rows": 6}
    score_file(scorer(), source, tmp_path / "one.parquet", **settings)
    one = pq.read_table(tmp_path / "one.parquet")
    assert one.column("status").to_pylist().count("ok") == 38
    for k in (0, 1):  # --shard 1/2 and 2/2
        score_file(scorer(), source, tmp_path / "sharded.parquet", shard=Shard(k, 2), **settings)
    assert pq.read_table(tmp_path / "sharded.parquet").equals(one)
    with pytest.raises(Crash):
        score_file(scorer(), source, tmp_path / "resumed.parquet", on_rows=crash_after(15), **settings)
    score_file(scorer(), source, tmp_path / "resumed.parquet", resume=True, **settings)
    assert pq.read_table(tmp_path / "resumed.parquet").equals(one)


@pytest.mark.slow
def test_a_pack_whose_extra_features_cannot_be_computed_is_refused(base, trained, tmp_path: Path) -> None:
    pack = load_pack(tmp_path / "fn")
    pack.manifest.head["extra_features"][0]["columns"][0] = "NewDescriptor2031"
    (tmp_path / "fn" / "manifest.json").write_text(pack.manifest.to_json())
    with pytest.raises(PackError, match="cannot compute \\(NewDescriptor2031\\)"):
        load_pack(tmp_path / "fn")


@pytest.mark.slow
def test_extra_features_need_an_input_of_their_kind(base, data: Path, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    with pytest.raises(UsageError, match="composition reads a protein input and the prompt has no slot"):
        train(ensemble_config(data, tmp_path / "fn", extra_features=["composition"]), base)
    with pytest.raises(UsageError, match="unknown extra-feature set 'maccs'"):
        ensemble_config(data, tmp_path / "fn", extra_features=["maccs"])


def test_member_views_read_only_their_columns_and_weigh_the_same(base) -> None:
    from helpers import regression_head
    from tagcli.core.heads import RegressionHead

    extra = ExtraFeatures.bind("rdkit2d", "smiles")
    head = regression_head(8, members=3, views=("readout", "extra"), extra_features=[extra])
    assert [m.in_features for m in head.members] == [8, extra.width, 8]  # views in turn: r, e, r
    x = torch.randn(5, 8 + extra.width)
    outputs = head.member_outputs(x)
    expected = (outputs[[0, 2]].mean(0) + outputs[1]) / 2  # each view's mean, then their mean
    torch.testing.assert_close(head(x), expected)
    moved = x.clone()
    moved[:, 8:] += 1.0  # other extra features: only the extra view's member moves
    again = head.member_outputs(moved)
    torch.testing.assert_close(again[[0, 2]], outputs[[0, 2]])
    assert not torch.allclose(again[1], outputs[1])

    spec = head.to_spec()
    assert spec["member_views"] == ["readout", "extra"]
    loaded = RegressionHead.from_spec(spec, 8)
    loaded.load_state_dict(head.state_dict())
    torch.testing.assert_close(loaded(x), head(x))
    with pytest.raises(PackError, match="member_views \\['readout', 'extra'\\]: readout and extra views split"):
        RegressionHead.from_spec({**spec, "extra_features": []}, 8)


@pytest.mark.slow
def test_member_views_need_extra_features(base, data: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--member-views readout,extra: .* give --extra-features too"):
        ensemble_config(data, tmp_path / "fn", member_views=["readout,extra"])
    config = ensemble_config(
        data, tmp_path / "fn", member_views=["readout,extra"], extra_features=["rdkit2d"], members=4
    )
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    pack = train(config, base)
    assert pack.manifest.head["member_views"] == ["readout", "extra"]
    assert pack.manifest.training["hyperparameters"]["member_views"] == ["readout", "extra"]
