"""Where CSV records end, by the rules of pyarrow's own CSV parser (arrow/csv/parser.cc).

The unit planner (`scan_csv`: record offsets for work units) and the reader (`csv_record_chunks`:
record-aligned chunks pyarrow parses one at a time) must agree exactly with pyarrow, or a stray
quote makes a unit hold other rows than planned. Both use `line_ends`, vectorized with numpy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np

from tagcli.errors import InputFileError

# CSV is read and parsed in chunks of about this many bytes (whole records: a longer record makes a
# longer chunk); it bounds memory.
CSV_BLOCK_BYTES = 4 << 20
MAX_RECORD_BYTES = 64 << 20  # longest CSV record (row); held in memory whole while it is parsed
SCAN_BYTES = 16 << 20  # unit planning scan chunk
_QUOTE, _NEWLINE, _CR, _COMMA = ord('"'), ord("\n"), ord("\r"), ord(",")


def scan_csv(stream: Any, offset: int, every: int, period: int | None = None) -> tuple[list[tuple[int, int]], int]:
    """(row index, byte offset) of every `every`-th non-empty CSV record from `offset` on, counted
    afresh every `period` rows (default: `every`; rows r with (r % period) % every == 0), and the row count.

    Records end where pyarrow's CSV parser ends them (see `line_ends`); blank lines are skipped, as
    pyarrow does. The stream is read in chunks; quotes or a CR at the end of a chunk wait for the
    next one, since the byte after them decides what they mean.
    """
    period = period or every
    found: list[tuple[int, int]] = []
    row, record_start, quoted, previous, carry = 0, offset, False, _NEWLINE, b""
    while True:
        chunk = stream.read(SCAN_BYTES)
        data = carry + chunk if carry else chunk
        block = np.frombuffer(data, dtype=np.uint8, count=len(data) - (undecided_tail(data) if chunk else 0))
        carry = data[len(block) :]
        if len(block):
            ends, quoted = line_ends(block, quoted, previous)
            starts = np.concatenate([[record_start - offset], ends[:-1] + 1])[: len(ends)]
            crlf = (block[ends] == _NEWLINE) & (np.where(ends > 0, block[ends - 1], previous) == _CR)
            real = starts[ends - starts - crlf > 0] + offset  # blank lines (CRLF ones too) hold no record
            listed = np.flatnonzero((row + np.arange(len(real), dtype=np.int64)) % period % every == 0)
            found += [(row + int(k), int(real[k])) for k in listed]
            row += len(real)
            if len(ends):
                record_start = offset + int(ends[-1]) + 1
            previous, offset = int(block[-1]), offset + len(block)
        if not chunk:
            break
    if offset > record_start:  # a last record without a line end
        if row % period % every == 0:
            found.append((row, record_start))
        row += 1
    return found, row


def undecided_tail(data: bytes) -> int:
    """How many bytes at the end of `data` mean nothing until the next byte is known: a run of
    quotes (one more quote changes what the run does) or a CR (a LF after it is the same line end)."""
    if data.endswith(b"\r"):
        return 1
    return len(data) - len(data.rstrip(b'"'))


def line_ends(block: np.ndarray, quoted: bool, previous: int) -> tuple[np.ndarray, bool]:
    """Offsets in `block` of the bytes that end a CSV line, and whether the block ends inside quotes.

    pyarrow's rules (arrow/csv/parser.cc): a quote opens a quoted field only at the start of a field
    (after a comma or a line end); anywhere else it is a plain character. Inside quotes, two quotes
    are one literal quote and a single quote ends the quoting (the field goes on unquoted). Outside
    quotes, LF, CRLF and a lone CR end a line. `quoted` and `previous` (the byte before the block)
    carry the state over; a block may end in quotes or a CR only if it is the file's last.

    Vectorized over runs of quotes. A run of k quotes acts on the quoted state like this:
    k odd at a field start: flip (outside: opens, k - 1 escaped; inside: k - 1 escaped, then closes);
    k odd elsewhere: 0 (a plain character outside; inside, the close); k even: no change. So the
    state after a run is the parity of the flips since the last reset to 0.
    """
    before = np.empty_like(block)
    before[0], before[1:] = previous, block[:-1]
    after = np.empty_like(block)
    after[:-1], after[-1] = block[1:], 0
    is_quote = block == _QUOTE
    run_starts = np.flatnonzero(is_quote & (before != _QUOTE))
    run_ends = np.flatnonzero(is_quote & (after != _QUOTE))
    odd = (run_ends - run_starts) % 2 == 0  # a run is run_ends - run_starts + 1 quotes long
    opener = before[run_starts]
    field_start = (opener == _COMMA) | (opener == _NEWLINE) | (opener == _CR)
    flips = np.cumsum(odd & field_start)
    last_reset = np.maximum.accumulate(np.where(odd & ~field_start, np.arange(len(odd)), -1))
    state = np.where(last_reset >= 0, flips - flips[np.maximum(last_reset, 0)], flips + quoted) % 2
    state = np.concatenate([[int(quoted)], state])  # state[j]: quoted after the first j runs
    candidates = np.flatnonzero((block == _NEWLINE) | ((block == _CR) & (after != _NEWLINE)))
    inside = state[np.searchsorted(run_ends, candidates)]  # runs that end before each candidate
    return candidates[inside == 0], bool(state[-1])


def csv_record_chunks(stream: BinaryIO, name: str, limit: int | None = None) -> Iterator[bytearray]:
    """The rest of `stream` (at most `limit` bytes) in chunks of about CSV_BLOCK_BYTES that end where
    CSV records end, so pyarrow can parse each one on its own.

    Records end where pyarrow's parser ends them (`scan_csv` finds them the same way). Reading and
    parsing happen here, in the caller's thread: pyarrow's streaming reader reads ahead on a thread of
    its own, which has to take the GIL to read a Python stream such as stdin, and a process that fails
    while that thread is reading aborts at exit. A record may span chunks, up to MAX_RECORD_BYTES.
    """
    # The chunk being gathered: a bytearray grows in place, so a long record is not held twice. Each
    # starts with an empty line (pyarrow skips it): pyarrow drops a BOM at the start of what it parses,
    # and a cell may well start with U+FEFF.
    pending, quoted, previous, carry = bytearray(b"\n"), False, ord("\n"), b""
    while True:
        size = CSV_BLOCK_BYTES if limit is None else min(CSV_BLOCK_BYTES, limit)
        piece = stream.read(size) if size else b""
        if limit is not None:
            limit -= len(piece)
        data = carry + piece if carry else piece
        # Quotes or a CR at the end mean nothing until the next byte is known: keep them for later.
        keep = undecided_tail(data) if piece else 0
        data, carry = data[: len(data) - keep], data[len(data) - keep :]
        if data:
            if quoted or b'"' in data:
                ends, quoted = line_ends(np.frombuffer(data, dtype=np.uint8), quoted, previous)
                cut = int(ends[-1]) + 1 if len(ends) else 0
            else:  # no quotes: every line end ends a record (most files; much faster)
                cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
            previous = data[-1]
            pending += memoryview(data)[:cut]
            if cut:
                yield pending
                pending = bytearray(b"\n")
            pending += memoryview(data)[cut:]
        if len(pending) + len(carry) > MAX_RECORD_BYTES:
            raise InputFileError(
                f"cannot read {name} as CSV: a record is longer than {MAX_RECORD_BYTES >> 20} MiB",
                hint="a quote that opens a field and never closes makes the rest of the file one record",
            )
        if not piece:
            break
    if len(pending) > 1:
        yield pending
