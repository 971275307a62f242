"""The batch reader: stream CSV and Parquet tables in as pyarrow record batches (the writer: writer.py).

Tables are read one batch at a time, so a scoring run never holds a whole file in memory.
CSV cells are always read as strings: values round-trip exactly ("007" stays "007"), and
type inference on the first block can't break on a later one.
"""

from __future__ import annotations

import csv
import gzip
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Literal, TypeVar

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tagcli.errors import InputFileError, UsageError, first_line
from tagcli.io.csv_records import csv_record_chunks

if TYPE_CHECKING:  # workunits.py imports this module; readers only take a planned unit
    from tagcli.io.workunits import WorkUnit

TableFormat = Literal["csv", "parquet"]

STDIO = "-"  # the path that means stdin (reading) or stdout (writing)
# Rows read at a time: a scoring window (`predict --window-rows`), so also what bounds memory.
DEFAULT_WINDOW_ROWS = 4096

# Longest suffix first, so "x.csv.gz" is not mistaken for anything else.
_SUFFIXES: tuple[tuple[str, TableFormat], ...] = (
    (".csv.gz", "csv"),
    (".csv", "csv"),
    (".parquet", "parquet"),
    (".pq", "parquet"),
)
MAX_HEADER_BYTES = 8 << 20  # a longer "header" is a file without line ends, not a table
_MAX_REASON_CHARS = 200  # pyarrow quotes the offending row, which may be huge
# Errors that mean "this file can't be read": pyarrow's own, I/O, and truncated gzip.
_READ_ERRORS = (pa.ArrowException, OSError, EOFError)


def table_format(path: str | Path) -> TableFormat:
    """The table format of `path`, from its extension ("-" is CSV on stdin/stdout)."""
    if str(path) == STDIO:
        return "csv"
    return _SUFFIXES[_suffix_index(path)][1]


def default_output_path(input_path: str | Path) -> Path:
    """Where scores for `input_path` go by default: next to it, e.g. mols.scored.parquet."""
    if str(input_path) == STDIO:
        raise UsageError(
            "cannot name an output file for input read from stdin",
            hint="choose an output path, or '-' for stdout",
        )
    path = Path(input_path)
    # Keep the suffix as the user spelled it (".CSV" stays ".CSV").
    suffix = path.name[-len(_SUFFIXES[_suffix_index(path)][0]) :]
    return path.with_name(f"{path.name[: -len(suffix)]}.scored{suffix}")


def _suffix_index(path: str | Path) -> int:
    name = Path(path).name.lower()
    for index, (suffix, _) in enumerate(_SUFFIXES):
        if name.endswith(suffix):
            return index
    raise UsageError(f"cannot tell the format of {str(path)!r}: use .csv or .parquet")


_TableFile = TypeVar("_TableFile", bound="TableFile")


