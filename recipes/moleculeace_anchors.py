"""MoleculeACE anchors: classic models on the 30 published activity-cliff splits.

    python -m recipes.moleculeace_anchors --data ../shared/data    # recipes/results/moleculeace_anchors.json
    python -m recipes.moleculeace_anchors --chemprop               # also chemprop v2 (the `anchors` extra; slow)

Each set (`moleculeace/CHEMBL*.parquet`: `smiles`, `y` = −log10 of the nM value, `cliff_mol`, `split`) is
used as published: models fit on `train` and are scored on `test`. Hyperparameters come from a validation
split carved out of each set's train rows (a seeded random VAL_FRACTION, numpy default_rng(SEED)); the
chosen value is then refitted on all train rows. Reported per set and model: `rmse` on the test rows,
`rmse_cliff` on the test rows with cliff_mol == 1, `n_test`, `n_cliff`; per model the means over the sets.

    svm-tanimoto-ecfp4      SVR on a precomputed Tanimoto kernel of ECFP4 bits, C from anchors.C_GRID on validation
    svm-tanimoto-ecfp4-c1   the same with C = 1, no choice (the reference point measured earlier)
    rf-ecfp4                RandomForest (anchors.TREES trees, scikit-learn defaults) on ECFP4 log counts
    knn-tanimoto-ecfp4      mean y of the k most Tanimoto-similar train molecules, k from K_GRID on validation
    chemprop                chemprop v2 trained on the carved train part, epoch chosen on the carved validation
                            (not refitted on all train rows); optional, see --chemprop

Rows RDKit cannot featurise: train rows are left out, test rows get the train mean (counted).
`moleculeace_anchors(data_dir, sets=None)` returns the same dictionary for other recipes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.svm import SVR

from recipes.anchors import (
    C_GRID,
    RESULTS,
    SEED,
    TREES,
    featurize,
    jsonable,
    knn_predict,
    load_average,
    machine,
    tanimoto_kernel,
)

VAL_FRACTION = 0.2
K_GRID = (1, 3, 5, 7, 9, 11)
MODELS = ("svm-tanimoto-ecfp4", "svm-tanimoto-ecfp4-c1", "rf-ecfp4", "knn-tanimoto-ecfp4")
OPTIONAL = ("chemprop",)
CHEMPROP_EPOCHS = 50
VALIDATION = f"seeded random {VAL_FRACTION:.0%} of each set's train rows (numpy default_rng({SEED}))"


def rmse(y: np.ndarray, predicted: np.ndarray) -> float:
    y, predicted = np.asarray(y, float), np.asarray(predicted, float)
    return math.sqrt(float(np.mean((predicted - y) ** 2))) if len(y) else math.nan


def cliff_rmse(y: np.ndarray, predicted: np.ndarray, cliff: np.ndarray) -> float:
    """RMSE over the rows that are activity-cliff compounds (cliff == 1); NaN when there are none."""
    mask = np.asarray(cliff) == 1
    return rmse(np.asarray(y)[mask], np.asarray(predicted)[mask])


def carve_validation(n: int, seed: int = SEED, fraction: float = VAL_FRACTION) -> np.ndarray:
    """A mask of `n` train rows: True for the seeded random validation part (at least one row)."""
    chosen = np.random.default_rng(seed).permutation(n)[: max(1, round(n * fraction))]
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return mask


def svr_on_kernel(k_train: np.ndarray, y: np.ndarray, c: float) -> SVR:
    return SVR(kernel="precomputed", C=c).fit(k_train, y)


def choose(scores: dict[Any, float]) -> Any:
    """The value with the lowest validation RMSE (ties: the first, i.e. the simplest, in grid order)."""
    return min(scores, key=lambda v: scores[v])


def run_set(path: Path, models: Sequence[str]) -> dict[str, Any]:
    """Every model on one set: per model rmse, rmse_cliff, n_test, n_cliff, seconds and what it chose."""
    df = pd.read_parquet(path)
    train, test = df[df["split"] == "train"].reset_index(drop=True), df[df["split"] == "test"].reset_index(drop=True)
    start = time.perf_counter()
    (x_tr, ok_tr), (x_te, ok_te) = featurize("ecfp4", train["smiles"]), featurize("ecfp4", test["smiles"])
    feature_seconds = time.perf_counter() - start
    y_tr, y_te, cliff = train["y"].to_numpy(float)[ok_tr], test["y"].to_numpy(float), test["cliff_mol"].to_numpy()
    x_tr, x_ok = x_tr[ok_tr], x_te[ok_te]
    val = carve_validation(len(y_tr))
    kernels: dict[str, np.ndarray] = {}

    def kernel(name: str) -> np.ndarray:  # Tanimoto kernels, computed once per set
        if name not in kernels:
            kernels[name] = tanimoto_kernel(x_tr, x_tr) if name == "train" else tanimoto_kernel(x_ok, x_tr)
        return kernels[name]

    def fit_predict(model: str) -> tuple[np.ndarray, dict[str, Any]]:
        fit_rows = ~val
        if model.startswith("svm-tanimoto-ecfp4"):
            k = kernel("train")
            if model.endswith("-c1"):
                c, chosen = 1.0, {"C": 1.0}
            else:
                scores = {
                    c: rmse(
                        y_tr[val],
                        svr_on_kernel(k[np.ix_(fit_rows, fit_rows)], y_tr[fit_rows], c).predict(
                            k[np.ix_(val, fit_rows)]
                        ),
                    )
                    for c in C_GRID
                }
                c = choose(scores)
                chosen = {"C": c, "validation_rmse": {str(v): round(s, 4) for v, s in scores.items()}}
            return svr_on_kernel(k, y_tr, c).predict(kernel("test")), chosen
        if model == "knn-tanimoto-ecfp4":
            k = kernel("train")
            scores = {n: rmse(y_tr[val], knn_predict(k[np.ix_(val, fit_rows)], y_tr[fit_rows], n)) for n in K_GRID}
            n = choose(scores)
            chosen = {"k": n, "validation_rmse": {str(v): round(s, 4) for v, s in scores.items()}}
            return knn_predict(kernel("test"), y_tr, n), chosen
        if model == "rf-ecfp4":
            forest = RandomForestRegressor(n_estimators=TREES, random_state=SEED, n_jobs=2).fit(x_tr, y_tr)
            return forest.predict(x_ok), {"trees": TREES}
        if model == "chemprop":
            from recipes.anchors_chemprop import train_chemprop

            smiles = train["smiles"][ok_tr].tolist()
            pick = lambda mask: [s for s, keep in zip(smiles, mask) if keep]  # noqa: E731
            (predicted,), info = train_chemprop(
                (pick(fit_rows), y_tr[fit_rows]),
                (pick(val), y_tr[val]),
                [test["smiles"][ok_te].tolist()],
                "regression",
                max_epochs=CHEMPROP_EPOCHS,
            )
            return predicted, info
        raise ValueError(f"unknown MoleculeACE model {model!r}")

    results: dict[str, Any] = {}
    for model in models:
        start = time.perf_counter()
        predicted = np.full(len(test), float(np.mean(y_tr)))
        predicted[ok_te], chosen = fit_predict(model)
        results[model] = {
            "rmse": rmse(y_te, predicted),
            "rmse_cliff": cliff_rmse(y_te, predicted, cliff),
            "n_test": len(test),
            "n_cliff": int((cliff == 1).sum()),
            "seconds": round(time.perf_counter() - start, 2),
            "hyperparameters": chosen,
            "feature_problems": {"train": int((~ok_tr).sum()), "test": int((~ok_te).sum())},
        }
    return {
        "n_train": len(train),
        "n_val_carved": int(val.sum()),
        "feature_seconds": round(feature_seconds, 2),
        "models": results,
        "seconds": round(feature_seconds + sum(r["seconds"] for r in results.values()), 2),
    }


def means(sets: dict[str, Any]) -> dict[str, Any]:
    """Per model: mean rmse and rmse_cliff over the sets it ran on, and how many."""
    out: dict[str, Any] = {}
    for result in sets.values():
        for model, r in result["models"].items():
            out.setdefault(model, {"rmse": [], "rmse_cliff": []})
            out[model]["rmse"].append(r["rmse"])
            out[model]["rmse_cliff"].append(r["rmse_cliff"])
    return {
        model: {
            "mean_rmse": float(np.mean(v["rmse"])),
            "mean_rmse_cliff": float(np.nanmean(v["rmse_cliff"])),
            "sets": len(v["rmse"]),
        }
        for model, v in out.items()
    }


def set_paths(data_dir: Path, sets: Sequence[str] | None = None) -> list[Path]:
    paths = sorted((Path(data_dir) / "moleculeace").glob("CHEMBL*.parquet"))
    if sets is not None:
        unknown = sorted(set(sets) - {p.stem for p in paths})
        if unknown:
            raise ValueError(f"unknown MoleculeACE set(s) {unknown}")
        paths = [p for p in paths if p.stem in sets]
    if not paths:
        raise FileNotFoundError(f"no MoleculeACE sets (moleculeace/CHEMBL*.parquet) under {data_dir}")
    return paths


def moleculeace_anchors(
    data_dir: Path,
    sets: Sequence[str] | None = None,
    models: Sequence[str] = MODELS,
    after_set: Callable[[dict[str, Any]], None] | None = None,
) -> dict:
    """The anchors on the chosen sets (default: all 30), as written to moleculeace_anchors.json;
    `after_set` gets the result so far after every set (main writes it, so a stopped run keeps its sets)."""
    start, results, load_at_start = time.perf_counter(), {}, load_average()

    def so_far() -> dict[str, Any]:
        return {
            "machine": machine(),
            "seed": SEED,
            "validation": f"{VALIDATION}; chosen values refitted on all train rows (chemprop: not refitted)",
            "sets": results,
            "means": means(results),
            "seconds": round(time.perf_counter() - start, 1),
            "load_average": {"start": load_at_start, "end": load_average()},
        }

    for path in set_paths(data_dir, sets):
        results[path.stem] = run_set(path, models)
        line = ", ".join(f"{m} {r['rmse']:.3f}/{r['rmse_cliff']:.3f}" for m, r in results[path.stem]["models"].items())
        print(f"{path.stem}: {line} (rmse/cliff)", flush=True)
        if after_set is not None:
            after_set(so_far())
    return so_far()


def merge(previous: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """Fresh per-set model results over the previous file's; the means recomputed over the union, and
    `seconds` the sum of the sets' recorded times (features and every model run on them)."""
    sets = {name: dict(entry) for name, entry in previous.get("sets", {}).items()}
    for name, entry in fresh["sets"].items():
        kept = sets.get(name, {}).get("models", {})
        models = {**kept, **entry["models"]}
        seconds = entry.get("feature_seconds", 0) + sum(r["seconds"] for r in models.values())
        sets[name] = {**entry, "models": models, "seconds": round(seconds, 2)}
    sets = dict(sorted(sets.items()))
    total = round(sum(entry.get("seconds", 0) for entry in sets.values()), 1)
    return {**fresh, "sets": sets, "means": means(sets), "seconds": total}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding moleculeace/")
    parser.add_argument("--out", type=Path, default=RESULTS / "moleculeace_anchors.json")
    parser.add_argument("--set", action="append", help="a set's file stem, e.g. CHEMBL204_Ki; default: all")
    parser.add_argument(
        "--model", action="append", choices=MODELS + OPTIONAL, help="repeatable; default: all but chemprop"
    )
    parser.add_argument("--chemprop", action="store_true", help="only chemprop, merged into the existing file")
    args = parser.parse_args(argv)
    models = list(OPTIONAL) if args.chemprop else (args.model or list(MODELS))
    partial = bool(args.set or args.model or args.chemprop)
    previous = json.loads(args.out.read_text()) if partial and args.out.is_file() else {}

    def write(result: dict[str, Any]) -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(jsonable(merge(previous, result)), indent=2) + "\n")

    fresh = merge(previous, moleculeace_anchors(args.data, args.set, models, after_set=write))
    write(fresh)
    for model, m in fresh["means"].items():
        print(f"{model}: mean rmse {m['mean_rmse']:.3f}, mean cliff rmse {m['mean_rmse_cliff']:.3f} ({m['sets']} sets)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
