"""Reference distributions: added to a pack without touching its tensors, stored in its manifest, and
turned by the scorer into percentile columns that are the same through predict, shards and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import SMILES, Crash, crash_after, write_packs
from tagcli.errors import PackError, UsageError
from tagcli.io.workunits import Shard
from tagcli.packs.folder import HEADS_FILE, MANIFEST, TAGS_FILE
from tagcli.packs.format import load_pack
from tagcli.packs.integrity import INSTALL_RECORD
from tagcli.packs.reference import Reference, reference_from_predictions
from tagcli.scoring.references import add_reference
from tagcli.scoring.runner import score_file
from tagcli.scoring.scorer import TagScorer

REFERENCE_SMILES = SMILES + ["CCCO", "CC(C)O", "c1ccncc1", "CC(=O)N", "C1CCCCC1", "not a molecule"]


def test_percentiles_are_mid_ranks_among_the_reference() -> None:
    reference = reference_from_predictions("set", "here", {"pred_y": [3.0, 1.0, None, 2.0, 2.0]})
    assert reference.values == {"pred_y": [1.0, 2.0, 2.0, 3.0]} and reference.rows == 4
    ranks = reference.percentiles("pred_y", [0.5, 1.0, 2.0, 2.5, 9.0, None, float("nan")])
    # below + half of the ties, out of 4: nothing, half of one, one and half of two, three, all four
    assert ranks == [0.0, 12.5, 50.0, 75.0, 100.0, None, None]


def test_a_large_reference_set_keeps_its_quantiles() -> None:
    values = np.random.default_rng(0).normal(size=12_000)
    reference = reference_from_predictions("big", "", {"pred_y": values.tolist()})
    kept = reference.values["pred_y"]
    assert reference.rows == 12_000 and len(kept) == 5000 and kept == sorted(kept)
    assert (kept[0], kept[-1]) == (values.min(), values.max())
    ranks = reference.percentiles("pred_y", np.quantile(values, [0.1, 0.5, 0.9]).tolist())
    assert np.allclose(ranks, [10, 50, 90], atol=0.05)


@pytest.fixture(scope="module")
def packs(base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The helper packs, with references on `logp` (regression) and `active` (classification)."""
    root = tmp_path_factory.mktemp("packs")
    write_packs(root, base)
    data = root.parent / "reference.csv"
    data.write_text("smiles\n" + "\n".join(REFERENCE_SMILES) + "\n")
    for name in ("logp", "active"):
        scorer = TagScorer(str(root / name), base_model=base, pack_dirs=[str(root)], percentiles=False)
        add_reference(scorer, data, "test molecules", "reference.csv")
    return root


def test_a_reference_leaves_the_tensors_alone_and_round_trips(base, packs: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    write_packs(fresh, base)
    for name in (TAGS_FILE, HEADS_FILE):  # the same bytes as a pack written without one
        assert (packs / "logp" / name).read_bytes() == (fresh / "logp" / name).read_bytes()
    logp, active = load_pack(packs / "logp"), load_pack(packs / "active")
    assert logp.reference is not None and active.reference is not None
    assert logp.reference.columns == ["pred_y"] and active.reference.columns == ["prob_active", "prob_inactive"]
    assert logp.reference.rows == len(REFERENCE_SMILES) - 1  # the invalid SMILES has no prediction
    stored = json.loads((packs / "logp" / MANIFEST).read_text())["reference"]
    assert Reference.from_data(stored, ["pred_y"], "here") == logp.reference
    assert "reference" not in json.loads((fresh / "logp" / MANIFEST).read_text())  # none: no key at all


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["values"].update(pred_z=[1.0]), "does not predict"),
        (lambda r: r["values"]["pred_y"].reverse(), "must be sorted"),
        (lambda r: r["values"].update(pred_y=[1.0, "x"]), "finite numbers"),
        (lambda r: r["values"].update(pred_y=[1.0, 10**400]), "finite numbers"),
        (lambda r: r.update(values=[1.0]), "must map output columns"),
        (lambda r: r.update(rows=0), "positive integer"),
        (lambda r: r.pop("name"), "name and a source"),
    ],
)
def test_a_broken_reference_refuses_the_pack(packs: Path, tmp_path: Path, change, message: str) -> None:
    broken = tmp_path / "logp"
    broken.mkdir()
    for name in (TAGS_FILE, HEADS_FILE):
        (broken / name).write_bytes((packs / "logp" / name).read_bytes())
    manifest = json.loads((packs / "logp" / MANIFEST).read_text())
    change(manifest["reference"])
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PackError, match=message):
        load_pack(broken)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    values = (SMILES + ["C1CC", ""]) * 5  # 50 rows, some invalid
    path = tmp_path / "mols.parquet"
    pq.write_table(pa.table({"id": list(range(len(values))), "smiles": values}), path, row_group_size=16)
    return path