class TableFile(ABC):
    """A table being read or written, as a context manager: leaving `with` closes it, or, on an
    exception, aborts it (the same as closing, for a file that has nothing to undo)."""

    @abstractmethod
    def close(self) -> None: ...

    def abort(self) -> None:
        self.close()

    def __enter__(self: _TableFile) -> _TableFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class TableReader(TableFile):
    """Iterate over a CSV or Parquet table as record batches of `batch_rows` rows (the last: at most).

    `schema` is known as soon as the reader is open; `total_rows` is exact for Parquet,
    a newline-count estimate for CSV files (good enough for a progress bar), and None
    for stdin. Iterating consumes the stream: a reader can be iterated once.
    """

    def __init__(
        self,
        path: str | Path,
        batch_rows: int = DEFAULT_WINDOW_ROWS,
        columns: list[str] | None = None,
        unit: WorkUnit | None = None,
    ) -> None:
        if batch_rows < 1:
            raise UsageError(f"batch size must be at least 1 row, got {batch_rows}")
        self.path = str(path)
        self.name = "stdin" if self.path == STDIO else self.path
        self.format = table_format(path)
        self._batch_rows = batch_rows
        self._columns = columns
        self._unit = unit  # read only these rows (see workunits.py); None: the whole table
        self._parquet: pq.ParquetFile | None = None
        self._stream: BinaryIO | None = None  # a file we opened (never stdin)
        if self.path != STDIO:
            _check_is_file(Path(path))
        try:
            if self.format == "parquet":
                self._open_parquet()
            else:
                self._open_csv()
        except BaseException:
            self.close()
            raise

    def _open_parquet(self) -> None:
        try:
            self._parquet = pq.ParquetFile(self.path)
        except _READ_ERRORS as exc:
            raise self._read_error(exc) from exc
        schema = self._parquet.schema_arrow
        _check_columns(schema.names, self._columns, self.name)
        self.schema: pa.Schema = pa.schema([schema.field(c) for c in self._columns]) if self._columns else schema
        self._batches: Iterator[pa.RecordBatch] = (
            self._parquet.iter_batches(batch_size=self._batch_rows, columns=self._columns)
            if self._unit is None
            else self._parquet_unit_batches(self._unit)
        )

    def _parquet_unit_batches(self, unit: WorkUnit) -> Iterator[pa.RecordBatch]:
        """The unit's rows, decoding only the row groups that hold them."""
        assert self._parquet is not None
        metadata = self._parquet.metadata
        start, stop = unit.first_row, unit.first_row + unit.num_rows
        groups: list[int] = []
        position = first = 0  # position: the table row where the first chosen group starts
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            if first < stop and first + rows > start:
                position = first if not groups else position
                groups.append(group)
            first += rows
        if not groups:
            return
        batches = self._parquet.iter_batches(batch_size=self._batch_rows, row_groups=groups, columns=self._columns)
        for batch in batches:
            begin, end = max(start - position, 0), min(stop - position, batch.num_rows)
            if end > begin:
                yield batch.slice(begin, end - begin)
            position += batch.num_rows
            if position >= stop:
                return

    def _open_csv(self) -> None:
        if self.path == STDIO:
            stream: BinaryIO = sys.stdin.buffer
        else:
            stream = self._stream = open_bytes(self.path)
        names, self._header_lines = read_csv_header(stream, self.name)
        limit = None
        if self._unit is not None and self._unit.byte_range is not None:
            # A work unit of a plain CSV file: just its bytes, parsed with the header's names.
            begin, end = self._unit.byte_range
            stream.seek(begin)
            limit = end - begin
        _check_columns(names, self._columns, self.name)
        self.schema = csv_schema(self._columns or names)
        self._batches = self._csv_batches(stream, names, limit)

    def _csv_batches(self, stream: BinaryIO, names: list[str], limit: int | None) -> Iterator[pa.RecordBatch]:
        row = self._unit.first_row if self._unit is not None else 0  # data rows before this chunk
        for chunk in csv_record_chunks(stream, self.name, limit):
            try:
                batches = self._parse(chunk, names)
            except pa.ArrowInvalid as exc:
                raise self._csv_error(exc, names, row) from exc
            row += sum(b.num_rows for b in batches)
            yield from batches

    def _csv_error(self, exc: pa.ArrowInvalid, names: list[str], row: int) -> InputFileError:
        """pyarrow's reason, with the row counted from the top of the table (pyarrow counts from the
        chunk's) and the column named."""
        reason = arrow_reason(exc).removeprefix("CSV parse error: ")
        column = re.match(r"In CSV column #(\d+): (.*)", reason)
        if column and int(column[1]) < len(names):
            reason = column[2].replace("CSV conversion error to string: ", "")
        reason = re.sub(r"^Row #(\d+):", lambda m: f"row {row + int(m[1])}:", reason)
        if column and int(column[1]) < len(names):
            reason = f"column {names[int(column[1])]!r}, {reason}"
        hint = "save the file as UTF-8 text" if "UTF8" in reason else None
        return InputFileError(f"cannot read {self.name} as CSV: {reason}", hint=hint)

    def _parse(self, chunk: bytearray, names: list[str]) -> list[pa.RecordBatch]:
        # The header is already consumed, so pass its names instead of letting pyarrow read them:
        # that way stdin needs no rewinding. One block per chunk: a chunk holds whole records.
        read = pa_csv.ReadOptions(column_names=names, use_threads=False, block_size=len(chunk) + 1)
        convert = pa_csv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            include_columns=self._columns or [],
            # An empty cell is the empty string, never null, quoted or not.
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        parse = pa_csv.ParseOptions(newlines_in_values=True)
        return pa_csv.read_csv(pa.py_buffer(chunk), read, parse, convert).to_batches()

    @cached_property
    def total_rows(self) -> int | None:
        if self._unit is not None:
            return self._unit.num_rows
        if self._parquet is not None:
            return self._parquet.metadata.num_rows
        if self.path == STDIO:
            return None
        return _estimate_csv_rows(self.path, self._header_lines)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        """Batches of exactly `batch_rows` rows (the last may be shorter), wherever the file's blocks or
        row groups end: a batch is a scoring window, and windows must be the same in every reader."""
        held: list[pa.RecordBatch] = []
        rows = 0
        try:
            for batch in self._batches:
                if self._parquet is not None:
                    self._check_parquet_batch(batch)
                while batch.num_rows:
                    piece = batch.slice(0, self._batch_rows - rows)
                    held.append(piece)
                    rows += piece.num_rows
                    batch = batch.slice(piece.num_rows)
                    if rows == self._batch_rows:
                        yield pa.concat_batches(held)
                        held, rows = [], 0
        except _READ_ERRORS as exc:
            raise self._read_error(exc) from exc
        if held:
            yield pa.concat_batches(held)

    def _check_parquet_batch(self, batch: pa.RecordBatch) -> None:
        """Fail on invalid values pyarrow does not check when it reads Parquet: string columns that hold
        bytes which are not UTF-8 (other writers store them; Python could not read them as text)."""
        try:
            batch.validate(full=True)
        except pa.ArrowInvalid as exc:
            index = re.match(r"In column (\d+): (?:Invalid: )?(.*)", arrow_reason(exc))
            if not index or int(index[1]) >= batch.num_columns:
                raise
            raise InputFileError(
                f"cannot read {self.name} as Parquet: column {batch.schema.names[int(index[1])]!r}: {index[2]}",
                hint="store text columns as UTF-8 strings" if "UTF8" in index[2] else None,
            ) from exc

    def close(self) -> None:
        self._batches = iter(())
        if self._stream is not None:
            self._stream.close()
        if self._parquet is not None:
            self._parquet.close()

    def _read_error(self, exc: BaseException) -> InputFileError:
        kind = "Parquet" if self.format == "parquet" else "CSV"
        reason = arrow_reason(exc).removeprefix("CSV parse error: ")
        return InputFileError(f"cannot read {self.name} as {kind}: {reason}")


