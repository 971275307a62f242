"""Extra input features: classic descriptors of a row's input, read by a head beside the tags' readout.

chemprop calls these "extra features": numbers a chemist trusts (RDKit's 2D descriptors, Morgan
fingerprint counts, amino-acid composition), concatenated with what the model learned. A head that
uses them records each set's name, input slot and exact column list in its spec, so a pack scores
the same columns wherever it runs; an RDKit without one of them is a pack error, not a shifted column.

    rdkit2d      RDKit's 2D descriptors (all of `Descriptors._descList` but Ipc, which overflows),
                 each as sign(x)·log(1 + |x|): counts and areas span orders of magnitude
    ecfp4        Morgan radius-2 fingerprint counts folded to 2048 columns, as log(1 + count)
    composition  a protein's amino-acid (20) and dipeptide (400) composition, as fractions

A set may read a standardized input (recorded as `standardize` in the spec; none when absent, as in
packs from before it): rdkit2d reads a salt's or mixture's largest fragment, since a counter-ion's
descriptors say nothing of the compound and many (e.g. [Na+]) have no Gasteiger charges, leaving its
BCUT2D descriptors NaN. A row whose features cannot be computed (a non-finite descriptor) gets a one-line
reason instead of numbers; it is never zero-filled.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import Descriptors, rdFingerprintGenerator
from rdkit.Chem.MolStandardize import rdMolStandardize

from tagcli.core.domains import AMINO_ACIDS
from tagcli.registry import Registry

FeatureRow = Callable[[str, Sequence[str]], np.ndarray]  # (clean input text, columns) → values; ValueError


@dataclass(frozen=True)
class ExtraFeatureSet:
    """A named set of columns computed from one input of a given kind."""

    name: str
    input_kind: str  # the domain input kind it reads: "smiles" or "protein"
    help: str  # one line for `--help` and the model card
    all_columns: Callable[[], tuple[str, ...]]  # every column this tagcli can compute, in order
    row: FeatureRow
    library: Callable[[], str]  # what computes it, with its version (recorded in the pack)
    standardize: str = "none"  # how a newly trained head's inputs are standardized first (STANDARDIZERS)

    def compute(self, texts: Sequence[str], columns: Sequence[str]) -> tuple[np.ndarray, list[str | None]]:
        """Values [n, len(columns)] (float32) and per row None or why it has none (its values are NaN)."""
        values = np.full((len(texts), len(columns)), np.nan, dtype=np.float32)
        problems: list[str | None] = [None] * len(texts)
        for i, text in enumerate(texts):
            try:
                row = self.row(text, columns)
            except ValueError as exc:
                problems[i] = f"{self.name}: {exc}"
                continue
            bad = [c for c, v in zip(columns, row) if not math.isfinite(float(v))]
            if bad:
                problems[i] = f"{self.name}: {bad[0]} is not a finite number for this input"
            else:
                values[i] = row
        return values, problems

    def missing(self, columns: Sequence[str]) -> list[str]:
        """Columns a pack asks for that this tagcli (and its libraries) cannot compute."""
        known = set(self.all_columns())
        return [c for c in columns if c not in known]


def _molecule(text: str) -> Chem.Mol:
    mol = Chem.MolFromSmiles(text)
    if mol is None:
        raise ValueError("RDKit cannot read this SMILES")
    return mol


@cache
def _fragment_chooser() -> rdMolStandardize.LargestFragmentChooser:
    return rdMolStandardize.LargestFragmentChooser(preferOrganic=True)


def largest_fragment(smiles: str) -> str:
    """The SMILES of a salt's or mixture's parent: its largest fragment, organic ones first (RDKit's
    LargestFragmentChooser). One fragment (no '.') is returned as written, so it is parsed as before and its
    features do not move; unreadable text too, for the feature row to say why."""
    mol = Chem.MolFromSmiles(smiles) if "." in smiles else None
    return smiles if mol is None else Chem.MolToSmiles(_fragment_chooser().choose(mol))


# What a feature set's input is turned into before its row is computed (the spec's `standardize`).
STANDARDIZERS: dict[str, Callable[[str], str]] = {"none": lambda text: text, "largest-fragment": largest_fragment}


# --------------------------------------------------------------------------- rdkit2d

# Ipc (the information content of the coefficients of the characteristic polynomial) reaches 1e300 and
# overflows for large molecules; AvgIpc carries the same information on a usable scale.
_SKIPPED_DESCRIPTORS = frozenset({"Ipc"})


@cache
def _descriptors() -> dict[str, Callable[[Chem.Mol], float]]:
    return {name: fn for name, fn in Descriptors._descList if name not in _SKIPPED_DESCRIPTORS}


def _rdkit2d_row(text: str, columns: Sequence[str]) -> np.ndarray:
    mol, functions = _molecule(text), _descriptors()
    values = np.array([float(functions[c](mol)) for c in columns], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.sign(values) * np.log1p(np.abs(values))


# --------------------------------------------------------------------------- ecfp4

ECFP_BITS = 2048


@cache
def _morgan() -> rdFingerprintGenerator.FingerprintGenerator64:
    return rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=ECFP_BITS)


def _ecfp_columns() -> tuple[str, ...]:
    return tuple(f"ecfp4_{k}" for k in range(ECFP_BITS))


def _ecfp_row(text: str, columns: Sequence[str]) -> np.ndarray:
    counts = np.log1p(_morgan().GetCountFingerprintAsNumPy(_molecule(text)).astype(np.float64))
    return counts[[int(c.removeprefix("ecfp4_")) for c in columns]]


def ecfp4_counts(molecules: Sequence[str | Chem.Mol]) -> np.ndarray:
    """Raw Morgan radius-2 counts [n, 2048] of valid SMILES or RDKit molecules (for fingerprint baselines;
    `> 0` gives the bit fingerprint: the bit and count generators fold the same hashes)."""
    mols = [_molecule(m) if isinstance(m, str) else m for m in molecules]
    counts = [_morgan().GetCountFingerprintAsNumPy(m) for m in mols]
    return np.stack(counts).astype(np.float32) if counts else np.zeros((0, ECFP_BITS), dtype=np.float32)


# --------------------------------------------------------------------------- composition

RESIDUES = tuple(sorted(AMINO_ACIDS))
DIPEPTIDES = tuple(a + b for a, b in itertools.product(RESIDUES, repeat=2))


def _composition_columns() -> tuple[str, ...]:
    return tuple(f"aa_{r}" for r in RESIDUES) + tuple(f"dp_{d}" for d in DIPEPTIDES)


# Byte -> residue index (0-19 in RESIDUES order); every other byte falls in bin 20, counted in the length only.
_RESIDUE_INDEX = np.full(256, len(RESIDUES), dtype=np.int64)
_RESIDUE_INDEX[np.frombuffer("".join(RESIDUES).encode(), dtype=np.uint8)] = np.arange(len(RESIDUES))


def composition_matrix(sequences: Sequence[str]) -> np.ndarray:
    """Amino-acid (20) and dipeptide (400) fractions [n, 420] (float64), in the columns' order: residue
    counts over the length, pair counts over the number of pairs (rare residues count in both only)."""
    out = np.zeros((len(sequences), len(RESIDUES) + len(DIPEPTIDES)))
    bins = len(RESIDUES) + 1
    for i, sequence in enumerate(sequences):
        index = _RESIDUE_INDEX[np.frombuffer(sequence.encode("latin-1", "replace"), dtype=np.uint8)]
        single = np.bincount(index, minlength=bins)[: len(RESIDUES)]
        pairs = np.bincount(index[:-1] * bins + index[1:], minlength=bins * bins).reshape(bins, bins)
        out[i, : len(RESIDUES)] = single / max(len(sequence), 1)
        out[i, len(RESIDUES) :] = pairs[: len(RESIDUES), : len(RESIDUES)].ravel() / max(len(sequence) - 1, 1)
    return out


def composition(sequence: str) -> dict[str, float]:
    """Amino-acid and dipeptide fractions of a sequence, keyed like the columns (rare residues count
    in the length only)."""
    return dict(zip(_composition_columns(), composition_matrix([sequence])[0].tolist()))


def _composition_row(text: str, columns: Sequence[str]) -> np.ndarray:
    if not text:
        raise ValueError("an empty sequence has no composition")
    values = composition(text)
    return np.array([values[c] for c in columns], dtype=np.float64)


EXTRA_FEATURES: Registry[ExtraFeatureSet] = Registry("extra-feature set")
for _set in (
    ExtraFeatureSet(
        "rdkit2d",
        "smiles",
        f"RDKit's {len(_descriptors())} 2D descriptors (signed log scale)",
        lambda: tuple(_descriptors()),
        _rdkit2d_row,
        lambda: f"rdkit {rdBase.rdkitVersion}",
        standardize="largest-fragment",
    ),
    ExtraFeatureSet(
        "ecfp4",
        "smiles",
        f"Morgan radius-2 fingerprint counts folded to {ECFP_BITS} (log scale)",
        _ecfp_columns,
        _ecfp_row,
        lambda: f"rdkit {rdBase.rdkitVersion}",
    ),
    ExtraFeatureSet(
        "composition",
        "protein",
        "amino-acid (20) and dipeptide (400) composition",
        _composition_columns,
        _composition_row,
        lambda: "tagcli",
    ),
):
    EXTRA_FEATURES.register(_set.name)(_set)


@dataclass(frozen=True)
class ExtraFeatures:
    """One feature set bound to an input slot, with the exact columns a head reads (recorded in its spec)."""

    name: str
    slot: str
    columns: tuple[str, ...]
    library: str = ""  # what computed them when the head was trained, e.g. "rdkit 2026.09.1"
    standardize: str = "none"  # what the input becomes first (STANDARDIZERS); "none" in older packs

    @classmethod
    def bind(cls, name: str, slot: str) -> ExtraFeatures:
        """Every column this tagcli computes for set `name`, read from input slot `slot`."""
        features = EXTRA_FEATURES[name]
        return cls(name, slot, features.all_columns(), features.library(), features.standardize)

    @property
    def width(self) -> int:
        return len(self.columns)

    def compute(self, texts: Mapping[str, Sequence[str]]) -> tuple[np.ndarray, list[str | None]]:
        standardized = [STANDARDIZERS[self.standardize](text) for text in texts[self.slot]]
        return EXTRA_FEATURES[self.name].compute(standardized, self.columns)

    def describe(self) -> str:
        """For model cards: "RDKit's 216 2D descriptors (signed log scale) of smiles, largest fragment
        (rdkit 2026.09.1)"."""
        help_text = EXTRA_FEATURES[self.name].help if self.name in EXTRA_FEATURES else self.name
        part = "" if self.standardize == "none" else f", {self.standardize.replace('-', ' ')}"
        return f"{help_text} of {self.slot}{part}" + (f" ({self.library})" if self.library else "")

    def to_spec(self) -> dict[str, Any]:
        spec = {"name": self.name, "slot": self.slot, "columns": list(self.columns), "library": self.library}
        return spec | ({"standardize": self.standardize} if self.standardize != "none" else {})

    @classmethod
    def from_spec(cls, spec: Any) -> ExtraFeatures:
        """ValueError (one line) for a spec this tagcli cannot compute: an unknown set or column."""
        if not isinstance(spec, Mapping) or not all(isinstance(spec.get(k), str) for k in ("name", "slot")):
            raise ValueError("an extra-feature entry needs 'name' and 'slot'")
        columns = spec.get("columns")
        if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
            raise ValueError(f"extra features {spec['name']!r} need a non-empty 'columns' list")
        if spec["name"] not in EXTRA_FEATURES:
            raise ValueError(f"extra features {spec['name']!r} are unknown here (known: {', '.join(EXTRA_FEATURES)})")
        missing = EXTRA_FEATURES[spec["name"]].missing(columns)
        if missing:
            library = EXTRA_FEATURES[spec["name"]].library()
            raise ValueError(
                f"extra features {spec['name']!r} need {len(missing)} column(s) {library} cannot compute "
                f"({', '.join(missing[:3])}): the pack was trained with {spec.get('library') or 'another version'}"
            )
        standardize = spec.get("standardize", "none")
        if not isinstance(standardize, str) or standardize not in STANDARDIZERS:
            raise ValueError(
                f"extra features {spec['name']!r} read input standardized as {standardize!r}, "
                f"which this tagcli does not know (known: {', '.join(STANDARDIZERS)})"
            )
        return cls(spec["name"], spec["slot"], tuple(columns), str(spec.get("library", "")), standardize)


def input_features(
    extras: Sequence[ExtraFeatures], texts: Mapping[str, Sequence[str]]
) -> tuple[torch.Tensor | None, list[str | None]]:
    """The extra features [n, width] of rows (float32; None without any) and per row why it has none."""
    n = len(next(iter(texts.values()), []))
    problems: list[str | None] = [None] * n
    if not extras:
        return None, problems
    parts = []
    for extra in extras:
        values, found = extra.compute(texts)
        parts.append(values)
        problems = [p if p is not None else f for p, f in zip(problems, found)]
    return torch.from_numpy(np.concatenate(parts, axis=1)), problems
