"""Scoring windows are fixed row ranges of the input: how the work is cut (`--unit-rows`, shards,
resume) changes neither padding nor the output (issues #15, #25).

The scorer length-sorts and batches rows only within the window it is given, and in bf16 a row's
numbers depend on its batch; units never straddle a window and shards own whole windows, so every
run scores the very same windows.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.parquet as pq
import pytest

from helpers import SMILES, Crash, crash_after, logp_active_scorers
from tagcli.basemodel.load import load_base_model
from tagcli.core import batching
from tagcli.errors import BadRowError
from tagcli.io.tables import open_table
from tagcli.io.workunits import PartDirectory, Shard, WorkUnit, plan_units, window_groups
from tagcli.scoring.runner import DEFAULT_UNIT_ROWS, score_file

ROWS = 50


@pytest.fixture(scope="module")
def scorer(base, tmp_path_factory: pytest.TempPathFactory):
    return logp_active_scorers(base, tmp_path_factory.mktemp("packs"))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """50 rows of mixed lengths (two invalid), in row groups that do not line up with any unit size."""
    values = [SMILES[i % len(SMILES)] for i in range(ROWS)]
    values[8], values[28] = "C1CC", ""  # invalid: rows 9 and 29 (1-based)
    path = tmp_path / "mols.parquet"
    pq.write_table(pa.table({"id": list(range(ROWS)), "smiles": values}), path, row_group_size=16)
    return path


def scored(scorer, source: Path, out: Path, **settings) -> pa.Table:
    summary = score_file(scorer(), source, out, **settings)
    assert summary.merged and summary.rows == ROWS
    return pq.read_table(out)


def layout(tmp_path: Path, unit_rows: int, window_rows: int) -> list[tuple[int, int, int]]:
    """(first row, rows, group) of each unit of a 23-row table, as Parquet and as CSV (the same)."""
    table = pa.table({"id": list(range(23))})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=5)
    pa.csv.write_csv(table, tmp_path / "t.csv")
    plans = [plan_units(tmp_path / name, unit_rows, window_rows) for name in ("t.parquet", "t.csv")]
    cuts = [[(u.first_row, u.num_rows, u.group) for u in plan.units] for plan in plans]
    assert cuts[0] == cuts[1]
    return cuts[0]


def test_units_never_straddle_a_window(tmp_path: Path) -> None:
    # smaller than a window: each window is cut into units of one group
    assert layout(tmp_path, 3, 7) == [
        *[(0, 3, 0), (3, 3, 0), (6, 1, 0)],
        *[(7, 3, 1), (10, 3, 1), (13, 1, 1)],
        *[(14, 3, 2), (17, 3, 2), (20, 1, 2)],
        (21, 2, 3),
    ]
    assert layout(tmp_path, 10, 4) == [(0, 8, 0), (8, 8, 1), (16, 7, 2)]  # larger: rounded down to whole windows
    assert layout(tmp_path, 7, 7) == [(0, 7, 0), (7, 7, 1), (14, 7, 2), (21, 2, 3)]


def test_window_groups_and_shards_follow_the_window() -> None:
    units = [WorkUnit(k, 3 * k, 3, group=k // 3) for k in range(8)]  # 3 units per window
    assert [[u.index for u in g] for g in window_groups(units)] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    mine = [u for u in units if Shard(1, 2).owns(u)]
    assert [[u.index for u in g] for g in window_groups(mine)] == [[3, 4, 5]]  # a whole window, never a piece


@pytest.mark.parametrize("unit_rows", [1, 7, 60])
def test_unit_size_does_not_change_the_output(scorer, source: Path, tmp_path: Path, unit_rows: int) -> None:
    one_unit = scored(scorer, source, tmp_path / "one.parquet", unit_rows=DEFAULT_UNIT_ROWS)
    assert scored(scorer, source, tmp_path / "units.parquet", unit_rows=unit_rows).equals(one_unit)


@pytest.mark.parametrize("unit_rows", [1, 3, 7])
def test_windows_across_units_are_those_of_one_unit(scorer, source: Path, tmp_path: Path, unit_rows: int) -> None:
    """More rows than one window: a unit size dividing the window gives the very same windows."""
    one_unit = scored(scorer, source, tmp_path / "one.parquet", window_rows=21, unit_rows=DEFAULT_UNIT_ROWS)
    got = scored(scorer, source, tmp_path / "units.parquet", window_rows=21, unit_rows=unit_rows)
    assert got.equals(one_unit)


def batch_shapes(scorer, source: Path, out: Path, monkeypatch: pytest.MonkeyPatch, **settings) -> list[tuple]:
    """(rows, padded width) of every batch the model runs while `score_file` scores `source`."""
    shapes: list[tuple] = []
    length_batches = batching.length_batches

    def spy(lengths, *args, **kwargs):
        for chunk in length_batches(lengths, *args, **kwargs):
            shapes.append((len(chunk), max(lengths[i] for i in chunk)))
            yield chunk

    monkeypatch.setattr(batching, "length_batches", spy)
    score_file(scorer(), source, out, **settings)
    monkeypatch.setattr(batching, "length_batches", length_batches)
    return shapes


def test_small_units_pad_like_one_big_unit(scorer, source: Path, tmp_path: Path, monkeypatch) -> None:
    one_unit = batch_shapes(scorer, source, tmp_path / "a.parquet", monkeypatch, unit_rows=DEFAULT_UNIT_ROWS)
    small = batch_shapes(scorer, source, tmp_path / "b.parquet", monkeypatch, unit_rows=7)
    assert small == one_unit and sum(rows for rows, _ in one_unit) == ROWS - 2  # every valid row, once
    # scored unit by unit (a window per unit), the same rows would run in more, wider-padded batches
    per_unit = batch_shapes(scorer, source, tmp_path / "c.parquet", monkeypatch, unit_rows=7, window_rows=7)
    assert sum(r * w for r, w in per_unit) > sum(r * w for r, w in one_unit)


@pytest.mark.parametrize("done_units", [1, 2, 4])  # inside the first group of 3 units, and in the second
def test_resume_inside_a_group_gives_the_uninterrupted_output(
    scorer, source: Path, tmp_path: Path, done_units: int
) -> None:
    settings = {"window_rows": 21, "unit_rows": 7}  # groups of units [0 1 2] [3 4 5] [6 7]
    expected = scored(scorer, source, tmp_path / "reference.parquet", **settings)
    out = tmp_path / "out.parquet"
    with pytest.raises(Crash):
        score_file(scorer(), source, out, on_rows=crash_after(7 * done_units), **settings)
    assert len(list((PartDirectory(out).path / "_units").glob("*.json"))) == done_units
    summary = score_file(scorer(), source, out, resume=True, **settings)
    assert summary.skipped_units == done_units and summary.rows == ROWS - 7 * done_units
    assert pq.read_table(out).equals(expected)  # the group's done units were scored again with it, not rewritten


def test_strict_in_a_group_names_the_row_and_keeps_the_units_before_it(scorer, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    # shard 2/3 owns the second window, units 4-7 (rows 21-40); row 29 is its first bad one
    with pytest.raises(BadRowError, match=r"^row 29: "):
        score_file(scorer(strict=True), source, out, window_rows=20, unit_rows=5, shard=Shard(1, 3))
    parts = PartDirectory(out)
    assert [parts.is_done(WorkUnit(k, 5 * k, 5)) for k in (4, 5, 6, 7)] == [True, False, False, False]


def test_shards_run_the_batches_of_one_run(scorer, source: Path, tmp_path: Path, monkeypatch) -> None:
    """The same batches, not just the same numbers: in fp32 different batches agree anyway, in bf16 not."""
    settings = {"window_rows": 12, "unit_rows": 5}
    one_run = batch_shapes(scorer, source, tmp_path / "one.parquet", monkeypatch, **settings)
    out = tmp_path / "shards.parquet"
    shards = [batch_shapes(scorer, source, out, monkeypatch, shard=Shard(k, 3), **settings) for k in range(3)]
    assert sorted(shape for shard in shards for shape in shard) == sorted(one_run)
    assert all(shards)  # every shard had work


def test_windows_are_exact_whatever_the_row_groups(source: Path) -> None:
    with open_table(source, batch_rows=7) as reader:  # row groups of 16 rows
        assert [batch.num_rows for batch in reader] == [7] * 7 + [1]


@pytest.fixture(scope="module")
def bf16_scorer(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny model in bf16, where (as in the real one) a row's numbers depend on its batch neighbours."""
    return logp_active_scorers(load_base_model(str(tiny_model_dir), device="cpu", dtype="bfloat16"),
                               tmp_path_factory.mktemp("bf16-packs"))  # fmt: skip


def test_bf16_numbers_are_the_same_however_the_work_is_cut(bf16_scorer, source: Path, tmp_path: Path) -> None:
    settings = {"window_rows": 12, "unit_rows": 5}
    expected = scored(bf16_scorer, source, tmp_path / "one.parquet", **settings)
    other_window = scored(bf16_scorer, source, tmp_path / "other-window.parquet", window_rows=20, unit_rows=5)
    assert not other_window.equals(expected)  # batches do move bf16 numbers: the comparison below can fail
    assert scored(bf16_scorer, source, tmp_path / "units.parquet", window_rows=12, unit_rows=50).equals(expected)
    shards = tmp_path / "shards.parquet"
    for k in range(3):
        score_file(bf16_scorer(), source, shards, shard=Shard(k, 3), **settings)
    assert pq.read_table(shards).equals(expected)
    resumed = tmp_path / "resumed.parquet"
    with pytest.raises(Crash):
        score_file(bf16_scorer(), source, resumed, on_rows=crash_after(15), **settings)
    score_file(bf16_scorer(), source, resumed, resume=True, **settings)
    assert pq.read_table(resumed).equals(expected)
