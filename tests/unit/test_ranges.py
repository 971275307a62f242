"""Valid target ranges: declared at training, kept in the pack, clipped and flagged when scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from helpers import SMILES, domain_pack, function_pack, regression_head
from tagcli.errors import PackError, UsageError
from tagcli.packs.format import load_pack, save_pack
from tagcli.scoring.scorer import TagScorer
from tagcli.train import TrainConfig, train


def ranged_pack(base, folder: Path, low: float | None, high: float | None) -> None:
    """`logp` with its target `y` ranged to [low, high] around the head's actual predictions."""
    smiles = domain_pack(base, "smiles", seed=1)
    head = regression_head(base.hidden_size, ["y"], seed=3)
    head.targets[0]["range"] = [low, high]
    save_pack(smiles, folder / "smiles")
    save_pack(function_pack(base, "logp", [smiles], head, seed=3), folder / "logp")


def raw_predictions(base, folder: Path) -> list[float]:
    scorer = TagScorer("logp", base_model=base, pack_dirs=[str(folder)], clip=False)
    return scorer(pa.table({"smiles": SMILES})).column("pred_y").to_pylist()


def test_predictions_are_clipped_and_flagged(base, tmp_path: Path) -> None:
    ranged_pack(base, tmp_path / "open", None, None)
    raw = raw_predictions(base, tmp_path / "open")
    low, high = float(np.quantile(raw, 0.25)), float(np.quantile(raw, 0.75))
    ranged_pack(base, tmp_path / "packs", low, high)
    table = pa.table({"smiles": SMILES + ["C1CC"]})
    clipped = TagScorer("logp", base_model=base, pack_dirs=[str(tmp_path / "packs")])(table)
    assert clipped.column_names[-4:] == ["pred_y", "pred_y_out_of_range", "status", "error"]
    values, flags = clipped.column("pred_y").to_pylist(), clipped.column("pred_y_out_of_range").to_pylist()
    for value, flag, before in zip(values, flags, raw + [None]):
        if before is None:  # the invalid row: no value, no flag
            assert value is None and flag is None
            continue
        assert low <= value <= high
        assert flag == (not low <= before <= high)
        assert value == (before if not flag else min(max(before, low), high))
    assert any(flags[:-1]) and not all(flags[:-1])
    assert clipped.column("status").to_pylist() == ["ok"] * len(SMILES) + ["invalid"]  # clipping is not an error
    unclipped = TagScorer("logp", base_model=base, pack_dirs=[str(tmp_path / "packs")], clip=False)(table)
    assert unclipped.column("pred_y").to_pylist()[:-1] == raw
    assert unclipped.column("pred_y_out_of_range").to_pylist() == flags


def test_a_half_open_range_bounds_one_side(base, tmp_path: Path) -> None:
    ranged_pack(base, tmp_path / "open", None, None)
    raw = raw_predictions(base, tmp_path / "open")
    floor = float(np.median(raw))
    ranged_pack(base, tmp_path / "packs", floor, None)
    out = TagScorer("logp", base_model=base, pack_dirs=[str(tmp_path / "packs")])(pa.table({"smiles": SMILES}))
    assert out.column("pred_y").to_pylist() == [max(v, floor) for v in raw]


def test_ranges_round_trip_through_the_pack_format(base, tmp_path: Path) -> None:
    ranged_pack(base, tmp_path, 0.0, None)
    loaded = load_pack(tmp_path / "logp")
    assert loaded.manifest.head["targets"][0]["range"] == [0.0, None]
    assert loaded.head.ranged() == [("pred_y", 0.0, float("inf"))]


@pytest.mark.parametrize("bad", [[1.0, 0.0], [0.0], "0,1", [0.0, float("nan")], [True, 2.0]])
def test_a_bad_range_in_a_manifest_is_a_pack_error(base, tmp_path: Path, bad) -> None:
    ranged_pack(base, tmp_path, None, None)
    manifest_path = tmp_path / "logp" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["head"]["targets"][0]["range"] = bad
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(PackError, match="range"):
        load_pack(tmp_path / "logp")


@pytest.mark.slow
def test_training_records_the_declared_range(base, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    values = SMILES * 4
    pd.DataFrame({"smiles": values, "y": [len(v) / 50 for v in values]}).to_csv(tmp_path / "d.csv", index=False)
    common = dict(
        data=str(tmp_path / "d.csv"),
        domains=["smiles"],
        function="fn",
        targets=["y"],
        tag_length=2,
        max_steps=1,
        batch_size=8,
        device="cpu",
        dtype="float32",
        force=True,
    )
    pack = train(TrainConfig.from_flat(dict(out=str(tmp_path / "fn"), target_ranges={"*": "0,1"}, **common)), base)
    assert pack.manifest.head["targets"][0]["range"] == [0.0, 1.0]
    pack = train(TrainConfig.from_flat(dict(out=str(tmp_path / "fn"), target_ranges={"y": ",1"}, **common)), base)
    assert pack.manifest.head["targets"][0]["range"] == [None, 1.0]
    for bad, message in [({"y": "1,0"}, "below"), ({"y": "a,b"}, "LOW,HIGH"), ({"z": "0,1"}, "not a --target")]:
        with pytest.raises(UsageError, match=message):
            train(TrainConfig.from_flat(dict(out=str(tmp_path / "bad"), target_ranges=bad, **common)), base)
