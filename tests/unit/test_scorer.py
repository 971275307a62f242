"""TagScorer and the file runner on the tiny model with random packs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import torch

from helpers import PROTEINS, SMILES, domain_pack, function_pack, regression_head, write_packs
from tagcli.core.metrics import regression_metrics
from tagcli.core.model import TaggedModel
from tagcli.core.prompt import PromptEncoder, collate
from tagcli.core.readout import ReadoutSpec
from tagcli.errors import BadRowError, PackError, UsageError
from tagcli.packs.format import save_pack
from tagcli.scoring.evaluation import evaluate_file, score_labeled
from tagcli.scoring.runner import score_file
from tagcli.scoring.scorer import TagScorer


@pytest.fixture(scope="module")
def pack_dir(base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("packs")
    write_packs(directory, base)
    return directory


@pytest.fixture
def scorer(base, pack_dir: Path):
    def make(function="logp", domains=None, **kwargs) -> TagScorer:
        return TagScorer(function, domains, base_model=base, pack_dirs=[str(pack_dir)], **kwargs)

    return make


def reference_predictions(scorer: TagScorer, values: list[str], domain: str = "smiles") -> list[float]:
    """pred column of one row at a time, computed directly with TaggedModel (no sorting, no batching)."""
    plan = scorer.plans[0]
    function = plan.function
    tags = {domain: plan.domains[domain].tags[domain], function.name: function.tags[function.name]}
    model = TaggedModel(scorer.base.model, tags, {function.name: function.head}).eval()
    encoder = PromptEncoder(scorer.base.tokenizer, model.tag_table)
    rows = encoder.encode(plan.template, {domain: encoder.tokenize_inputs(values)})
    column = function.head.output_columns()[0]
    return [float(model.predict(collate([r], encoder.pad_id), function.name)[column][0]) for r in rows]


# --------------------------------------------------------------------------- output shape


def test_dataframe_in_dataframe_out(scorer) -> None:
    s = scorer()
    frame = pd.DataFrame(
        {"name": [f"m{i}" for i in range(len(SMILES))], "smiles": SMILES, "weight": np.arange(len(SMILES)) * 1.5}
    )
    out = s(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["name", "smiles", "weight", "pred_y", "status", "error"]
    assert s.output_columns == ["pred_y", "status", "error"]
    pd.testing.assert_frame_equal(out[["name", "smiles", "weight"]], frame, check_dtype=False)
    assert (out["status"] == "ok").all() and out["error"].isna().all()
    assert out["pred_y"].notna().all() and out["pred_y"].nunique() == len(SMILES)
    expected = reference_predictions(s, SMILES)
    np.testing.assert_allclose(out["pred_y"].to_numpy(), expected, atol=1e-5, rtol=0)


def test_arrow_table_in_arrow_table_out(scorer) -> None:
    s = scorer()
    table = pa.table({"id": pa.array(range(len(SMILES)), pa.int64()), "smiles": SMILES})
    out = s(table)
    assert isinstance(out, pa.Table)
    assert out.column_names == ["id", "smiles", "pred_y", "status", "error"]
    assert out.schema.field("pred_y").type == pa.float64()
    assert out.column("id").to_pylist() == list(range(len(SMILES)))
    assert out.column("smiles").to_pylist() == SMILES
    # a RecordBatch is accepted too and gives the same numbers
    again = s(table.to_batches()[0])
    assert again.column("pred_y").to_pylist() == out.column("pred_y").to_pylist()
    np.testing.assert_allclose(out.column("pred_y").to_pylist(), reference_predictions(s, SMILES), atol=1e-5, rtol=0)


def test_empty_table(scorer) -> None:
    out = scorer().score(pa.table({"smiles": pa.array([], pa.string())}))
    assert out.num_rows == 0 and out.column_names == ["smiles", "pred_y", "status", "error"]


def test_classification_outputs(scorer) -> None:
    out = scorer("active")(pa.table({"smiles": SMILES[:4]}))
    assert out.column_names == ["smiles", "pred_label", "prob_active", "prob_inactive", "status", "error"]
    assert out.schema.field("pred_label").type == pa.string()
    p_active, p_inactive = (np.array(out.column(c).to_pylist()) for c in ("prob_active", "prob_inactive"))
    np.testing.assert_allclose(p_active + p_inactive, 1.0, atol=1e-6)
    labels = out.column("pred_label").to_pylist()
    assert labels == ["active" if a > b else "inactive" for a, b in zip(p_active, p_inactive)]


def test_two_functions_at_once(scorer) -> None:
    both = scorer(["logp", "active"])
    assert [[p.function.name for p in group] for group in both.groups] == [["logp", "active"]]  # inputs run once
    out = both(pa.table({"smiles": SMILES[:3]}))
    assert out.column_names == ["smiles", "pred_y", "pred_label", "prob_active", "prob_inactive", "status", "error"]
    alone = scorer("logp")(pa.table({"smiles": SMILES[:3]}))
    np.testing.assert_allclose(out.column("pred_y").to_pylist(), alone.column("pred_y").to_pylist(), atol=1e-5)


# --------------------------------------------------------------------------- bad rows


def test_bad_smiles_rows_are_marked_not_zeroed(scorer) -> None:
    values = ["CCO", "C1CCC", "", None, "C" * 10_000, "C(C)(C)(C)(C)C", "   ", "not a molecule", "c1ccccc1"]
    frame = pd.DataFrame({"smiles": values})
    out = scorer()(frame)
    assert len(out) == len(values)
    assert out["status"].tolist() == [
        "ok",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "ok",
    ]
    bad = out[out["status"] == "invalid"]
    assert bad["pred_y"].isna().all()  # null, never 0.0
    assert out.loc[[0, 8], "pred_y"].notna().all() and out.loc[[0, 8], "error"].isna().all()
    errors = out["error"].tolist()
    assert errors[1].startswith("invalid SMILES 'C1CCC': ")
    assert errors[2] == errors[3] == errors[6] and "empty" in errors[2]
    assert "too long" in errors[4] and "10000 characters" in errors[4]
    assert "invalid SMILES 'C(C)(C)(C)(C)C'" in errors[5] and "valence" in errors[5].lower()
    assert errors[7].startswith("invalid SMILES 'not a molecule'")
    # good rows score the same as when scored without the bad ones
    clean = scorer()(pd.DataFrame({"smiles": ["CCO", "c1ccccc1"]}))
    np.testing.assert_allclose(out.loc[[0, 8], "pred_y"].to_numpy(), clean["pred_y"].to_numpy(), atol=1e-5)


def test_bad_rows_in_arrow_are_null(scorer) -> None:
    out = scorer()(pa.table({"smiles": pa.array(["CCO", None, "C1CC"], pa.string())}))
    assert out.column("pred_y").to_pylist()[1:] == [None, None]
    assert out.column("status").to_pylist() == ["ok", "invalid", "invalid"]


def test_non_text_cells_are_invalid(scorer) -> None:
    out = scorer(columns={"smiles": "n"})(pa.table({"n": [1, 2]}))
    assert out.column("status").to_pylist() == ["invalid", "invalid"]
    error = out.column("error").to_pylist()[0]
    assert "expected text" in error and "int" in error


def test_too_many_tokens_is_invalid(base, tmp_path: Path) -> None:
    smiles = domain_pack(base, "smiles", seed=1, max_tokens=4)
    save_pack(smiles, tmp_path / "smiles")
    save_pack(function_pack(base, "logp", [smiles]), tmp_path / "logp")
    long = "CC(=O)Oc1ccccc1C(=O)O"  # 21 characters: under 4 x 16, but more than 4 tokens
    out = TagScorer("logp", base_model=base, pack_dirs=[str(tmp_path)])(pa.table({"smiles": ["CCO", long]}))
    assert out.column("status").to_pylist() == ["ok", "invalid"]
    n_tokens = len(base.tokenizer(long, add_special_tokens=False).input_ids)
    error = out.column("error").to_pylist()[1]
    assert "too long" in error and f"{n_tokens} tokens" in error and "4" in error
    assert out.column("pred_y").to_pylist()[1] is None


def test_protein_rows(scorer) -> None:
    values = ["MKTAYIAKQR", "mktayiakqr", "MKT1AYIAKQR", "ACDE FGHIK", "MKTA-Y*", "PEPTIDÉ", "BJOUXZ"]
    out = scorer("fold")(pd.DataFrame({"sequence": values}))
    assert out["status"].tolist() == ["ok", "ok", "invalid", "ok", "invalid", "invalid", "ok"]
    assert out.loc[out["status"] == "invalid", "pred_stability"].isna().all()
    for row, bad in ((2, "1"), (4, "*-"), (5, "É")):
        assert out["error"][row].startswith("not a protein sequence") and repr(bad) in out["error"][row]
    # case and whitespace are normalised: the same sequence, the same score
    assert out["pred_stability"][0] == pytest.approx(out["pred_stability"][1], abs=1e-6)


def test_canonicalizing_domain_scores_equivalent_smiles_alike(base, tmp_path: Path) -> None:
    for canonicalize in (True, False):
        smiles = domain_pack(base, "smiles", seed=1, canonicalize=canonicalize)
        save_pack(smiles, tmp_path / str(canonicalize) / "smiles")
        save_pack(function_pack(base, "logp", [smiles]), tmp_path / str(canonicalize) / "logp")
    table = pa.table({"smiles": ["CCO", "OCC", "C(O)C"]})
    canonical = (
        TagScorer("logp", base_model=base, pack_dirs=[str(tmp_path / "True")])(table).column("pred_y").to_pylist()
    )
    raw = TagScorer("logp", base_model=base, pack_dirs=[str(tmp_path / "False")])(table).column("pred_y").to_pylist()
    assert canonical[1] == pytest.approx(canonical[0], abs=1e-6) and canonical[2] == pytest.approx(
        canonical[0], abs=1e-6
    )
    assert raw[1] != pytest.approx(raw[0], abs=1e-4)  # without canonicalization the spelling matters


def test_strict_mode_names_the_absolute_row(scorer) -> None:
    s = scorer(strict=True)
    table = pa.table({"smiles": ["CCO", "c1ccccc1", "C1CCC", ""]})
    with pytest.raises(BadRowError) as info:
        s.score(table, row_offset=100)
    message = str(info.value)
    assert message.startswith("row 103: invalid SMILES 'C1CCC'") and "\n" not in message
    with pytest.raises(BadRowError, match=r"^row 3: "):
        s.score(table)
    assert s.score(table.slice(0, 2)).column("status").to_pylist() == ["ok", "ok"]


def test_non_finite_predictions_are_errors(base, tmp_path: Path) -> None:
    smiles = domain_pack(base, "smiles", seed=1)
    head = regression_head(base.hidden_size, ["y"], seed=2, mean=0.0, std=3e38)
    with torch.no_grad():
        head.members[0].bias.fill_(10.0)  # finite tensors, but 10 * 3e38 overflows float32
    save_pack(smiles, tmp_path / "smiles")
    save_pack(function_pack(base, "huge", [smiles], head), tmp_path / "huge")
    out = TagScorer("huge", base_model=base, pack_dirs=[str(tmp_path)])(pa.table({"smiles": ["CCO", "C1CC"]}))
    assert out.column("status").to_pylist() == ["error", "invalid"]
    assert out.column("pred_y").to_pylist() == [None, None]
    error = out.column("error").to_pylist()[0]
    assert error.startswith("huge: ") and "non-finite value" in error


def test_a_readout_below_the_models_blocks_is_a_pack_error(base, tmp_path: Path) -> None:
    smiles = domain_pack(base, "smiles", seed=1)
    head = regression_head(base.hidden_size, ["y"], readout=ReadoutSpec(("tag-mean",), (99,)))
    save_pack(smiles, tmp_path / "smiles")
    save_pack(function_pack(base, "deep", [smiles], head), tmp_path / "deep")
    with pytest.raises(PackError, match="function 'deep': the readout reads layer 99, but the base model has 2"):
        TagScorer("deep", base_model=base, pack_dirs=[str(tmp_path)])


# --------------------------------------------------------------------------- columns


@pytest.mark.parametrize("name", ["smiles", "SMILES", "Canonical_SMILES", "mol"])
def test_input_column_is_auto_detected(scorer, name: str) -> None:
    out = scorer()(pa.table({"other": ["x", "y"], name: ["CCO", "c1ccccc1"]}))
    assert out.column("status").to_pylist() == ["ok", "ok"]


def test_auto_detection_prefers_the_domain_name(scorer) -> None:
    out = scorer()(pa.table({"mol": ["not valid", "x"], "smiles": ["CCO", "c1ccccc1"]}))
    assert out.column("status").to_pylist() == ["ok", "ok"]


@pytest.mark.parametrize("key", ["smiles", "*"])
def test_explicit_column(scorer, key: str) -> None:
    table = pa.table({"smiles": ["bad(", "bad("], "structure": ["CCO", "c1ccccc1"]})
    out = scorer(columns={key: "structure"})(table)
    assert out.column("status").to_pylist() == ["ok", "ok"]


def test_missing_column_is_a_usage_error(scorer) -> None:
    with pytest.raises(UsageError) as info:
        scorer()(pa.table({"name": ["a"], "value": ["CCO"]}))
    assert "cannot find the smiles input column among name, value" in info.value.message
    assert "--smiles-col" in info.value.hint
    assert info.value.exit_code == 2


def test_explicit_column_that_does_not_exist(scorer) -> None:
    with pytest.raises(UsageError, match="no column 'structure' in the input \\(columns: smiles\\)"):
        scorer(columns={"smiles": "structure"})(pa.table({"smiles": ["CCO"]}))


@pytest.mark.parametrize("clash", ["pred_y", "status", "error"])
def test_output_column_clash(scorer, clash: str) -> None:
    with pytest.raises(UsageError, match=f"input already has column\\(s\\) {clash}"):
        scorer()(pa.table({"smiles": ["CCO"], clash: ["x"]}))


def test_bad_batch_options(scorer) -> None:
    with pytest.raises(UsageError):
        scorer(batch_size=0)


# --------------------------------------------------------------------------- batching


def test_results_do_not_depend_on_batch_size(scorer) -> None:
    values = SMILES * 3 + ["C1CCC"] + SMILES[::-1]
    table = pa.table({"smiles": values})
    one = scorer(batch_size=1)(table)
    many = scorer(batch_size=64)(table)
    tight = scorer(batch_size=64, max_batch_tokens=40)(table)
    a = np.array(one.column("pred_y").to_pylist(), dtype=float)
    for other in (many, tight):
        b = np.array(other.column("pred_y").to_pylist(), dtype=float)
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, equal_nan=True)
        assert other.column("status").to_pylist() == one.column("status").to_pylist()
    assert math.isnan(a[len(SMILES) * 3])
    assert a[0] == pytest.approx(a[len(SMILES)], abs=1e-6)  # the same molecule gives the same score


# --------------------------------------------------------------------------- plans


def test_pair_function_scores_a_pair_table(scorer) -> None:
    s = scorer("bind")
    assert list(s.plans[0].domains) == ["protein", "smiles"]
    assert not s.plans[0].zero_shot
    table = pd.DataFrame(
        {"sequence": PROTEINS + ["MKT1AY"], "ligand": SMILES[:4] + ["CCO"], "smiles": SMILES[4:8] + ["CCO"]}
    )
    out = s(table)
    assert out["status"].tolist() == ["ok"] * 4 + ["invalid"]
    assert out["error"][4].startswith("protein: not a protein sequence")
    assert out["pred_affinity"][:4].notna().all() and pd.isna(out["pred_affinity"][4])
    # the explicit smiles column is used for the smiles domain
    other = scorer("bind", columns={"smiles": "ligand"})(table)
    assert not np.allclose(other["pred_affinity"][:4], out["pred_affinity"][:4])
    # reordering the domains means the same thing: no renaming, same numbers
    swapped = scorer("bind", ["smiles", "protein"])
    assert not swapped.plans[0].zero_shot
    np.testing.assert_allclose(swapped(table)["pred_affinity"][:4], out["pred_affinity"][:4], atol=1e-6)


def test_pairs_sharing_a_protein_match_one_row_at_a_time(scorer) -> None:
    """One protein against many ligands: the protein's KV is computed once per batch and shared."""
    s = scorer("bind", batch_size=5)
    proteins = [PROTEINS[i % 3] for i in range(12)]  # 3 proteins, interleaved, so batches mix them
    ligands = [SMILES[i % len(SMILES)] for i in range(12)]
    out = s(pa.table({"sequence": proteins, "smiles": ligands}))
    plan = s.plans[0]
    tags = {name: pack.tags[name] for pack in (plan.function, *plan.domains.values()) for name in pack.tags}
    model = TaggedModel(s.base.model, tags, {plan.function.name: plan.function.head}).eval()
    encoder = PromptEncoder(s.base.tokenizer, model.tag_table)
    rows = encoder.encode(
        plan.template, {"protein": encoder.tokenize_inputs(proteins), "smiles": encoder.tokenize_inputs(ligands)}
    )
    expected = [float(model.predict(collate([r], encoder.pad_id), "bind")["pred_affinity"][0]) for r in rows]
    np.testing.assert_allclose(out.column("pred_affinity").to_pylist(), expected, atol=1e-5, rtol=0)


