"""`tagcli predict`'s input and output files, run the way a user runs it, on the tiny model (issue #17).

1. CSV records: work units must end records where pyarrow's parser ends them (a quote opens quoting
   only at the start of a field), for any --unit-rows (the planner itself: tests/unit/test_csv_records.py).
2. CSV output of a table with nested columns: one line naming the columns, before any scoring.
3. An output folder that takes no files: one line naming the folder, before any scoring.

The CLI runs start together (each pays the torch import), in a small pool; each test checks one.
"""

from __future__ import annotations

import errno
import io
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from helpers import TIMEOUT, Result, Setup, cli_setup

STRAY_QUOTE = b'smiles,id\nab"c,1\nCCN,2\n'  # the probe's file
# Stray quotes mid-field, a quoted newline, doubled quotes, a field that goes on after its closing
# quote, CRLF, blank lines (LF and CRLF), and no newline at the end.
TRICKY = (
    b'smiles,id\r\nCCO,1\r\nab"c,2\n\n"C\nC",3\n"a""b,\n""",4\r\nx"y"z,5\n\r\nCC"",6\n"q"r"s,7\n'
    b'c1ccccc1,8\r\n"O=C(O)CCl",9\nCCN,10'
)
TRICKY_ROWS = 10
UNIT_ROWS = (1, 2, 3, 1000)  # 1000: a single unit
READ_ONLY = "read-only file system"
NESTED_COLUMNS = "'props' (struct<a: int64, b: string>), 'tags' (list<element: string>)"


def pyarrow_parse(data: bytes) -> pa.Table:
    """What pyarrow itself reads from CSV bytes (every cell a string)."""
    strings = pa_csv.ConvertOptions(column_types={"smiles": pa.string(), "id": pa.string()})
    parse = pa_csv.ParseOptions(newlines_in_values=True)
    return pa_csv.read_csv(io.BytesIO(data), pa_csv.ReadOptions(), parse, strings)


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    s = cli_setup(tmp_path_factory.mktemp("predict-files"), tiny_model_dir)
    (s.root / "in").mkdir()
    (s.root / "in" / "strayquote.csv").write_bytes(STRAY_QUOTE)
    (s.root / "in" / "tricky.csv").write_bytes(TRICKY)
    nested = {"smiles": ["CCO", "CCN"], "props": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], "tags": [["t"], []]}
    pq.write_table(pa.table(nested), s.root / "in" / "nested.parquet")
    for name in ("nested", "nested-stdout"):
        (s.root / name).mkdir()
    return s


def _predict(s: Setup, source: str, output: str, *extra: str) -> Result:
    return s.predict(source, "-o", output, "--window-rows", "2", "--batch-size", "2", *extra)


@pytest.fixture(scope="module")
def results(setup: Setup):
    s = setup

    def units(source: str, output: str, n: int):
        return lambda: _predict(s, source, output, "--unit-rows", str(n))

    jobs = {
        **{f"stray-{n}": units("in/strayquote.csv", f"stray-{n}.parquet", n) for n in (1, 2)},
        **{f"tricky-{n}": units("in/tricky.csv", f"tricky-{n}.parquet", n) for n in UNIT_ROWS},
        "tricky-csv": lambda: _predict(s, "in/tricky.csv", "tricky.csv", "--unit-rows", "3"),
        "nested-csv": lambda: _predict(s, "in/nested.parquet", "nested/out.csv", "--unit-rows", "1"),
        "nested-stdout": lambda: _predict(s, "in/nested.parquet", "-"),
        "nested-parquet": lambda: _predict(s, "in/nested.parquet", "nested/out.parquet", "--unit-rows", "1"),
    }
    pool = ThreadPoolExecutor(max_workers=2)  # a small machine; each run is mostly start-up
    yield {name: pool.submit(job) for name, job in jobs.items()}
    pool.shutdown(wait=True)


def get(results: dict[str, Future], name: str) -> Result:
    return results[name].result(timeout=TIMEOUT * 6)


def error_line(result: Result) -> str:
    """The one line a failed run prints (and exit 1, nothing on stdout, no traceback)."""
    assert result.returncode == 1, str(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), str(result)
    assert result.stdout == ""
    return lines[0]


# --------------------------------------------------------------------------- 1. CSV records


@pytest.mark.slow
@pytest.mark.parametrize("unit_rows", [1, 2])
def test_stray_quote_inside_an_unquoted_field_scores(results, setup: Setup, unit_rows: int) -> None:
    r = get(results, f"stray-{unit_rows}")
    assert r.returncode == 0, str(r)
    table = pq.read_table(setup.root / f"stray-{unit_rows}.parquet")
    assert table.column("smiles").to_pylist() == ['ab"c', "CCN"]
    assert table.column("status").to_pylist() == ["invalid", "ok"]
    assert table.select(["smiles", "id"]).equals(pyarrow_parse(STRAY_QUOTE))


