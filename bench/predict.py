"""Scoring speed and memory, measured side by side in one run (ratios, not absolute timings, are the point).

    .venv/bin/python bench/predict.py --cpu-options   # ~18 min on 2 CPU cores (the 1M-row RSS run ~9 of them)
    .venv/bin/python bench/predict.py --rows 1024 --rss-rows 1000000 --device cuda
    .venv/bin/python bench/predict.py --rows 0 --rss-rows 0 --unit-rows-rows 960   # only the unit-size ratio
    .venv/bin/python bench/predict.py --rows 0 --rss-rows 0 --unit-rows-rows 0 --readout-rows 256 --cpu-options
                                                      # only the readout comparison and the fp32 CPU options
    .venv/bin/python bench/predict.py --rows 0 --rss-rows 0 --unit-rows-rows 0 --readout-rows 64 --cpu-options threads,int8
                                                      # the same, reduced (~2 min on 2 busy cores)

Compares, on the same rows of ../shared/data/qed_test.parquet with the built-in `qed` pack:
  tagcli          TagScorer.score on an Arrow table: cleaning, tokenizing, batching, model, head, output
  raw forward     the backbone alone over the very same prompt tokens in the same batches and the same
                  blocks (the pack's readout stops below the top, at block 12 of 30, so both run 12): the ceiling
  one row/forward a loop like the paper's reference code: one full LM forward (with logits) per row
  PEFT prompt     PEFT prompt tuning with as many virtual tokens as tagcli's tags, batched in file order
                  as a DataLoader would, reading the last hidden state (peft's forward computes logits)
  K=4 functions   four function tags on the same inputs vs one (the inputs run once, then 4 suffixes)
  --unit-rows 60  `score_file` (what `tagcli predict` runs) on drug-like SMILES (KIBA ligands, longer
                  than MOSES) in 60-row work units vs the default unit size: small units are scored
                  together in one length-sorted window, so the ratio should stay near 1 (target >= 0.9)
  readouts        the paper's readout (final layer, last tag position, one linear head: the old packs) vs
                  the qed pack's `input-mean+tag-mean@2,4,...,12` with a 5-member MLP ensemble head (the
                  model runs 12 of 30 blocks), on MOSES and drug-like SMILES, in the machine's auto dtype
                  and in float32 (the numerics of a CPU without native bf16). Both packs are built here
                  with seeded random tags and heads of the shipped shapes, so no installed pack matters.
  --cpu-options   fp32 scoring of the new readout on drug-like SMILES: 2 vs 1 threads, torch.compile of
                  the decoder blocks, int8 dynamic quantization of the Linear layers; rows/s and how far
                  each moves the readout features from plain fp32 (raw, and standardised per feature as
                  a trained head sees them)
and reports padding efficiency (real / processed tokens) and the peak RSS of `tagcli predict` on a
generated 1,000,000-row Parquet file. That last run uses a tiny random-weight model with SmolLM2's
tokenizer, so it measures the streaming pipeline (reader, RDKit, tokenizer, writer), not the weights.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from tagcli.basemodel.load import BaseModel, load_base_model, select_device, select_dtype
from tagcli.core.batching import context_batches, encode_contexts, length_batches
from tagcli.core.heads import RegressionHead
from tagcli.core.prompt import collate
from tagcli.core.readout import ReadoutSpec
from tagcli.packs.format import TagPack, load_pack, save_pack
from tagcli.packs.manifest import Manifest
from tagcli.scoring.runner import DEFAULT_UNIT_ROWS, score_file
from tagcli.scoring.scorer import TagScorer

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "qed_test.parquet"
DRUG_LIKE = REPO.parent / "shared" / "data" / "ba_kiba_train.parquet"  # its `smiles` column: KIBA ligands
PAPER_READOUT = "tag-last"  # the paper's: final layer, the function tag's last position, one linear head
NEW_READOUT = "input-mean+tag-mean@2,4,6,8,10,12"  # the shipped molecule packs' readout
NEW_HEAD = {"members": 5, "hidden_units": 32, "domain_components": 16}  # the shipped packs' head
TAG_LENGTH = 10  # the shipped packs' tag length
CPU_OPTIONS = ("threads", "compile", "int8")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")  # what decides CPU matmul speed


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of `repeat` runs, after one untimed warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def cpu_flags() -> str:
    """Which of CPU_FLAGS this CPU has (from /proc/cpuinfo): without avx512_bf16/amx_bf16, bf16 is slow."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    return " ".join(f for f in CPU_FLAGS if f in flags) or "none of " + " ".join(CPU_FLAGS)


