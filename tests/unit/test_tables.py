"""Streaming table reading and atomic writing (tagcli.io.tables)."""

from __future__ import annotations

import gzip
import io
import types
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tagcli.errors import InputFileError, UsageError
from tagcli.io.tables import default_output_path, open_table, table_format
from tagcli.io.writer import TableWriter


def read_all(path: str | Path, **kwargs: object) -> pa.Table:
    with open_table(path, **kwargs) as reader:  # type: ignore[arg-type]
        return pa.Table.from_batches(list(reader), schema=reader.schema)


def fake_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    stdin = types.SimpleNamespace(buffer=io.BufferedReader(io.BytesIO(data)))
    monkeypatch.setattr("sys.stdin", stdin)


def molecules(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"m{i:05d}" for i in range(n)],
            "smiles": ["C" * (1 + i % 7) for i in range(n)],
            "weight": [i * 0.5 for i in range(n)],
        }
    )


# --- formats and paths -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("a.csv", "csv"),
        ("A.CSV", "csv"),
        ("a.csv.gz", "csv"),
        ("-", "csv"),
        ("a.parquet", "parquet"),
        ("dir/a.pq", "parquet"),
    ],
)
def test_table_format(path: str, fmt: str) -> None:
    assert table_format(path) == fmt


def test_unknown_extension_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot tell the format of 'x.txt': use .csv or .parquet"):
        table_format("x.txt")
    with pytest.raises(UsageError):
        TableWriter("out.json")


def test_default_output_path() -> None:
    assert default_output_path("data/mols.parquet") == Path("data/mols.scored.parquet")
    assert default_output_path("mols.csv") == Path("mols.scored.csv")
    assert default_output_path("mols.csv.gz") == Path("mols.scored.csv.gz")
    with pytest.raises(UsageError):
        default_output_path("-")


# --- reading -----------------------------------------------------------------------


def test_csv_round_trip_reads_every_column_as_string(tmp_path: Path) -> None:
    path = tmp_path / "mols.csv"
    path.write_text("id,smiles,weight,code\nm1,CCO,46.07,007\nm2,c1ccccc1,78.11,1e5\n")
    table = read_all(path)
    assert table.schema == pa.schema([(c, pa.string()) for c in ["id", "smiles", "weight", "code"]])
    assert table.to_pydict() == {
        "id": ["m1", "m2"],
        "smiles": ["CCO", "c1ccccc1"],
        "weight": ["46.07", "78.11"],
        "code": ["007", "1e5"],
    }


def test_csv_written_by_writer_reads_back_identically(tmp_path: Path) -> None:
    source = pa.table({"a": ["x", "", 'quote " here', "comma, here", "new\nline"], "b": ["1"] * 5})
    path = tmp_path / "out.csv"
    with TableWriter(path) as writer:
        writer.write(source)
    assert read_all(path).equals(source)


def test_parquet_round_trip_keeps_types_values_and_order(tmp_path: Path) -> None:
    frame = molecules(2500)
    path = tmp_path / "mols.parquet"
    frame.to_parquet(path)
    with open_table(path, batch_rows=1000) as reader:
        assert reader.total_rows == 2500
        assert reader.schema.field("weight").type == pa.float64()
        batches = list(reader)
    assert [b.num_rows for b in batches] == [1000, 1000, 500]
    pd.testing.assert_frame_equal(pa.Table.from_batches(batches).to_pandas(), frame)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_batches_never_exceed_batch_rows_and_are_never_empty(tmp_path: Path, fmt: str) -> None:
    frame = molecules(10_001)
    path = tmp_path / f"mols.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    with open_table(path, batch_rows=1000) as reader:
        sizes = [b.num_rows for b in reader]
    assert len(sizes) == 11
    assert max(sizes) == 1000 and min(sizes) >= 1 and sum(sizes) == 10_001


def test_csv_blocks_larger_than_batch_rows_are_resliced(tmp_path: Path) -> None:
    path = tmp_path / "mols.csv"
    molecules(500).to_csv(path, index=False)  # one pyarrow block, 500 rows
    with open_table(path, batch_rows=7) as reader:
        sizes = [b.num_rows for b in reader]
    assert max(sizes) == 7 and sum(sizes) == 500


def test_csv_total_rows_is_a_newline_estimate(tmp_path: Path) -> None:
    path = tmp_path / "mols.csv"
    molecules(1234).to_csv(path, index=False)
    with open_table(path) as reader:
        assert reader.total_rows == 1234
    no_trailing_newline = tmp_path / "short.csv"
    no_trailing_newline.write_text("a\n1\n2")
    with open_table(no_trailing_newline) as reader:
        assert reader.total_rows == 2


def test_selected_columns_in_the_requested_order(tmp_path: Path) -> None:
    frame = molecules(10)
    frame.to_csv(tmp_path / "m.csv", index=False)
    frame.to_parquet(tmp_path / "m.parquet")
    for name in ["m.csv", "m.parquet"]:
        table = read_all(tmp_path / name, columns=["smiles", "id"])
        assert table.column_names == ["smiles", "id"]
        assert table.column("smiles").to_pylist() == frame["smiles"].tolist()
    with pytest.raises(UsageError, match="has no column 'nope'"):
        open_table(tmp_path / "m.csv", columns=["nope"])


def test_gzipped_csv(tmp_path: Path) -> None:
    path = tmp_path / "mols.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("smiles\nCCO\nCCN\n")
    with open_table(path) as reader:
        assert reader.total_rows == 2
        assert pa.Table.from_batches(list(reader)).column("smiles").to_pylist() == ["CCO", "CCN"]