def test_pair_function_needs_both_columns(scorer) -> None:
    with pytest.raises(UsageError, match="cannot find the protein input column"):
        scorer("bind")(pa.table({"smiles": ["CCO"]}))


def test_zero_shot_behind_another_domain(scorer) -> None:
    s = scorer("logp", ["protein"])
    plan = s.plans[0]
    assert plan.zero_shot
    assert plan.template.text == "{tag:protein}{input:protein}{tag:logp}"
    assert list(plan.domains) == ["protein"]
    out = s(pa.table({"sequence": PROTEINS}))
    assert out.column("status").to_pylist() == ["ok"] * len(PROTEINS)
    np.testing.assert_allclose(
        out.column("pred_y").to_pylist(), reference_predictions(s, PROTEINS, "protein"), atol=1e-5
    )
    assert not scorer("logp").plans[0].zero_shot


def test_wrong_number_of_domains(scorer) -> None:
    with pytest.raises(UsageError, match="takes 2 domain"):
        scorer("bind", ["smiles"])


def test_domain_pack_used_as_function(scorer) -> None:
    with pytest.raises(UsageError, match="'smiles' is a domain pack, not a function"):
        scorer("smiles")
    with pytest.raises(UsageError, match="'fold' is a function pack, not a domain"):
        scorer("logp", ["fold"])