def clone_function(pack: TagPack, name: str, directory: Path) -> None:
    """The same function pack under another name (for the K-functions comparison)."""
    manifest = dataclasses.replace(
        pack.manifest, name=name, template=pack.manifest.template.replace("{tag:qed}", "{tag:" + name + "}")
    )
    spec = pack.head.to_spec() | {"targets": [{**pack.head.targets[0], "name": name}]}
    head = type(pack.head).from_spec(spec, pack.manifest.hidden_size)
    head.load_state_dict(pack.head.state_dict())
    save_pack(TagPack(manifest, {name: pack.tags["qed"]}, head), directory / name)


def prompt_batches(scorer: TagScorer, table: pa.Table) -> list:
    """The full prompts tagcli would build for `table`, cut into the batches it would use."""
    plan = scorer.plans[0]
    values = table.column("smiles").to_pylist()
    rows = scorer.encoder.encode(plan.template, {"smiles": scorer.encoder.tokenize_inputs(values)})
    batches = length_batches([len(r) for r in rows], scorer.batch_size, scorer.max_batch_tokens)
    return [collate([rows[i] for i in chunk], scorer.encoder.pad_id).to(scorer.base.device) for chunk in batches]


def padding_efficiency(lengths: list[list[int]]) -> float:
    """Real / processed tokens for batches padded to their longest row."""
    return sum(sum(b) for b in lengths) / sum(max(b) * len(b) for b in lengths)


def tagcli_token_efficiency(scorer: TagScorer, table: pa.Table) -> float:
    """Real prompt tokens / tokens tagcli runs: per batch the shared prefix once, the bodies padded, the suffix per row.

    Above 1 when sharing the prefix saves more than padding costs.
    """
    split = scorer.encoder.encode_split(
        scorer.plans[0].template, {"smiles": scorer.encoder.tokenize_inputs(table.column("smiles").to_pylist())}
    )
    p, s = len(split.prefix), len(split.suffix)
    body = [len(r) for r in split.body]
    real = processed = 0
    for chunk in length_batches([p + s + n for n in body], scorer.batch_size, scorer.max_batch_tokens):
        real += sum(p + s + body[i] for i in chunk)
        processed += p + len(chunk) * (max(body[i] for i in chunk) + s)
    return real / processed


def bench_speed(args: argparse.Namespace, results: dict) -> None:
    table = pq.read_table(DATA).slice(0, args.rows).select(["smiles"])
    base = load_base_model("smollm2-135m", device=args.device)
    scorer = TagScorer("qed", base_model=base, batch_size=args.batch_size)
    lm = base.model
    batches = prompt_batches(scorer, table)
    tokens = sum(int(b.attention_mask.sum()) for b in batches)
    results |= {"rows": table.num_rows, "prompt_tokens": tokens, "device": str(base.device), "dtype": str(base.dtype)}

    t_tagcli = timed(lambda: scorer.score(table), repeat=2)

    blocks = scorer.model.decoder_blocks()
    depth = scorer.model.depth or len(blocks)
    results["speed_blocks"] = {"run": depth, "of": len(blocks)}

    @torch.inference_mode()
    def raw() -> None:
        # The backbone over the blocks the scorer runs (its readout stops at block `depth`).
        lm.base_model.layers = blocks[:depth]
        try:
            for b in batches:
                lm.base_model(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids)
        finally:
            lm.base_model.layers = blocks

    t_raw = timed(raw, repeat=2)

    sample = scorer.encoder.tokenize_inputs(table.column("smiles").to_pylist()[: args.single_rows])
    one_row = [
        torch.tensor([r.token_ids], device=base.device)
        for r in scorer.encoder.encode(scorer.plans[0].template, {"smiles": sample})
    ]

    @torch.inference_mode()
    def loop() -> None:
        for ids in one_row:
            lm(input_ids=ids)  # logits and all, one row at a time

    t_loop = timed(loop) * table.num_rows / len(one_row)

    with tempfile.TemporaryDirectory() as tmp:
        qed = load_pack(scorer.plans[0].function.path)
        for k in (2, 3, 4):
            clone_function(qed, f"qed_{k}", Path(tmp))
        four = TagScorer(
            ["qed", "qed_2", "qed_3", "qed_4"], base_model=base, batch_size=args.batch_size, pack_dirs=[tmp]
        )
        t_four = timed(lambda: four.score(table))

    virtual = sum(
        len(t) for pack in (scorer.plans[0].function, *scorer.plans[0].domains.values()) for t in pack.tags.values()
    )
    t_peft, peft_lengths = bench_peft(lm, base.tokenizer, table.column("smiles").to_pylist(), virtual, args.batch_size)

    results["padding_efficiency"] = {
        "tagcli": tagcli_token_efficiency(scorer, table),
        "file_order": padding_efficiency(peft_lengths),
    }
    results["seconds"] = {
        "tagcli": t_tagcli,
        "raw_forward": t_raw,
        "one_row_loop": t_loop,
        "peft_prompt_tuning": t_peft,
        "tagcli_k4": t_four,
    }


