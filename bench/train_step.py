"""Cached-context vs full-sequence training step (stage 2), side by side in one run.

    .venv/bin/python bench/train_step.py [--rows 16] [--repeats 5] [--dtype auto] [--base-model smollm2-135m]

In stages 2 and 3 only the function tag (after the input) and the head train, so everything before
the tag is frozen: training computes those contexts (KV cache of prefix + inputs) once, without grad,
and every later step over the same rows runs and back-propagates through the p tag positions only.
Both steps compute the same gradients (tests/unit/test_model.py checks this); this script reports
their speed ratio, and what computing the contexts once costs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from predict import cpu_flags  # bench/predict.py: the CPU flags every benchmark number is printed with

from tagcli.basemodel.load import load_base_model
from tagcli.core.batching import context_batches, encode_contexts
from tagcli.core.heads import RegressionHead
from tagcli.core.model import TaggedModel
from tagcli.core.prompt import PromptEncoder, PromptTemplate, collate
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
    template = PromptTemplate("{tag:smiles}{input:smiles}{tag:qed}")
    inputs = {"smiles": encoder.tokenize_inputs(smiles)}
    rows = encoder.encode(template, inputs)
    targets = torch.randn(len(rows), 1, device=base.device)
    full = collate(rows, encoder.pad_id).to(base.device)
    suffix = collate([encoder.encode_suffix(template)], encoder.pad_id).to(base.device)
    head = model.heads["qed"]
    started = time.perf_counter()
    with torch.no_grad():  # once per run: what every later step over these rows reuses
        [(chunk, context)] = encode_contexts(context_batches(model, encoder, template, inputs, len(rows), 1 << 30, p))
    context_s = time.perf_counter() - started

    def full_step() -> None:
        head.loss(model.readout(full), targets).backward()

    def cached_step() -> None:
        features = model.readout_after_context(context, suffix)[0]
        context.rewind()
        head.loss(features, targets[chunk]).backward()

    timings: dict[str, list[float]] = {"full sequence": [], "cached context": []}
    for _ in range(args.repeats + 1):  # first round warms up; steps alternate so load affects both alike
        for name, step in (("full sequence", full_step), ("cached context", cached_step)):
            model.zero_grad(set_to_none=True)
            started = time.perf_counter()
            step()
            timings[name].append(time.perf_counter() - started)
    full_s, cached_s = (statistics.median(t[1:]) for t in timings.values())
    tokens = int(full.attention_mask.sum())
    print(
        f"device {base.device}, dtype {str(base.dtype).removeprefix('torch.')}, {len(rows)} rows, {tokens} tokens, "
        f"p={p}, torch {torch.__version__}, CPU flags: {cpu_flags()}"
    )
    print(f"full-sequence step   {full_s:.3f} s  ({len(rows) / full_s:.1f} rows/s)")
    print(f"cached-context step  {cached_s:.3f} s  ({len(rows) / cached_s:.1f} rows/s)")
    print(f"speed-up             {full_s / cached_s:.2f}x  (contexts computed once: {context_s:.3f} s)")


if __name__ == "__main__":
    main()
