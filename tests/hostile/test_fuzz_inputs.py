"""Issue #16, hostile inputs: property-based tests (hypothesis) of the table readers and the scorer.

Every family of hostile input goes through the path the CLI takes (`score_file` with a `TagScorer` on
the tiny model), and a few through the installed CLI itself. The property is the same for all:

- success: every input row comes out exactly once, in input order, with a status; an `invalid` or
  `error` row says why in one line; an `ok` row has a prediction;
- failure: one `TagcliError` with a one-line message (the CLI: one `error:` line, exit 1 or 2); the
  destination does not exist and no temp file is left next to it.

Anything else (another exception, a traceback, fewer rows out than in, a partial file) is a bug.
Examples are derandomized and bounded, so the file runs in about a minute and fails the same way
everywhere. Families: CSV bytes (encodings, BOMs, NULs, quotes anywhere, CR/LF/CRLF, ragged rows,
empty, header only, duplicate names, long fields, random bytes); Parquet schemas (the input column
as int, float, bool, binary, null, date, struct, list, map, dictionary, large_string; nested extra
columns; empty tables; many row groups; strings that are not UTF-8); odd SMILES/protein strings
(any unicode, RTL and zero-width marks, combining characters, whitespace only, huge).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from helpers import PROTEINS, SMILES, TIMEOUT, Result, Setup, cli_setup, tiny_base, write_packs
from tagcli.core.domains import DomainInput
from tagcli.errors import TagcliError
from tagcli.io import csv_records
from tagcli.io.tables import open_table
from tagcli.scoring.runner import score_file
from tagcli.scoring.scorer import TagScorer

FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run and machine
    database=None,  # nothing written next to the tests
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
STATUSES = {"ok", "invalid", "error"}
PREDICTION = {"smiles": "pred_y", "protein": "pred_stability"}  # the logp and fold packs of write_packs
SMILES_TEXT = re.compile(r"[\x21-\x7e]+")  # what an ok SMILES row may hold (stripped)
PROTEIN_TEXT = re.compile(r"[A-Za-z]+")  # what an ok protein row may hold (whitespace removed)


@pytest.fixture(scope="module")
def scorers(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TagScorer]:
    """One scorer per input kind, built once: logp reads SMILES, fold reads protein sequences."""
    root = tmp_path_factory.mktemp("fuzz")
    base = tiny_base(tiny_model_dir)
    write_packs(root / "packs", base)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TAGCLI_HOME", str(root / "home"))
        env.setenv("HF_HUB_OFFLINE", "1")
        return {
            kind: TagScorer(function, base_model=base, pack_dirs=[str(root / "packs")], batch_size=4)
            for kind, function in (("smiles", "logp"), ("protein", "fold"))
        }


@contextmanager
def workdir() -> Iterator[Path]:
    """A fresh folder per example (hypothesis reruns a test body many times in one pytest test)."""
    path = Path(tempfile.mkdtemp(prefix="tagcli-fuzz-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def one_line(text: str) -> bool:
    return len(text.splitlines()) == 1


def printable(text: str) -> bool:
    """Nothing a terminal would act on (a hostile file's bytes are quoted in messages)."""
    return all(c.isprintable() or c == "\t" for c in text)


def score(scorer: TagScorer, source: Path, out: Path, unit_rows: int, window_rows: int) -> pa.Table | TagcliError:
    """Score `source` into `out` as the CLI does: the scored table, or the one error it failed with.

    Any other exception escapes and fails the test. A failure must leave no output and no temp file.
    """
    try:
        score_file(scorer, source, out, window_rows=window_rows, unit_rows=unit_rows)
    except TagcliError as exc:
        event(f"failed: {re.sub(r'[0-9]+', 'N', str(exc).split(': ', 1)[-1])[:60]}")
        assert one_line(str(exc)), f"a multi-line error: {str(exc)!r}"
        assert printable(str(exc)), f"control characters in the error: {str(exc)!r}"
        assert "report this as a tagcli bug" not in str(exc), str(exc)
        assert not out.exists(), f"{out.name} was written although scoring failed: {exc}"
        assert_no_temp_files(out.parent)
        return exc
    assert_no_temp_files(out.parent)
    event("scored")
    with open_table(out) as reader:
        return pa.Table.from_batches(list(reader), schema=reader.schema)


def assert_no_temp_files(folder: Path) -> None:
    temp = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert not temp, f"temp files left behind: {temp}"


def assert_every_row(scored: pa.Table, kind: str, column: str, values: list) -> None:
    """Rows out == rows in, in order, each with a status; bad rows say why; ok rows have a number.

    (Read back from CSV, a missing error or prediction is an empty string.)"""
    assert scored.num_rows == len(values)
    assert scored.column(column).to_pylist() == values

    def cells(name: str) -> list:
        return [None if v == "" else v for v in scored.column(name).to_pylist()]

    rows = zip(values, scored.column("status").to_pylist(), cells("error"), cells(PREDICTION[kind]))
    for value, status, error, prediction in rows:
        assert status in STATUSES
        if status == "ok":
            assert error is None and prediction is not None
            value = value.decode() if isinstance(value, bytes) else value  # a binary column holding UTF-8
            if kind == "smiles":  # RDKit alone would accept "CCO name", "éCCO" and "CCO\x00"
                assert SMILES_TEXT.fullmatch(value.strip()), f"{value!r} scored as SMILES"
            else:
                assert PROTEIN_TEXT.fullmatch("".join(value.split())), f"{value!r} scored as a protein"
        else:
            assert error and one_line(error) and printable(error), f"row {value!r}: {status} with reason {error!r}"
            assert prediction is None


# --------------------------------------------------------------------------- CSV bytes

# Pieces of cells: chemistry, every CSV metacharacter, controls, and text that breaks encodings.
CELL_PIECES = [
    *SMILES[:4],
    "MKTAYIAKQR",
    "C",
    "(",
    "=",
    '"',
    '""',
    ",",
    "\n",
    "\r",
    "\r\n",
    "\x00",
    " ",
    "\t",
    "é",
    "ß",
    "\u200b",
    "\u200f",
    "\u0301",
    "\ufeff",
    "\U0001f600",
    "\ud800",  # a lone surrogate: only the surrogatepass "encoding" writes it (as bytes that are not UTF-8)
]
NAMES = ["smiles", "id", "note", "", "é", "a b", 'q"uote', "multi\nline", "cr\rname", "x,y", "id"]
ENCODINGS = ["utf-8", "utf-8", "utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "surrogatepass"]

cells = st.one_of(
    st.lists(st.sampled_from(CELL_PIECES), max_size=6).map("".join),
    st.text(max_size=8),
    st.builds(lambda piece, n: piece * n, st.sampled_from(["C", "CCO", "A", "é", '"']), st.integers(1000, 20_000)),
)


def csv_field(text: str, style: str) -> str:
    if style == "quoted" or (style == "safe" and re.search(r'[",\r\n]', text)):
        return '"' + text.replace('"', '""') + '"'
    return text  # "raw" (and "safe" without metacharacters): quotes and line breaks land anywhere


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """CSV bytes: a header (maybe with duplicates, maybe without a smiles column) and rows, mostly
    well formed but with ragged rows, raw metacharacters, mixed line ends, blank lines, BOMs and
    encodings mixed in; now and then plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        prefix = draw(st.sampled_from([b"", b"smiles\n", b"smiles,id\r\n", b"\xef\xbb\xbfsmiles\n"]))
        return prefix + draw(st.binary(max_size=300))
    others = draw(st.lists(st.sampled_from(NAMES[1:]), max_size=3, unique=draw(st.integers(0, 3)) > 0))
    names = draw(st.permutations((["smiles"] if draw(st.integers(0, 7)) else []) + others))
    ends = st.sampled_from(["\n", "\n", "\r\n", "\r"])
    styles = st.sampled_from(["safe", "safe", "safe", "quoted", "raw"])
    lines = [",".join(csv_field(n, draw(styles)) for n in names) + draw(ends)]
    for _ in range(draw(st.integers(0, 8))):
        width = len(names) if draw(st.integers(0, 9)) else draw(st.integers(0, len(names) + 2))
        row = ",".join(csv_field(draw(cells), draw(styles)) for _ in range(width))
        lines.append(row + draw(ends) + ("\n" if draw(st.integers(0, 9)) == 0 else ""))  # a blank line
    text = "".join(lines)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")  # no line end after the last row
    encoding = draw(st.sampled_from(ENCODINGS))
    if encoding == "surrogatepass":  # lone surrogates written as the bytes they would be: not UTF-8
        return text.encode("utf-8", "surrogatepass")
    return text.encode(encoding, "replace")


def pyarrow_reads(data: bytes) -> dict[str, list[str]] | None:
    """What pyarrow itself reads from the whole file, header included: {name: cells}, or None if it
    cannot, or the names repeat. An oracle independent of tables.py's header reader and chunking."""
    options = pa_csv.ConvertOptions(
        column_types={f"f{i}": pa.string() for i in range(64)},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    read = pa_csv.ReadOptions(autogenerate_column_names=True, block_size=len(data) + 1, use_threads=False)
    parse = pa_csv.ParseOptions(newlines_in_values=True)
    try:
        table = pa_csv.read_csv(pa.py_buffer(data), read, parse, options)
    except pa.ArrowInvalid as exc:
        if "cannot infer number of columns" not in str(exc):
            return None
        # pyarrow's own quirk: one line without a line end (a header alone) needs one to be read.
        table = pa_csv.read_csv(pa.py_buffer(data + b"\n"), read, parse, options)
    if table.num_rows == 0:
        return None
    names = [column[0].as_py() for column in table.columns]
    if len(set(names)) < len(names):
        return None
    return {name: column[1:].to_pylist() for name, column in zip(names, table.columns)}


@pytest.mark.slow  # scores hundreds of generated files
@settings(FUZZ, max_examples=500)
# Found by this test: pyarrow drops a BOM at the start of what it parses, so a cell starting with U+FEFF
# lost it, and a row holding only U+FEFF vanished, wherever a chunk (or work unit) began.
@example(data="smiles\n\ufeffCCO\n\ufeff\nCC\n".encode(), out_suffix=".parquet", units=1, block=4096)
@example(data=b"smiles,id\rCCO,1\rCC,2\r", out_suffix=".csv", units=2, block=16)  # CR only: the header too
@given(
    data=csv_files(),
    out_suffix=st.sampled_from([".parquet", ".csv"]),
    units=st.integers(1, 4),
    block=st.sampled_from([16, 256, 4096, csv_records.CSV_BLOCK_BYTES]),
)
def test_csv_bytes_score_every_row_or_fail_with_one_error(
    scorers: dict[str, TagScorer], data: bytes, out_suffix: str, units: int, block: int
) -> None:
    """`block`: the reader's chunk size, small enough here that records and quotes span chunks."""
    with workdir() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(csv_records, "CSV_BLOCK_BYTES", block)
        source = folder / "in.csv"
        source.write_bytes(data)
        scored = score(scorers["smiles"], source, folder / f"out{out_suffix}", unit_rows=units, window_rows=3)
        if isinstance(scored, TagcliError):
            return
        expected = pyarrow_reads(data)
        assert expected is not None, "tables.py read a file pyarrow cannot read as CSV"
        assert list(expected) == scored.column_names[: len(expected)], "header names differ from pyarrow's"
        assert_every_row(scored, "smiles", "smiles", expected["smiles"])
        for name in expected:  # every other input column comes back unchanged too (CSV output included)
            assert scored.column(name).to_pylist() == expected[name]


# --------------------------------------------------------------------------- Parquet schemas

SMILES_BYTES = [s.encode() for s in SMILES[:3]] + [b"\xff\xfe", b"\xed\xa0\x80", b""]


def _values(draw: st.DrawFn, kind: str, n: int) -> pa.Array:
    none = st.none()
    text = st.one_of(st.sampled_from(SMILES), st.text(max_size=10), none)
    if kind in ("string", "large_string", "dictionary"):
        array = pa.array(draw(st.lists(text, min_size=n, max_size=n)), pa.large_string() if kind != "string" else None)
        return array.cast(pa.string()).dictionary_encode() if kind == "dictionary" else array
    if kind in ("binary", "large_binary"):
        values = draw(st.lists(st.sampled_from(SMILES_BYTES) | none, min_size=n, max_size=n))
        return pa.array(values, pa.binary() if kind == "binary" else pa.large_binary())
    scalars = {
        "int64": (st.integers(-(2**63), 2**63 - 1), pa.int64()),
        "float64": (st.floats(allow_nan=True, allow_infinity=True), pa.float64()),
        "bool": (st.booleans(), pa.bool_()),
        "date32": (st.dates(), pa.date32()),
    }
    if kind in scalars:
        values, type_ = scalars[kind]
        return pa.array(draw(st.lists(values | none, min_size=n, max_size=n)), type_)
    if kind == "null":
        return pa.nulls(n)
    if kind == "struct":
        return pa.array(draw(st.lists(st.fixed_dictionaries({"smiles": text}) | none, min_size=n, max_size=n)))
    if kind == "list":
        return pa.array(
            draw(st.lists(st.lists(text, max_size=2) | none, min_size=n, max_size=n)), pa.list_(pa.string())
        )
    assert kind == "map"
    pairs = st.lists(st.tuples(st.sampled_from(["a", "b"]), text), max_size=2, unique_by=lambda p: p[0])
    return pa.array(draw(st.lists(pairs | none, min_size=n, max_size=n)), pa.map_(pa.string(), pa.string()))


def not_utf8_strings(n: int) -> pa.Array:
    """A string column holding bytes that are not UTF-8, as other Parquet writers can leave them."""
    data = [b"CCO", b"\xed\xa0\x80", b"\xff"] * n
    data = data[:n]
    offsets = np.cumsum([0] + [len(d) for d in data]).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(data))])