def bench_unit_rows(args: argparse.Namespace, results: dict) -> None:
    """Rows/s of `score_file` with `--unit-rows 60` and with the default unit size, on the same rows.

    Each size is timed twice, interleaved (A B A B), after a warm-up; the best time of each counts.
    CPU seconds (this process's, all threads) are kept as well: on a machine busy with other work,
    wall time says more about the neighbours than about padding.
    """
    smiles = pq.read_table(DRUG_LIKE, columns=["smiles"]).column("smiles").to_pylist()[: args.unit_rows_rows]
    base = load_base_model("smollm2-135m", device=args.device)
    scorer = TagScorer("qed", base_model=base, batch_size=args.batch_size)
    results |= {"device": str(base.device), "dtype": str(base.dtype)}
    sizes = {"small": args.small_unit_rows, "default": DEFAULT_UNIT_ROWS}
    best = dict.fromkeys(sizes, float("inf"))
    best_cpu = dict.fromkeys(sizes, float("inf"))
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "drug_like.parquet"
        pq.write_table(pa.table({"smiles": smiles}), source)
        scorer.score(pa.table({"smiles": smiles[: args.batch_size]}))  # warm-up
        for attempt in range(2):
            for name, unit_rows in sizes.items():
                out = Path(tmp) / f"{name}-{attempt}.parquet"
                cpu = time.process_time()
                summary = score_file(scorer, source, out, unit_rows=unit_rows)
                best_cpu[name] = min(best_cpu[name], time.process_time() - cpu)
                best[name] = min(best[name], summary.seconds)
    results["unit_rows"] = {
        "rows": len(smiles),
        "mean_smiles_chars": sum(map(len, smiles)) / max(1, len(smiles)),
        "unit_rows": sizes,
        "seconds": best,
        "cpu_seconds": best_cpu,
    }


# --------------------------------------------------------------------------- readouts and CPU options


def drug_like_smiles(n: int) -> list[str]:
    """The first `n` distinct KIBA ligands of the train, val and test splits (458 in all; longer than
    MOSES molecules: mean ~50 characters)."""
    smiles = [
        s
        for split in ("train", "val", "test")
        for s in pq.read_table(DRUG_LIKE.with_name(f"ba_kiba_{split}.parquet"), columns=["smiles"])
        .column("smiles")
        .to_pylist()
    ]
    return list(dict.fromkeys(smiles))[:n]


