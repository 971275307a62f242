"""MoleculeACE: a function for each of the 30 bioactivity sets, scored on its test split and on its
activity cliffs (issue #28).

    .venv/bin/python -m recipes.moleculeace --data ../shared/data          # `make moleculeace`
    .venv/bin/python -m recipes.moleculeace --sets CHEMBL204_Ki CHEMBL2034_Ki --no-anchors

Per set (`moleculeace/CHEMBL*.parquet`: `smiles`, `y` = −log10 of the nM value, `cliff_mol`, `split`):
validation is the same seeded share of the published train rows the anchors validate on
(`moleculeace_anchors.carve_validation`); the base model is loaded once and each function is trained
through the Python API (`tagcli.train.train`, what `tagcli train stage2` runs) with the head of the shipped
measured-endpoint packs (bbb, solubility: `default_packs.MEASURED_READOUT`, six members). That readout, the
mean over the input at blocks 2-12, cannot see the function tag (it follows the inputs in a causal model),
so there are no tag steps: a set costs one encoding of its rows and the head fits (the 2-set pilot with
100 tag steps on input-mean + tag-mean took 15-29 min a set; recipes/results/moleculeace_2sets.json).
Its pack is the **tags alone** model. The **tags + ECFP4** model adds ECFP4 counts to what every member
reads (joint, unlike the shipped bbb/solubility packs' split views: on the validation rows of three sets
its MSE was 0.537 / 0.567 / 0.563 against 0.542 / 0.643 / 0.585 split and 0.614 / 0.720 / 0.704 for the
tags alone; recipes/results/moleculeace_levers.json); it reuses the run's cached readout features, so
only its head is fitted. The test rows are encoded once and both
heads score them; a test row the model refuses (too long) gets the training mean and is counted, as the
anchors do for rows they cannot featurise.

Anchors (SVM with a Tanimoto kernel, C on validation; RandomForest on ECFP4; kNN-Tanimoto; chemprop when
`make moleculeace-chemprop` has run) come from recipes.moleculeace_anchors on the same splits.
Writes recipes/results/moleculeace.json: per set and model `rmse`, `rmse_cliff`, `n_test`; per model
`mean_rmse` and `mean_rmse_cliff`; seconds and the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recipes.anchors import jsonable, load_average, machine
from recipes.default_packs import MEASURED_READOUT
from recipes.moleculeace_anchors import (
    VALIDATION,
    carve_validation,
    cliff_rmse,
    means,
    moleculeace_anchors,
    rmse,
    set_paths,
)
from recipes.pack_features import readout_features
from tagcli.basemodel.load import BaseModel, load_base_model
from tagcli.packs.format import TagPack, load_pack
from tagcli.train import TrainConfig, train
from tagcli.train.loop import Progress, _Hidden

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "out" / "moleculeace"
RESULTS = REPO / "recipes" / "results"
READOUT = MEASURED_READOUT
EXTRA = "ecfp4"  # the SVM's own features, beside the tags
MODELS = {"tag-llm": "tags alone", f"tag-llm+{EXTRA}": f"tags + {EXTRA.upper()} counts"}


def settings() -> dict[str, Any]:
    """The training settings every set gets (recorded with the results: a run resumes only its own)."""
    return {
        "readout": READOUT,
        "members": 6,
        "hidden_units": 32,
        "domain_components": 16,
        "max_steps": 0,  # the readout cannot see the function tag: no tag steps
        "seed": 0,
    }


def split_set(path: Path) -> dict[str, pd.DataFrame]:
    """train (the published train rows but the carved validation), val, test."""
    frame = pd.read_parquet(path)
    published = frame[frame["split"] == "train"].reset_index(drop=True)
    val_rows = np.zeros(len(published), dtype=bool)
    val_rows[carve_validation(len(published))] = True
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    return {"train": published[~val_rows], "val": published[val_rows], "test": test}


def set_config(name: str, splits: dict[str, pd.DataFrame], packs: Path, folder: Path) -> TrainConfig:
    """The set's training run (`settings()`), its train and validation rows written to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        splits[split][["smiles", "y"]].to_parquet(folder / f"{split}.parquet", index=False)
    return TrainConfig.from_flat(
        {
            "stage": 2,
            "domains": ["smiles"],
            "function": name.lower().replace("_", "-"),  # a tag name: lower case, digits and dashes
            "targets": ["y"],
            "data": str(folder / "train.parquet"),
            "val": str(folder / "val.parquet"),
            "out": str(folder / "pack"),
            "pack_dirs": [str(packs)],
            "force": True,
            "description": f"MoleculeACE {name}: -log10 of the nM value from SMILES",
            **settings(),
        }
    )


