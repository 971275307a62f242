"""Can a prediction be trusted? Per-row uncertainty and applicability domain, measured on the public splits.

    .venv/bin/python -m recipes.trust_report --data ../shared/data                       # every regression pack
    .venv/bin/python -m recipes.trust_report --data ../shared/data --only qed --max-rows 200

For each regression pack (`qed`, `protein-descriptors`, and any other regression pack whose test data is
here: `binding-affinity`, `tanimoto`), the rows of each set below are scored with the library API
(`TagScorer`, default batch size and dtype) and compared with the true values, per target:

- uncertainty (`pred_<t>_std`, ensemble packs): the Spearman correlation between the std and the absolute
  error (issue #13's target: > 0.2), and the MAE of the rows in the top decile of std against the MAE of
  the bottom half of std (ratio; target >= 2). Rows are ranked by std (ties in input order);
- applicability domain (`in_domain`, packs with a domain summary): the share of rows flagged out of domain,
  and the MAE (and n) of the rows in and out of domain (out-of-domain MAE should be clearly higher).

Sets: the test split; for `qed` also the ligands of ba_kiba_{train,val,test} (drug-like molecules from
another source than MOSES: deduplicated by canonical SMILES, QED computed with RDKit `QED.qed`) and the
qed_test rows whose heavy-atom count lies outside the 5-95% range of qed_train's; for `protein-descriptors`
the protein_test rows whose length lies outside the 5-95% range of protein_train's. Rows shared by two sets
are scored once. A pack without std or domain columns reports "n/a" for those numbers.

Writes recipes/results/trust.json (packs not run this time keep their earlier entry) and prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recipes import default_packs
from tagcli.core.metrics import spearman

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "recipes" / "results"
# Where `python -m recipes.pair_data --out DIR` wrote the tanimoto splits: the recipe's folder, else results.
PAIR_DIRS = tuple(dict.fromkeys([REPO / getattr(default_packs, "PAIRS", "out/pair_data"), RESULTS / "pair_data"]))
TOP_SHARE, BOTTOM_SHARE = 0.1, 0.5  # top decile of std vs bottom half of std
SHIFT_QUANTILES = (0.05, 0.95)  # a shifted row lies outside this range of the training rows
SEED = 0
# Issue #13's targets, printed beside the numbers.
TARGET_SPEARMAN, TARGET_RATIO = 0.2, 2.0


# --------------------------------------------------------------------------- metrics (no model)


def _mae(error: np.ndarray) -> float | None:
    return float(np.mean(error)) if len(error) else None


def uncertainty_metrics(truth: Sequence[float], pred: Sequence[float], std: Sequence[float] | None) -> dict[str, Any]:
    """How well `std` ranks the absolute errors: Spearman(std, |error|) and MAE of the top decile of std
    over MAE of the bottom half (None where there is no std or too few rows)."""
    out: dict[str, Any] = dict.fromkeys(
        ("spearman_std_error", "mae_top_decile_std", "mae_bottom_half_std", "top_bottom_ratio", "n_top", "n_bottom")
    )
    if std is None:
        return out
    error = np.abs(np.asarray(pred, float) - np.asarray(truth, float))
    std = np.asarray(std, float)
    n = len(error)
    if n < 2:
        return out
    order = np.argsort(std, kind="stable")  # ties keep input order
    top = order[n - max(1, math.ceil(n * TOP_SHARE)) :]
    bottom = order[: max(1, int(n * BOTTOM_SHARE))]
    rho = spearman(std, error)
    out.update(
        spearman_std_error=None if math.isnan(rho) else rho,
        mae_top_decile_std=_mae(error[top]),
        mae_bottom_half_std=_mae(error[bottom]),
        n_top=len(top),
        n_bottom=len(bottom),
    )
    if out["mae_bottom_half_std"]:
        out["top_bottom_ratio"] = out["mae_top_decile_std"] / out["mae_bottom_half_std"]
    return out


def domain_metrics(truth: Sequence[float], pred: Sequence[float], in_domain: Sequence[bool] | None) -> dict[str, Any]:
    """Share of rows out of domain and the MAE (n) of the rows in and out of domain (None where not measured)."""
    out: dict[str, Any] = dict.fromkeys(("share_out", "n_in", "n_out", "mae_in", "mae_out", "out_in_ratio"))
    if in_domain is None:
        return out
    error = np.abs(np.asarray(pred, float) - np.asarray(truth, float))
    inside = np.asarray(in_domain, bool)
    if not len(error):
        return out
    out.update(
        share_out=float(np.mean(~inside)),
        n_in=int(inside.sum()),
        n_out=int((~inside).sum()),
        mae_in=_mae(error[inside]),
        mae_out=_mae(error[~inside]),
    )
    if out["mae_in"] and out["mae_out"] is not None:
        out["out_in_ratio"] = out["mae_out"] / out["mae_in"]
    return out


def target_metrics(scored: pd.DataFrame, target: str) -> dict[str, Any]:
    """Every number of one target over a scored table: rows with status ok and a finite truth and prediction."""
    pred_column, std_column = f"pred_{target}", f"pred_{target}_std"
    ok = scored["status"].eq("ok") if "status" in scored else pd.Series(True, index=scored.index)
    truth = pd.to_numeric(scored[target], errors="coerce")
    pred = pd.to_numeric(scored[pred_column], errors="coerce")
    keep = ok & np.isfinite(truth) & np.isfinite(pred)
    truth, pred = truth[keep].to_numpy(float), pred[keep].to_numpy(float)
    std = pd.to_numeric(scored.loc[keep, std_column]).to_numpy(float) if std_column in scored else None
    inside = scored.loc[keep, "in_domain"].astype(bool).to_numpy() if "in_domain" in scored else None
    return {
        "n": int(keep.sum()),
        "mae": _mae(np.abs(pred - truth)),
        **uncertainty_metrics(truth, pred, std),
        **domain_metrics(truth, pred, inside),
    }


# --------------------------------------------------------------------------- the sets


@dataclass(frozen=True)
class TrustSet:
    name: str
    description: str
    frame: pd.DataFrame  # a unique `id`, the input column(s) and the target column(s)


@dataclass(frozen=True)
class PackSpec:
    function: str
    targets: tuple[str, ...]
    sets: Callable[[Path], list[TrustSet]]
    inputs: tuple[str, ...] = ()  # columns for the template's input slots, in slot order (several-input packs)


def outside(values: pd.Series, reference: pd.Series) -> pd.Series:
    """Rows whose value lies outside the 5-95% range of `reference`."""
    low, high = np.quantile(reference.to_numpy(float), SHIFT_QUANTILES)
    return (values < low) | (values > high)


def heavy_atoms(smiles: pd.Series) -> pd.Series:
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    return pd.Series([m.GetNumHeavyAtoms() if m is not None else np.nan for m in mols], index=smiles.index)


def kiba_ligands(data: Path) -> pd.DataFrame:
    """Unique ligands of ba_kiba_{train,val,test} (by canonical SMILES) with their RDKit QED."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import QED

    RDLogger.DisableLog("rdApp.*")
    rows, seen = [], set()
    for split in ("train", "val", "test"):
        table = pd.read_parquet(data / f"ba_kiba_{split}.parquet", columns=["ligand_id", "smiles"])
        for ligand, smiles in zip(table["ligand_id"], table["smiles"]):
            mol = Chem.MolFromSmiles(smiles)
            if mol is None:
                continue
            canonical = Chem.MolToSmiles(mol)
            if canonical not in seen:
                seen.add(canonical)
                rows.append((f"kiba:{ligand}", smiles, float(QED.qed(mol))))
    return pd.DataFrame(rows, columns=["id", "smiles", "qed"])


