"""Which extra features the MoleculeACE recipe's second model reads, chosen on validation (issue #28).

    .venv/bin/python -m recipes.moleculeace_levers --sets CHEMBL2034_Ki CHEMBL4203_Ki CHEMBL219_Ki

Per set, the recipe's tags-alone function is trained once (`recipes.moleculeace.settings`, no tag steps);
every variant then refits only the final head on the run's cached readout features (`resume`), with the
extra features and member views it names, and its validation metrics are recorded. The test rows are not
read. Writes recipes/results/moleculeace_levers.json after every variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from recipes.anchors import machine
from recipes.moleculeace import RESULTS, WORK, set_config, settings, split_set
from tagcli.basemodel.load import load_base_model
from tagcli.train import train

REPO = Path(__file__).resolve().parent.parent
VARIANTS: dict[str, dict[str, Any]] = {
    "tags": {},
    "ecfp4-split": {"extra_features": ["ecfp4"], "member_views": ["readout", "extra"]},
    "ecfp4-joint": {"extra_features": ["ecfp4"]},
    "rdkit2d-split": {"extra_features": ["rdkit2d"], "member_views": ["readout", "extra"]},
    "both-split": {"extra_features": ["ecfp4", "rdkit2d"], "member_views": ["readout", "extra"]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--sets", nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=RESULTS / "moleculeace_levers.json")
    args = parser.parse_args()
    base, result = load_base_model(), {"settings": settings(), "machine": machine(), "sets": {}}
    for name in args.sets:
        splits = split_set(args.data / "moleculeace" / f"{name}.parquet")
        config = set_config(name, splits, REPO / "tagpacks", WORK / "levers" / name)
        for variant, options in VARIANTS.items():
            started = time.perf_counter()
            head = dataclasses.replace(config.head_options, **options)
            pack = train(dataclasses.replace(config, resume=True, head_options=head), base, lambda event: None)
            seconds = round(time.perf_counter() - started, 1)
            result["sets"].setdefault(name, {})[variant] = {**pack.manifest.metrics["val"], "seconds": seconds}
            print(name, variant, seconds, pack.manifest.metrics["val"], flush=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