INPUT_TYPES = [
    "string",
    "large_string",
    "dictionary",
    "binary",
    "large_binary",
    "int64",
    "float64",
    "bool",
    "null",
    "date32",
    "struct",
    "list",
    "map",
    "not-utf8",
]


@st.composite
def parquet_tables(draw: st.DrawFn) -> tuple[pa.Table, int]:
    """A table whose input column has any of INPUT_TYPES, with extra columns (nested ones too), and
    the row group size to write it with (small: many row groups)."""
    n = draw(st.integers(0, 9))
    kind = draw(st.sampled_from(INPUT_TYPES))
    columns = {"smiles" if draw(st.integers(0, 9)) else "molecule": not_utf8_strings(n) if kind == "not-utf8" else None}
    if kind != "not-utf8":
        columns = {next(iter(columns)): _values(draw, kind, n)}
    if draw(st.booleans()):
        columns["id"] = pa.array(range(n), pa.int32())
    if draw(st.integers(0, 3)) == 0:
        columns["props"] = pa.array(
            [{"a": i, "b": str(i)} for i in range(n)], pa.struct([("a", pa.int64()), ("b", pa.string())])
        )
    order = draw(st.permutations(list(columns)))
    return pa.table({name: columns[name] for name in order}), draw(st.integers(1, 4))


