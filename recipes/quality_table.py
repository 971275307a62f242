"""The quality tables of the docs (docs/quality.md), regenerated from what is on disk (no model runs):

    .venv/bin/python -m recipes.quality_table        # writes recipes/results/quality.md and docs/quality.md's tables

Sources: the test metrics recorded in each shipped pack (tagpacks/) and baseline pack
(recipes/baselines/) by `tagcli eval --record test`, the expert baselines
(recipes/results/expert_baselines.json, from `python -m recipes.expert_baselines`) and the zero-shot
evaluation (recipes/results/eval/qed_zero-shot.json). Standardised MSE is MSE / variance of the test
target, computed here the same way for every row. Each row shows the readout its pack's head reads (the
paper's is `tag-last @ final layer`). A pack the recipe has not built yet shows a "not built" row.

The pair and text packs: `tanimoto` (Pearson on the test pairs of `python -m recipes.pair_data --out
recipes/results/pair_data`, against its fingerprint-free baseline `pair_baseline.json` there) and `formula`
(exact match and character error rate of the molecular formula). The "Can I trust a prediction?" section
comes from recipes/results/trust.json (`python -m recipes.trust_report`, `make trust`).

The "Measured endpoints" tables (bbb, solubility, amp: labels that are measurements) put the anchors of
recipes/results/measured_anchors.json (`python -m recipes.anchors`, part of `make baselines`) beside the
tag-LLM packs' recorded test metrics: the shipped pack (tagpacks/NAME) and its comparison variants
(recipes/baselines/NAME-tags-only), each "not built yet" while its folder is missing, and the same head on the
tags alone and on the extra features alone (no language model) as validation chose them in
recipes/results/levers/NAME.json.
The MoleculeACE table comes from recipes/results/moleculeace.json (`make moleculeace`: the tag-LLM models and
the anchors), or from moleculeace_anchors.json (`make moleculeace-anchors`) where that has not run; the
README's MoleculeACE table is its first part.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from recipes import default_packs, moleculeace, trust_report
from recipes.default_packs import BASELINES, MEASURED_TASKS, PACKS, REPO, RESULTS, TASKS
from recipes.pack_features import domain_tags
from tagcli.core.readout import PAPER, ReadoutSpec

BEGIN, END = "<!-- quality-table:begin -->", "<!-- quality-table:end -->"
TRUST_BEGIN, TRUST_END = "<!-- trust-table:begin -->", "<!-- trust-table:end -->"
# Where `python -m recipes.pair_data --out DIR` wrote the pair data and pair_baseline.json: the recipe's
# folder (default_packs.PAIRS), else recipes/results/pair_data (committed results).
PAIR_DIRS = tuple(dict.fromkeys([REPO / getattr(default_packs, "PAIRS", "out/pair_data"), RESULTS / "pair_data"]))
# tag-llm and its same-budget baselines, each a pack: (label, folder, pack name suffix)
METHODS = (
    ("tag-llm", PACKS, ""),
    ("tag-llm, paper readout", BASELINES, "-paper-readout"),
    ("prompt-tuning", BASELINES, "-prompt-tuning"),
    ("linear-probe", BASELINES, "-linear-probe"),
)
EXACT = {  # targets that are a formula of the input, computable in microseconds: a model adds nothing
    "qed": "exact formula (RDKit QED)",
    "gravy": "exact formula, linear in composition",
    "aromaticity": "exact formula, linear in composition",
    "molecular_weight_kda": "exact formula, linear in residue counts",
    "isoelectric_point": "computable (ProtParam), not linear in composition",
    "instability_index": "computable (ProtParam, dipeptide weights)",
    "label": "measured (KIBA score)",
    "tanimoto": "exact formula (Tanimoto of Morgan fingerprints, radius 2, 2048 bits)",
    "formula": "exact formula (RDKit CalcMolFormula), as text",
}


@dataclass(frozen=True)
class Table:
    """One task's table: the function, where its test split is, its targets and the kind of metrics."""

    function: str
    title: str  # the test split, shown after the name
    targets: tuple[str, ...]
    test: Path | None  # the test split (for the standardised MSE), None where there is none
    kind: str = "regression"  # or "text"