def test_unknown_pack(scorer) -> None:
    with pytest.raises(PackError, match="no tag pack named 'nope'"):
        scorer("nope")


def test_pinned_domain_digest_mismatch(base, tmp_path: Path) -> None:
    trained_with = domain_pack(base, "smiles", seed=1)
    save_pack(function_pack(base, "logp", [trained_with]), tmp_path / "logp")
    save_pack(domain_pack(base, "smiles", seed=2), tmp_path / "smiles")  # a different smiles tag
    with pytest.raises(PackError) as info:
        TagScorer("logp", base_model=base, pack_dirs=[str(tmp_path)])
    assert "function 'logp' was trained with a different 'smiles' domain tag" in info.value.message
    assert "version 0.1.0" in info.value.hint
    save_pack(trained_with, tmp_path / "smiles")  # the right one is accepted
    TagScorer("logp", base_model=base, pack_dirs=[str(tmp_path)])


def test_function_pack_by_path_finds_its_sibling_domain(base, pack_dir: Path) -> None:
    s = TagScorer(str(pack_dir / "logp"), base_model=base)
    assert s.plans[0].domains["smiles"].path == (pack_dir / "smiles").resolve()


def test_installed_packs_in_tagcli_home(base, isolated_home: Path) -> None:
    write_packs(isolated_home / "packs", base)
    out = TagScorer("logp", base_model=base)(pa.table({"smiles": ["CCO"]}))
    assert out.column("status").to_pylist() == ["ok"]