@pytest.mark.slow  # scores hundreds of generated files
@settings(FUZZ, max_examples=300)
@given(case=parquet_tables(), out_suffix=st.sampled_from([".parquet", ".csv"]), units=st.integers(1, 5))
def test_parquet_schemas_score_every_row_or_fail_with_one_error(
    scorers: dict[str, TagScorer], case: tuple[pa.Table, int], out_suffix: str, units: int
) -> None:
    table, row_group_size = case
    with workdir() as folder:
        source = folder / "in.parquet"
        pq.write_table(table, source, row_group_size=row_group_size)
        scored = score(scorers["smiles"], source, folder / f"out{out_suffix}", unit_rows=units, window_rows=2)
        if isinstance(scored, TagcliError):
            return
        assert "smiles" in table.column_names
        source_column = pq.read_table(source).column("smiles").to_pylist()
        if out_suffix == ".parquet":
            assert_every_row(scored, "smiles", "smiles", source_column)
        else:  # CSV output holds text: compare the row count and statuses only
            assert scored.num_rows == table.num_rows
            assert set(scored.column("status").to_pylist()) <= STATUSES
        text = pa.types.is_string(table.schema.field("smiles").type) or pa.types.is_large_string(
            table.schema.field("smiles").type
        )
        if not (text or pa.types.is_dictionary(table.schema.field("smiles").type)):
            if not pa.types.is_binary(table.schema.field("smiles").type) and not pa.types.is_large_binary(
                table.schema.field("smiles").type
            ):
                assert "ok" not in scored.column("status").to_pylist(), "a non-text cell was scored"