def qed_sets(data: Path) -> list[TrustSet]:
    test = pd.read_parquet(data / "qed_test.parquet", columns=["id", "smiles", "qed"])
    train = pd.read_parquet(data / "qed_train.parquet", columns=["smiles"])
    shifted = test[outside(heavy_atoms(test["smiles"]), heavy_atoms(train["smiles"]).dropna())]
    return [
        TrustSet("test", "qed_test (MOSES)", test),
        TrustSet("kiba ligands", "unique ba_kiba ligands (not MOSES), QED by RDKit", kiba_ligands(data)),
        TrustSet("heavy atoms", "qed_test rows with a heavy-atom count outside qed_train's 5-95% range", shifted),
    ]


PROTEIN_TARGETS = ("isoelectric_point", "gravy", "aromaticity", "instability_index", "molecular_weight_kda")


def protein_sets(data: Path) -> list[TrustSet]:
    test = pd.read_parquet(data / "protein_test.parquet", columns=["accession", "sequence", "length", *PROTEIN_TARGETS])
    test = test.rename(columns={"accession": "id"})
    train = pd.read_parquet(data / "protein_train.parquet", columns=["length"])
    shifted = test[outside(test["length"], train["length"])].drop(columns="length")
    return [
        TrustSet("test", "protein_test (UniProt)", test.drop(columns="length")),
        TrustSet("length", "protein_test rows with a length outside protein_train's 5-95% range", shifted),
    ]