def test_reads_csv_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = "".join(f"m{i},C{i}\n" for i in range(5000))
    fake_stdin(monkeypatch, ("\ufeffid,smiles\n" + rows).encode())
    with open_table("-", batch_rows=2048) as reader:
        assert reader.total_rows is None
        assert reader.schema.names == ["id", "smiles"]
        batches = list(reader)
    assert [b.num_rows for b in batches] == [2048, 2048, 904]
    table = pa.Table.from_batches(batches)
    assert table.column("id").to_pylist()[:2] == ["m0", "m1"]
    assert table.column("smiles").to_pylist()[-1] == "C4999"


def test_quoted_fields_with_commas_and_newlines(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('name,"multi\nline header"\n"a, b","first\nsecond"\n"say ""hi""",x\n')
    table = read_all(path)
    assert table.column_names == ["name", "multi\nline header"]
    assert table.to_pydict() == {"name": ["a, b", 'say "hi"'], "multi\nline header": ["first\nsecond", "x"]}


def test_empty_cells_stay_empty_strings(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text('a,b,c\n,"",NA\nx,,null\n')
    table = read_all(path)
    assert table.to_pydict() == {"a": ["", "x"], "b": ["", ""], "c": ["NA", "null"]}
    assert table.column("a").null_count == 0


def test_long_cell_survives(tmp_path: Path) -> None:
    sequence = "ACDEFGHIKLMNPQRSTVWY" * 500  # 10,000 characters
    path = tmp_path / "prot.csv"
    path.write_text(f"id,sequence\np1,{sequence}\np2,MK\n")
    assert read_all(path).column("sequence").to_pylist() == [sequence, "MK"]


def test_header_only_csv_has_schema_and_no_batches(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("id,smiles\n")
    with open_table(path) as reader:
        assert reader.schema.names == ["id", "smiles"]
        assert list(reader) == []
        assert reader.total_rows == 0


def test_empty_csv_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"")
    with pytest.raises(InputFileError, match=r"x\.csv is empty: expected a header row"):
        open_table(path)


def test_duplicate_column_names(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,smiles,id\n1,C,2\n")
    with pytest.raises(InputFileError, match="duplicate column names: 'id'"):
        open_table(path)


def test_wrong_field_count_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(InputFileError) as info:
        read_all(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "Expected 3 columns, got 2" in message


def test_wrong_field_count_in_a_later_block(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n" + "x,y\n" * 2_000_000 + '"multi\nline",1,2\n')
    with open_table(path) as reader, pytest.raises(InputFileError) as info:
        for _ in reader:
            pass
    assert "\n" not in str(info.value) and "got 3" in str(info.value)


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    path.write_text("id,smiles\n1,C\n")
    with pytest.raises(InputFileError, match=r"cannot read .*x\.parquet as Parquet: ") as info:
        open_table(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        open_table(tmp_path / "nope.csv")


def test_invalid_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"name\ncaf\xe9\n")
    with pytest.raises(InputFileError, match=r"cannot read .*latin1\.csv as CSV: .*UTF8"):
        read_all(path)


# --- writing -----------------------------------------------------------------------


def test_parquet_writer_streams_batches(tmp_path: Path) -> None:
    frame = molecules(3000)
    path = tmp_path / "out.parquet"
    with TableWriter(path) as writer:
        for batch in pa.Table.from_pandas(frame, preserve_index=False).to_batches(1000):
            writer.write(batch)
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame)


def test_writer_with_no_batches_still_writes_a_valid_file(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.string()), ("score", pa.float64())])
    TableWriter(tmp_path / "e.parquet", schema).close()
    assert pq.read_table(tmp_path / "e.parquet").schema.equals(schema)
    TableWriter(tmp_path / "e.csv", schema).close()
    assert (tmp_path / "e.csv").read_text() == '"id","score"\n'


def test_abort_leaves_existing_destination_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_text("old contents\n")
    writer = TableWriter(path)
    writer.write(pa.table({"a": ["new"]}))
    writer.abort()
    assert path.read_text() == "old contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_exception_inside_with_aborts(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError, match="boom"), TableWriter(path) as writer:
        writer.write(pa.table({"a": [1]}))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_successful_close_replaces_destination_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_text("old\n")
    with TableWriter(path) as writer:
        writer.write(pa.table({"a": ["new"]}))
    assert path.read_text() == '"a"\n"new"\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_all_null_first_batch_with_schema_keeps_types(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.string()), ("score", pa.float64())])
    path = tmp_path / "out.parquet"
    with TableWriter(path, schema) as writer:
        writer.write(pa.table({"id": ["a"], "score": pa.nulls(1)}))
        writer.write(pa.table({"id": ["b"], "score": [0.25]}))
    table = pq.read_table(path)
    assert table.schema.field("score").type == pa.float64()
    assert table.column("score").to_pylist() == [None, 0.25]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_all_null_first_batch_without_schema_still_works(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out.{suffix}"
    with TableWriter(path) as writer:
        writer.write(pa.record_batch({"id": ["a"], "error": pa.nulls(1)}))
        writer.write(pa.record_batch({"id": ["b"], "error": ["bad SMILES"]}))
    table = read_all(path)
    assert table.column("error").to_pylist()[1] == "bad SMILES"


def test_missing_output_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist") as info:
        TableWriter(tmp_path / "nope" / "out.csv")
    assert info.value.hint


def test_writes_csv_to_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    monkeypatch.setattr("sys.stdout", types.SimpleNamespace(buffer=buffer))
    with TableWriter("-") as writer:
        writer.write(pa.table({"a": ["x"], "b": [1.5]}))
        writer.write(pa.table({"a": ["y"], "b": [2.0]}))
    assert buffer.getvalue() == b'"a","b"\n"x",1.5\n"y",2\n'
    assert not buffer.closed