def train_set(
    name: str, splits: dict[str, pd.DataFrame], base: BaseModel, packs: Path, work: Path, progress: Progress
) -> dict[str, tuple[TagPack, float]]:
    """The set's function with the tags alone, then with ECFP4 counts too (the same tag and features),
    each with its training seconds (the second's are its head fit: the features are the first's)."""
    folder = work / name
    config = set_config(name, splits, packs, folder)
    started = time.perf_counter()
    tags_alone = train(config, base, progress)
    tags_seconds = time.perf_counter() - started
    shutil.rmtree(folder / "pack-tags", ignore_errors=True)
    shutil.copytree(config.out, folder / "pack-tags")
    # The same rows and tags, so the run's cached readout features serve this head too.
    options = dataclasses.replace(config.head_options, extra_features=[EXTRA])
    with_extra = train(dataclasses.replace(config, resume=True, head_options=options), base, progress)
    extra_seconds = time.perf_counter() - started - tags_seconds
    tags_model, extra_model = MODELS
    return {tags_model: (tags_alone, tags_seconds), extra_model: (with_extra, extra_seconds)}


def score_test(
    base: BaseModel, models: dict[str, TagPack], domain: TagPack, test: pd.DataFrame, train_mean: float
) -> dict[str, Any]:
    """rmse, rmse_cliff, n_test per model: the test rows encoded once, each head on them."""
    first = next(iter(models.values()))
    texts = test["smiles"].tolist()
    hidden, errors = readout_features(base, first, domain, texts, first.head.readout)
    refused = [e is not None for e in errors]
    y, cliff = test["y"].to_numpy(float), test["cliff_mol"].to_numpy(int)
    scored = {}
    for model, pack in models.items():
        extra, problems = pack.head.input_features({"smiles": texts})
        predicted = pack.head.decode(pack.head.predict(_Hidden(hidden.nan_to_num(), extra)), None)
        values = np.asarray(predicted[pack.head.value_columns()[0]], float)  # pred_y
        failed = np.array(refused) | np.array([p is not None for p in problems])
        values[failed] = train_mean  # as the anchors do for rows they cannot featurise
        scored[model] = {
            "rmse": rmse(y, values),
            "rmse_cliff": cliff_rmse(y, values, cliff),
            "n_test": len(y),
            "n_cliff": int(cliff.sum()),
            "unscored": int(failed.sum()),
        }
    return scored