def open_table(
    path: str | Path,
    batch_rows: int = DEFAULT_WINDOW_ROWS,
    columns: list[str] | None = None,
    unit: WorkUnit | None = None,
) -> TableReader:
    """Open a CSV or Parquet table (or "-" for CSV on stdin), or one work unit of it, for streaming."""
    return TableReader(path, batch_rows=batch_rows, columns=columns, unit=unit)


def _check_is_file(path: Path) -> None:
    if not path.exists():
        raise InputFileError(f"no such file: {path}")
    if not path.is_file():
        raise InputFileError(f"not a file: {path}")


def _check_columns(available: list[str], wanted: list[str] | None, name: str) -> None:
    missing = [c for c in wanted or [] if c not in available]
    if missing:
        columns = ", ".join(c if c.isprintable() else repr(c) for c in available)  # one line, whatever the names
        raise UsageError(f"{name} has no column {missing[0]!r}", hint=f"its columns are: {columns}")


def open_bytes(path: str) -> BinaryIO:
    """A CSV file's bytes, gunzipped if its name ends in .gz."""
    # Both are buffered readers, so readline() and pyarrow's reads share one position.
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _read_line(stream: BinaryIO) -> bytes:
    """One line of `stream`, ended by LF, CRLF or a lone CR as pyarrow ends lines (at most
    MAX_HEADER_BYTES). A stream that cannot peek is read a byte at a time, so nothing past the line is
    consumed; a CRLF there ends at the CR, and pyarrow skips the empty line that the LF then starts."""
    peek = getattr(stream, "peek", None)
    line = bytearray()
    while len(line) <= MAX_HEADER_BYTES:
        ahead = peek(1 << 16) if peek else stream.read(1)
        if not ahead:
            break
        cr, lf = ahead.find(b"\r"), ahead.find(b"\n")
        end = min(i for i in (cr, lf, len(ahead) - 1) if i >= 0)
        line += stream.read(end + 1) if peek else ahead
        if line[-1:] == b"\r" and peek and peek(1)[:1] == b"\n":
            line += stream.read(1)
        if line[-1:] in (b"\r", b"\n"):
            break
    return bytes(line)


