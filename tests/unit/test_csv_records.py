"""tagcli.io.csv_records: work units end records where pyarrow's CSV parser ends them, however the
scan is chunked (a quote opens quoting only at the start of a field; CR, LF and CRLF end records)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from tagcli.io import csv_records
from tagcli.io.workunits import plan_units


def test_units_end_where_pyarrow_ends_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random bytes of quotes, commas, CR and LF: the plan counts pyarrow's records, every unit
    parses as exactly its own rows, however the scan is chunked."""
    path = tmp_path / "fuzz.csv"
    alphabet = [b"a", b'"', b",", b"\n", b"\r", b'""', b"\r\n"]
    rng = random.Random(17)
    for _ in range(300):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        path.write_bytes(b"h\n" + body)
        expected = _pyarrow_records(b"h\n" + body)
        for scan_bytes in (1, 3, 1 << 20):
            monkeypatch.setattr(csv_records, "SCAN_BYTES", scan_bytes)
            units = plan_units(path, 1).units
            assert sum(u.num_rows for u in units) == expected, body
            pieces = [b"h\n" + body[u.byte_range[0] - 2 : u.byte_range[1] - 2] for u in units if u.num_rows]
            assert [_pyarrow_records(p) for p in pieces] == [1] * expected, body


def _pyarrow_records(data: bytes) -> int:
    """Records pyarrow finds (rows with too many fields counted, not failed)."""
    invalid: list[object] = []
    parse = pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: invalid.append(row) or "skip")
    strings = pa_csv.ConvertOptions(column_types={"h": pa.string()})
    try:
        return pa_csv.read_csv(io.BytesIO(data), pa_csv.ReadOptions(), parse, strings).num_rows + len(invalid)
    except pa.ArrowInvalid as exc:  # a header and no rows at all
        assert "Empty CSV file" in str(exc)
        return 0