class PhaseClock:
    """Training progress reduced to seconds per phase (what a set's time goes to), printed as they end."""

    def __init__(self, name: str) -> None:
        self.name, self.phase, self.started, self.seconds = name, "start", time.perf_counter(), {}

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") == "phase":
            self.switch(event["phase"])
        elif event.get("event") == "eval":
            metrics = {k: round(v, 4) for k, v in event["metrics"].items() if isinstance(v, float)}
            print(f"  {self.name} step {event['step']}: {metrics}", flush=True)

    def switch(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[self.phase] = round(self.seconds.get(self.phase, 0.0) + now - self.started, 1)
        print(f"  {self.name} {self.phase}: {now - self.started:.1f}s", flush=True)
        self.phase, self.started = phase, now


def anchor_results(data: Path, sets: list[str] | None, recorded: Path | None) -> dict[str, Any]:
    """The anchors per set: from `recorded` (moleculeace_anchors.json, `make moleculeace-anchors`) where
    it has the set, computed here for the sets it lacks."""
    found = json.loads(recorded.read_text())["sets"] if recorded is not None and recorded.is_file() else {}
    wanted = [p.stem for p in set_paths(data, sets)]
    missing = [name for name in wanted if name not in found]
    if missing:
        found = {**found, **moleculeace_anchors(data, missing)["sets"]}
    return {name: found[name]["models"] for name in wanted}


def run(
    data: Path,
    sets: list[str] | None = None,
    anchors: bool = True,
    base: BaseModel | None = None,
    packs: Path = REPO / "tagpacks",
    work: Path = WORK,
    out: Path | None = None,
    recorded_anchors: Path | None = None,
) -> dict[str, Any]:
    """Every chosen set's functions trained and scored (and the anchors beside them); `base` and
    `packs` (where the smiles domain pack is) default to the embedded model and the shipped packs.
    With `out`, the result so far is written there after every set, and sets already there (trained
    with the same settings on the same domain tag) are kept, not retrained: a stopped run resumes."""
    started, load_at_start = time.perf_counter(), load_average()
    previous = json.loads(out.read_text()) if out is not None and out.is_file() else {}
    domain = load_pack(packs / "smiles")
    tags = {"smiles": domain.tag_digest()}  # as recipes.pack_features.domain_tags records them
    same = previous.get("settings") == settings() and previous.get("domain_tags") == tags
    results: dict[str, Any] = previous.get("sets", {}) if same else {}
    base = base or load_base_model()

    def so_far() -> dict[str, Any]:
        done = {name: entry for name, entry in results.items() if entry.get("seconds") is not None}
        return {
            "sets": results,
            "means": means(results),
            "models": MODELS,
            "settings": settings(),
            "domain_tags": tags,
            "validation": f"{VALIDATION}, the same rows for every model (anchors: refitted on all train rows)",
            # the tag-LLM sets' own times summed (a resumed run's earlier sets included)
            "seconds": round(sum(entry["seconds"] for entry in done.values()), 1),
            "wall_seconds_this_run": round(time.perf_counter() - started, 1),
            "machine": machine(),
            "load_average": {"start": load_at_start, "end": load_average()},
        }

    for path in set_paths(data, sets):
        name = path.stem
        if name in results and all(m in results[name]["models"] for m in MODELS):
            continue
        t0, clock = time.perf_counter(), PhaseClock(name)
        splits = split_set(path)
        trained = train_set(name, splits, base, packs, work, clock)
        clock.switch("scoring the test rows")
        packs_only = {model: pack for model, (pack, _) in trained.items()}
        scoring = time.perf_counter()
        models = score_test(base, packs_only, domain, splits["test"], float(splits["train"]["y"].mean()))
        scoring = time.perf_counter() - scoring
        for k, (model, (_, seconds)) in enumerate(trained.items()):  # the shared test encoding: the first's
            models[model]["seconds"] = round(seconds + (scoring if k == 0 else 0.0), 1)
        clock.switch("done")
        results[name] = {
            "models": models,
            "seconds": round(time.perf_counter() - t0, 1),
            "phase_seconds": clock.seconds,
            "n_train": len(splits["train"]),
            "n_val": len(splits["val"]),
            "load_average": load_average(),
        }
        print(name, {m: (round(r["rmse"], 3), round(r["rmse_cliff"], 3)) for m, r in models.items()}, flush=True)
        if out is not None:
            write(out, so_far())
    if anchors:
        for name, found in anchor_results(data, sets, recorded_anchors).items():
            results.setdefault(name, {"models": {}})["models"].update(found)
    return so_far()


def write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(result), indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--sets", nargs="*", help="set names (e.g. CHEMBL204_Ki); default: all 30")
    parser.add_argument("--no-anchors", action="store_true", help="the tag-LLM models only")
    parser.add_argument("--out", type=Path, default=RESULTS / "moleculeace.json")
    parser.add_argument(
        "--anchors",
        type=Path,
        default=RESULTS / "moleculeace_anchors.json",
        help="recorded anchors (missing sets: computed)",
    )
    args = parser.parse_args()
    result = run(Path(args.data).resolve(), args.sets, not args.no_anchors, out=args.out, recorded_anchors=args.anchors)
    write(args.out, result)
    print(json.dumps(result["means"], indent=2))


if __name__ == "__main__":
    main()
