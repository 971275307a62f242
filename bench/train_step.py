"""Frozen-prefix vs full-sequence training step (stage 2), side by side in one run.

    .venv/bin/python bench/train_step.py [--rows 16] [--repeats 5] [--dtype auto] [--base-model smollm2-135m]

In stages 2 and 3 only the function tag (after the input) and the head train, so the prefix can run
under no_grad and the backward pass touches the p tag positions only. Both steps compute the same
gradients (tests/unit/test_model.py checks this); this script reports their speed ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from tagcli.basemodel.load import load_base_model
from tagcli.core.heads import RegressionHead
from tagcli.core.model import TaggedModel
from tagcli.core.prompt import EncodedRow, PromptEncoder, PromptTemplate, collate
from tagcli.train import init_tag

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qed_train.parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tag-length", type=int, default=10)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--base-model", default="smollm2-135m")
    args = parser.parse_args()

    base = load_base_model(args.base_model, dtype=args.dtype)
    p = args.tag_length
    tags = {"smiles": init_tag(base.model, p), "qed": init_tag(base.model, p)}
    model = TaggedModel(base.model, tags, {"qed": RegressionHead(base.hidden_size, [{"name": "qed"}])}).to(base.device)
    model.tags["smiles"].requires_grad_(False)
    encoder = PromptEncoder(base.tokenizer, model.tag_table)
    smiles = pd.read_parquet(DATA, columns=["smiles"])["smiles"].head(args.rows).tolist()
    rows = encoder.encode(
        PromptTemplate("{tag:smiles}{input:smiles}{tag:qed}"), {"smiles": encoder.tokenize_inputs(smiles)}
    )
    targets = torch.randn(len(rows), 1, device=base.device)
    full = collate(rows, encoder.pad_id).to(base.device)
    prefix = collate(
        [EncodedRow(r.token_ids[: r.readout + 1 - p], r.slots[: r.readout + 1 - p], 0) for r in rows],
        encoder.pad_id,
        "left",
    ).to(base.device)
    head = model.heads["qed"]

    def full_step() -> None:
        head.loss(model.readout(full), targets).backward()

    def prefix_step() -> None:
        head.loss(model.readout_after_prefix(prefix, "qed"), targets).backward()

    timings: dict[str, list[float]] = {"full sequence": [], "frozen prefix": []}
    for _ in range(args.repeats + 1):  # first round warms up; steps alternate so load affects both alike
        for name, step in (("full sequence", full_step), ("frozen prefix", prefix_step)):
            model.zero_grad(set_to_none=True)
            started = time.perf_counter()
            step()
            timings[name].append(time.perf_counter() - started)
    full_s, prefix_s = (statistics.median(t[1:]) for t in timings.values())
    tokens = int(full.attention_mask.sum())
    print(
        f"device {base.device}, dtype {str(base.dtype).removeprefix('torch.')}, {len(rows)} rows, {tokens} tokens, "
        f"p={p}, torch {torch.__version__}"
    )
    print(f"full-sequence step  {full_s:.3f} s  ({len(rows) / full_s:.1f} rows/s)")
    print(f"frozen-prefix step  {prefix_s:.3f} s  ({len(rows) / prefix_s:.1f} rows/s)")
    print(f"speed-up            {full_s / prefix_s:.2f}x")


if __name__ == "__main__":
    main()
