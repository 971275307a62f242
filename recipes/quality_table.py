"""The README quality table, regenerated from what is on disk (no model runs):

    .venv/bin/python -m recipes.quality_table        # writes recipes/results/quality.md and the README section

Sources: the test metrics recorded in each shipped pack (tagpacks/) and baseline pack
(recipes/baselines/) by `tagcli eval --record test`, the expert baselines
(recipes/results/expert_baselines.json, from `python -m recipes.expert_baselines`) and the zero-shot
evaluation (recipes/results/eval/qed_zero-shot.json). Standardised MSE is MSE / variance of the test
target, computed here the same way for every row.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from recipes import default_packs
from recipes.default_packs import BASELINES, PACKS, REPO, RESULTS, TASKS

BEGIN, END = "<!-- quality-table:begin -->", "<!-- quality-table:end -->"
EXACT = {  # targets that are a formula of the input, computable in microseconds: a model adds nothing
    "qed": "exact formula (RDKit QED)",
    "gravy": "exact formula, linear in composition",
    "aromaticity": "exact formula, linear in composition",
    "molecular_weight_kda": "exact formula, linear in residue counts",
    "isoelectric_point": "computable (ProtParam), not linear in composition",
    "instability_index": "computable (ProtParam, dipeptide weights)",
    "label": "measured (KIBA score)",
}


def pack_rows(folder: str, name: str, method: str) -> list[dict[str, Any]]:
    path = REPO / folder / name / "manifest.json"
    if not path.is_file():
        return []
    manifest = json.loads(path.read_text())
    metrics = manifest.get("metrics", {}).get("test")
    if not metrics:
        return []
    per_target = metrics.get("targets") or {manifest["training"]["data"]["targets"][0]: metrics}
    return [{"model": f"tagcli {method}", "target": t, **m} for t, m in per_target.items()]


def task_rows(data: Path) -> dict[str, list[dict[str, Any]]]:
    experts = (
        json.loads((RESULTS / "expert_baselines.json").read_text())
        if (RESULTS / "expert_baselines.json").exists()
        else []
    )
    tables = {}
    for task in TASKS:
        rows = [
            r
            for method in ("tag-llm", "prompt-tuning", "linear-probe")
            for r in pack_rows(
                PACKS if method == "tag-llm" else BASELINES,
                task.function if method == "tag-llm" else f"{task.function}-{method}",
                method,
            )
        ]
        rows += [{**r, "model": f"expert: {r['model']}"} for r in experts if r["task"] == task.function]
        test = pq.read_table(data / f"{task.split}_test.parquet", columns=list(task.targets)).to_pandas()
        for row in rows:
            row["std_mse"] = row["mse"] / float(test[row["target"]].var(ddof=0))
        order = ["tagcli tag-llm", "tagcli prompt-tuning", "tagcli linear-probe"]  # then the experts, by name
        tables[task.function] = sorted(
            rows,
            key=lambda r: (
                task.targets.index(r["target"]),
                order.index(r["model"]) if r["model"] in order else 9,
                r["model"],
            ),
        )
    return tables


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def markdown(tables: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for task in TASKS:
        lines += [
            f"**{task.function}** ({task.split}_test)",
            "",
            "| target | model | n | MSE | MAE | Pearson | Spearman | std. MSE |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in tables[task.function]:
            lines.append(
                f"| {r['target']} | {r['model']} | {fmt(r['n'])} | {fmt(r['mse'])} | {fmt(r['mae'])} | {fmt(r['pearson'])} | "
                f"{fmt(r['spearman'])} | {fmt(r['std_mse'])} |"
            )
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
    """The recipe's per-step wall times, as recorded by recipes.default_packs."""
    path = RESULTS / "recipe_timings.json"
    if not path.exists():
        return []
    recorded = json.loads(path.read_text())
    steps = {name: recorded[name] for name, _ in default_packs.steps("") if name in recorded}  # in recipe order
    first = next(iter(steps.values()))
    total = sum(t["seconds"] for t in steps.values())
    cells = ", ".join(f"{name} {t['seconds'] / 60:.1f}" for name, t in steps.items())
    return [
        f"Recipe time (`make packs`, {first['device']}, {first['cpus']} cores): {total / 60:.0f} min in total; per step, in minutes: {cells}."
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data",
        help="folder with the public splits (for test variances)",
    )
    text = markdown(task_rows(parser.parse_args().data))
    (RESULTS / "quality.md").write_text(text)
    readme = (REPO / "README.md").read_text()
    if BEGIN in readme and END in readme:
        head, rest = readme.split(BEGIN, 1)
        readme = head + BEGIN + "\n" + text + END + rest.split(END, 1)[1]
        (REPO / "README.md").write_text(readme)
    print(text)


if __name__ == "__main__":
    main()
