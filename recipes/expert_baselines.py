"""Expert (non-LLM) baselines for the quality table: fit on `*_train`, report on `*_test`.

    python -m recipes.expert_baselines --data ../shared/data --out recipes/results/expert_baselines.json

Every model is scored with `tagcli.core.metrics.regression_metrics`, the same code that scores tag packs, on
every test row: molecules RDKit cannot parse are dropped from training only, and on test they get the
train-mean prediction and are counted in `unparsed`, so `n` always equals the test-split size.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rdkit import Chem, RDLogger
from rdkit.Chem import Descriptors
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from recipes.anchors import knn_predict, tanimoto_kernel
from tagcli.core.extra_features import composition_matrix, ecfp4_counts
from tagcli.core.metrics import regression_metrics

RDLogger.DisableLog("rdApp.*")  # unparsable SMILES are expected and counted, not worth a log line each

SEED = 0
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
DESCRIPTOR_CLIP = 1e6  # a few descriptors (e.g. Ipc) reach 1e30+; trees only need their order, float32 needs finite

# A model gets the (parsed) train rows, the (parsed) test rows and the target column; it returns test predictions.
ModelFn = Callable[[pd.DataFrame, pd.DataFrame, str], np.ndarray]


# --- features -------------------------------------------------------------------------------------
# Shared with the heads' extra features (tagcli.core.extra_features) and the anchors (recipes.anchors):
# Morgan radius-2 / 2048 counts and bits, Tanimoto kNN and amino-acid composition (the same numbers as
# before). The descriptors stay this file's own: raw values with `qed` left out, where the `rdkit2d`
# extra features are log-scaled; moving to them changes the QED forest's numbers slightly.


def morgan_bits(mols: Sequence[Chem.Mol]) -> np.ndarray:
    return (ecfp4_counts(mols) > 0).astype(np.float32)


def morgan_counts(mols: Sequence[Chem.Mol]) -> np.ndarray:
    return ecfp4_counts(mols)


# RDKit's descriptor list includes `qed` itself: leaving it in hands the QED task its own label (test MSE ~5e-8).
DESCRIPTORS = [(name, fn) for name, fn in Descriptors._descList if name != "qed"]


def rdkit_descriptors(mols: Sequence[Chem.Mol]) -> np.ndarray:
    """RDKit 2D descriptors (all but `qed`, _descList order); failures and non-finite values -> 0."""

    def value(fn: Callable[[Chem.Mol], float], mol: Chem.Mol) -> float:
        try:
            return float(fn(mol))
        except Exception:  # a few descriptors raise on odd molecules; CalcMolDescriptors also maps these to missing
            return np.nan

    x = np.array([[value(fn, m) for _, fn in DESCRIPTORS] for m in mols]).reshape(len(mols), len(DESCRIPTORS))
    return np.clip(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), -DESCRIPTOR_CLIP, DESCRIPTOR_CLIP)


def aa_composition(sequences: Sequence[str]) -> np.ndarray:
    """Fractions of the 20 standard amino acids (rows sum to 1 for standard-residue sequences)."""
    return composition_matrix([s.upper() for s in sequences])[:, : len(AMINO_ACIDS)]


# --- models ---------------------------------------------------------------------------------------


def mean_model(train: pd.DataFrame, test: pd.DataFrame, target: str) -> np.ndarray:
    return np.full(len(test), train[target].mean())


def knn5_tanimoto(train: pd.DataFrame, test: pd.DataFrame, target: str, k: int = 5) -> np.ndarray:
    """Mean target of the k train molecules most Tanimoto-similar on Morgan bits (r=2, 2048)."""
    train_bits = morgan_bits(train["mol"])
    y = train[target].to_numpy(float)
    preds = np.empty(len(test))
    for start in range(0, len(test), 1000):  # 1,000 test rows at a time: the similarities stay ~160 MB
        block = morgan_bits(test["mol"][start : start + 1000])
        preds[start : start + len(block)] = knn_predict(tanimoto_kernel(block, train_bits), y, k)
    return preds


def _forest() -> RandomForestRegressor:
    return RandomForestRegressor(n_estimators=200, random_state=SEED, n_jobs=2)


def rf_morgan_rdkit(train: pd.DataFrame, test: pd.DataFrame, target: str) -> np.ndarray:
    def features(df: pd.DataFrame) -> np.ndarray:
        return np.hstack([morgan_counts(df["mol"]), rdkit_descriptors(df["mol"]).astype(np.float32)])

    return _forest().fit(features(train), train[target].to_numpy(float)).predict(features(test))


def aa_composition_ridge(train: pd.DataFrame, test: pd.DataFrame, target: str) -> np.ndarray:
    # Features: the 20 amino-acid fractions, the 20 counts (fraction x length: molecular weight is
    # linear in them) and log(length), which helps the non-linear targets a little.
    def features(df: pd.DataFrame) -> np.ndarray:
        seqs = df["sequence"].tolist()
        fractions, lengths = aa_composition(seqs), np.array([max(len(s), 1) for s in seqs], dtype=float)
        return np.column_stack([fractions, fractions * lengths[:, None], np.log(lengths)])

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-4, 3, 15)))
    return model.fit(features(train), train[target].to_numpy(float)).predict(features(test))


def rf_morgan_aacomp(train: pd.DataFrame, test: pd.DataFrame, target: str) -> np.ndarray:
    def features(df: pd.DataFrame) -> np.ndarray:
        return np.hstack([morgan_bits(df["mol"]), aa_composition(df["sequence"].tolist()).astype(np.float32)])

    return _forest().fit(features(train), train[target].to_numpy(float)).predict(features(test))


# --- tasks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    split: str  # file stem: <split>_train.parquet / <split>_test.parquet
    targets: tuple[str, ...]
    models: dict[str, ModelFn]
    parse_smiles: bool  # adds a `mol` column; rows whose SMILES fail to parse are not fed to the models


TASKS: dict[str, Task] = {
    "qed": Task(
        "qed",
        ("qed",),
        {"mean": mean_model, "knn5-tanimoto": knn5_tanimoto, "rf-morgan-rdkit": rf_morgan_rdkit},
        parse_smiles=True,
    ),
    "protein-descriptors": Task(
        "protein",
        ("isoelectric_point", "gravy", "aromaticity", "instability_index", "molecular_weight_kda"),
        {"mean": mean_model, "aa-composition-ridge": aa_composition_ridge},
        parse_smiles=False,
    ),
    "binding-affinity": Task(
        "ba_kiba", ("label",), {"mean": mean_model, "rf-morgan-aacomp": rf_morgan_aacomp}, parse_smiles=True
    ),
}


def _load(path: Path, parse_smiles: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """The split and a mask of rows the models can featurise."""
    df = pd.read_parquet(path)
    if not parse_smiles:
        return df, np.ones(len(df), dtype=bool)
    df["mol"] = [Chem.MolFromSmiles(s) if isinstance(s, str) else None for s in df["smiles"]]
    return df, df["mol"].notna().to_numpy()


def run_task(data_dir: Path, name: str) -> list[dict]:
    task = TASKS[name]
    train, train_ok = _load(data_dir / f"{task.split}_train.parquet", task.parse_smiles)
    test, test_ok = _load(data_dir / f"{task.split}_test.parquet", task.parse_smiles)
    train = train[train_ok].reset_index(drop=True)
    records = []
    for target in task.targets:
        y_true = test[target].to_numpy(float)
        for model_name, model in task.models.items():
            start = time.perf_counter()
            preds = np.full(len(test), train[target].mean())  # fallback for unparsed test rows
            if test_ok.any():
                preds[test_ok] = model(train, test[test_ok].reset_index(drop=True), target)
            seconds = time.perf_counter() - start
            metrics = regression_metrics(y_true, preds)
            variance = float(np.var(y_true))
            records.append(
                {
                    "task": name,
                    "target": target,
                    "model": model_name,
                    **metrics,
                    "std_mse": metrics["mse"] / variance if variance > 0 else float("nan"),
                    "seconds": round(seconds, 3),
                    "unparsed": int((~test_ok).sum()),
                }
            )
    return records


def run_baselines(
    data_dir: Path, tasks: Sequence[str] = ("qed", "protein-descriptors", "binding-affinity")
) -> list[dict]:
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {sorted(TASKS)}")
    return [record for name in tasks for record in run_task(Path(data_dir), name)]


def format_table(records: Sequence[dict]) -> str:
    head = (
        f"{'task':<20} {'target':<21} {'model':<21} {'n':>5} {'mse':>10} {'mae':>8} {'pearson':>8} "
        f"{'spearman':>8} {'std_mse':>8} {'sec':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in records:
        lines.append(
            f"{r['task']:<20} {r['target']:<21} {r['model']:<21} {r['n']:>5} {r['mse']:>10.4g} "
            f"{r['mae']:>8.4g} {r['pearson']:>8.4f} {r['spearman']:>8.4f} {r['std_mse']:>8.4f} "
            f"{r['seconds']:>7.1f}" + (f"  unparsed={r['unparsed']}" if r["unparsed"] else "")
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/data"), help="folder with the *_train/*_test parquet splits"
    )
    parser.add_argument("--out", type=Path, default=Path("recipes/results/expert_baselines.json"))
    parser.add_argument("--task", action="append", choices=sorted(TASKS), help="repeatable; default: all tasks")
    args = parser.parse_args(argv)
    fresh = run_baselines(args.data, args.task or list(TASKS))
    records = list(fresh)
    if args.task and args.out.exists():  # keep the other tasks' results
        records += [r for r in json.loads(args.out.read_text()) if r["task"] not in args.task]
    records.sort(key=lambda r: (r["task"], r["target"], r["model"]))  # stable order for diffs of the JSON
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Pearson/Spearman of a constant prediction are undefined (NaN); write null, as strict JSON has no NaN.
    clean = [{k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in r.items()} for r in records]
    args.out.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    print(format_table(fresh))


if __name__ == "__main__":
    main()
