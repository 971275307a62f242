"""Data for the pair pack (Tanimoto similarity of two molecules) and the text pack (molecular formula).

    python -m recipes.pair_data --data ../shared/data --out data/pairs

Built with RDKit from the SMILES of `qed_train` / `qed_val` / `qed_test` (seeded, deterministic) and written
as Parquet to --out (not committed; this recipe rebuilds them):

    tanimoto_{train,val,test}.parquet  id, smiles_1, smiles_2, tanimoto, pair   (8000 / 1000 / 1000 pairs)
    formula_{train,val,test}.parquet   id, smiles, formula                      (4000 / 500 / 1000 rows)
    pair_baseline.json                 a fingerprint-free baseline of the pair task (test Pearson, ...)

`tanimoto` is the Tanimoto similarity of the two molecules' Morgan fingerprints (radius 2, 2048 bits). Half the
pairs of a split are *neighbours* (a random molecule and one of its 5 nearest molecules by fingerprint in a
random pool of 2000 of the split's molecules: the same pool size in every split, so train, validation and test
neighbours are alike), half *random* (two random molecules), so both similar and dissimilar pairs occur; `pair`
says which.
Train pairs use only qed_train molecules, validation pairs qed_val's and test pairs qed_test's: no molecule
(compared canonically) is in two splits. `formula` is `rdMolDescriptors.CalcMolFormula` of the molecule.

The baseline sees no fingerprint: per molecule it counts SMILES characters (atoms by element and aromaticity,
bonds, branches, ring closures, charges, length); a pair is the absolute difference and the sum of its two
molecules' counts (the same whichever order), fitted by gradient boosting on the train pairs.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem import rdFingerprintGenerator, rdMolDescriptors

RDLogger.DisableLog("rdApp.*")

SEED = 0
SPLITS = ("train", "val", "test")
PAIR_SIZES = {"train": 8000, "val": 1000, "test": 1000}
FORMULA_SIZES = {"train": 4000, "val": 500, "test": 1000}
NEIGHBOURS = 5  # a neighbour pair takes one of a molecule's 5 nearest molecules in a random pool
POOL = 2000  # molecules searched for neighbours: the same in every split, so similar pairs are alike across splits
NEIGHBOUR_SHARE = 0.5


def load_splits(data: Path) -> dict[str, list[str]]:
    """Valid, unique SMILES of qed_{train,val,test}; a molecule (canonically) in an earlier split is dropped."""
    seen: set[str] = set()
    splits = {}
    for split in SPLITS:
        kept = []
        for smiles in pd.read_parquet(data / f"qed_{split}.parquet", columns=["smiles"])["smiles"]:
            mol = Chem.MolFromSmiles(smiles)
            canonical = Chem.MolToSmiles(mol) if mol is not None else None
            if canonical is not None and canonical not in seen:
                seen.add(canonical)
                kept.append(smiles)
        splits[split] = kept
    return splits


def fingerprints(smiles: Sequence[str]) -> list:
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    return [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in smiles]


def split_pairs(molecules: Sequence[str], size: int, rng: np.random.Generator, split: str) -> pd.DataFrame:
    """`size` distinct unordered pairs of distinct molecules: neighbours and random pairs, shuffled."""
    fps = fingerprints(molecules)
    n = len(molecules)
    if n < 2 or size > n * (n - 1) // 2:
        raise ValueError(f"{split}: {n} molecules cannot make {size} distinct pairs")
    pairs: dict[tuple[int, int], str] = {}
    want_neighbours = int(round(size * NEIGHBOUR_SHARE))
    attempts = 0
    while len(pairs) < size:
        attempts += 1
        if attempts > 50 * size:
            raise ValueError(f"{split}: could not draw {size} distinct pairs from {n} molecules")
        i = int(rng.integers(n))
        neighbour = sum(kind == "neighbour" for kind in pairs.values()) < want_neighbours
        if neighbour:
            pool = [k for k in rng.choice(n, min(POOL + 1, n), replace=False).tolist() if k != i][:POOL]
            similarity = np.array(DataStructs.BulkTanimotoSimilarity(fps[i], [fps[k] for k in pool]))
            nearest = np.argsort(-similarity, kind="stable")[:NEIGHBOURS]
            j = pool[int(nearest[rng.integers(len(nearest))])]
        else:
            j = int(rng.integers(n))
        key = (min(i, j), max(i, j))
        if i != j and key not in pairs:
            pairs[key] = "neighbour" if neighbour else "random"
    rows = []
    for (i, j), kind in pairs.items():
        first, second = (i, j) if rng.random() < 0.5 else (j, i)  # which molecule comes first is random
        similarity = DataStructs.TanimotoSimilarity(fps[first], fps[second])
        rows.append((molecules[first], molecules[second], similarity, kind))
    order = rng.permutation(len(rows))
    table = pd.DataFrame([rows[k] for k in order], columns=["smiles_1", "smiles_2", "tanimoto", "pair"])
    table.insert(0, "id", [f"{split}-{k}" for k in range(len(table))])
    return table


def build_pairs(
    splits: Mapping[str, Sequence[str]], sizes: Mapping[str, int], seed: int = SEED
) -> dict[str, pd.DataFrame]:
    """Pair tables per split, each from that split's molecules only (the splits must share none)."""
    return {
        split: split_pairs(list(splits[split]), sizes[split], np.random.default_rng([seed, k]), split)
        for k, split in enumerate(SPLITS)
        if sizes.get(split)
    }