def test_base_model_by_path(base, pack_dir: Path) -> None:
    by_path = TagScorer("logp", base_model=str(base.path), pack_dirs=[str(pack_dir)], device="cpu", dtype="float32")
    by_object = TagScorer("logp", base_model=base, pack_dirs=[str(pack_dir)])
    table = pa.table({"smiles": SMILES})
    np.testing.assert_allclose(
        by_path(table).column("pred_y").to_pylist(), by_object(table).column("pred_y").to_pylist(), atol=1e-6
    )


# --------------------------------------------------------------------------- runner


def _labeled(n: int = 12) -> pd.DataFrame:
    values = [SMILES[i % len(SMILES)] for i in range(n)]
    values[3] = "C1CCC"
    return pd.DataFrame({"id": [f"r{i:02d}" for i in range(n)], "smiles": values, "y": [float(len(v)) for v in values]})


def test_score_file_csv_to_parquet(scorer, tmp_path: Path) -> None:
    frame = _labeled()
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    events: list = []
    summary = score_file(
        scorer(), source, tmp_path / "out.parquet", window_rows=5, on_start=events.append, on_rows=events.append
    )
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert out.columns.tolist() == ["id", "smiles", "y", "pred_y", "status", "error"]
    assert out["id"].tolist() == frame["id"].tolist()
    assert out["smiles"].tolist() == frame["smiles"].tolist()
    assert (summary.rows, summary.ok, summary.invalid, summary.error) == (12, 11, 1, 0)
    assert out["status"][3] == "invalid" and pd.isna(out["pred_y"][3])
    assert sum(e for e in events[1:]) == 12  # on_rows adds up to every row
    assert summary.as_dict()["rows"] == 12 and summary.output == str(tmp_path / "out.parquet")
    # windows do not change the numbers
    whole = scorer()(frame[["id", "smiles", "y"]].astype({"y": str}))
    np.testing.assert_allclose(
        out["pred_y"].to_numpy(float), whole["pred_y"].to_numpy(float), atol=1e-5, equal_nan=True
    )


