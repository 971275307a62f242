"""The README quality table, regenerated from what is on disk (no model runs):

    .venv/bin/python -m recipes.quality_table        # writes recipes/results/quality.md and the README section

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
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from recipes import default_packs, trust_report
from recipes.default_packs import BASELINES, PACKS, REPO, RESULTS, TASKS
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
    lines += ["", *timings()]
    return "\n".join(lines) + "\n"


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
    readme = (REPO / "README.md").read_text()
    updated = replace_between(replace_between(readme, BEGIN, END, text), TRUST_BEGIN, TRUST_END, trust)
    if updated != readme:
        (REPO / "README.md").write_text(updated)
    print(text)
    print(trust)


if __name__ == "__main__":
    main()