def kiba_sets(data: Path) -> list[TrustSet]:
    test = pd.read_parquet(data / "ba_kiba_test.parquet", columns=["id", "sequence", "smiles", "label"])
    return [TrustSet("test", "ba_kiba_test (cold split)", test)]


def tanimoto_sets(data: Path) -> list[TrustSet]:
    paths = [folder / "tanimoto_test.parquet" for folder in PAIR_DIRS if (folder / "tanimoto_test.parquet").exists()]
    if not paths:
        return []
    path = paths[0]
    test = pd.read_parquet(path, columns=["id", "smiles_1", "smiles_2", "tanimoto"])
    return [TrustSet("test", "tanimoto_test (pairs of qed_test molecules)", test)]


PACKS = [
    PackSpec("qed", ("qed",), qed_sets),
    PackSpec("protein-descriptors", PROTEIN_TARGETS, protein_sets),
    PackSpec("binding-affinity", ("label",), kiba_sets),
    PackSpec("tanimoto", ("tanimoto",), tanimoto_sets, inputs=("smiles_1", "smiles_2")),
]


def sample(frame: pd.DataFrame, max_rows: int | None, seed: int = SEED) -> pd.DataFrame:
    """At most `max_rows` rows, a seeded sample kept in input order."""
    if max_rows is None or len(frame) <= max_rows:
        return frame
    chosen = np.sort(np.random.default_rng(seed).choice(len(frame), max_rows, replace=False))
    return frame.iloc[chosen]


# --------------------------------------------------------------------------- scoring


def pack_info(manifest: Mapping[str, Any]) -> dict[str, Any]:
    from tagcli.core.readout import ReadoutSpec

    head = manifest.get("head") or {}
    return {
        "version": manifest.get("version"),
        "readout": ReadoutSpec.from_spec(head.get("readout")).describe(),
        "members": head.get("members", 1),
        "domain_components": head.get("domain_components", 0),
    }