def test_score_file_parquet_to_csv(scorer, tmp_path: Path) -> None:
    frame = _labeled(7)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "in.parquet")
    summary = score_file(scorer(), tmp_path / "in.parquet", tmp_path / "out.csv", window_rows=3)
    out = pa_csv.read_csv(tmp_path / "out.csv").to_pandas()
    assert summary.rows == len(out) == 7
    assert out["id"].tolist() == frame["id"].tolist()
    assert out["y"].tolist() == frame["y"].tolist()
    assert out["status"].tolist() == ["ok", "ok", "ok", "invalid", "ok", "ok", "ok"]


def test_score_file_strict_names_the_row_across_windows(scorer, tmp_path: Path) -> None:
    _labeled().to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(BadRowError, match=r"^row 4: invalid SMILES 'C1CCC'"):
        score_file(scorer(strict=True), tmp_path / "in.csv", tmp_path / "out.csv", window_rows=2)
    assert not (tmp_path / "out.csv").exists()  # the atomic writer leaves nothing behind


def test_evaluate_file_regression(scorer, tmp_path: Path) -> None:
    _labeled().to_csv(tmp_path / "labeled.csv", index=False)
    report = evaluate_file(scorer(), tmp_path / "labeled.csv", ["y"], window_rows=5)
    assert (report["rows"], report["scored"], report["invalid"], report["error"]) == (12, 11, 1, 0)
    metrics = report["y"]
    assert metrics["n"] == 11
    assert set(metrics) == {"n", "mse", "mae", "pearson", "spearman"}
    scored = scorer()(_labeled())
    ok = scored[scored["status"] == "ok"]
    assert metrics["mse"] == pytest.approx(float(np.mean((ok["pred_y"] - ok["y"]) ** 2)), rel=1e-6)