# --------------------------------------------------------------------------- odd SMILES and protein strings

ODD = [
    "\u200f",  # right-to-left mark
    "\u202e",  # right-to-left override
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\ufeff",  # BOM / zero-width no-break space
    "\u0301",  # combining acute accent
    "\u3000",  # ideographic space
    "\xa0",
    "\u2028",
    "\x85",
    " ",
    "\t",
    "\n",
    "\r",
    "\x00",
    "\x7f",
    "ß",  # upper-cases to "SS"
    "ﬁ",  # upper-cases to "FI"
    "ı",  # upper-cases to "I"
    "\u212a",  # Kelvin sign
    "Ｃ",  # fullwidth C
    "e\u0301",
    "\U0001f600",
]
WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"


@st.composite
def odd_strings(draw: st.DrawFn) -> str:
    family = draw(st.integers(0, 5))
    if family == 0:
        return draw(st.text(max_size=30))  # any unicode Arrow can hold (no surrogates)
    if family == 1:  # a real SMILES or protein with odd characters slipped in
        text = draw(st.sampled_from([*SMILES, *PROTEINS, PROTEINS[1].lower(), "c1ccccc1"]))
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.sampled_from(ODD)) + text[at:]
        return text
    if family == 2:
        return draw(st.text(alphabet=WHITESPACE, max_size=12))  # whitespace only (or empty)
    if family == 3:  # huge: far past every limit
        return draw(st.sampled_from(["C", "A", "c1ccccc1", "\u200b", " "])) * draw(st.integers(2_000, 150_000))
    if family == 4:
        return draw(st.text(alphabet="CNOScnos()[]=#@+-123456789%/\\.", max_size=40))  # SMILES-like soup
    return draw(st.sampled_from([*SMILES, *PROTEINS]))  # plain valid ones keep the ok path covered


