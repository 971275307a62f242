"""The batch writer: record batches out to CSV or Parquet files (or CSV on stdout), atomically.

Output goes to a temp file next to the destination and is renamed over it only when the whole
table was written; a failed write leaves the destination as it was and says why in one line (a
folder that takes no files, a full disk with the space free).
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tagcli.atomic import commit_temp, reserve_temp
from tagcli.errors import InputFileError
from tagcli.io.tables import STDIO, TableFile, arrow_reason, parquet_name, shorten, table_format


class TableWriter(TableFile):
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
                reason = arrow_reason(exc)
                if self.format == "csv" and "UTF8" in reason:
                    reason = "CSV cannot hold bytes that are not UTF-8 text (a binary column)"
                hint = f"write Parquet instead, e.g. -o {parquet_name(self.path)}" if self.format == "csv" else None
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
    columns = ", ".join(f"{f.name!r} ({shorten(str(f.type), 60)})" for f in bad[:3]) + (", ..." if bad[3:] else "")
    raise InputFileError(
        f"cannot write {'stdout' if path == STDIO else path}: CSV cannot hold column{'s' if bad[1:] else ''} {columns}",
        hint=f"write Parquet instead, e.g. -o {'FILE.parquet' if path == STDIO else parquet_name(path)}",
    )


def _csv_can_write(type_: pa.DataType) -> bool:
    try:  # ask pyarrow itself: what it refuses differs between versions
        pa_csv.write_csv(pa.table({"x": pa.nulls(1, type_)}), pa.BufferOutputStream())
    except (pa.ArrowException, TypeError, ValueError):
        return False
    return True


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
        raise InputFileError(f"cannot write {name}: {exc.strerror or arrow_reason(exc)}") from exc