def read_csv_header(stream: BinaryIO, name: str) -> tuple[list[str], int]:
    """Read the header row, leaving `stream` at the first data row.

    Returns the column names and how many lines the header took (a quoted name may
    contain a newline).
    """
    lines_read = 0
    size = 0

    def lines() -> Iterator[str]:
        nonlocal lines_read, size
        # csv.reader pulls lines one at a time and stops at the end of the first
        # record, so nothing past the header is consumed.
        while line := _read_line(stream):
            lines_read += 1
            size += len(line)
            if size > MAX_HEADER_BYTES:
                limit = f"{MAX_HEADER_BYTES >> 20} MiB"
                raise InputFileError(f"cannot read {name} as CSV: the header row is longer than {limit}")
            yield line.decode("utf-8-sig" if lines_read == 1 else "utf-8")

    try:
        header = next(csv.reader(lines(), strict=True), None)
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"cannot read {name} as CSV: the header row is not UTF-8 text", hint="save the file as UTF-8"
        ) from exc
    except csv.Error as exc:
        raise InputFileError(f"cannot read {name} as CSV: bad header row ({exc})") from exc
    if header is None:
        raise InputFileError(f"{name} is empty: expected a header row")
    if not header:
        raise InputFileError(f"{name} starts with a blank line: expected a header row")
    duplicates = sorted({n for n in header if header.count(n) > 1})
    if duplicates:
        raise InputFileError(
            f"{name} has duplicate column names: {', '.join(map(repr, duplicates))}",
            hint="rename the columns so that each name is unique",
        )
    return header, lines_read


def csv_schema(names: list[str]) -> pa.Schema:
    """The schema of CSV columns `names`: every cell is read as a string."""
    return pa.schema([(n, pa.string()) for n in names])


def _estimate_csv_rows(path: str, header_lines: int) -> int:
    # A plain byte scan for newlines is fast; quoted newlines and blank lines make it
    # an overestimate, which is fine for a progress bar.
    newlines, returns, last = 0, 0, b"\n"
    with open_bytes(path) as stream:
        while chunk := stream.read(1 << 20):
            newlines += chunk.count(b"\n")
            returns += chunk.count(b"\r")  # old Mac files end lines with a lone CR
            last = chunk[-1:]
    return max(0, max(newlines, returns) + (last not in b"\r\n") - header_lines)


def arrow_reason(exc: BaseException) -> str:
    """pyarrow's first line, cut and with what a terminal would act on escaped."""
    # pyarrow quotes the offending row: escape what a terminal would act on (ESC, NUL, ...).
    text = "".join(c if c.isprintable() or c == "\t" else ascii(c)[1:-1] for c in first_line(exc))
    return shorten(text, _MAX_REASON_CHARS)


def shorten(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters (and '...')."""
    return text if len(text) <= limit else text[:limit] + "..."


def parquet_name(path: str) -> str:
    """The same path as a Parquet file (what to write instead of a CSV that cannot hold a table)."""
    return str(Path(path).with_name(Path(path).name[: -len(_SUFFIXES[_suffix_index(path)][0])] + ".parquet"))