def test_group_col_metrics_are_each_groups_own(scorer, tmp_path: Path) -> None:
    frame = _labeled().assign(cliff_mol=[1, 0, 0] * 4)
    frame.to_csv(tmp_path / "labeled.csv", index=False)
    scores = score_labeled(scorer(), tmp_path / "labeled.csv", ["y"], window_rows=5, group_col="cliff_mol")
    report = scores.report()
    assert set(report["groups"]) == {"cliff_mol=0", "cliff_mol=1"} and report["y"]["n"] == 11
    # By hand, from the same predictions: each group's rows alone.
    rows = pd.DataFrame({"y": [y[0] for y in scores.labels], "pred": scores.predicted["pred_y"], "g": scores.groups})
    assert sorted(rows["y"]) == sorted(frame["y"][frame["smiles"] != "C1CCC"])
    for value, group in rows.groupby("g"):
        expected = regression_metrics(group["y"].to_numpy(), group["pred"].to_numpy())
        got = report["groups"][f"cliff_mol={value}"]["y"]
        assert (
            got["n"]
            == expected["n"]
            == len(group)
            == (frame.loc[frame["smiles"] != "C1CCC", "cliff_mol"] == int(value)).sum()
        )
        for metric in ("mse", "mae", "pearson", "spearman"):
            assert got[metric] == pytest.approx(expected[metric], rel=1e-9), metric
    with pytest.raises(UsageError, match="no --group-col column 'series' in"):
        score_labeled(scorer(), tmp_path / "labeled.csv", ["y"], group_col="series")