def make_scorer(base, packs: Path, **options) -> TagScorer:
    return TagScorer(["logp", "active"], base_model=base, pack_dirs=[str(packs)], batch_size=4, **options)


def test_predict_adds_a_percentile_beside_each_ranked_prediction(base, packs: Path, source: Path, tmp_path) -> None:
    out = tmp_path / "out.parquet"
    score_file(make_scorer(base, packs), source, out, window_rows=4, unit_rows=7)
    table = pq.read_table(out)
    names = table.column_names
    assert names[-5:] == ["pred_y_percentile", "prob_active_percentile", "prob_inactive_percentile", "status", "error"]
    for pack, column in (("logp", "pred_y"), ("active", "prob_active")):
        expected = load_pack(packs / pack).reference.percentiles(column, table.column(column).to_pylist())
        assert table.column(f"{column}_percentile").to_pylist() == expected
    ok = [s == "ok" for s in table.column("status").to_pylist()]
    ranks = table.column("pred_y_percentile").to_pylist()
    assert all((r is None) != keep for r, keep in zip(ranks, ok))  # a row without a prediction has no rank
    plain = tmp_path / "plain.parquet"
    score_file(make_scorer(base, packs, percentiles=False), source, plain, window_rows=4, unit_rows=7)
    assert pq.read_table(plain).equals(table.drop_columns([c for c in names if c.endswith("_percentile")]))


def test_the_reference_set_ranks_itself_around_the_middle(base, packs: Path, tmp_path: Path) -> None:
    data = tmp_path / "reference.csv"
    data.write_text("smiles\n" + "\n".join(REFERENCE_SMILES) + "\n")
    out = tmp_path / "out.parquet"
    # batched as when the reference was added: other batches may move values by float rounding, and a tie
    # then becomes a step of half a rank
    score_file(TagScorer("logp", base_model=base, pack_dirs=[str(packs)]), data, out)
    kept = [r for r in pq.read_table(out).column("pred_y_percentile").to_pylist() if r is not None]
    assert len(kept) == len(REFERENCE_SMILES) - 1 and np.mean(kept) == pytest.approx(50.0)  # mid-ranks average 50


def test_percentiles_are_the_same_through_shards_and_resume(base, packs: Path, source: Path, tmp_path) -> None:
    whole = tmp_path / "whole.parquet"
    score_file(make_scorer(base, packs), source, whole, window_rows=4, unit_rows=7)
    expected = pq.read_table(whole)
    sharded = tmp_path / "sharded.parquet"
    for k in range(3):
        score_file(make_scorer(base, packs), source, sharded, window_rows=4, unit_rows=7, shard=Shard(k, 3))
    assert pq.read_table(sharded).equals(expected)
    resumed = tmp_path / "resumed.parquet"
    with pytest.raises(Crash):
        score_file(make_scorer(base, packs), source, resumed, window_rows=4, unit_rows=7, on_rows=crash_after(20))
    with pytest.raises(UsageError, match="different run.*_percentile"):  # never mixes ranked and unranked parts
        score_file(
            make_scorer(base, packs, percentiles=False), source, resumed, window_rows=4, unit_rows=7, resume=True
        )
    score_file(make_scorer(base, packs), source, resumed, window_rows=4, unit_rows=7, resume=True)
    assert pq.read_table(resumed).equals(expected)


def test_a_pulled_pack_is_not_changed(base, tmp_path: Path) -> None:
    write_packs(tmp_path, base)
    scorer = TagScorer(str(tmp_path / "logp"), base_model=base, pack_dirs=[str(tmp_path)], percentiles=False)
    (tmp_path / "logp" / INSTALL_RECORD).write_text("{}")  # as `pack pull` leaves it: the record pins the files
    before = (tmp_path / "logp" / MANIFEST).read_bytes()
    with pytest.raises(PackError, match="pulled from a registry"):
        add_reference(scorer, tmp_path / "unused.csv", "set", "")
    assert (tmp_path / "logp" / MANIFEST).read_bytes() == before
