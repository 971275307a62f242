"""Work units, part directories, sharded and resumed scoring (in process, on the tiny model)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from helpers import SMILES, Crash, crash_after, logp_active_scorers
from tagcli.errors import BadRowError, InputFileError, UsageError
from tagcli.io.tables import open_table
from tagcli.io.workunits import PartDirectory, Shard, plan_units
from tagcli.scoring.runner import score_file

TRICKY_CSV = (
    'id,smiles\n1,CCO\n\n2,"C\nC"\r\n3,"a""b,\n"\n\r\n4,x\n5,y'  # quoted newlines, blank lines, CRLF, no final newline
)


def read_rows(path: Path, unit=None) -> list[dict]:
    with open_table(path, batch_rows=3, unit=unit) as reader:
        return [row for batch in reader for row in batch.to_pylist()]


@pytest.mark.parametrize("unit_rows", [1, 2, 3, 5, 100])
def test_csv_units_cover_every_row_once(tmp_path: Path, unit_rows: int) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(TRICKY_CSV.encode())
    units = plan_units(path, unit_rows).units
    assert [u.num_rows for u in units] == [min(unit_rows, 5 - k) for k in range(0, 5, unit_rows)]
    assert [u.first_row for u in units] == list(range(0, 5, unit_rows))
    assert [row for u in units for row in read_rows(path, u)] == read_rows(path)
    assert len(read_rows(path)) == 5


def test_parquet_units_cut_through_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": list(range(23))}), path, row_group_size=7)
    for unit_rows in (1, 5, 7, 10, 23, 50):
        units = plan_units(path, unit_rows).units
        assert sum(u.num_rows for u in units) == 23
        assert [r["id"] for u in units for r in read_rows(path, u)] == list(range(23))


def test_gzipped_csv_is_one_unit_and_empty_tables_have_one_empty_unit(tmp_path: Path) -> None:
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(TRICKY_CSV.encode()))
    assert [(u.first_row, u.num_rows) for u in plan_units(gz, 2).units] == [(0, 5)]
    empty = tmp_path / "e.csv"
    empty.write_text("id,smiles\n")
    assert [(u.first_row, u.num_rows) for u in plan_units(empty, 2).units] == [(0, 0)]


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.parquet", "empty.csv"])
def test_the_plan_gives_the_schema_a_reader_gives(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    csv = '\ufeffid,"multi\nline name",x\n1,"a\nb",2.5\n' if name != "empty.csv" else "id,smiles\n"
    if name == "t.parquet":
        table = pa.table({"id": [1, 2], "smiles": ["CCO", None], "w": [0.5, 1.5]})
        pq.write_table(table.replace_schema_metadata({"source": "test"}), path, row_group_size=1)
    else:
        path.write_bytes(gzip.compress(csv.encode()) if name.endswith(".gz") else csv.encode())
    plan = plan_units(path, 1)
    with open_table(path) as reader:
        assert plan.schema.equals(reader.schema, check_metadata=True)
    if name == "t.parquet":
        assert plan.schema.field("id").type == pa.int64() and plan.schema.metadata == {b"source": b"test"}
    else:  # the header's names, every column a string
        names = ["id", "smiles"] if name == "empty.csv" else ["id", "multi\nline name", "x"]
        assert plan.schema == pa.schema([(n, pa.string()) for n in names])


def test_shards_are_disjoint_and_cover_all_units(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": list(range(50))}), path)
    units = plan_units(path, 4).units
    owners = [[s for s in range(3) if Shard(s, 3).owns(u)] for u in units]
    assert all(len(o) == 1 for o in owners)
    assert Shard.parse("2/3") == Shard(1, 3) and str(Shard(1, 3)) == "2/3"
    for bad in ("0/3", "4/3", "1", "a/b", "1/0"):
        with pytest.raises(UsageError, match="--shard"):
            Shard.parse(bad)


def test_launcher_environment_gives_the_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert Shard.from_launcher() == Shard(2, 4)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert Shard.from_launcher() is None


# --------------------------------------------------------------------------- scoring through parts


@pytest.fixture(scope="module")
def scorer(base, tmp_path_factory: pytest.TempPathFactory):
    return logp_active_scorers(base, tmp_path_factory.mktemp("packs"))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    values = (SMILES + ["C1CC", ""]) * 5  # 50 rows, some invalid
    path = tmp_path / "mols.parquet"
    pq.write_table(pa.table({"id": list(range(len(values))), "smiles": values}), path, row_group_size=16)
    return path


def reference(scorer, source: Path, tmp_path: Path) -> pa.Table:
    out = tmp_path / "reference.parquet"
    score_file(scorer(), source, out, window_rows=4, unit_rows=8)
    return pq.read_table(out)


@pytest.mark.parametrize("crash_at", [1, 7, 20, 49])
def test_resume_after_a_crash_gives_the_uninterrupted_output(
    scorer, source: Path, tmp_path: Path, crash_at: int
) -> None:
    expected = reference(scorer, source, tmp_path)
    out = tmp_path / "out.parquet"
    s = scorer()
    with pytest.raises(Crash):
        score_file(s, source, out, window_rows=4, unit_rows=8, on_rows=crash_after(crash_at))
    parts = PartDirectory(out)
    finished = (crash_at - 1) // 8  # the crash hits inside a unit, which is then not marked done
    kept = finished > 0 or parts.has_checkpoints()  # a finished unit or window is kept for --resume
    assert not out.exists() and parts.path.is_dir() == kept  # nothing done: nothing kept
    if kept:
        with pytest.raises(UsageError, match="--resume"):  # never silently mixes runs
            score_file(s, source, out, window_rows=4, unit_rows=8)
    summary = score_file(s, source, out, window_rows=4, unit_rows=8, resume=True)
    assert summary.skipped_units == finished  # and units finished before it are not redone
    assert summary.rows == 50 - 8 * finished and summary.merged
    assert pq.read_table(out).equals(expected)
    assert not parts.path.exists()  # merged and cleaned up


def test_resume_refuses_parts_of_a_different_run(scorer, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    with pytest.raises(Crash):
        score_file(scorer(), source, out, window_rows=4, unit_rows=8, on_rows=crash_after(10))
    with pytest.raises(UsageError, match="different run.*max_batch_tokens"):
        score_file(scorer(max_batch_tokens=99), source, out, window_rows=4, unit_rows=8, resume=True)
    with pytest.raises(UsageError, match="different run.*unit_rows"):
        score_file(scorer(), source, out, window_rows=4, unit_rows=5, resume=True)


def test_shards_together_give_one_run(scorer, source: Path, tmp_path: Path) -> None:
    expected = reference(scorer, source, tmp_path)
    out = tmp_path / "out.parquet"
    summaries = [score_file(scorer(), source, out, window_rows=4, unit_rows=8, shard=Shard(k, 3)) for k in range(3)]
    assert sum(s.rows for s in summaries) == 50
    assert [s.merged for s in summaries] == [False, False, True]  # the last shard to finish merges
    assert pq.read_table(out).equals(expected)
    # the part directory stays (other shards may still read it) and reads as one dataset, in row order
    dataset = ds.dataset(PartDirectory(out).path, format="parquet").to_table()
    assert dataset.equals(expected)


def test_csv_to_csv_through_units_matches_one_window(scorer, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(TRICKY_CSV.replace('a""b,\n', "CCN").encode())
    one, units = tmp_path / "one.csv", tmp_path / "units.csv"
    score_file(scorer(), path, one, window_rows=4, unit_rows=100)
    score_file(scorer(), path, units, window_rows=1, unit_rows=1)
    expected, got = (pd.read_csv(p, dtype={"id": str}) for p in (one, units))
    assert len(got) == 5 and list(got.columns) == list(expected.columns)
    # the same rows and statuses; values agree to float rounding (batches differ in composition)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, atol=1e-6, rtol=0)


def test_empty_input_gives_an_empty_output_with_the_columns(scorer, tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("id,smiles\n")
    out = tmp_path / "out.parquet"
    summary = score_file(scorer(), path, out)
    assert summary.rows == 0 and summary.merged
    assert pq.read_table(out).column_names == [
        "id",
        "smiles",
        "pred_y",
        "pred_label",
        "prob_active",
        "prob_inactive",
        "status",
        "error",
    ]


def test_a_failure_before_any_unit_is_done_leaves_nothing_behind(scorer, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    with pytest.raises(BadRowError, match="row 9"):  # the first bad row, in the second unit of 5
        score_file(scorer(strict=True), source, out, window_rows=4, unit_rows=5)
    assert PartDirectory(out).path.is_dir()  # the first unit is done: kept for --resume
    PartDirectory(out).remove()
    with pytest.raises(BadRowError, match="row 9"):
        score_file(scorer(strict=True), source, out, window_rows=4, unit_rows=12)
    assert not PartDirectory(out).path.exists() and not out.exists()
    score_file(scorer(), source, out, window_rows=4, unit_rows=8)  # a plain rerun needs no --resume
    assert pq.read_table(out).num_rows == 50


def test_changed_while_scored_only_when_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"smiles\nCCO\nCCN\nCCC\n")
    plan = plan_units(path, 2)
    plan.check_unit_rows(plan.units[0], 2)  # as planned
    with pytest.raises(InputFileError) as wrong:  # the planner was wrong, the file is the same
        plan.check_unit_rows(plan.units[0], 6)
    assert str(wrong.value) == (
        f"cannot split {path} into work units: unit 0 has 6 rows, expected 2, though the file did not change "
        "(hint: score it as one unit with --unit-rows 6, and report this as a tagcli bug)"
    )
    whole = plan_units(path, 100)
    whole.check_unit_rows(whole.units[0], 4)  # one unit is the whole file: no row can be lost or doubled
    path.write_bytes(b"smiles\nCCO\nCCN\nCCC\nCCCC\n")
    with pytest.raises(InputFileError, match=r"t\.csv changed while it was scored: unit 0 has 6 rows, expected 2$"):
        plan.check_unit_rows(plan.units[0], 6)
