"""Named input slots: several inputs of one domain (`{input:drug_a=smiles}{input:drug_b=smiles}`).

Slot mapping (by name, by `inputs`), swapped columns, a missing column, a bad SMILES in either slot,
a symmetric pack averaging both orders, training stage 3 with two slots of one domain, and the pair
data builder's disjoint splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from helpers import SMILES, domain_pack, function_pack, regression_head, tiny_train_config
from tagcli.core.prompt import PromptTemplate
from tagcli.errors import PackError, UsageError
from tagcli.packs.format import load_pack, save_pack
from tagcli.scoring.scorer import TagScorer
from tagcli.train import TrainConfig, train

PAIR = "{tag:smiles}{input:drug_a=smiles}{tag:smiles}{input:drug_b=smiles}{tag:%s}"


def pair_packs(base, root: Path) -> Path:
    """smiles (domain), combo (asymmetric pair regression), sim (symmetric pair regression)."""
    smiles = domain_pack(base, "smiles", seed=1)
    combo = function_pack(
        base, "combo", [smiles], regression_head(base.hidden_size, ["effect"], seed=7), seed=7, template=PAIR % "combo"
    )
    sim = function_pack(
        base, "sim", [smiles], regression_head(base.hidden_size, ["similarity"], seed=8), seed=8, template=PAIR % "sim"
    )
    sim.manifest.symmetric = True
    for pack in (smiles, combo, sim):
        save_pack(pack, root / pack.name)
    return root


@pytest.fixture
def packs(base, tmp_path: Path) -> Path:
    return pair_packs(base, tmp_path / "packs")


def scorer(base, packs: Path, function: str = "combo", **options) -> TagScorer:
    return TagScorer(function, base_model=base, pack_dirs=[str(packs)], **options)


A, B = SMILES[:4], SMILES[2:6]


def test_templates_name_slots_and_keep_the_old_meaning() -> None:
    pair = PromptTemplate(PAIR % "combo")
    assert pair.slots == {"drug_a": "smiles", "drug_b": "smiles"}
    assert pair.inputs == ["smiles", "smiles"] and pair.tags == ["smiles", "smiles", "combo"]
    assert pair.rename({"smiles": "selfies"}).slots == {"drug_a": "selfies", "drug_b": "selfies"}
    old = PromptTemplate("{tag:protein}{input:protein}{tag:smiles}{input:smiles}{tag:bind}")
    assert old.slots == {"protein": "protein", "smiles": "smiles"} and old.inputs == ["protein", "smiles"]
    assert (
        old.rename({"smiles": "selfies"}).text == "{tag:protein}{input:protein}{tag:selfies}{input:selfies}{tag:bind}"
    )
    with pytest.raises(PackError, match="malformed placeholder"):
        PromptTemplate("{tag:smiles=x}{input:smiles}").validate()
    with pytest.raises(PackError, match="input slot 'smiles' twice"):
        PromptTemplate("{input:smiles}{input:smiles}").validate()


def test_columns_named_like_the_slots_or_mapped_give_the_same_predictions(base, packs: Path) -> None:
    by_name = scorer(base, packs)(pa.table({"drug_a": A, "drug_b": B}))
    mapped = scorer(base, packs, inputs={"drug_a": "smiles_1", "drug_b": "smiles_2"})(
        pa.table({"smiles_1": A, "smiles_2": B})
    )
    assert by_name.column("status").to_pylist() == ["ok"] * 4
    assert mapped.column("pred_effect").to_pylist() == by_name.column("pred_effect").to_pylist()


def test_swapped_columns_give_the_swapped_prediction(base, packs: Path) -> None:
    table = pa.table({"smiles_1": A, "smiles_2": B})
    forward = scorer(base, packs, inputs={"drug_a": "smiles_1", "drug_b": "smiles_2"})(table)
    swapped = scorer(base, packs, inputs={"drug_a": "smiles_2", "drug_b": "smiles_1"})(table)
    reference = scorer(base, packs)(pa.table({"drug_a": B, "drug_b": A}))
    assert swapped.column("pred_effect").to_pylist() == reference.column("pred_effect").to_pylist()
    # The pack is not symmetric: the order matters (except where both molecules are the same).
    differs = [
        x != y for x, y in zip(forward.column("pred_effect").to_pylist(), swapped.column("pred_effect").to_pylist())
    ]
    assert differs == [a != b for a, b in zip(A, B)] and any(differs)


def test_a_missing_column_is_one_line_naming_the_slot(base, packs: Path) -> None:
    table = pa.table({"smiles_1": A, "smiles_2": B})
    with pytest.raises(UsageError) as found:
        scorer(base, packs, inputs={"drug_a": "smiles_1"})(table)
    assert "input slot drug_b (smiles)" in found.value.message and "\n" not in found.value.message
    assert found.value.hint == "pass --input drug_b=COLUMN"
    with pytest.raises(UsageError, match="input slot drug_b: no column 'smiles_3'"):
        scorer(base, packs, inputs={"drug_a": "smiles_1", "drug_b": "smiles_3"})(table)
    with pytest.raises(UsageError, match="no input slot 'drug_c'"):
        scorer(base, packs, inputs={"drug_c": "smiles_1"})
    # One SMILES column is not both inputs of a pair: --smiles-col does not fill two slots.
    with pytest.raises(UsageError, match="input slot drug_a"):
        scorer(base, packs, columns={"smiles": "smiles_1"})(table)


@pytest.mark.parametrize("slot", ["drug_a", "drug_b"])
def test_a_bad_smiles_in_either_slot_names_the_slot_and_column(base, packs: Path, slot: str) -> None:
    columns = {"smiles_1": list(A), "smiles_2": list(B)}
    column = "smiles_1" if slot == "drug_a" else "smiles_2"
    columns[column][1] = "C1CC"
    out = scorer(base, packs, inputs={"drug_a": "smiles_1", "drug_b": "smiles_2"})(pa.table(columns))
    assert out.column("status").to_pylist() == ["ok", "invalid", "ok", "ok"]
    error = out.column("error").to_pylist()[1]
    assert error.startswith(f"{slot} ({column}): invalid SMILES 'C1CC'"), error
    assert out.column("pred_effect").to_pylist()[1] is None


def test_a_symmetric_pack_averages_both_orders(base, packs: Path) -> None:
    forward = scorer(base, packs, "sim")(pa.table({"drug_a": A, "drug_b": B})).column("pred_similarity").to_pylist()
    backward = scorer(base, packs, "sim")(pa.table({"drug_a": B, "drug_b": A})).column("pred_similarity").to_pylist()
    both = scorer(base, packs, "sim", both_orders=True)
    averaged = both(pa.table({"drug_a": A, "drug_b": B})).column("pred_similarity").to_pylist()
    reversed_ = both(pa.table({"drug_a": B, "drug_b": A})).column("pred_similarity").to_pylist()
    assert forward != backward
    assert np.allclose(averaged, (np.array(forward) + np.array(backward)) / 2, atol=1e-5)
    assert np.allclose(averaged, reversed_, atol=1e-6)  # order no longer matters
    assert both.describe()["both_orders"] is True
    assert both.describe()["functions"][0]["slots"] == {"drug_a": "smiles", "drug_b": "smiles"}
    with pytest.raises(UsageError, match="'combo' is not symmetric"):
        scorer(base, packs, "combo", both_orders=True)


def test_symmetric_is_in_the_manifest_only_when_true_and_only_for_two_slots(base, packs: Path, tmp_path) -> None:
    assert load_pack(packs / "sim").manifest.symmetric is True
    assert '"symmetric"' in (packs / "sim" / "manifest.json").read_text()
    assert '"symmetric"' not in (packs / "combo" / "manifest.json").read_text()
    assert load_pack(packs / "combo").manifest.symmetric is False
    one = function_pack(base, "one", [domain_pack(base, "smiles", seed=1)])
    one.manifest.symmetric = True
    with pytest.raises(PackError, match="symmetric: true needs two input slots of one domain"):
        save_pack(one, tmp_path / "one")


@pytest.mark.slow
def test_stage3_trains_two_slots_of_one_domain(base, packs: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    first = [SMILES[i % 8] + "C" * int(rng.integers(0, 4)) for i in range(40)]
    second = [SMILES[(i * 3 + 1) % 8] for i in range(40)]
    data = tmp_path / "pairs.csv"
    labels = [len(a) - len(b) + rng.normal(scale=0.1) for a, b in zip(first, second)]
    pd.DataFrame({"smiles_1": first, "smiles_2": second, "y": labels}).to_csv(data, index=False)
    config = tiny_train_config(
        data,
        tmp_path / "diff",
        stage=3,
        function="diff",
        template=PAIR % "diff",
        inputs={"drug_a": "smiles_1", "drug_b": "smiles_2"},
        pack_dirs=[str(packs)],
        max_steps=2,
        eval_every=2,
    )
    pack = train(config, base)
    assert pack.manifest.domains == ["smiles"] and pack.manifest.template == PAIR % "diff"
    assert pack.manifest.training["data"]["train_rows"] > 30 and not pack.manifest.symmetric
    out = TagScorer("diff", base_model=base, pack_dirs=[str(tmp_path), str(packs)], inputs=config.inputs)(
        pa.table({"smiles_1": A, "smiles_2": B})
    )
    assert out.column("status").to_pylist() == ["ok"] * 4
    with pytest.raises(UsageError, match="no input slot 'drug_c'"):
        train(TrainConfig(**{**config.__dict__, "inputs": {"drug_c": "smiles_1"}}), base)
    with pytest.raises(UsageError, match="--symmetric needs two input slots"):
        train(TrainConfig(**{**config.__dict__, "template": None, "inputs": {}, "symmetric": True}), base)


def test_pair_data_splits_share_no_molecule(tmp_path: Path) -> None:
    from recipes.pair_data import build_formula, build_pairs

    molecules = [
        "CCO", "CCN", "CCC", "CCCl", "c1ccccc1", "c1ccccc1O", "c1ccccc1N", "CC(=O)O", "CC(=O)N", "OCCO",
        "NCCN", "CCOC", "CCCC", "CCCO", "CCCN", "c1ccncc1", "c1ccncc1C", "CC(C)O", "CC(C)N", "CC(C)C",
        "OC1CCCCC1", "NC1CCCCC1", "C1CCCCC1", "CCOCC", "CCNCC", "CCSCC", "CSC", "COC", "CNC", "C=CC",
    ]  # fmt: skip
    splits = {"train": molecules[:14], "val": molecules[14:22], "test": molecules[22:]}
    pairs = build_pairs(splits, {"train": 40, "val": 10, "test": 10}, seed=0)
    assert {split: len(table) for split, table in pairs.items()} == {"train": 40, "val": 10, "test": 10}
    used = {split: set(t["smiles_1"]) | set(t["smiles_2"]) for split, t in pairs.items()}
    assert used["train"] <= set(splits["train"]) and used["val"] <= set(splits["val"])
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]
    table = pairs["train"]
    assert list(table.columns) == ["id", "smiles_1", "smiles_2", "tanimoto", "pair"]
    assert table["tanimoto"].between(0, 1).all() and (table["smiles_1"] != table["smiles_2"]).all()
    assert set(table["pair"]) == {"neighbour", "random"}
    again = build_pairs(splits, {"train": 40, "val": 10, "test": 10}, seed=0)
    assert all(again[s].equals(pairs[s]) for s in pairs)  # seeded
    formula = build_formula(splits, {"train": 5, "val": 5, "test": 8}, seed=0)
    assert list(formula["train"].columns) == ["id", "smiles", "formula"]
    assert set(formula["test"]["smiles"]) == set(splits["test"])
    assert dict(zip(formula["test"]["smiles"], formula["test"]["formula"]))["CCOCC"] == "C4H10O"