def score_sets(scorer: Any, sets: Sequence[TrustSet], targets: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Each set's rows with the scorer's columns added; a row in several sets is scored once."""
    union = pd.concat([s.frame for s in sets], ignore_index=True).drop_duplicates("id").reset_index(drop=True)
    scored = scorer(union.drop(columns=list(targets)))
    scored = pd.concat([union[["id", *targets]], scored.drop(columns=["id"])], axis=1).set_index("id")
    return {s.name: scored.loc[s.frame["id"]].reset_index() for s in sets}


def run_pack(
    spec: PackSpec,
    data: Path,
    packs: Path,
    max_rows: int | None,
    base_model: Any = None,
    device: str = "auto",
    max_batch_tokens: int | None = None,
) -> dict[str, Any]:
    from tagcli.core.prompt import PromptTemplate
    from tagcli.scoring.scorer import TagScorer

    path = packs / spec.function / "manifest.json"
    if not path.is_file():
        return {"status": "not built"}
    manifest = json.loads(path.read_text())
    if (manifest.get("head") or {}).get("type") != "regression":
        return {"status": "not a regression pack"}
    full = spec.sets(data)
    available = {s.name: len(s.frame) for s in full}
    sets = [TrustSet(s.name, s.description, sample(s.frame, max_rows)) for s in full]
    if not sets:
        return {"status": "no data"}
    slots = list(PromptTemplate(manifest["template"]).slots)
    inputs = dict(zip(slots, spec.inputs)) if spec.inputs else None
    started = time.perf_counter()
    options = {"max_batch_tokens": max_batch_tokens} if max_batch_tokens else {}
    scorer = TagScorer(
        spec.function, pack_dirs=[str(packs)], base_model=base_model, device=device, inputs=inputs, **options
    )
    scored = score_sets(scorer, sets, spec.targets)
    columns = set(scorer.output_columns)
    report = {
        "status": "measured",
        **pack_info(manifest),
        "has_std": any(f"pred_{t}_std" in columns for t in spec.targets),
        "has_domain": "in_domain" in columns,
        "seconds": round(time.perf_counter() - started, 1),
        "sets": {},
    }
    for s in sets:
        table = scored[s.name]
        report["sets"][s.name] = {
            "description": s.description,
            "available": available[s.name],
            "rows": len(table),
            "scored": int(table["status"].eq("ok").sum()),
            "invalid": int(table["status"].eq("invalid").sum()),
            "error": int(table["status"].eq("error").sum()),
            "first_problem": next((e for e in table["error"] if isinstance(e, str)), None),
            "targets": {t: target_metrics(table, t) for t in spec.targets},
        }
    return report


def run_report(
    data: Path,
    packs: Path,
    only: Sequence[str] = (),
    max_rows: int | None = None,
    out: Path | None = None,
    base_model: Any = None,
    device: str = "auto",
    specs: Sequence[PackSpec] = PACKS,
    max_batch_tokens: int | None = None,
) -> dict[str, Any]:
    """Measure every pack (or those named in `only`), merge into `out` (kept entries of other packs), return it."""
    out = out or RESULTS / "trust.json"
    report = json.loads(out.read_text()) if out.exists() else {}
    report.setdefault("packs", {})
    for spec in specs:
        if only and spec.function not in only:
            continue
        print(f"== {spec.function}", flush=True)
        entry = run_pack(spec, data, packs, max_rows, base_model, device, max_batch_tokens)
        report["packs"][spec.function] = {**entry, "max_rows": max_rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


# --------------------------------------------------------------------------- Markdown


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def markdown(report: Mapping[str, Any]) -> str:
    """One table per measured pack; packs not measured get a line saying why."""
    lines = [
        f"Targets (issue #13): Spearman(std, |error|) > {TARGET_SPEARMAN}; MAE of the top decile of std "
        f">= {TARGET_RATIO:g} × MAE of the bottom half; out-of-domain MAE clearly above in-domain MAE. "
        "n/a: the pack has no ensemble (std) or no domain summary.",
        "",
    ]
    for name, entry in report.get("packs", {}).items():
        if entry.get("status") != "measured":
            lines += [f"**{name}**: {entry.get('status', 'not measured')}.", ""]
            continue
        sampled = f", at most {entry['max_rows']:,} rows per set" if entry.get("max_rows") else ""
        lines += [
            f"**{name}** (readout {entry['readout']}, {entry['members']} member(s), "
            f"{entry['domain_components']} domain axes{sampled})",
            "",
            "| set | target | n | MAE | Spearman(std, abs err) | MAE top 10% std / bottom 50% | out of domain "
            "| MAE in domain (n) | MAE out of domain (n) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for set_name, result in entry["sets"].items():
            for target, m in result["targets"].items():
                ratio = (
                    f"{fmt(m['mae_top_decile_std'])} / {fmt(m['mae_bottom_half_std'])} = {fmt(m['top_bottom_ratio'])}×"
                    if m["top_bottom_ratio"] is not None
                    else "n/a"
                )
                share = f"{m['share_out']:.1%}" if m["share_out"] is not None else "n/a"
                inside = f"{fmt(m['mae_in'])} ({fmt(m['n_in'])})" if m["n_in"] is not None else "n/a"
                out = f"{fmt(m['mae_out'])} ({fmt(m['n_out'])})" if m["n_out"] is not None else "n/a"
                lines.append(
                    f"| {set_name} | {target} | {fmt(m['n'])} | {fmt(m['mae'])} | {fmt(m['spearman_std_error'])} "
                    f"| {ratio} | {share} | {inside} | {out} |"
                )
        lines += [""]
        lines += [f"- {set_name}: {result['description']}" for set_name, result in entry["sets"].items()]
        lines += [""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="folder with the splits")
    parser.add_argument("--packs", type=Path, default=REPO / "tagpacks", help="folder with the packs")
    parser.add_argument("--only", nargs="*", default=[], help="measure only these packs (e.g. qed)")
    parser.add_argument("--max-rows", type=int, default=None, help="at most N rows per set (a seeded sample)")
    parser.add_argument("--out", type=Path, default=RESULTS / "trust.json")
    parser.add_argument("--base-model", default=None, help="base model (default: the one the pack names)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="padded tokens per forward pass (default: the scorer's); lower it where memory is short: "
        "the longest proteins reached 16 GB of RAM at the default (4096: under 6 GB)",
    )
    args = parser.parse_args(argv)
    if args.max_rows is not None and args.max_rows < 2:
        parser.error("--max-rows must be at least 2")
    known = [p.function for p in PACKS]
    unknown = sorted(set(args.only) - set(known))
    if unknown:
        parser.error(f"unknown pack(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if args.max_batch_tokens is not None and args.max_batch_tokens < 1:
        parser.error("--max-batch-tokens must be positive")
    report = run_report(
        args.data,
        args.packs,
        args.only,
        args.max_rows,
        args.out,
        args.base_model,
        args.device,
        max_batch_tokens=args.max_batch_tokens,
    )
    print(markdown(report))


if __name__ == "__main__":
    main()