@pytest.mark.slow  # scores hundreds of generated tables
@settings(FUZZ, max_examples=200)
@given(
    values=st.lists(odd_strings() | st.none(), min_size=1, max_size=10),
    kind=st.sampled_from(["smiles", "protein"]),
    units=st.integers(1, 4),
)
def test_odd_strings_get_a_status_each(
    scorers: dict[str, TagScorer], values: list[str | None], kind: str, units: int
) -> None:
    column = "smiles" if kind == "smiles" else "sequence"
    with workdir() as folder:
        source = folder / "in.parquet"
        pq.write_table(pa.table({column: pa.array(values, pa.string())}), source, row_group_size=3)
        scored = score(scorers[kind], source, folder / "out.parquet", unit_rows=units, window_rows=2)
        assert not isinstance(scored, TagcliError), f"a file of strings failed: {scored}"
        assert_every_row(scored, kind, column, values)


@settings(FUZZ, max_examples=1000)
@given(
    value=st.text(alphabet=st.characters(categories=["Cs"]) | st.characters(), max_size=40)
    | st.sampled_from(ODD).map(lambda c: c * 3),
    kind=st.sampled_from(["smiles", "protein", "text"]),
)
def test_cleaning_any_string_gives_text_or_one_reason(value: str, kind: str) -> None:
    """Straight to the cleaner, with what no file can hold (lone surrogates) as well."""
    [(text, error)] = DomainInput(kind, max_tokens=8).clean([value])
    assert (text is None) != (error is None)
    if error is not None:
        assert one_line(error) and error.isprintable(), repr(error)
    elif kind == "smiles":
        assert SMILES_TEXT.fullmatch(text)
    elif kind == "protein":
        assert re.fullmatch(r"[A-Z]+", text)