def build_formula(
    splits: Mapping[str, Sequence[str]], sizes: Mapping[str, int], seed: int = SEED
) -> dict[str, pd.DataFrame]:
    """(smiles, formula) tables per split: a seeded sample of the split's molecules."""
    tables = {}
    for k, split in enumerate(SPLITS):
        molecules = list(splits[split])
        if not sizes.get(split):
            continue
        rng = np.random.default_rng([seed, 10 + k])
        chosen = [molecules[i] for i in sorted(rng.choice(len(molecules), min(sizes[split], len(molecules)), False))]
        formulas = [rdMolDescriptors.CalcMolFormula(Chem.MolFromSmiles(s)) for s in chosen]
        tables[split] = pd.DataFrame(
            {"id": [f"{split}-{i}" for i in range(len(chosen))], "smiles": chosen, "formula": formulas}
        )
    return tables


# --- the fingerprint-free baseline ---------------------------------------------------------------

SMILES_TOKENS = re.compile(r"Cl|Br|\[[^\]]*\]|%\d\d|[A-Za-z]|\d|[=#$/\\().+\-@]")
COUNTED = ["C", "c", "N", "n", "O", "o", "S", "s", "F", "Cl", "Br", "I", "P", "[", "=", "#", "(", "ring", "+", "-", "@"]


def string_features(smiles: str) -> list[float]:
    """Counts of SMILES tokens (no fingerprint, no parsing): atoms, bonds, branches, rings, charges, length."""
    tokens = SMILES_TOKENS.findall(smiles)
    counts = dict.fromkeys(COUNTED, 0.0)
    for token in tokens:
        if token.startswith("["):
            counts["["] += 1
            element = re.match(r"\[\d*([A-Z][a-z]?|[a-z])", token)
            token = element.group(1) if element else token
        if token.isdigit() or token.startswith("%"):
            counts["ring"] += 1
        elif token in counts:
            counts[token] += 1
    return [*counts.values(), float(len(tokens)), float(len(smiles))]


def pair_features(table: pd.DataFrame) -> np.ndarray:
    first = np.array([string_features(s) for s in table["smiles_1"]])
    second = np.array([string_features(s) for s in table["smiles_2"]])
    return np.hstack([np.abs(first - second), first + second])


def pair_baseline(pairs: Mapping[str, pd.DataFrame], seed: int = SEED) -> dict[str, float | int | str]:
    """Gradient boosting on order-free string-count features of the two molecules; metrics on the test pairs."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from tagcli.core.metrics import regression_metrics

    model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=seed)
    model.fit(pair_features(pairs["train"]), pairs["train"]["tanimoto"].to_numpy())
    predicted = model.predict(pair_features(pairs["test"]))
    metrics = regression_metrics(pairs["test"]["tanimoto"].to_numpy(), predicted)
    return {
        "model": "gradient boosting on |counts_1 - counts_2| and counts_1 + counts_2 of SMILES tokens",
        **{k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in metrics.items()},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="folder with qed_{train,val,test}.parquet")
    parser.add_argument("--out", required=True, help="folder to write the Parquet files into")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--pairs", default="8000,1000,1000", help="train,val,test pairs")
    parser.add_argument("--formula", default="4000,500,1000", help="train,val,test formula rows")
    parser.add_argument("--no-baseline", action="store_true", help="skip the fingerprint-free baseline")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    splits = load_splits(Path(args.data))
    pair_sizes = dict(zip(SPLITS, map(int, args.pairs.split(","))))
    formula_sizes = dict(zip(SPLITS, map(int, args.formula.split(","))))
    pairs = build_pairs(splits, pair_sizes, args.seed)
    for name, tables in (("tanimoto", pairs), ("formula", build_formula(splits, formula_sizes, args.seed))):
        for split, table in tables.items():
            table.to_parquet(out / f"{name}_{split}.parquet", index=False)
            print(f"{out / f'{name}_{split}.parquet'}: {len(table)} rows")
    if not args.no_baseline:
        baseline = pair_baseline(pairs, args.seed)
        (out / "pair_baseline.json").write_text(json.dumps(baseline, indent=2) + "\n")
        print(
            f"fingerprint-free baseline on tanimoto_test: Pearson {baseline['pearson']:.3f}, MSE {baseline['mse']:.4f}"
        )
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
