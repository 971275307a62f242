"""Input kinds: how a domain's raw cell is checked and cleaned before it reaches the model.

A domain pack names its input kind (`"smiles"`, `"protein"` or `"text"`) in its manifest. Each kind
turns a cell into either clean text for the prompt or a one-line reason the row is invalid;
bad rows get a status, never a crash and never a silent zero.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from rdkit import Chem, RDLogger, rdBase

# RDKit prints its own parse errors to stderr; we report them per row instead.
RDLogger.DisableLog("rdApp.*")

# Longer cells are rejected before tokenizing, so a stray 100 MB cell cannot stall a batch.
MAX_CHARS_PER_TOKEN = 16

Cleaned = tuple[str | None, str | None]  # (clean text, error) — exactly one is None


# SMILES is printable ASCII without spaces. RDKit would read "CCO name" as CCO (the rest is a name),
# skip a leading non-ASCII character ("éCCO" is CCO) and stop at a NUL: reject those cells instead.
_NOT_SMILES = re.compile(r"[^\x21-\x7e]")


def clean_smiles(value: str, canonicalize: bool) -> Cleaned:
    stray = _NOT_SMILES.search(value)
    if stray:
        where = f"{_quote(stray[0])} at position {stray.start() + 1}"
        return None, f"invalid SMILES {_preview(value)}: {where} cannot appear in SMILES"
    mol = Chem.MolFromSmiles(value, sanitize=False)
    if mol is None:
        return None, f"invalid SMILES {_preview(value)}: {smiles_parse_error(value)}"
    try:
        Chem.SanitizeMol(mol)
    except Exception as exc:  # RDKit raises several unrelated types (AtomValenceException, KekulizeException, ...)
        return None, f"invalid SMILES {_preview(value)}: {str(exc).strip().splitlines()[0]}"
    return (Chem.MolToSmiles(mol) if canonicalize else value), None


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _rdkit_messages() -> Iterator[list[str]]:
    """Route RDKit's log to a list for the duration (RDKit only explains parse errors in its log)."""
    handler, logger = _Collect(), logging.getLogger("rdkit")
    saved = logger.handlers[:], logger.propagate
    logger.handlers[:] = [handler]
    logger.propagate = False
    rdBase.LogToPythonLogger()
    RDLogger.EnableLog("rdApp.error")
    try:
        yield handler.messages
    finally:
        rdBase.LogToCppStreams()
        RDLogger.DisableLog("rdApp.*")
        logger.handlers[:], logger.propagate = saved


def smiles_parse_error(value: str) -> str:
    """RDKit's reason a SMILES does not parse, e.g. 'unclosed ring' or 'syntax error near position 4'."""
    with _rdkit_messages() as messages:
        Chem.MolFromSmiles(value, sanitize=False)
    reasons = [m.split("SMILES Parse Error:", 1)[1].strip() for m in messages if "SMILES Parse Error:" in m]
    if not reasons:
        return "RDKit cannot parse it"
    reason = re.sub(r"( for input:| while parsing:).*$", "", reasons[0])
    position = next((re.search(r"position (\d+)", r) for r in reasons if "position" in r), None)
    return f"{reason} near position {position.group(1)}" if position else reason


AMINO_ACIDS = frozenset("ACDEFGHIKLMNPQRSTVWY")
# IUPAC codes for rare or ambiguous residues: accepted, since real sequences contain them.
EXTRA_RESIDUES = frozenset("BJOUXZ")


# Checked before upper-casing: str.upper() maps some non-ASCII letters to ASCII ones ("ß" to "SS").
_RESIDUES = "".join(sorted(AMINO_ACIDS | EXTRA_RESIDUES))
RESIDUE_LETTERS = frozenset(_RESIDUES + _RESIDUES.lower())


def clean_protein(value: str, canonicalize: bool) -> Cleaned:
    sequence = "".join(value.split())  # whitespace is layout (FASTA lines), not residues
    bad = sorted(set(sequence) - RESIDUE_LETTERS)
    if bad:
        shown = _quote("".join(bad[:10])) + ("..." if bad[10:] else "")
        return None, f"not a protein sequence: {shown} are not amino-acid letters"
    return sequence.upper(), None


def clean_text(value: str, canonicalize: bool) -> Cleaned:
    return value, None


@dataclass(frozen=True)
class InputKind:
    name: str
    clean_value: Callable[[str, bool], Cleaned]
    column_names: tuple[str, ...]  # auto-detected input columns, in order of preference (case-insensitive)


INPUT_KINDS: dict[str, InputKind] = {
    kind.name: kind
    for kind in (
        InputKind("smiles", clean_smiles, ("smiles", "canonical_smiles", "isomeric_smiles", "ligand_smiles", "mol")),
        InputKind(
            "protein",
            clean_protein,
            ("sequence", "protein", "protein_sequence", "target_sequence", "seq", "aa_sequence"),
        ),
        InputKind("text", clean_text, ("text",)),
    )
}


@dataclass(frozen=True)
class DomainInput:
    """How one domain's cells are cleaned: its kind, whether to canonicalize, and a length limit."""

    kind: str
    max_tokens: int
    canonicalize: bool = False

    def clean(self, values: Sequence[object]) -> list[Cleaned]:
        """Clean a column of cells; None, NaN and blank cells are invalid rows."""
        kind = INPUT_KINDS[self.kind]
        limit = self.max_tokens * MAX_CHARS_PER_TOKEN
        out: list[Cleaned] = []
        for value in values:
            if isinstance(value, bytes):  # a binary column: older Parquet writers store text so
                if len(value) > 4 * limit:  # (UTF-8 takes up to 4 bytes a character)
                    out.append((None, f"input too long: {len(value)} bytes (limit {self.max_tokens} tokens)"))
                    continue
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    out.append((None, f"expected text, got bytes that are not UTF-8: {_cut(repr(value), 40)}"))
                    continue
            if value is None or (isinstance(value, float) and value != value):
                out.append((None, "empty cell"))
            elif not isinstance(value, str):
                out.append((None, f"expected text, got {type(value).__name__} {_cut(repr(value), 40)}"))
            elif not value.strip():
                out.append((None, "empty cell"))
            elif len(value) > limit:
                out.append((None, f"input too long: {len(value)} characters (limit {self.max_tokens} tokens)"))
            else:
                out.append(kind.clean_value(value.strip(), self.canonicalize))
        return out


def _preview(value: str, width: int = 40) -> str:
    return _quote(value if len(value) <= width else value[: width - 3] + "...")


def _quote(text: str) -> str:
    """`text` quoted for a message: repr() escapes controls and invisible marks; this escapes combining
    marks too, which would otherwise land on the quote."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c).startswith("M") else c for c in repr(text))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
