"""`make moleculeace` end to end on two tiny synthetic sets with the tiny model (issue #28): every model
is trained and scored on each set, cliff RMSE is the RMSE of the cliff rows, and the means are per model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import domain_pack
from recipes import moleculeace
from tagcli.packs.format import load_pack, save_pack


def synthetic_set(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups = ["O", "N", "Cl", "c1ccccc1", "C(=O)O"]
    smiles = [f"{'C' * int(rng.integers(1, 14))}{rng.choice(groups)}" for _ in range(70)]
    smiles = list(dict.fromkeys(smiles))
    y = [5.0 + 0.2 * len(s) + (1.0 if "Cl" in s else 0.0) + rng.normal(0, 0.1) for s in smiles]
    split = ["test" if k % 4 == 0 else "train" for k in range(len(smiles))]
    cliff = [int(k % 3 == 0) for k in range(len(smiles))]
    pd.DataFrame({"smiles": smiles, "y": y, "cliff_mol": cliff, "split": split}).to_parquet(path, index=False)


@pytest.mark.slow  # trains a function per set and model
def test_the_recipe_runs_end_to_end_on_two_sets(base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data" / "moleculeace").mkdir(parents=True)
    for k, name in enumerate(("CHEMBL1_Ki", "CHEMBL2_EC50")):
        synthetic_set(tmp_path / "data" / "moleculeace" / f"{name}.parquet", k)
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "packs" / "smiles")
    monkeypatch.setattr(moleculeace, "READOUT", "input-mean@1,2")  # the shipped one, scaled to 2 blocks
    result = moleculeace.run(tmp_path / "data", None, True, base, tmp_path / "packs", tmp_path / "work")

    assert set(result["sets"]) == {"CHEMBL1_Ki", "CHEMBL2_EC50"}
    expected_models = {*moleculeace.MODELS, "svm-tanimoto-ecfp4", "rf-ecfp4", "knn-tanimoto-ecfp4"}
    for name, entry in result["sets"].items():
        frame = pd.read_parquet(tmp_path / "data" / "moleculeace" / f"{name}.parquet")
        test = frame[frame["split"] == "test"]
        assert expected_models <= set(entry["models"])
        for model, r in entry["models"].items():
            assert r["n_test"] == len(test) and math.isfinite(r["rmse"]) and math.isfinite(r["rmse_cliff"]), model
    for model in expected_models:
        rmses = [result["sets"][s]["models"][model]["rmse"] for s in result["sets"]]
        assert result["means"][model]["mean_rmse"] == pytest.approx(np.mean(rmses))
    # Both tag-LLM models share the set's function tag and its readout features (one cached feature set);
    # the second's head also reads ECFP4 counts.
    work = tmp_path / "work" / "CHEMBL1_Ki"
    assert (work / "pack-tags" / "tags.safetensors").read_bytes() == (work / "pack" / "tags.safetensors").read_bytes()
    assert len(list((work / "pack.ckpt" / "features").iterdir())) == 1
    with_extra, tags_alone = ((work / p / "manifest.json").read_text() for p in ("pack", "pack-tags"))
    assert '"ecfp4"' in with_extra and '"ecfp4"' not in tags_alone
    assert result["settings"]["max_steps"] == 0


def test_cliff_rmse_is_the_rmse_of_the_cliff_rows() -> None:
    y, predicted, cliff = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.0, 4.0]), np.array([1, 0, 1, 0])
    assert moleculeace.cliff_rmse(y, predicted, cliff) == pytest.approx(math.sqrt((0.25 + 1.0) / 2))


def test_a_resumed_run_keeps_only_sets_measured_on_the_same_domain_tag(
    base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data" / "moleculeace").mkdir(parents=True)
    synthetic_set(tmp_path / "data" / "moleculeace" / "CHEMBL1_Ki.parquet", 0)
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "packs" / "smiles")
    tag = load_pack(tmp_path / "packs" / "smiles").tag_digest()
    scores = {"rmse": 1.0, "rmse_cliff": 1.0, "n_test": 1, "n_cliff": 1}
    done = {"models": {model: scores for model in moleculeace.MODELS}, "seconds": 1.0}

    def retrained(*args: object, **kwargs: object) -> None:
        raise RuntimeError("retrained")

    monkeypatch.setattr(moleculeace, "train_set", retrained)
    out = tmp_path / "moleculeace.json"
    for recorded in ({"smiles": tag}, {"smiles": "sha256:0"}, None):
        previous = {"settings": moleculeace.settings(), "sets": {"CHEMBL1_Ki": done}, "domain_tags": recorded}
        out.write_text(json.dumps(previous))
        args = (tmp_path / "data", None, False, base, tmp_path / "packs", tmp_path / "work")
        if recorded == {"smiles": tag}:  # the same tag: the set is kept as it was
            result = moleculeace.run(*args, out=out)
            assert result["domain_tags"] == recorded and result["sets"]["CHEMBL1_Ki"] == done
        else:  # measured on another tag, or not recorded: measured again
            with pytest.raises(RuntimeError, match="retrained"):
                moleculeace.run(*args, out=out)
