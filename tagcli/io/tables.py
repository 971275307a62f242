"""The batch reader: stream CSV and Parquet tables in and out as pyarrow record batches.

Tables are read and written one batch at a time, so a scoring run never holds a whole
file in memory. CSV cells are always read as strings: values round-trip exactly ("007"
stays "007"), and type inference on the first block can't break on a later one.
Writers are atomic: output goes to a temp file next to the destination and is renamed
over it only when the whole table was written.
"""

from __future__ import annotations

import csv
import errno
import glob
import gzip
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tagcli.atomic import commit_temp, reserve_temp
from tagcli.errors import InputFileError, UsageError, first_line
from tagcli.io.csv_records import csv_record_chunks

if TYPE_CHECKING:  # workunits.py imports this module; readers only take a planned unit
    from tagcli.io.workunits import WorkUnit

TableFormat = Literal["csv", "parquet"]

STDIO = "-"  # the path that means stdin (reading) or stdout (writing)

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


class TableReader:
    """Iterate over a CSV or Parquet table as record batches of `batch_rows` rows (the last: at most).

    `schema` is known as soon as the reader is open; `total_rows` is exact for Parquet,
    a newline-count estimate for CSV files (good enough for a progress bar), and None
    for stdin. Iterating consumes the stream: a reader can be iterated once.
    """

    def __init__(
        self,
        path: str | Path,
        batch_rows: int = 4096,
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
        reason = _reason(exc).removeprefix("CSV parse error: ")
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
            index = re.match(r"In column (\d+): (?:Invalid: )?(.*)", _reason(exc))
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

    def __enter__(self) -> TableReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _read_error(self, exc: BaseException) -> InputFileError:
        kind = "Parquet" if self.format == "parquet" else "CSV"
        reason = _reason(exc).removeprefix("CSV parse error: ")
        return InputFileError(f"cannot read {self.name} as {kind}: {reason}")


def open_table(
    path: str | Path,
    batch_rows: int = 4096,
    columns: list[str] | None = None,
    unit: WorkUnit | None = None,
) -> TableReader:
    """Open a CSV or Parquet table (or "-" for CSV on stdin), or one work unit of it, for streaming."""
    return TableReader(path, batch_rows=batch_rows, columns=columns, unit=unit)


class TableWriter:
    """Write record batches to a CSV or Parquet file ("-": CSV on stdout), atomically.

    The destination only appears (or is replaced) on a successful `close()`; `abort()`,
    or an exception inside `with`, leaves it exactly as it was. Pass `schema` when you
    know the column types: without it the first batch fixes them, and a column that is
    all null there can only be stored as string.
    """

    def __init__(self, path: str | Path, schema: pa.Schema | None = None) -> None:
        self.path = str(path)
        self.name = "stdout" if self.path == STDIO else self.path
        self.format = table_format(path)
        self._tmp = None if self.path == STDIO else _reserve_temp(Path(path))
        self._schema = schema
        self._writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
        self._sink: pa.NativeFile | None = None
        self._done = False
        if schema is not None:
            try:
                self._open(schema)
            except BaseException:
                self.abort()
                raise

    def _open(self, schema: pa.Schema) -> None:
        self._schema = schema
        if self.format == "csv":
            check_csv_columns(schema, self.path)
        with write_errors(self.name):
            if self.format == "parquet":
                self._writer = pq.ParquetWriter(str(self._tmp), schema, compression="zstd")
            elif self._tmp is None:
                self._writer = pa_csv.CSVWriter(sys.stdout.buffer, schema)
            else:
                gz = self.path.lower().endswith(".gz")
                self._sink = pa.output_stream(str(self._tmp), compression="gzip" if gz else None)
                self._writer = pa_csv.CSVWriter(self._sink, schema)

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if self._writer is None:
            self._open(_nulls_as_strings(batch.schema))
        assert self._writer is not None and self._schema is not None
        # Casting makes every batch match the file's schema; null-typed columns (a
        # batch where every value is missing) cast safely to any type.
        data = batch.cast(self._schema)
        with write_errors(self.name):
            try:
                self._writer.write(data)
            except pa.ArrowInvalid as exc:  # e.g. bytes that are not UTF-8 in a binary column, to CSV
                reason = _reason(exc)
                if self.format == "csv" and "UTF8" in reason:
                    reason = "CSV cannot hold bytes that are not UTF-8 text (a binary column)"
                hint = f"write Parquet instead, e.g. -o {_parquet_name(self.path)}" if self.format == "csv" else None
                raise InputFileError(f"cannot write {self.name}: {reason}", hint=hint) from exc

    def close(self) -> None:
        """Finish the file and move it into place; does nothing after close or abort."""
        if self._done:
            return
        try:
            if self._writer is None:  # nothing written and no schema: a table of no columns
                self._open(pa.schema([]))
            assert self._writer is not None
            with write_errors(self.name):
                self._writer.close()
                if self._sink is not None:
                    self._sink.close()
                if self._tmp is None:
                    sys.stdout.buffer.flush()
                else:
                    commit_temp(self._tmp, Path(self.path))
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Throw away what was written; the destination stays as it was."""
        if self._done:
            return
        self._done = True
        # Release the file handles first; failures here must not hide the real error.
        for resource in (self._writer, self._sink):
            try:
                if resource is not None:
                    resource.close()
            except Exception:
                pass
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> TableWriter:
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


def check_destination(path: str | Path, schema: pa.Schema) -> None:
    """Fail now, before any work, if a table of `schema` cannot be written to `path`: a column CSV
    cannot hold, or a folder where no file can be created (read-only, no permission, missing)."""
    if table_format(path) == "csv":
        check_csv_columns(schema, str(path))
    if str(path) != STDIO:
        _reserve_temp(Path(path)).unlink()


def check_csv_columns(schema: pa.Schema, path: str) -> None:
    """Raise unless pyarrow's CSV writer can write every column of `schema` (it cannot write nested
    values: structs, lists, maps, unions, and a few others), naming the columns it cannot."""
    bad = [f for f in schema if not _csv_can_write(f.type)]
    if not bad:
        return
    columns = ", ".join(f"{f.name!r} ({_cut(str(f.type), 60)})" for f in bad[:3]) + (", ..." if bad[3:] else "")
    raise InputFileError(
        f"cannot write {'stdout' if path == STDIO else path}: CSV cannot hold column{'s' if bad[1:] else ''} {columns}",
        hint=f"write Parquet instead, e.g. -o {'FILE.parquet' if path == STDIO else _parquet_name(path)}",
    )


def _csv_can_write(type_: pa.DataType) -> bool:
    try:  # ask pyarrow itself: what it refuses differs between versions
        pa_csv.write_csv(pa.table({"x": pa.nulls(1, type_)}), pa.BufferOutputStream())
    except (pa.ArrowException, TypeError, ValueError):
        return False
    return True


def _parquet_name(path: str) -> str:
    return str(Path(path).with_name(Path(path).name[: -len(_SUFFIXES[_suffix_index(path)][0])] + ".parquet"))


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


def _reason(exc: BaseException) -> str:
    # pyarrow quotes the offending row: escape what a terminal would act on (ESC, NUL, ...).
    text = "".join(c if c.isprintable() or c == "\t" else ascii(c)[1:-1] for c in first_line(exc))
    return _cut(text, _MAX_REASON_CHARS)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _nulls_as_strings(schema: pa.Schema) -> pa.Schema:
    # A column that is all null in the first batch has no type to go by; string can
    # hold whatever later batches bring (and CSV is text anyway).
    return pa.schema(
        [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in schema],
        metadata=schema.metadata,
    )


def remove_temp_files(path: str | Path) -> None:
    """Remove the temp files writers of `path` left behind (a process killed while writing it)."""
    dest = Path(path)
    for temp in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
        temp.unlink(missing_ok=True)


def _reserve_temp(dest: Path) -> Path:
    """Create an empty, uniquely named temp file next to `dest` (same filesystem, so
    os.replace is atomic)."""
    if not dest.parent.is_dir():
        raise InputFileError(
            f"cannot write {dest}: directory {dest.parent} does not exist",
            hint="create the directory first, or choose another output path",
        )
    with write_errors(str(dest)):
        return reserve_temp(dest)


_FOLDER_ERRORS = (errno.EROFS, errno.EACCES, errno.EPERM)  # no file can be created or replaced there


class DiskFullError(InputFileError):
    """No space left on the device of `folder`."""

    def __init__(self, message: str, folder: Path, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.folder = folder


def _free_in(folder: Path) -> str:
    return f"{format_bytes(shutil.disk_usage(folder).free)} free in {folder}" if folder.is_dir() else f"in {folder}"


def format_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


@contextmanager
def write_errors(name: str) -> Iterator[None]:
    """Turn an OSError while writing `name` into one line: a folder that takes no files and a full disk
    say so (pyarrow reports ENOSPC in its own words, with the errno in its text)."""
    try:
        yield
    except OSError as exc:
        folder = Path(exc.filename or name).absolute().parent
        if exc.errno == errno.ENOSPC or "[errno 28]" in str(exc).lower():
            raise DiskFullError(f"cannot write {name}: no space left on device ({_free_in(folder)})", folder) from exc
        if exc.errno in _FOLDER_ERRORS:
            reason = (exc.strerror or os.strerror(exc.errno)).lower()
            raise InputFileError(f"cannot write {name}: the folder {folder} is not writable ({reason})") from exc
        raise InputFileError(f"cannot write {name}: {exc.strerror or _reason(exc)}") from exc