def readout_packs(base: BaseModel, directory: Path, pooled: str) -> None:
    """A `smiles` domain pack and two qed-shaped function packs with seeded random tags and heads:
    `paper` (final layer, tag-last, one linear member: the old packs) and `pooled` (`pooled` readout,
    5-member MLP ensemble with a 16-axis domain summary: the new default packs)."""
    generator = torch.Generator().manual_seed(0)

    def tag() -> torch.Tensor:
        return torch.randn(TAG_LENGTH, base.hidden_size, generator=generator) * 0.05

    record = {"id": base.id, "fingerprint": base.fingerprint}
    common = {"version": "0.1.0", "tag_length": TAG_LENGTH, "hidden_size": base.hidden_size, "base_model": record}
    domain = {"kind": "smiles", "max_tokens": 256, "canonicalize": False}
    smiles = TagPack(Manifest(name="smiles", kind="domain", input=domain, **common), {"smiles": tag()})
    save_pack(smiles, directory / "smiles")
    targets = [{"name": "qed", "mean": 0.8, "std": 0.1, "range": [0.0, 1.0]}]
    for name, readout, options in (("paper", PAPER_READOUT, {}), ("pooled", pooled, NEW_HEAD)):
        torch.manual_seed(1)
        head = RegressionHead(base.hidden_size, targets, readout=ReadoutSpec.parse(readout), **options).eval()
        manifest = Manifest(
            name=name,
            kind="function",
            domains=["smiles"],
            template="{tag:smiles}{input:smiles}{tag:" + name + "}",
            requires={"smiles": {"version": "0.1.0", "sha256": smiles.tag_digest()}},
            **common,
        )
        save_pack(TagPack(manifest, {name: tag()}, head), directory / name)


def bench_readout(args: argparse.Namespace, results: dict) -> None:
    """Rows/s of the paper's readout vs the new readout + ensemble head, on the same rows, per dtype.

    Per dtype (auto, then float32 unless auto is float32): one warm-up each, then every (set, readout)
    timed twice, interleaved, best of 2; CPU seconds of this process are kept beside wall time.
    """
    sets = {
        "MOSES": pq.read_table(DATA, columns=["smiles"]).column("smiles").to_pylist()[: args.readout_rows],
        "drug-like": drug_like_smiles(args.readout_rows),
    }
    tables = {k: pa.table({"smiles": v}) for k, v in sets.items()}
    auto = str(select_dtype("auto", select_device(args.device))).removeprefix("torch.")
    by_dtype: dict = {}
    depth: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in dict.fromkeys([auto, "float32"]):
            base = load_base_model(args.base_model, device=args.device, dtype=dtype)
            if not by_dtype:  # the packs record the base model, not its dtype: written once
                readout_packs(base, Path(tmp), args.pooled_readout)
            scorers = {
                name: TagScorer(name, base_model=base, batch_size=args.batch_size, pack_dirs=[tmp])
                for name in ("paper", "pooled")
            }
            blocks = len(scorers["paper"].model.decoder_blocks())
            depth = {name: s.model.depth or blocks for name, s in scorers.items()} | {"of": blocks}
            for scorer in scorers.values():
                scorer.score(tables["drug-like"].slice(0, args.batch_size))  # warm-up
            best: dict = {k: {n: float("inf") for n in scorers} for k in tables}
            best_cpu: dict = {k: {n: float("inf") for n in scorers} for k in tables}
            for _attempt in range(2):
                for key, table in tables.items():
                    for name, scorer in scorers.items():
                        cpu, start = time.process_time(), time.perf_counter()
                        scorer.score(table)
                        best[key][name] = min(best[key][name], time.perf_counter() - start)
                        best_cpu[key][name] = min(best_cpu[key][name], time.process_time() - cpu)
            by_dtype[dtype] = {"seconds": best, "cpu_seconds": best_cpu}
            del scorers, base
    results["dtype"] = results.get("dtype", f"torch.{auto}")
    results["readout"] = {
        "rows": {k: len(v) for k, v in sets.items()},
        "mean_smiles_chars": {k: sum(map(len, v)) / max(1, len(v)) for k, v in sets.items()},
        "readouts": {
            "paper": PAPER_READOUT + " (1 linear member)",
            "pooled": args.pooled_readout + " (5 MLP members, 32 units)",
        },
        "blocks_run": depth,
        "auto_dtype": auto,
        "by_dtype": by_dtype,
    }


@torch.inference_mode()
def readout_features(scorer: TagScorer, smiles: list[str]) -> torch.Tensor:
    """The head input [n, width] of the scorer's (only) function for `smiles`, in row order, float32."""
    plan = scorer.plans[0]
    model, encoder = scorer.model, scorer.encoder
    readout = model.heads[plan.function.name].readout
    suffix = collate([encoder.encode_suffix(plan.template)], encoder.pad_id).to(scorer.base.device)
    inputs = {"smiles": encoder.tokenize_inputs(smiles)}
    out = torch.empty(len(smiles), readout.width(model.hidden_size))
    batches = context_batches(
        model, encoder, plan.template, inputs, scorer.batch_size, scorer.max_batch_tokens, suffix.input_ids.shape[1]
    )
    for chunk, context in encode_contexts(batches):
        features, _, _ = model.readout_after_context(context, suffix, readout)
        context.rewind()
        out[chunk] = features.float().cpu()
    return out