def pair_file(name: str) -> Path | None:
    """A file written by recipes.pair_data, from the first folder of PAIR_DIRS that has it."""
    return next((folder / name for folder in PAIR_DIRS if (folder / name).is_file()), None)


def tables(data: Path) -> list[Table]:
    """The recipe's tasks, then the pair and text packs (also when the recipe lists them among its tasks)."""
    extra = [
        Table("tanimoto", "tanimoto_test", ("tanimoto",), pair_file("tanimoto_test.parquet")),
        Table("formula", "formula_test", ("formula",), None, kind="text"),
    ]
    names = {t.function for t in extra}
    recipe = [
        Table(t.function, f"{t.split}_test", t.targets, data / f"{t.split}_test.parquet")
        for t in TASKS
        if t.function not in names
    ]
    return recipe + extra


def readout(manifest: dict[str, Any]) -> str:
    """The readout a pack's head reads, as `pools @ layers` (the paper's marked), and its ensemble size."""
    head = manifest.get("head") or {}
    if head.get("type") == "text":
        return "generated text (LM head)"
    try:
        spec = ReadoutSpec.from_spec(head.get("readout"))
    except ValueError:
        return "unreadable head spec"
    text = spec.describe() + (" (paper)" if spec == PAPER else "")
    members = head.get("members", 1)
    return text + (f", {members} members" if isinstance(members, int) and members > 1 else "")


def recorded_metrics(manifest: dict[str, Any], name: str) -> dict[str, Any] | None:
    """Test metrics recorded in the manifest (`eval --record test`), else the recipe's eval output."""
    metrics = manifest.get("metrics", {}).get("test")
    if metrics:
        return metrics
    path = RESULTS / "eval" / f"{name}_test.json"
    return json.loads(path.read_text()) if path.is_file() else None


