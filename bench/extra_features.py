"""Scoring speed with extra features against the tags alone, side by side in one run (issue #24).

    .venv/bin/python bench/extra_features.py --rows 256 --json bench/results/extra-features-cpu.json

Two function packs share the shipped `qed` pack's tag, readout (blocks 2-12) and head shape (5 MLPs);
the second's head also reads each set of extra features (RDKit 2D descriptors, ECFP4 counts), so the
only difference is computing those features and a wider first layer. Heads are untrained copies of
that shape: speed does not depend on their weights. Rows are drug-like SMILES (distinct KIBA ligands).
Reports rows/s of `TagScorer` for each, their ratio, the descriptors' own rate, the CPU flags and dtype.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from predict import REPO, cpu_flags, drug_like_smiles, timed  # bench/ is this script's folder

from tagcli.basemodel.load import load_base_model
from tagcli.core.extra_features import EXTRA_FEATURES, ExtraFeatures
from tagcli.core.heads import RegressionHead
from tagcli.packs.format import TagPack, load_pack, save_pack
from tagcli.scoring.scorer import TagScorer

SETS = ("rdkit2d", "ecfp4")


def pack_with_extras(qed: TagPack, name: str, extras: list[ExtraFeatures], directory: Path) -> None:
    """The qed function under another name, its head of the same shape reading `extras` too."""
    manifest = dataclasses.replace(
        qed.manifest, name=name, template=qed.manifest.template.replace("{tag:qed}", "{tag:" + name + "}")
    )
    options = {k: v for k, v in RegressionHead.feature_options(qed.manifest.head).items() if k != "extra_features"}
    targets = [{**qed.head.targets[0], "name": name}]
    head = RegressionHead(qed.manifest.hidden_size, targets, extra_features=extras, **options).eval()
    save_pack(TagPack(manifest, {name: qed.tags["qed"]}, head), directory / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base = load_base_model(dtype=args.dtype)
    qed = load_pack(REPO / "tagpacks" / "qed")
    table = pa.table({"smiles": drug_like_smiles(args.rows)})
    results: dict = {"rows": table.num_rows, "dtype": str(base.dtype).removeprefix("torch."), "cpu": cpu_flags()}
    with tempfile.TemporaryDirectory() as tmp:
        packs = Path(tmp)
        variants = {"tags alone": []} | {f"tags + {s}": [ExtraFeatures.bind(s, "smiles")] for s in SETS}
        for k, extras in enumerate(variants.values()):
            pack_with_extras(qed, f"fn{k}", extras, packs)
        dirs = [str(packs), str(REPO / "tagpacks")]
        scorers = {v: TagScorer(f"fn{k}", base_model=base, pack_dirs=dirs) for k, v in enumerate(variants)}
        seconds = {name: timed(lambda s=scorer: s(table), args.repeat) for name, scorer in scorers.items()}
    texts = table.column("smiles").to_pylist()
    for s in SETS:
        features = EXTRA_FEATURES[s]
        started = time.perf_counter()
        features.compute(texts, features.all_columns())
        results[f"{s} alone rows/s"] = round(len(texts) / (time.perf_counter() - started), 1)
    results |= {f"{name} rows/s": round(table.num_rows / t, 1) for name, t in seconds.items()}
    results |= {f"{name} / tags alone": round(seconds["tags alone"] / seconds[name], 3) for name in seconds}
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
