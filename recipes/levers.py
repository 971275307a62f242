"""Levers for the measured endpoints, each measured on the validation split (issue #24).

    .venv/bin/python -m recipes.levers --endpoint bbb          # or solubility, amp; --data ../shared/data

One function tag is trained per endpoint with `tagcli train`'s defaults (the shipped packs' budget);
then the readout features of every row are computed once with a superset readout (input-mean,
tag-mean and tag-last at every second block up to the last), and heads are fitted on column subsets
of them, with and without extra features, exactly as `train` fits its final head (`Head.fit_final`).
Every variant is scored on validation; the test split is scored only for the variant validation
picks, the tags alone (same head) and the extra features alone (same head, no language model).
Results: recipes/results/levers/ENDPOINT.json. Features are kept in out/levers/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from recipes.anchors import machine
from recipes.pack_features import domain_tags, readout_features
from tagcli.basemodel.load import load_base_model
from tagcli.core.extra_features import ExtraFeatures, input_features
from tagcli.core.heads import HEADS, Head
from tagcli.core.readout import ReadoutSpec
from tagcli.packs.format import load_pack

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "out" / "levers"
RESULTS = REPO / "recipes" / "results" / "levers"
SEED = 0


@dataclass(frozen=True)
class Endpoint:
    name: str
    domain: str  # the domain pack (and input slot)
    column: str  # input column
    target: str
    task: str  # regression or classification
    extras: tuple[str, ...]  # extra-feature sets worth trying
    top_layer: int  # the deepest block the superset readout reads


ENDPOINTS = {
    e.name: e
    for e in (
        # Superset readouts stop at block 16 for bbb and amp: on solubility, blocks past 16 did worse
        # (validation RMSE 0.69 to 16, 0.72 to 20, 0.73 to 30) and they cost twice the encoding.
        Endpoint("bbb", "smiles", "smiles", "bbb", "classification", ("rdkit2d", "ecfp4"), 16),
        Endpoint("solubility", "smiles", "smiles", "log_solubility", "regression", ("rdkit2d", "ecfp4"), 30),
        Endpoint("amp", "protein", "sequence", "amp", "classification", ("composition",), 16),
    )
}
POOLS = ("input-mean", "tag-mean", "tag-last")


def superset(endpoint: Endpoint) -> ReadoutSpec:
    return ReadoutSpec(POOLS, tuple(range(2, endpoint.top_layer + 1, 2)))


def train_tag(endpoint: Endpoint, data: Path) -> Path:
    """The function tag, trained by `tagcli train` with its defaults (the shipped packs' budget)."""
    out = WORK / endpoint.name / "pack"
    if (out / "manifest.json").is_file():
        return out
    args = ["train", "stage2", "--domain", endpoint.domain, "--function", f"{endpoint.name}-levers"]
    args += ["--target", endpoint.target, "--task", endpoint.task, "--max-steps", "200", "--eval-every", "200"]
    args += [
        "--data",
        str(data / f"{endpoint.name}_train.parquet"),
        "--val",
        str(data / f"{endpoint.name}_val.parquet"),
    ]
    args += ["--pack-dir", str(REPO / "tagpacks"), "--out", str(out), "--seed", str(SEED)]
    subprocess.run([sys.executable, "-m", "tagcli", *args], check=True, cwd=REPO)
    return out


def split_features(endpoint: Endpoint, data: Path, pack_dir: Path) -> dict[str, dict[str, Any]]:
    """Per split: superset readout features, the input texts and the labels (cached in out/levers/)."""
    cache = WORK / endpoint.name / "features.safetensors"
    tables = {s: pq.read_table(data / f"{endpoint.name}_{s}.parquet") for s in ("train", "val", "test")}
    splits = {
        s: {"texts": t.column(endpoint.column).to_pylist(), "labels": t.column(endpoint.target).to_pylist()}
        for s, t in tables.items()
    }
    pack, domain = load_pack(pack_dir), load_pack(REPO / "tagpacks" / endpoint.domain)
    # The features are the two tags' (a cache from before a rebuild of either is recomputed).
    made_with = {"function_tag": pack.tag_digest(), "domain_tag": domain.tag_digest()}
    if cache.is_file():
        with safe_open(cache, "pt") as cached:
            if cached.metadata() == made_with:
                for s in splits:
                    splits[s]["hidden"] = cached.get_tensor(s)
                return splits
    base = load_base_model()
    for name, split in splits.items():
        started = time.perf_counter()
        split["hidden"], errors = readout_features(base, pack, domain, split["texts"], superset(endpoint))
        seconds = time.perf_counter() - started
        valid = sum(e is None for e in errors)
        print(f"{endpoint.name} {name}: {valid} of {len(errors)} rows in {seconds:.0f} s", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({s: splits[s]["hidden"].contiguous() for s in splits}, cache, metadata=made_with)
    return splits


def columns(endpoint: Endpoint, hidden_size: int, pools: tuple[str, ...], layers: tuple[int, ...]) -> torch.Tensor:
    """Indices of the superset's columns that a readout of `pools` at `layers` reads, in its order."""
    spec = superset(endpoint)
    picked = []
    for layer in layers:
        for pool in pools:
            k = spec.layers.index(layer) * len(POOLS) + POOLS.index(pool)
            picked.append(torch.arange(k * hidden_size, (k + 1) * hidden_size))
    return torch.cat(picked)


@dataclass(frozen=True)
class Variant:
    name: str
    pools: tuple[str, ...]  # () : no readout (extra features alone)
    layers: tuple[int, ...]
    extras: tuple[str, ...] = ()
    members: int = 5
    hidden_units: int = 32
    views: tuple[str, ...] = ("joint",)  # what each member reads (`--member-views`)


def variants(endpoint: Endpoint) -> list[Variant]:
    """The levers: readout depth and pools, head size, extra features (alone and with the tags)."""
    mean_pools = ("input-mean", "tag-mean")
    tops = [top for top in (8, 12, 16, 20, 30) if top <= endpoint.top_layer]
    depth = [Variant(f"blocks 2-{top}", mean_pools, tuple(range(2, top + 1, 2))) for top in tops]
    pools = [
        Variant("input-mean 2-12", ("input-mean",), tuple(range(2, 13, 2))),
        Variant("input-mean 2-8", ("input-mean",), (2, 4, 6, 8)),
        Variant("all pools 2-12", POOLS, tuple(range(2, 13, 2))),
        Variant(f"tag-last at {endpoint.top_layer}", ("tag-last",), (endpoint.top_layer,)),
    ]
    heads = [
        Variant("2-12 linear", mean_pools, tuple(range(2, 13, 2)), members=5, hidden_units=0),
        Variant("2-12 128 units", mean_pools, tuple(range(2, 13, 2)), members=5, hidden_units=128),
    ]
    extras = [Variant(f"{e} alone", (), (), (e,)) for e in endpoint.extras]
    extras += [Variant(f"2-12 + {e}", mean_pools, tuple(range(2, 13, 2)), (e,)) for e in endpoint.extras]
    # Members split between the readout and the extra features: the average of a tags-only and a
    # features-only model (on solubility it beat both and the joint head: validation RMSE 0.576).
    views = ("readout", "extra")
    extras += [
        Variant(f"{name} | {e} views", pools, layers, (e,), members=6, views=views)
        for e in endpoint.extras
        for name, pools, layers in (
            ("2-12", mean_pools, tuple(range(2, 13, 2))),
            ("input-mean 2-12", ("input-mean",), tuple(range(2, 13, 2))),
        )
    ]
    if len(endpoint.extras) > 1:
        extras.append(
            Variant("2-12 + " + " + ".join(endpoint.extras), mean_pools, tuple(range(2, 13, 2)), endpoint.extras)
        )
    return depth + pools + heads + extras


def fit(endpoint: Endpoint, variant: Variant, splits: dict, hidden_size: int, classes: list[str]) -> Head:
    """The head `train` would fit last, on this variant's inputs of the training rows (those with any)."""
    kind = HEADS[endpoint.task]
    extras = [ExtraFeatures.bind(e, endpoint.domain) for e in variant.extras]
    readout = ReadoutSpec(variant.pools or ("tag-last",), variant.layers)
    size = hidden_size if variant.pools else 0  # extra features alone: the head reads nothing else
    options = {"readout": readout, "members": variant.members, "hidden_units": variant.hidden_units}
    options |= {"domain_components": 16, "extra_features": extras, "views": variant.views}
    if endpoint.task == "classification":
        head = kind(size, endpoint.target, classes, **options)
    else:
        head = kind(size, [{"name": endpoint.target}], **options)
    (x, y), (val_x, val_y) = (
        usable(head, *parts(endpoint, variant, splits[s], hidden_size, head), splits[s]) for s in ("train", "val")
    )
    head.fit_final(x, y, val_x, val_y, SEED)
    return head


def parts(
    endpoint: Endpoint, variant: Variant, split: dict, hidden_size: int, head: Head
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The head's inputs: the chosen readout columns, and the extra features (computed once per set)."""
    chosen = columns(endpoint, hidden_size, variant.pools, variant.layers) if variant.pools else torch.arange(0)
    extra = []
    for features in head.extra_features:
        key = f"extra:{features.name}"
        if key not in split:
            split[key] = input_features([features], {endpoint.domain: split["texts"]})[0]
        extra.append(split[key])
    return split["hidden"][:, chosen], (torch.cat(extra, dim=1) if extra else None)


def usable(head: Head, hidden: torch.Tensor, extra: torch.Tensor | None, split: dict) -> tuple[torch.Tensor, list]:
    """Rows with a readout, extra features and a label: (their inputs side by side, their labels)."""
    x = hidden if extra is None else torch.cat([hidden, extra], dim=1)
    found = head.parse_labels([split["labels"]])
    keep = [i for i, ok in enumerate(torch.isfinite(x).all(1).tolist()) if ok and head.is_complete(found[i])]
    return x[keep], [found[i] for i in keep]


def score(endpoint: Endpoint, variant: Variant, head: Head, split: dict, hidden_size: int) -> dict[str, Any]:
    """The head's own metrics on a split; rows without inputs (refused, or features that failed) are
    left out and counted."""
    hidden, extra = parts(endpoint, variant, split, hidden_size, head)
    x = hidden if extra is None else torch.cat([hidden, extra], dim=1)
    keep = torch.isfinite(x).all(1)
    readout = type("Readout", (), {"hidden": hidden[keep], "extra": None if extra is None else extra[keep]})()
    with torch.no_grad():
        predicted = head.decode(head.predict(readout), None)
    kept = [label for label, k in zip(head.parse_labels([split["labels"]]), keep.tolist()) if k]
    metrics = head.summarize({endpoint.target: head.target_metrics(kept, predicted)[0]})
    if endpoint.task == "regression":
        metrics["rmse"] = float(np.sqrt(metrics["mse"]))
    return metrics | {"left_out": int((~keep).sum())}


def selection_score(endpoint: Endpoint, metrics: dict[str, Any]) -> float:
    """Higher is better: ROC-AUC for classification, -RMSE for regression."""
    return metrics["roc_auc"] if endpoint.task == "classification" else -metrics["rmse"]


def run(endpoint: Endpoint, data: Path) -> dict[str, Any]:
    started = time.perf_counter()
    pack_dir = train_tag(endpoint, data)
    splits = split_features(endpoint, data, pack_dir)
    hidden_size = load_pack(pack_dir).manifest.hidden_size
    classes = sorted({str(v) for v in splits["train"]["labels"]}) if endpoint.task == "classification" else []
    results, heads = {}, {}
    for variant in variants(endpoint):
        t0 = time.perf_counter()
        torch.manual_seed(SEED)
        heads[variant.name] = head = fit(endpoint, variant, splits, hidden_size, classes)
        results[variant.name] = {"val": score(endpoint, variant, head, splits["val"], hidden_size)}
        results[variant.name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{endpoint.name} {variant.name}: val {results[variant.name]['val']}", flush=True)
    by_name = {v.name: v for v in variants(endpoint)}
    with_tags = [v for v in by_name.values() if v.pools]
    best = max(with_tags, key=lambda v: selection_score(endpoint, results[v.name]["val"]))
    tags_only = max(
        (v for v in with_tags if not v.extras), key=lambda v: selection_score(endpoint, results[v.name]["val"])
    )
    alone = max(
        (v for v in by_name.values() if not v.pools), key=lambda v: selection_score(endpoint, results[v.name]["val"])
    )
    for variant in {best.name: best, tags_only.name: tags_only, alone.name: alone}.values():
        results[variant.name]["test"] = score(endpoint, variant, heads[variant.name], splits["test"], hidden_size)
    return {
        "endpoint": endpoint.name,
        "chosen": {"with_tags": best.name, "tags_alone": tags_only.name, "extra_features_alone": alone.name},
        "variants": {name: {"variant": vars(by_name[name]), **r} for name, r in results.items()},
        "domain_tags": domain_tags(REPO / "tagpacks", [endpoint.domain]),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", choices=list(ENDPOINTS), nargs="+", default=list(ENDPOINTS))
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.endpoint:
        result = run(ENDPOINTS[name], Path(args.data).resolve())
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["chosen"]), f"{result['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