@pytest.mark.slow
@pytest.mark.parametrize("unit_rows", UNIT_ROWS[:-1])
def test_tricky_csv_gives_the_single_unit_output_for_any_unit_size(results, setup: Setup, unit_rows: int) -> None:
    single = get(results, f"tricky-{UNIT_ROWS[-1]}")
    assert single.returncode == 0, str(single)
    r = get(results, f"tricky-{unit_rows}")
    assert r.returncode == 0, str(r)
    assert f"scored {TRICKY_ROWS} rows" in r.stdout
    table = pq.read_table(setup.root / f"tricky-{unit_rows}.parquet")
    assert table.equals(pq.read_table(setup.root / f"tricky-{UNIT_ROWS[-1]}.parquet"))
    parsed = pyarrow_parse(TRICKY)
    assert table.num_rows == parsed.num_rows == TRICKY_ROWS
    assert table.select(["smiles", "id"]).equals(parsed)
    assert table.column("smiles").to_pylist()[1:6] == ['ab"c', "C\nC", 'a"b,\n"', 'x"y"z', 'CC""']


@pytest.mark.slow
def test_tricky_csv_to_csv_output(results, setup: Setup) -> None:
    r = get(results, "tricky-csv")
    assert r.returncode == 0, str(r)
    written = pa_csv.read_csv(setup.root / "tricky.csv", parse_options=pa_csv.ParseOptions(newlines_in_values=True))
    assert written.column("smiles").to_pylist() == pyarrow_parse(TRICKY).column("smiles").to_pylist()


# --------------------------------------------------------------------------- 2. nested columns in CSV output


@pytest.mark.slow
def test_nested_columns_to_csv_fail_before_scoring(results, setup: Setup) -> None:
    line = error_line(get(results, "nested-csv"))
    assert line == (
        f"error: cannot write nested/out.csv: CSV cannot hold columns {NESTED_COLUMNS} "
        "(hint: write Parquet instead, e.g. -o nested/out.parquet)"
    )
    leftovers = [p.name for p in (setup.root / "nested").iterdir() if "csv" in p.name]
    assert leftovers == []  # no output, no part directory, no temp file


@pytest.mark.slow
def test_nested_columns_to_stdout(results) -> None:
    line = error_line(get(results, "nested-stdout"))
    hint = "(hint: write Parquet instead, e.g. -o FILE.parquet)"
    assert line == f"error: cannot write stdout: CSV cannot hold columns {NESTED_COLUMNS} {hint}"


@pytest.mark.slow
def test_nested_columns_to_parquet_are_kept(results, setup: Setup) -> None:
    r = get(results, "nested-parquet")
    assert r.returncode == 0, str(r)
    table = pq.read_table(setup.root / "nested" / "out.parquet")
    assert table.column("props").to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]


# --------------------------------------------------------------------------- 3. an output folder that takes no files


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into a 0o555 folder anyway")
def test_read_only_output_folder(setup: Setup) -> None:
    folder = setup.root / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = error_line(_predict(setup, "in/strayquote.csv", "locked/out.csv"))
    finally:
        folder.chmod(0o755)
    assert line == f"error: cannot write locked/out.csv: the folder {folder} is not writable (permission denied)"
    assert list(folder.iterdir()) == []


def _in_process(setup: Setup, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`tagcli ARGS` in this process (so monkeypatched OS calls apply): exit code and stderr."""
    from tagcli.__main__ import main  # the entry point `python -m tagcli` runs

    argv = ["predict", *args, "-F", "logp", "--pack-dir", str(setup.packs), *setup.model_args(), "--no-progress"]
    with pytest.raises(SystemExit) as done:
        main(argv)
    return int(done.value.code or 0), capsys.readouterr().err


@pytest.fixture
def scored_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows each scoring call got (calls with 0 rows only check the columns)."""
    from tagcli.scoring.scorer import TagScorer

    calls: list[int] = []
    score = TagScorer.score

    def counting(self, table, *args, **kwargs):
        calls.append(table.num_rows)
        return score(self, table, *args, **kwargs)

    monkeypatch.setattr(TagScorer, "score", counting)
    return calls


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path, *calls: str) -> None:
    """Make `os.<call>` fail with EROFS for paths in `folder`, as on a read-only mount."""
    for name in calls:
        real = getattr(os, name)

        def refuse(path, *args, real=real, **kwargs):
            if isinstance(path, (str, os.PathLike)) and Path(path).absolute().parent == folder:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, refuse)


def test_read_only_file_system_fails_before_scoring(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], scored_rows: list[int]
) -> None:
    folder = setup.root / "readonly"
    folder.mkdir()
    monkeypatch.chdir(setup.root)
    monkeypatch.delenv("TAGCLI_DEBUG", raising=False)
    _read_only(monkeypatch, folder, "open", "mkdir")
    code, err = _in_process(setup, capsys, "in/strayquote.csv", "-o", "readonly/out.csv")
    assert code == 1
    assert err.strip() == f"error: cannot write readonly/out.csv: the folder {folder} is not writable ({READ_ONLY})"
    assert not any(scored_rows)  # nothing was scored
    assert list(folder.iterdir()) == []


def test_read_only_file_system_when_the_writer_finishes(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """EROFS from the writer itself (here: renaming the finished table into place) gives the same line."""
    folder = setup.root / "late"
    folder.mkdir()
    monkeypatch.chdir(setup.root)
    monkeypatch.delenv("TAGCLI_DEBUG", raising=False)
    real = os.replace

    def replace(source, target, *args, **kwargs):
        if Path(target).absolute() == folder / "out.parquet":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(source))
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    code, err = _in_process(setup, capsys, "in/strayquote.csv", "-o", "late/out.parquet")
    assert code == 1
    assert err.strip() == f"error: cannot write late/out.parquet: the folder {folder} is not writable ({READ_ONLY})"
    assert not (folder / "out.parquet").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