def feature_agreement(features: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """How far `features` are from `reference` (same rows): max abs difference, per-row cosine (min, mean),
    raw and standardised with the reference's per-feature mean and std (what a trained head reads: raw
    cosines are dominated by the few massive residual-stream dimensions)."""
    mean, std = reference.mean(0), reference.std(0).clamp(min=1e-6)
    z, z_ref = (features - mean) / std, (reference - mean) / std
    raw_cos = nn.functional.cosine_similarity(features.double(), reference.double(), dim=1)
    z_cos = nn.functional.cosine_similarity(z.double(), z_ref.double(), dim=1)
    return {
        "max_abs_diff": float((features - reference).abs().max()),
        "max_abs": float(reference.abs().max()),
        "cosine_min": float(raw_cos.min()),
        "cosine_mean": float(raw_cos.mean()),
        "std_cosine_min": float(z_cos.min()),
        "std_cosine_mean": float(z_cos.mean()),
        "std_rms_diff": float((z - z_ref).pow(2).mean().sqrt()),
    }


def compiled_blocks(lm: nn.Module) -> nn.Module:
    """A copy of `lm` whose decoder blocks' forwards are torch.compile'd (dynamic shapes). The block
    modules stay plain, so the readout's forward hooks and depth cut work unchanged. (With transformers'
    KV-cache object each block recompiles per layer index until dynamo's recompile limit, then runs eager:
    the warm-up time and rows/s say whether that pays.)"""
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)  # recompile-limit warnings, one per block
    lm = copy.deepcopy(lm)
    for block in lm.base_model.layers:
        block.forward = torch.compile(block.forward, dynamic=True)
    return lm


def bench_cpu_options(args: argparse.Namespace, results: dict) -> None:
    """fp32 scoring of the new readout on drug-like SMILES: rows/s of each CPU option and how far it
    moves the readout features from plain fp32 with the default thread count, on the same rows."""
    wanted = CPU_OPTIONS if args.cpu_options == "all" else tuple(args.cpu_options.split(","))
    unknown = sorted(set(wanted) - set(CPU_OPTIONS))
    if unknown:
        raise SystemExit(f"unknown --cpu-options {','.join(unknown)} (choose from {','.join(CPU_OPTIONS)})")
    smiles = drug_like_smiles(args.readout_rows)
    table = pa.table({"smiles": smiles})
    threads = torch.get_num_threads()
    base = load_base_model(args.base_model, device="cpu", dtype="float32")
    variants: dict[str, tuple[nn.Module, int]] = {f"fp32, {threads} threads": (base.model, threads)}
    if "threads" in wanted and threads != 1:
        variants["fp32, 1 thread"] = (base.model, 1)
    if "int8" in wanted:
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao.quantization's notice
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(base.model), {nn.Linear}, dtype=torch.qint8)
        variants[f"int8 dynamic Linear, {threads} threads"] = (quantized, threads)
    if "compile" in wanted:
        variants[f"torch.compile blocks, {threads} threads"] = (compiled_blocks(base.model), threads)
    options: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        readout_packs(base, Path(tmp), args.pooled_readout)
        scorers = {}
        reference = None
        for name, (lm, n_threads) in variants.items():
            torch.set_num_threads(n_threads)
            scorer = TagScorer(
                "pooled", base_model=dataclasses.replace(base, model=lm), batch_size=args.batch_size, pack_dirs=[tmp]
            )
            start = time.perf_counter()
            try:
                features = readout_features(scorer, smiles)  # also the warm-up (compilation happens here)
            except Exception as exc:  # noqa: BLE001 - a failed option is a result, not a crash
                options[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
                continue
            warmup = time.perf_counter() - start
            reference = features if reference is None else reference
            options[name] = {"warmup_seconds": warmup, "quality": feature_agreement(features, reference)}
            scorers[name] = scorer
        best = dict.fromkeys(scorers, float("inf"))
        best_cpu = dict.fromkeys(scorers, float("inf"))
        for _attempt in range(2):
            for name, scorer in scorers.items():
                torch.set_num_threads(variants[name][1])
                cpu, start = time.process_time(), time.perf_counter()
                scorer.score(table)
                best[name] = min(best[name], time.perf_counter() - start)
                best_cpu[name] = min(best_cpu[name], time.process_time() - cpu)
        torch.set_num_threads(threads)
    for name in scorers:
        options[name] |= {"seconds": best[name], "cpu_seconds": best_cpu[name]}
    results["cpu_options"] = {
        "rows": len(smiles),
        "mean_smiles_chars": sum(map(len, smiles)) / max(1, len(smiles)),
        "readout": args.pooled_readout,
        "options": options,
    }


def bench_peft(lm, tokenizer, smiles: list[str], virtual_tokens: int, batch_size: int) -> tuple[float, list[list[int]]]:
    """PEFT prompt-tuning inference: file-order batches, left padding, last hidden state."""
    from peft import PromptTuningConfig, get_peft_model

    model = get_peft_model(lm, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=virtual_tokens)).eval()
    tokenizer.padding_side = "left"
    batches = [
        tokenizer(smiles[i : i + batch_size], return_tensors="pt", padding=True).to(lm.device)
        for i in range(0, len(smiles), batch_size)
    ]
    lengths = [[int(n) + virtual_tokens for n in b["attention_mask"].sum(1)] for b in batches]

    @torch.inference_mode()
    def run() -> None:
        for b in batches:
            model(**b, output_hidden_states=True).hidden_states[-1][:, -1]

    seconds = timed(run)
    return seconds, lengths