# --------------------------------------------------------------------------- the CLI itself

RAGGED_EARLY = b"smiles,id\nCCO,1\nCC,2,3\n" + b"CCO,1\n" * 4_000_000  # 24 MB: a bad row, then much more
READ_STDIN = """
from tagcli.errors import TagcliError
from tagcli.io.tables import open_table
try:
    with open_table("-") as reader:
        for _ in reader:
            pass
except TagcliError as exc:
    print(exc)
"""


def _write_cli_inputs(root: Path) -> None:
    folder = root / "in"
    folder.mkdir()
    (folder / "latin1.csv").write_bytes("smiles,id\nCCO,1\ncafé,2\n".encode("latin-1"))
    (folder / "cr-only.csv").write_bytes(b"smiles,id\rCCO,1\r\xc3\xa9CCO,2\rCC O,3\r")
    pq.write_table(pa.table({"smiles": pa.array([b"CCO", b"\xff"], pa.binary())}), folder / "binary.parquet")
    (folder / "input.txt").write_text("smiles\nCCO\n")


# A few runs only: each pays the torch import. The library tests above cover the families.
CLI_CASES = {  # name: (input, output, exit code, rows written)
    "latin1": ("in/latin1.csv", "out/latin1.parquet", 1, None),
    "cr-only": ("in/cr-only.csv", "out/cr-only.parquet", 0, 3),
    "binary-to-csv": ("in/binary.parquet", "out/binary.csv", 1, None),  # fails when the parts are merged
    "unknown-format": ("in/input.txt", "out/input.parquet", 2, None),
    "stdin-ragged-early": ("-", "out/stdin.parquet", 1, None),
}


@pytest.fixture(scope="module")
def cli(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Setup, Result]]:
    """Every CLI case, run at once in a small pool (each run pays the torch import)."""
    setup = cli_setup(tmp_path_factory.mktemp("fuzz-cli"), tiny_model_dir)
    _write_cli_inputs(setup.root)
    (setup.root / "out").mkdir()

    def run(name: str) -> Result:
        source, output, _, _ = CLI_CASES[name]
        stdin = RAGGED_EARLY[:4_000_000].decode() if source == "-" else None
        return setup.predict(source, "-o", output, "--unit-rows", "2", stdin=stdin)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, name) for name in CLI_CASES}
        return {name: (setup, future.result(timeout=TIMEOUT)) for name, future in futures.items()}


@pytest.mark.slow  # runs the installed CLI as subprocesses
@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_exit_code_and_one_error_line(cli: dict[str, tuple[Setup, Result]], name: str) -> None:
    """Exit 0 with every row written, or exit 1/2 with one `error:` line and no output file. The stdin
    case once aborted at exit ("Fatal Python error"): pyarrow's read-ahead thread was reading stdin."""
    setup, result = cli[name]
    _, output, code, rows = CLI_CASES[name]
    assert result.returncode == code, str(result)
    assert "Traceback" not in result.stderr and "Fatal Python error" not in result.stderr, str(result)
    destination = setup.root / output
    assert_no_temp_files(destination.parent)
    if code:
        assert [line for line in result.stderr.splitlines() if line.strip()] == [result.stderr.strip()], str(result)
        assert result.stderr.startswith("error: "), str(result)
        assert not destination.exists()
    else:
        with open_table(destination) as reader:
            scored = pa.Table.from_batches(list(reader), schema=reader.schema)
        assert scored.num_rows == rows
        assert set(scored.column("status").to_pylist()) <= STATUSES


def test_an_error_early_in_a_big_stdin_stream_ends_the_process_cleanly() -> None:
    """pyarrow's streaming CSV reader read stdin ahead on a thread of its own, taking the GIL for each
    read; failing early in a big stream left that thread reading, and the interpreter aborted at exit
    ("Fatal Python error: PyGILState_Release", exit 134) or hung. Reading stdin alone shows it."""
    done = subprocess.run([sys.executable, "-c", READ_STDIN], input=RAGGED_EARLY, capture_output=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert done.stdout.decode().strip() == "cannot read stdin as CSV: row 2: Expected 2 columns, got 3: CC,2,3"