def pack_rows(folder: str, name: str, method: str, targets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """One row per target from a pack's test metrics. A missing tag-llm pack gives "not built" rows
    (a missing baseline pack gives none), a pack without test metrics "not evaluated" rows."""
    path = REPO / folder / name / "manifest.json"
    model = f"tagcli {method}"
    if not path.is_file():
        return [{"model": model, "target": t, "status": "not built"} for t in targets] if method == "tag-llm" else []
    manifest = json.loads(path.read_text())
    if method in ("prompt-tuning", "linear-probe") and stale(manifest, name.removesuffix(f"-{method}")):
        model += " (previous recipe: other readout and budget)"
    common = {"model": model, "readout": readout(manifest)}
    metrics = recorded_metrics(manifest, name)
    if not metrics:
        return [{**common, "target": t, "status": "not evaluated"} for t in targets]
    first = (manifest.get("training", {}).get("data", {}).get("targets") or targets or ["?"])[0]
    per_target = metrics.get("targets") or (
        {t: metrics[t] for t in targets if isinstance(metrics.get(t), dict)}  # an eval output: target → metrics
        or {first: metrics}
    )
    return [{**common, "target": t, **m} for t, m in per_target.items()]


def stale(manifest: dict[str, Any], function: str) -> bool:
    """A same-budget baseline from another recipe than the shipped pack: its head reads another readout."""
    shipped = REPO / PACKS / function / "manifest.json"
    if not shipped.is_file():
        return False
    try:
        ours = ReadoutSpec.from_spec((json.loads(shipped.read_text()).get("head") or {}).get("readout"))
        return ReadoutSpec.from_spec((manifest.get("head") or {}).get("readout")) != ours
    except ValueError:
        return True


def pair_baseline_rows() -> list[dict[str, Any]]:
    """The fingerprint-free baseline of the pair task, written by recipes.pair_data."""
    path = pair_file("pair_baseline.json")
    model = "baseline: fingerprint-free (gradient boosting on SMILES token counts)"
    if path is None:
        return [{"model": model, "target": "tanimoto", "status": "not built"}]
    return [{**json.loads(path.read_text()), "model": model, "target": "tanimoto"}]


def task_rows(data: Path) -> dict[str, list[dict[str, Any]]]:
    experts = (
        json.loads((RESULTS / "expert_baselines.json").read_text())
        if (RESULTS / "expert_baselines.json").exists()
        else []
    )
    out = {}
    for table in tables(data):
        rows = [
            r
            for method, folder, suffix in METHODS
            for r in pack_rows(folder, table.function + suffix, method, table.targets)
        ]
        rows += [{**r, "model": f"expert: {r['model']}"} for r in experts if r["task"] == table.function]
        if table.function == "tanimoto":
            rows += pair_baseline_rows()
        variance = {}
        if table.kind == "regression" and table.test is not None and table.test.is_file():
            test = pq.read_table(table.test, columns=list(table.targets)).to_pandas()
            variance = {t: float(test[t].var(ddof=0)) for t in table.targets}
        for row in rows:
            if isinstance(row.get("mse"), (int, float)) and variance.get(row["target"]):
                row["std_mse"] = row["mse"] / variance[row["target"]]
        order = [f"tagcli {m}" for m, _, _ in METHODS]  # then the experts and baselines, by name
        order += [f"{m} (previous recipe: other readout and budget)" for m in order]
        out[table.function] = sorted(
            rows,
            key=lambda r: (
                table.targets.index(r["target"]) if r["target"] in table.targets else len(table.targets),
                order.index(r["model"]) if r["model"] in order else 9,
                r["model"],
            ),
        )
    return out


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def markdown(rows: dict[str, list[dict[str, Any]]], data: Path | None = None) -> str:
    lines = []
    for table in tables(data or REPO.parent / "shared" / "data"):
        lines += [f"**{table.function}** ({table.title})", ""]
        if table.kind == "text":
            lines += [
                "| target | model | readout | n | exact match | char. error rate |",
                "|---|---|---|---|---|---|",
            ]
            for r in rows[table.function]:
                cells = (
                    [r["status"], "–", "–"]
                    if "status" in r
                    else [fmt(r.get("n")), fmt(r.get("exact_match")), fmt(r.get("char_error_rate"))]
                )
                lines.append(f"| {r['target']} | {r['model']} | {r.get('readout', '–')} | {' | '.join(cells)} |")
        else:
            lines += [
                "| target | model | readout | n | MSE | MAE | Pearson | Spearman | std. MSE |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for r in rows[table.function]:
                cells = (
                    [r["status"], *["–"] * 5]
                    if "status" in r
                    else [fmt(r.get(k)) for k in ("n", "mse", "mae", "pearson", "spearman", "std_mse")]
                )
                lines.append(f"| {r['target']} | {r['model']} | {r.get('readout', '–')} | {' | '.join(cells)} |")
        lines.append("")
    lines.append("Targets: " + "; ".join(f"`{t}` {why}" for t, why in EXACT.items()) + ".")
    zero_shot = RESULTS / "eval" / "qed_zero-shot.json"
    if zero_shot.exists():
        z = json.loads(zero_shot.read_text())
        lines += [
            "",
            f"Zero-shot composition: the `qed` function tag behind `smiles-b`, a SMILES domain tag trained only in stage 1 "
            f"(never seen by any function tag), on qed_test: Pearson {fmt(z['qed']['pearson'])}, Spearman {fmt(z['qed']['spearman'])}, "
            f"MSE {fmt(z['qed']['mse'])} over {fmt(z['scored'])} rows (chance: Pearson 0; the mean predictor's MSE is in the table).",
        ]
    lines += ["", *measured_markdown(), *moleculeace_markdown(), *timings()]
    return "\n".join(lines) + "\n"


# --- measured endpoints and MoleculeACE ------------------------------------------------------------

ANCHORS = "measured_anchors.json"
MOLECULEACE, MOLECULEACE_ANCHORS = "moleculeace.json", "moleculeace_anchors.json"
TAG_MODELS = moleculeace.MODELS
MEASURED = ("bbb", "solubility", "amp")
# The tag-LLM packs of a measured endpoint: (label, folder, pack name suffix)
MEASURED_PACKS = (
    ("tagcli tag-llm", PACKS, ""),
    ("tagcli tags only", BASELINES, "-tags-only"),
)
LEVERS = "levers"  # recipes/results/levers/NAME.json (recipes/levers.py)
COLUMNS = {
    "classification": (
        ("ROC-AUC", "roc_auc"),
        ("PR-AUC", "pr_auc"),
        ("bal. acc.", "balanced_accuracy"),
        ("Brier", "brier"),
        ("accuracy", "accuracy"),
    ),
    "regression": (("RMSE", "rmse"), ("MAE", "mae"), ("Pearson", "pearson"), ("Spearman", "spearman")),
}
ANCHOR_NAMES = {
    "prior": "prior (train positive rate)",
    "mean": "mean (train mean)",
    "rf-ecfp4": "RandomForest, ECFP4 counts",
    "rf-rdkit2d": "RandomForest, RDKit 2D descriptors",
    "rf-composition": "RandomForest, amino-acid + dipeptide composition",
    "svm-tanimoto-ecfp4": "SVM, Tanimoto kernel on ECFP4 bits",
    "svm-tanimoto-ecfp4-c1": "SVM, Tanimoto kernel on ECFP4 bits, C = 1",
    "knn-tanimoto-ecfp4": "kNN, Tanimoto on ECFP4 bits",
    "chemprop": "chemprop v2 (D-MPNN)",
    "admet-ai": "ADMET-AI, pretrained",
}


def read_json(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


LEVERS_ROWS = {  # key of `chosen` in recipes/results/levers/NAME.json → the row's label
    "tags_alone": "tagcli head on the tags alone (`recipes/levers.py`)",
    "extra_features_alone": "tagcli head on extra features alone, no LLM (`recipes/levers.py`)",
}


def earlier_tags(result: dict[str, Any], domains: tuple[str, ...]) -> str:
    """Where `result` was measured on other domain tags than the shipped ones (or did not record which):
    "`smiles`", else "". Domains not built here are not compared."""
    built = tuple(d for d in domains if (REPO / PACKS / d / "manifest.json").is_file())
    recorded, shipped = result.get("domain_tags") or {}, domain_tags(REPO / PACKS, built)
    return ", ".join(f"`{d}`" for d in built if recorded.get(d) != shipped[d])


def levers_row(name: str, chosen_as: str) -> dict[str, Any]:
    """A variant of recipes/levers.py that validation chose (tags alone, extra features alone), scored on test."""
    levers = read_json(f"{LEVERS}/{name}.json")
    row: dict[str, Any] = {"model": LEVERS_ROWS[chosen_as]}
    if levers is None or chosen_as not in levers.get("chosen", {}):
        return {**row, "status": "not measured yet"}
    chosen = levers["chosen"][chosen_as]
    metrics = levers["variants"][chosen].get("test") or {}
    notes = f"{chosen}, the same ensemble head; chosen on validation"
    domains = next(t.domains for t in MEASURED_TASKS if t.function == name)
    earlier = earlier_tags(levers, domains) if chosen_as != "extra_features_alone" else ""  # no LLM there
    if earlier:
        notes += f"; measured on an earlier {earlier} domain tag than the shipped one (rerun: see `recipes/levers.py`)"
    return {**row, **metrics, "notes": notes}


def measured_pack_row(label: str, folder: str, name: str) -> dict[str, Any]:
    """A tag-LLM pack's recorded test metrics (RMSE from MSE), or why there are none."""
    path = REPO / folder / name / "manifest.json"
    row: dict[str, Any] = {"model": f"{label} (`{folder}/{name}`)"}
    if not path.is_file():
        return {**row, "status": "not built yet"}
    manifest = json.loads(path.read_text())
    metrics = (manifest.get("metrics") or {}).get("test")
    if not metrics:
        return {**row, "status": "not evaluated"}
    if isinstance(metrics.get("mse"), (int, float)):
        metrics = {**metrics, "rmse": math.sqrt(metrics["mse"])}
    return {**row, **metrics, "notes": readout(manifest)}


def measured_packs(name: str) -> tuple[tuple[str, str, str], ...]:
    """The tag-LLM rows of a measured endpoint: the shipped pack and, where it reads extra features, its
    tags-only comparison; a shipped pack without extra features is itself the tags-alone row."""
    path = REPO / PACKS / name / "manifest.json"
    if not path.is_file():
        return MEASURED_PACKS
    head = json.loads(path.read_text()).get("head") or {}
    return MEASURED_PACKS if head.get("extra_features") else (("tagcli tag-llm, tags alone", PACKS, ""),)


def anchor_notes(result: dict[str, Any]) -> str:
    notes = []
    chosen = result.get("hyperparameters") or {}
    if "C" in chosen:
        notes.append(f"C = {chosen['C']:g} on validation")
    if "epochs_trained" in result:
        notes.append(f"{result['epochs_trained']} epochs (best {result['best_epoch']}), seed {chosen.get('seed', 0)}")
    if "task" in result:
        notes.append(f"`{result['task']}`; {result.get('note', '')}")
    problems = result.get("feature_problems") or {}
    if problems.get("train"):
        notes.append(f"{problems['train']} train row{'s' * (problems['train'] > 1)} without features left out")
    if problems.get("val") or problems.get("test"):
        notes.append(
            f"{problems.get('val', 0)} val / {problems.get('test', 0)} test rows without features get the prior"
        )
    return "; ".join(notes) or "–"


GLANCE_BEGIN, GLANCE_END = "<!-- measured-glance:begin -->", "<!-- measured-glance:end -->"
ACE_BEGIN, ACE_END = "<!-- moleculeace:begin -->", "<!-- moleculeace:end -->"
HEADLINE = {"classification": ("ROC-AUC", "roc_auc", max), "regression": ("RMSE", "rmse", min)}


def glance_markdown() -> str:
    """The README's one-line-per-endpoint summary: the shipped pack, the tags alone (its recipe without the
    extra features) and the best anchor on the headline metric (ROC-AUC or RMSE), from the same sources as
    the full tables."""
    endpoints = (read_json(ANCHORS) or {}).get("endpoints", {})
    lines = ["| pack | test metric | shipped pack | tags alone | best anchor |", "|---|---|---|---|---|"]
    for name in MEASURED:
        kind = endpoints.get(name, {}).get("kind") or ("regression" if name == "solubility" else "classification")
        label, key, best = HEADLINE[kind]
        shipped = measured_pack_row("", PACKS, name).get(key)
        tags_label, tags_folder, tags_suffix = measured_packs(name)[-1]  # the shipped recipe without extras
        tags = measured_pack_row(tags_label, tags_folder, name + tags_suffix).get(key)
        anchors = {
            ANCHOR_NAMES.get(model, model): r["metrics"][key]
            for model, r in endpoints.get(name, {}).get("models", {}).items()
            if isinstance((r.get("metrics") or {}).get(key), (int, float)) and model not in ("prior", "mean")
        }
        top = best(anchors, key=anchors.get) if anchors else None
        anchor = f"{fmt(anchors[top])} ({top})" if top else "not measured yet"
        lines.append(f"| `{name}` | {label} | {fmt(shipped)} | {fmt(tags)} | {anchor} |")
    return "\n".join(lines) + "\n"


def measured_markdown() -> list[str]:
    """The "Measured endpoints" tables: tag-LLM packs, then the anchors of measured_anchors.json."""
    results = read_json(ANCHORS)
    lines = ["**Measured endpoints** (labels are measurements, not formulas; test splits)", ""]
    if results is None:
        lines += [
            "Anchors not measured yet: `make baselines` (`python -m recipes.anchors`) writes "
            f"recipes/results/{ANCHORS}.",
            "",
        ]
    else:
        m = results.get("machine", {})
        bf16 = "with" if (m.get("flags") or {}).get("avx512_bf16") else "without"
        packages = m.get("packages") or {}
        lines += [
            f"Anchors: `make baselines` (`recipes/anchors.py`), fit on train, hyperparameters on validation, seed "
            f"{results.get('seed', 0)}; {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {bf16} AVX-512 bf16; "
            f"RDKit {packages.get('rdkit')}, scikit-learn {packages.get('scikit-learn')}, chemprop {packages.get('chemprop')}, "
            f"ADMET-AI {packages.get('admet-ai')}; {results.get('seconds', 0) / 60:.0f} min in all. "
            "Seconds are wall time on a shared machine (features included for the first model that uses them).",
            "",
        ]
    endpoints = (results or {}).get("endpoints", {})
    for name in MEASURED:
        entry = endpoints.get(name, {})
        kind = entry.get("kind") or ("regression" if name == "solubility" else "classification")
        extra = f", positive class {entry['positive']}" if entry.get("positive") is not None else ""
        lines += [f"**{name}** ({name}_test, {kind}{extra}{'; ' + entry['note'] if entry.get('note') else ''})", ""]
        columns = COLUMNS[kind]
        lines += [
            "| model | n | " + " | ".join(c for c, _ in columns) + " | seconds | notes |",
            "|---" * (len(columns) + 4) + "|",
        ]
        rows = [measured_pack_row(label, folder, name + suffix) for label, folder, suffix in measured_packs(name)]
        rows += [levers_row(name, chosen_as) for chosen_as in LEVERS_ROWS]
        for model, r in entry.get("models", {}).items():
            row = {"model": f"anchor: {ANCHOR_NAMES.get(model, model)}"}
            if "metrics" not in r:
                rows.append({**row, "status": f"{r.get('status', 'not run')}: {r.get('reason', '')}"})
            else:
                rows.append({**row, **r["metrics"], "seconds": r.get("seconds"), "notes": anchor_notes(r)})
        for r in rows:
            if "status" in r:
                cells = [r["status"], *["–"] * (len(columns) + 2)]
            else:
                cells = [
                    fmt(r.get("n")),
                    *[fmt(r.get(k)) for _, k in columns],
                    fmt(r.get("seconds")),
                    r.get("notes", "–"),
                ]
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def moleculeace_results() -> dict[str, Any] | None:
    """`make moleculeace`'s results (tag-LLM models and anchors) where it has run, else the anchors alone."""
    return read_json(MOLECULEACE) or read_json(MOLECULEACE_ANCHORS)


def moleculeace_label(model: str) -> str:
    return f"tag-LLM: {TAG_MODELS[model]}" if model in TAG_MODELS else f"anchor: {ANCHOR_NAMES.get(model, model)}"


def moleculeace_means(results: dict[str, Any]) -> list[str]:
    """Mean test RMSE and cliff RMSE per model, the tag-LLM models first."""
    lines = ["| model | sets | mean RMSE | mean cliff RMSE | seconds (all sets) |", "|---|---|---|---|---|"]
    order = sorted(results.get("means", {}), key=lambda model: model not in TAG_MODELS)
    for model in order:
        mean = results["means"][model]
        seconds = [s["models"][model].get("seconds") for s in results["sets"].values() if model in s["models"]]
        total = fmt(round(sum(seconds))) if seconds and None not in seconds else "–"
        lines.append(
            f"| {moleculeace_label(model)} | {mean['sets']} | {fmt(mean['mean_rmse'])} | "
            f"{fmt(mean['mean_rmse_cliff'])} | {total} |"
        )
    return lines


def moleculeace_markdown() -> list[str]:
    """Mean test RMSE and cliff RMSE per model over the MoleculeACE sets, then every set in a fold."""
    results = moleculeace_results()
    lines = ["**MoleculeACE** (30 ChEMBL activity-cliff sets, −log10 of the nM value, test splits as published)", ""]
    if results is None:
        return lines + [f"Not measured yet: `make moleculeace` writes recipes/results/{MOLECULEACE}.", ""]
    m = results.get("machine", {})
    settings = results.get("settings")
    how = (
        f"tag-LLM: `make moleculeace` (`recipes/moleculeace.py`), readout {settings['readout']}, "
        f"{settings['members']} members, no tag steps; {results.get('seconds', 0) / 60:.0f} min for its "
        f"{sum('tag-llm' in entry['models'] for entry in results.get('sets', {}).values())} sets. "
        if settings
        else "tag-LLM: not run yet (`make moleculeace`). "
    )
    earlier = earlier_tags(results, ("smiles",)) if settings else ""
    stale = (
        [
            f"The tag-LLM rows were measured on an earlier {earlier} domain tag than the shipped one: rerun "
            "`make moleculeace` to refresh them.",
            "",
        ]
        if earlier
        else []
    )
    lines += [
        f"Validation: {results.get('validation', '')}. Cliff RMSE: over the test compounds with `cliff_mol` = 1. "
        f"{how}{m.get('cpu', '?')}, {m.get('cores', '?')} cores. Anchors: `make moleculeace-anchors`.",
        "",
        *stale,
        *moleculeace_means(results),
    ]
    models = list(results.get("means", {}))
    lines += ["", "<details><summary>Every set: test RMSE / cliff RMSE</summary>", ""]
    lines += ["| set | n test | n cliff | " + " | ".join(models) + " |", "|---" * (len(models) + 3) + "|"]
    for name, entry in results.get("sets", {}).items():
        first = next(iter(entry["models"].values()))
        cells = [
            f"{fmt(r['rmse'])} / {fmt(r['rmse_cliff'])}" if (r := entry["models"].get(model)) else "–"
            for model in models
        ]
        lines.append(f"| {name} | {first['n_test']} | {first['n_cliff']} | " + " | ".join(cells) + " |")
    return lines + ["", "</details>", ""]


def timings() -> list[str]:
    """The recipe's per-step wall times, as recorded by recipes.default_packs: one line per make target."""
    path = RESULTS / "recipe_timings.json"
    if not path.exists():
        return []
    recorded = json.loads(path.read_text())
    lines = []
    for target in default_packs.STEP_SETS:
        steps = {name: recorded[name] for name, _ in default_packs.steps("", (target,)) if name in recorded}
        if not steps:
            continue
        first = next(iter(steps.values()))
        total = sum(t["seconds"] for t in steps.values())
        cells = ", ".join(f"{name} {t['seconds'] / 60:.1f}" for name, t in steps.items())
        lines.append(
            f"`make {target}` (each step's wall time as last recorded, {first['device']}, {first['cpus']} cores): "
            f"{total / 60:.0f} min summed over its steps; per step, in minutes: {cells}."
        )
    return "\n\n".join(lines).splitlines()


def trust_markdown(path: Path | None = None) -> str:
    """The "Can I trust a prediction?" section from recipes/results/trust.json (recipes.trust_report)."""
    path = path or RESULTS / "trust.json"
    if not path.is_file():
        return "Not measured yet: `make trust` (`python -m recipes.trust_report`) writes recipes/results/trust.json.\n"
    return trust_report.markdown(json.loads(path.read_text()))


def replace_between(text: str, begin: str, end: str, section: str) -> str:
    """`text` with what lies between the markers replaced (unchanged when a marker is missing)."""
    if begin not in text or end not in text:
        return text
    head, rest = text.split(begin, 1)
    return head + begin + "\n" + section + end + rest.split(end, 1)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data",
        help="folder with the public splits (for test variances)",
    )
    data = parser.parse_args().data
    text = markdown(task_rows(data), data)
    trust = trust_markdown()
    (RESULTS / "quality.md").write_text(text + "\n## Can I trust a prediction?\n\n" + trust)
    page = REPO / "docs" / "quality.md"
    current = page.read_text()
    updated = replace_between(replace_between(current, BEGIN, END, text), TRUST_BEGIN, TRUST_END, trust)
    if updated != current:
        page.write_text(updated)
    readme = REPO / "README.md"
    current = readme.read_text()
    updated = replace_between(current, GLANCE_BEGIN, GLANCE_END, glance_markdown())
    results = moleculeace_results()
    if results is not None:
        updated = replace_between(updated, ACE_BEGIN, ACE_END, "\n".join(moleculeace_means(results)) + "\n")
    if updated != current:
        readme.write_text(updated)
    print(text)
    print(trust)


if __name__ == "__main__":
    main()