def test_evaluate_file_classification(scorer, tmp_path: Path) -> None:
    pd.DataFrame({"smiles": SMILES, "label": ["active", "inactive"] * 4}).to_csv(tmp_path / "c.csv", index=False)
    report = evaluate_file(scorer("active"), tmp_path / "c.csv", ["label"])
    metrics = report["label"]
    assert report["scored"] == 8
    assert set(metrics) == {"n", "accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "brier", "log_loss"}
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["brier"] <= 1.0
    # "active" is the positive class (named so): PR-AUC and Brier are about it, by hand here.
    scored = score_file_table(scorer("active"), tmp_path / "c.csv")
    truth = np.array([label == "active" for label in ["active", "inactive"] * 4])
    p_active = np.array(scored["prob_active"])
    assert metrics["brier"] == pytest.approx(float(np.mean((p_active - truth) ** 2)))


def score_file_table(scorer: TagScorer, path: Path) -> dict[str, list]:
    return scorer(pa.table(pd.read_csv(path)[["smiles"]])).to_pydict()


def test_evaluate_file_argument_errors(scorer, tmp_path: Path) -> None:
    _labeled().to_csv(tmp_path / "labeled.csv", index=False)
    with pytest.raises(UsageError, match="no target column"):
        evaluate_file(scorer(), tmp_path / "labeled.csv", ["missing"])
    with pytest.raises(UsageError, match="takes 1 --target column"):
        evaluate_file(scorer(), tmp_path / "labeled.csv", ["y", "y"])


def test_the_scorer_is_the_package_api() -> None:
    import tagcli

    assert tagcli.TagScorer is TagScorer
    with pytest.raises(AttributeError):
        tagcli.NoSuchThing  # noqa: B018


def test_eval_metrics_recorded_in_the_pack(scorer, tmp_path: Path) -> None:
    from tagcli.packs.format import load_pack, record_metrics
    from tagcli.scoring.evaluation import pack_metrics

    s = scorer("logp")
    labeled = tmp_path / "labeled.parquet"
    pq.write_table(pa.table({"smiles": SMILES + ["C1CC"], "y": [float(len(v)) for v in SMILES] + [1.0]}), labeled)
    metrics = pack_metrics(evaluate_file(s, labeled, ["y"]), ["y"], s.plans[0].function.head)
    assert (
        metrics["rows"] == len(SMILES) + 1
        and metrics["scored"] == metrics["n"] == len(SMILES)
        and metrics["invalid"] == 1
    )
    assert metrics["standardized_mse"] == pytest.approx(metrics["mse"] / 2.0**2)  # the head's target std is 2
    copy = tmp_path / "logp"
    save_pack(s.plans[0].function, copy)
    record_metrics(load_pack(copy), "test", metrics)
    assert load_pack(copy).manifest.metrics["test"] == metrics
