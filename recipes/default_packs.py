"""The recipe that rebuilds every default pack from ../shared/data, evaluates it once on the test split,
and trains the same-budget baselines the quality table compares against.

    .venv/bin/python -m recipes.default_packs                  # everything (68 min on 2 CPU cores, measured)
    .venv/bin/python -m recipes.default_packs --only qed       # the steps whose name starts with "qed"

Each step is one `tagcli` command, so the recipe doubles as a worked example of the CLI. Seeds are
fixed (--seed 0); every step's wall time and the device go to recipes/results/recipe_timings.json.
Shipped packs go to tagpacks/; baseline and zero-shot packs to recipes/baselines/ (small, committed,
so the table can be regenerated without retraining). Test metrics are stored in each pack's manifest
(`tagcli eval --record test`), which is what `tagcli pack list` shows.

Budget choices, all made to fit the 2-hour CPU limit: the head is a ridge fit on the readout of a few
thousand training rows (closed form; see train.fit_head), the tags then get a short gradient phase on
a frozen prefix, and validation is small. On a GPU, raise --init-samples / --max-steps / --max-rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tagcli.basemodel.load import select_device

REPO = Path(__file__).resolve().parent.parent
PACKS = "tagpacks"
BASELINES = "recipes/baselines"
RESULTS = REPO / "recipes" / "results"


@dataclass(frozen=True)
class Task:
    """One function: its data, domains, targets and the training budget shared by every method."""

    function: str
    stage: int
    split: str  # ../shared/data/{split}_{train,val,test}.parquet
    domains: tuple[str, ...]
    targets: tuple[str, ...]
    budget: tuple[str, ...]  # train options, identical for tag-llm and the baselines
    description: str


TASKS = [
    Task(
        "qed",
        2,
        "qed",
        ("smiles",),
        ("qed",),
        (
            "--max-rows",
            "4000",
            "--init-samples",
            "4000",
            "--max-steps",
            "60",
            "--eval-every",
            "60",
            "--max-val-rows",
            "500",
            "--lr",
            "3e-3",
            "--target-range",
            "0,1",
        ),
        "Drug-likeness (RDKit QED) from SMILES",
    ),
    Task(
        "protein-descriptors",
        2,
        "protein",
        ("protein",),
        ("isoelectric_point", "gravy", "aromaticity", "instability_index", "molecular_weight_kda"),
        (
            "--max-rows",
            "1000",
            "--init-samples",
            "1000",
            "--max-steps",
            "40",
            "--eval-every",
            "40",
            "--max-val-rows",
            "300",
            "--lr",
            "3e-3",
        ),
        "ProtParam descriptors of a protein sequence: pI, GRAVY, aromaticity, instability index, MW (kDa)",
    ),
    Task(
        "binding-affinity",
        3,
        "ba_kiba",
        ("protein", "smiles"),
        ("label",),
        (
            "--max-rows",
            "600",
            "--init-samples",
            "600",
            "--max-steps",
            "20",
            "--eval-every",
            "20",
            "--max-val-rows",
            "200",
            "--lr",
            "3e-3",
        ),
        "KIBA drug-target binding score for a protein sequence + SMILES pair",
    ),
]
METHODS = {"tag-llm": PACKS, "prompt-tuning": BASELINES, "linear-probe": BASELINES}


def steps(data: str) -> list[tuple[str, list[str]]]:
    """(name, tagcli arguments) in order."""
    common = ["--seed", "0"]
    out: list[tuple[str, list[str]]] = [
        (
            "smiles",
            [
                "train",
                "stage1",
                "--domain",
                "smiles",
                "--data",
                f"{data}/smiles_unlabeled.parquet",
                "--max-rows",
                "3000",
                "--max-val-rows",
                "200",
                "--max-steps",
                "60",
                "--eval-every",
                "30",
                "--lr",
                "1e-2",
                "--max-tokens",
                "256",
                "--out",
                f"{PACKS}/smiles",
                *common,
                "--description",
                "SMILES domain tag (stage 1, next-token loss on MOSES SMILES)",
            ],
        ),
        (
            "protein",
            [
                "train",
                "stage1",
                "--domain",
                "protein",
                "--data",
                f"{data}/protein_train.parquet",
                "--max-rows",
                "2000",
                "--max-val-rows",
                "100",
                "--max-steps",
                "20",
                "--batch-size",
                "8",
                "--eval-every",
                "20",
                "--lr",
                "1e-2",
                "--max-tokens",
                "2048",
                "--out",
                f"{PACKS}/protein",
                *common,
                "--description",
                "Protein-sequence domain tag (stage 1, next-token loss on UniProt sequences)",
            ],
        ),
    ]
    # The shipped packs first, then the zero-shot run, then the baselines (so a cut-short run still ships packs).
    for method, folder in METHODS.items():
        if method == "prompt-tuning":
            out += zero_shot_steps(data)
        for task in TASKS:
            name = task.function if method == "tag-llm" else f"{task.function}-{method}"
            domains = [arg for d in task.domains for arg in ("--domain", d)]
            targets = [arg for t in task.targets for arg in ("--target", t)]
            out.append(
                (
                    name,
                    [
                        "train",
                        f"stage{task.stage}",
                        *domains,
                        "--function",
                        name,
                        *targets,
                        "--method",
                        method,
                        "--data",
                        f"{data}/{task.split}_train.parquet",
                        "--val",
                        f"{data}/{task.split}_val.parquet",
                        *task.budget,
                        "--pack-dir",
                        PACKS,
                        "--out",
                        f"{folder}/{name}",
                        *common,
                        "--description",
                        f"{task.description} ({method})",
                    ],
                )
            )
            out.append(
                (
                    f"{name} test",
                    [
                        "eval",
                        f"{data}/{task.split}_test.parquet",
                        "-F",
                        f"{folder}/{name}",
                        *targets,
                        *domains,
                        "--pack-dir",
                        PACKS,
                        "--record",
                        "test",
                        "--format",
                        "json",
                    ],
                )
            )
    return out


def zero_shot_steps(data: str) -> list[tuple[str, list[str]]]:
    """A second SMILES domain tag that no function tag ever saw, and the qed function tag behind it."""
    return [
        (
            "smiles-b",
            [
                "train",
                "stage1",
                "--domain",
                "smiles-b",
                "--input-kind",
                "smiles",
                "--data",
                f"{data}/smiles_unlabeled.parquet",
                "--max-rows",
                "3000",
                "--max-val-rows",
                "200",
                "--max-steps",
                "60",
                "--eval-every",
                "30",
                "--lr",
                "1e-2",
                "--max-tokens",
                "256",
                "--out",
                f"{BASELINES}/smiles-b",
                "--seed",
                "1",
                "--description",
                "A second SMILES domain tag (stage 1 only, seed 1): for the zero-shot measurement",
            ],
        ),
        (
            "qed zero-shot",
            [
                "eval",
                f"{data}/qed_test.parquet",
                "-F",
                "qed",
                "--domain",
                "smiles-b",
                "--target",
                "qed",
                "--pack-dir",
                BASELINES,
                "--pack-dir",
                PACKS,
                "--format",
                "json",
            ],
        ),
    ]


def run(only: list[str], data: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    timings_path = RESULTS / "recipe_timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    # The steps pass no --device, so each picks what select_device("auto") picks here.
    machine = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "device": select_device("auto").type,
    }
    for name, args in steps(data):
        if only and not any(name.startswith(prefix) for prefix in only):
            continue
        print(f"== {name}: tagcli {' '.join(args)}", flush=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "tagcli", *args], cwd=REPO, stdout=subprocess.PIPE, text=True)
        seconds = round(time.perf_counter() - started, 1)
        if done.returncode != 0:
            raise SystemExit(f"step '{name}' failed (exit {done.returncode}) after {seconds} s")
        if args[0] == "train":  # the pack is written; its resume checkpoint is not needed any more
            shutil.rmtree(REPO / f"{args[args.index('--out') + 1]}.ckpt", ignore_errors=True)
        if args[0] == "eval":
            (RESULTS / "eval").mkdir(exist_ok=True)
            (RESULTS / "eval" / f"{name.replace(' ', '_')}.json").write_text(done.stdout)
        timings[name] = {"seconds": seconds, **machine}
        timings_path.write_text(json.dumps(timings, indent=2, sort_keys=True) + "\n")
        print(f"   {seconds:.0f} s", flush=True)
    print(f"total: {sum(t['seconds'] for t in timings.values()) / 60:.1f} min (all recorded steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="run only steps whose name starts with one of these")
    parser.add_argument("--data", default="../shared/data", help="folder with the public splits")
    args = parser.parse_args()
    run(args.only, args.data)


if __name__ == "__main__":
    main()
