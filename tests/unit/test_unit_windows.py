"""Scoring windows span work units: `--unit-rows` changes neither padding nor the output (issue #15).

The scorer length-sorts rows only within the window it is given; a shard's small units are packed
into one window (`window_groups`), so the batches a run scores are those of one big unit.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import SMILES, Crash, crash_after, logp_active_scorers
from tagcli.core import batching
from tagcli.errors import BadRowError
from tagcli.io.runner import DEFAULT_UNIT_ROWS, score_file
from tagcli.io.workunits import PartDirectory, Shard, WorkUnit, window_groups

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


def units(*sizes: int) -> list[WorkUnit]:
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    return [WorkUnit(k, start, n) for k, (start, n) in enumerate(zip(starts, sizes))]


def test_window_groups_pack_consecutive_units_up_to_the_window() -> None:
    def sizes(groups: list[list[WorkUnit]]) -> list[list[int]]:
        return [[u.num_rows for u in group] for group in groups]

    assert sizes(window_groups(units(7, 7, 7, 7, 1), 21)) == [[7, 7, 7], [7, 1]]
    assert sizes(window_groups(units(30, 30, 5), 21)) == [[30], [30], [5]]  # a big unit stays alone
    assert sizes(window_groups(units(5, 30, 5, 5), 21)) == [[5], [30], [5, 5]]
    assert sizes(window_groups(units(0), 4096)) == [[0]]  # an empty file still gets its one unit
    shard = [u for u in units(*[7] * 9) if Shard(1, 3).owns(u)]  # units 1, 4, 7
    assert [[u.index for u in g] for g in window_groups(shard, 14)] == [[1, 4], [7]]


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
    # shard 3/3 owns units 2, 5, 8 (rows 11-15, 26-30, 41-45): one window; row 29 is the first bad one
    with pytest.raises(BadRowError, match=r"^row 29: "):
        score_file(scorer(strict=True), source, out, window_rows=20, unit_rows=5, shard=Shard(2, 3))
    parts = PartDirectory(out)
    assert [parts.is_done(WorkUnit(k, 5 * k, 5)) for k in (2, 5, 8)] == [True, False, False]