def bench_rss(args: argparse.Namespace, results: dict) -> None:
    """Peak RSS of `tagcli predict` on a generated file, sampled while it runs (flat = streaming)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = tiny_model(tmp)
        source = tmp / "big.parquet"
        smiles = pq.read_table(DATA).column("smiles").to_pylist()
        with pq.ParquetWriter(source, pa.schema([("id", pa.int64()), ("smiles", pa.string())])) as writer:
            for start in range(0, args.rss_rows, 100_000):
                n = min(100_000, args.rss_rows - start)
                writer.write_table(
                    pa.table(
                        {
                            "id": range(start, start + n),
                            "smiles": [smiles[i % len(smiles)] for i in range(start, start + n)],
                        }
                    )
                )
        # The child reports its own peak RSS at exit: VmHWM belongs to the address space made at exec
        # (ru_maxrss would also count this bench process's memory from before the fork).
        launcher = (
            "import atexit, re, sys; atexit.register(lambda: print('PEAK_RSS_KB', re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1], file=sys.stderr)); "
            "from tagcli.cli import main; main()"
        )
        command = [
            sys.executable,
            "-c",
            launcher,
            "predict",
            str(source),
            "-F",
            "fn",
            "--pack-dir",
            str(tmp / "packs"),
            "--base-model",
            str(model_dir),
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--no-progress",
            "-o",
            str(tmp / "out.parquet"),
            "--format",
            "json",
        ]
        samples: list[tuple[float, int]] = []
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watcher = threading.Thread(target=_sample_rss, args=(process, samples, started), daemon=True)
        watcher.start()
        output, errors = process.communicate()
        watcher.join()
        if process.returncode != 0:
            raise SystemExit(f"the memory run failed: {errors[-2000:]}")
        peak = int(errors.rsplit("PEAK_RSS_KB", 1)[1].split()[0]) * 1024
        summary = json.loads(output)
    quarter = [max((rss for t, rss in samples if t <= q * samples[-1][0]), default=0) for q in (0.25, 0.5, 0.75, 1.0)]
    results["rss"] = {
        "rows": summary["rows"],
        "seconds": summary["seconds"],
        "peak_bytes": peak,
        "max_rss_by_quarter_bytes": quarter,
    }


def _sample_rss(process: subprocess.Popen, samples: list, started: float) -> None:
    proc = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            samples.append((time.perf_counter() - started, proc.memory_info().rss))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.5)


def tiny_model(directory: Path) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer, and random smiles + fn packs for it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    real = load_base_model("smollm2-135m", device="cpu", dtype="float32")
    config = LlamaConfig(
        vocab_size=len(real.tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=real.tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    path = directory / "tiny"
    LlamaForCausalLM(config).save_pretrained(path)
    real.tokenizer.save_pretrained(path)
    tiny = load_base_model(str(path), device="cpu", dtype="float32")
    record = {"id": tiny.id, "fingerprint": tiny.fingerprint}
    common = {"version": "0.1.0", "tag_length": 10, "hidden_size": 64, "base_model": record}
    smiles = TagPack(
        Manifest(name="smiles", kind="domain", input={"kind": "smiles", "max_tokens": 512}, **common),
        {"smiles": torch.randn(10, 64) * 0.05},
    )
    save_pack(smiles, directory / "packs" / "smiles")
    head = RegressionHead(64, [{"name": "y", "mean": 0.0, "std": 1.0}])
    function = Manifest(
        name="fn", kind="function", domains=["smiles"], template="{tag:smiles}{input:smiles}{tag:fn}", **common
    )
    save_pack(TagPack(function, {"fn": torch.randn(10, 64) * 0.05}, head), directory / "packs" / "fn")
    return path


def report(results: dict) -> str:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"Machine: {platform.processor() or platform.machine()} (CPU flags: {cpu_flags()}), "
        f"{psutil.cpu_count(logical=True)} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {results.get('device', 'cpu')}, "
        f"{results.get('dtype', 'torch.float32')} (auto dtype); load average {load} (1/5/15 min) at the end.",
        "",
        "| measurement | value | target |",
        "|---|---|---|",
    ]
    if "seconds" in results:
        lines += speed_lines(results)
    if "unit_rows" in results:
        u = results["unit_rows"]
        lines.append(
            f"| `--unit-rows {u['unit_rows']['small']}` vs default ({u['unit_rows']['default']}), {u['rows']} drug-like "
            f"SMILES (KIBA ligands, mean {u['mean_smiles_chars']:.0f} chars) | "
            f"{versus(u['rows'], u['seconds'], u['cpu_seconds'], 'small', 'default')} | >= 0.9x |"
        )
    if "rss" in results:
        r = results["rss"]
        gib = [f"{b / 2**30:.2f}" for b in r["max_rss_by_quarter_bytes"]]
        lines.append(
            f"| peak RSS, `tagcli predict` on a {r['rows']:,}-row Parquet (tiny model, {r['seconds']:.0f} s) | {r['peak_bytes'] / 2**30:.2f} GiB "
            f"(max by quarter of the run: {', '.join(gib)}) | < 2 GiB, flat |"
        )
    if "readout" in results:
        lines += readout_lines(results["readout"])
    if "cpu_options" in results:
        lines += cpu_option_lines(results["cpu_options"])
    return "\n".join(lines)


def readout_lines(r: dict) -> list[str]:
    blocks = r["blocks_run"]
    lines = []
    for dtype, measured in r["by_dtype"].items():
        label = f"{dtype} (auto)" if dtype == r["auto_dtype"] else dtype
        for key, seconds in measured["seconds"].items():
            speed = versus(r["rows"][key], seconds, measured["cpu_seconds"][key], "pooled", "paper")
            lines.append(
                f"| new readout `{r['readouts']['pooled']}`, {blocks['pooled']} of {blocks['of']} blocks, vs the "
                f"paper's `{r['readouts']['paper']}`, {blocks['paper']} blocks; {label}, {r['rows'][key]} {key} "
                f"SMILES (mean {r['mean_smiles_chars'][key]:.0f} chars) | {speed} | |"
            )
    return lines


def versus(rows: int, seconds: dict, cpu_seconds: dict, new: str, old: str) -> str:
    """`A vs B rows/s = Nx (per CPU second: Mx)`: timed run NEW against run OLD, both over ROWS rows."""
    rate = {k: rows / seconds[k] for k in (new, old)}
    return (
        f"{rate[new]:.1f} vs {rate[old]:.1f} rows/s = {rate[new] / rate[old]:.2f}x "
        f"(per CPU second: {cpu_seconds[old] / cpu_seconds[new]:.2f}x)"
    )


def cpu_option_lines(r: dict) -> list[str]:
    options = r["options"]
    reference = next(iter(options))
    lines = []
    for name, o in options.items():
        if "error" in o:
            lines.append(f"| fp32 CPU option: {name} | failed: {o['error']} | |")
            continue
        q = o["quality"]
        speed = f"{r['rows'] / o['seconds']:.1f} rows/s"
        if name != reference and "seconds" in options[reference]:
            speed += f" = {options[reference]['seconds'] / o['seconds']:.2f}x plain (per CPU second: "
            speed += f"{options[reference]['cpu_seconds'] / o['cpu_seconds']:.2f}x)"
        lines.append(
            f"| fp32 CPU option: {name}; new readout on {r['rows']} drug-like SMILES (warm-up "
            f"{o['warmup_seconds']:.0f} s) | {speed}; features vs plain: max abs diff {q['max_abs_diff']:.3g} "
            f"(max {q['max_abs']:.3g}), cosine min {q['cosine_min']:.5f}, standardised cosine min "
            f"{q['std_cosine_min']:.5f} (RMS diff {q['std_rms_diff']:.3g} stds) | cosine > 0.999 |"
        )
    return lines


def speed_lines(results: dict) -> list[str]:
    s = results["seconds"]
    rows = results["rows"]
    rate = {k: rows / v for k, v in s.items()}
    blocks = results["speed_blocks"]
    return [
        f"| tagcli predict (score), {rows} rows of qed_test ({results['prompt_tokens']} prompt tokens) | {rate['tagcli']:.1f} rows/s, {results['prompt_tokens'] / s['tagcli']:.0f} tokens/s | |",
        f"| vs raw backbone forward, same tokens and batches, the {blocks['run']} of {blocks['of']} blocks tagcli runs ({rate['raw_forward']:.1f} rows/s) | {rate['tagcli'] / rate['raw_forward']:.2f}x | >= 0.9x |",
        f"| vs one row per forward, paper-style: all {blocks['of']} blocks and the logits ({rate['one_row_loop']:.1f} rows/s) | {rate['tagcli'] / rate['one_row_loop']:.1f}x | >= 20x |",
        f"| vs PEFT prompt tuning, same number of virtual tokens ({rate['peft_prompt_tuning']:.1f} rows/s) | {rate['tagcli'] / rate['peft_prompt_tuning']:.2f}x | >= 1.5x |",
        f"| K=4 function tags vs 1, time | {s['tagcli_k4'] / s['tagcli']:.2f}x | <= 1.5x |",
        f"| padding efficiency (real / processed tokens): tagcli length-sorted vs file order | {results['padding_efficiency']['tagcli']:.3f} vs {results['padding_efficiency']['file_order']:.3f} | |",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512, help="rows of qed_test for the speed comparisons (0: skip)")
    parser.add_argument(
        "--single-rows", type=int, default=48, help="rows timed in the one-row-per-forward loop (rate extrapolated)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--rss-rows", type=int, default=1_000_000, help="rows of the generated file for the memory run (0: skip)"
    )
    parser.add_argument(
        "--unit-rows-rows", type=int, default=960, help="drug-like rows for the unit-size comparison (0: skip)"
    )
    parser.add_argument("--small-unit-rows", type=int, default=60, help="the small unit size compared with the default")
    parser.add_argument(
        "--readout-rows",
        type=int,
        default=256,
        help="rows per set (MOSES, drug-like) for the readout comparison and --cpu-options (0: skip both)",
    )
    parser.add_argument("--pooled-readout", default=NEW_READOUT, help="the new readout compared with the paper's")
    parser.add_argument(
        "--cpu-options",
        nargs="?",
        const="all",
        help=f"also measure fp32 CPU options (comma list of {','.join(CPU_OPTIONS)}; bare: all)",
    )
    parser.add_argument("--base-model", default="smollm2-135m", help="for the readout comparison and --cpu-options")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    results: dict = {}
    if args.rows:
        bench_speed(args, results)
    if args.unit_rows_rows:
        bench_unit_rows(args, results)
    if args.rss_rows:
        bench_rss(args, results)
    if args.readout_rows:
        bench_readout(args, results)
        if args.cpu_options:
            bench_cpu_options(args, results)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
