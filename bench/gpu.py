"""tagcli scoring on a GPU, on a random-weight 7B-shaped Llama in bf16 (no download): one command, under 10 minutes.

    python bench/gpu.py                      # on a CUDA machine, tagcli importable (pip install -e . / PYTHONPATH=.)
    python bench/gpu.py --rows 8192 --batch-size 256 --json gpu.json
    python bench/gpu.py --peak-tflops 700    # a GPU not in the peak table below

NOT RUN YET: no GPU was lent to the session that wrote this, so its numbers are not in the README.
Run it when one is, and put its table there.

The backbone is transformers' LlamaConfig at Llama-2-7B's shape (hidden 4096, 32 layers, 32 heads,
intermediate 11008) with random weights, built in bf16 straight on the GPU, and SmolLM2's tokenizer
(shipped with tagcli; `--tokenizer DIR` takes another). Random tags (10 + 10 vectors) and a linear
regression head make the packs. On the same SMILES (../shared/data/qed_test.parquet, or generated
ones if that is absent) it measures:
  tagcli          TagScorer.score on an Arrow table: cleaning (RDKit), tokenizing, length-sorted
                  batches, shared prefix once per batch, head, output columns
  raw forward     the backbone alone over the very same prompt tokens, in the same batches
  one row/forward one full LM forward (logits too) per row, as the paper's reference code runs
and prints rows/s, tokens/s (real prompt tokens), the ratios (targets: >= 0.9x the raw forward,
>= 20x the one-row loop) and MFU = 2 x decoder parameters x prompt tokens / time / peak bf16
FLOP/s (attention's own FLOPs left out: prompts are ~60 tokens).

Without a CUDA GPU it prints one line and exits with 2. `--tiny --device cpu` runs the whole
script on a small config on the CPU, so tests can check it works; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "qed_test.parquet"
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense bf16 FLOP/s, by a word in the GPU's name
SHAPES = {
    "7b": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "intermediate_size": 11008},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
}
TAG_LENGTH = 10


def refuse_without_gpu(args: argparse.Namespace) -> torch.device:
    """The device to run on; exits with 2 and one line unless it is a CUDA GPU (or a --tiny CPU smoke run)."""
    if args.device == "cpu" and args.tiny:
        return torch.device("cpu")
    if args.device == "cpu" or not torch.cuda.is_available():
        print("error: bench/gpu.py needs a CUDA GPU (none found); nothing was measured", file=sys.stderr)
        raise SystemExit(2)
    return torch.device(args.device)


def peak_flops(device: torch.device, override_tflops: float | None) -> tuple[float | None, str]:
    """Peak dense bf16 FLOP/s: --peak-tflops, else from PEAK_BF16 by the GPU's name (None if unknown)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if override_tflops:
        return override_tflops * 1e12, name
    return next((peak for word, peak in PEAK_BF16.items() if word in name), None), name


def random_base(args: argparse.Namespace, device: torch.device):
    """A tagcli BaseModel around a random-weight Llama of the chosen shape, built on `device`."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tagcli.basemodel.load import BaseModel
    from tagcli.basemodel.resolve import DEFAULT_BASE_MODEL, resolve_model_dir

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or resolve_model_dir(DEFAULT_BASE_MODEL)[1])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    shape = SHAPES["tiny" if args.tiny else "7b"]
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, **shape)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random init straight in bf16 on the GPU: no 27 GB float32 copy
    try:
        with device:
            model = LlamaForCausalLM(config).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(default_dtype)
    name = f"random-llama-{'tiny' if args.tiny else '7b'}"
    fingerprint = "sha256:" + hashlib.sha256(f"{config.to_json_string()}seed 0".encode()).hexdigest()
    return BaseModel(name, Path(name), fingerprint, model, tokenizer, device, dtype)


def random_packs(base, directory: Path) -> None:
    """A smiles domain pack and an `fn` function pack (random tags, a linear head) for `base`."""
    from tagcli.core.heads import RegressionHead
    from tagcli.packs.format import TagPack, save_pack
    from tagcli.packs.manifest import Manifest

    hidden, record = base.hidden_size, {"id": base.id, "fingerprint": base.fingerprint}
    common = {"version": "0.1.0", "tag_length": TAG_LENGTH, "hidden_size": hidden, "base_model": record}
    smiles = Manifest(name="smiles", kind="domain", input={"kind": "smiles", "max_tokens": 512}, **common)
    save_pack(TagPack(smiles, {"smiles": torch.randn(TAG_LENGTH, hidden) * 0.02}), directory / "smiles")
    template = "{tag:smiles}{input:smiles}{tag:fn}"
    function = Manifest(name="fn", kind="function", domains=["smiles"], template=template, **common)
    head = RegressionHead(hidden, [{"name": "y", "mean": 0.0, "std": 1.0}])
    save_pack(TagPack(function, {"fn": torch.randn(TAG_LENGTH, hidden) * 0.02}, head), directory / "fn")


def smiles_rows(rows: int) -> list[str]:
    if DATA.exists():
        values = pq.read_table(DATA, columns=["smiles"]).column("smiles").to_pylist()
    else:  # a machine without ../shared/data: simple valid chains and rings of MOSES-like lengths
        values = ["C" * (8 + k % 30) + "c1ccccc1O" for k in range(997)]
    return [values[i % len(values)] for i in range(rows)]


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call after an untimed warm-up, with the GPU's queue drained around it."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(args: argparse.Namespace, device: torch.device) -> dict:
    from tagcli.core.batching import length_batches
    from tagcli.core.prompt import collate
    from tagcli.scoring.scorer import TagScorer

    started = time.perf_counter()
    base = random_base(args, device)
    lm = base.model
    decoder_params = sum(p.numel() for p in lm.model.layers.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        random_packs(base, Path(tmp))
        scorer = TagScorer(
            "fn", base_model=base, pack_dirs=[tmp], batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens
        )
    table = pa.table({"smiles": smiles_rows(args.rows)})
    build_seconds = time.perf_counter() - started

    # The full prompts tagcli builds for these rows, cut into the batches it uses.
    template = scorer.plans[0].template
    prompts = scorer.encoder.encode(template, {"smiles": scorer.encoder.tokenize_inputs(table["smiles"].to_pylist())})
    chunks = list(length_batches([len(r) for r in prompts], scorer.batch_size, scorer.max_batch_tokens))
    batches = [collate([prompts[i] for i in chunk], scorer.encoder.pad_id).to(device) for chunk in chunks]
    tokens = sum(len(r) for r in prompts)

    t_tagcli = timed(lambda: scorer.score(table), device)

    @torch.inference_mode()
    def raw() -> None:
        for b in batches:
            lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids)

    t_raw = timed(raw, device)

    singles = [torch.tensor([r.token_ids], device=device) for r in prompts[: args.single_rows]]

    @torch.inference_mode()
    def loop() -> None:
        for ids in singles:
            lm(input_ids=ids)  # logits and all, one row at a time

    t_loop = timed(loop, device) * len(prompts) / len(singles)
    peak, gpu = peak_flops(device, args.peak_tflops)
    return {
        "gpu": gpu,
        "device": str(device),
        "dtype": str(base.dtype),
        "shape": SHAPES["tiny" if args.tiny else "7b"],
        "decoder_params": decoder_params,
        "rows": len(prompts),
        "prompt_tokens": tokens,
        "batches": len(batches),
        "batch_size": args.batch_size,
        "build_seconds": build_seconds,
        "seconds": {"tagcli": t_tagcli, "raw_forward": t_raw, "one_row_loop": t_loop},
        "peak_flops": peak,
    }


def report(r: dict) -> str:
    s, rows, tokens = r["seconds"], r["rows"], r["prompt_tokens"]
    rate = {k: rows / v for k, v in s.items()}

    def mfu(seconds: float) -> str:
        return f"{2 * r['decoder_params'] * tokens / seconds / r['peak_flops']:.1%}" if r["peak_flops"] else "n/a"

    peak = f"peak {r['peak_flops'] / 1e12:.0f} TFLOP/s" if r["peak_flops"] else "peak unknown: pass --peak-tflops"
    tagcli, raw, loop = (f"{rate[k]:.1f} | {tokens / s[k]:.0f} | {mfu(s[k])}" for k in s)
    lines = [
        f"GPU: {r['gpu']} ({peak}), torch {torch.__version__}, {r['dtype']}; random Llama "
        f"{r['shape']['hidden_size']}x{r['shape']['num_hidden_layers']} ({r['decoder_params'] / 1e9:.2f}B decoder "
        f"parameters); {rows} SMILES rows, {tokens} prompt tokens, batch size {r['batch_size']}; built in "
        f"{r['build_seconds']:.0f} s.",
        "",
        "| measurement | rows/s | tokens/s | MFU | ratio | target |",
        "|---|---|---|---|---|---|",
        f"| tagcli scoring (TagScorer.score) | {tagcli} | | |",
        f"| raw backbone forward, same tokens and batches | {raw} "
        f"| tagcli {rate['tagcli'] / rate['raw_forward']:.2f}x | >= 0.9x |",
        f"| one row per forward (with logits) | {loop} "
        f"| tagcli {rate['tagcli'] / rate['one_row_loop']:.1f}x | >= 20x |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192, help="SMILES rows scored")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-batch-tokens", type=int, default=65536)
    parser.add_argument("--single-rows", type=int, default=64, help="rows timed one per forward (rate extrapolated)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N; cpu only with --tiny (a smoke run)")
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s, for a GPU not in the table")
    parser.add_argument("--tokenizer", help="a tokenizer folder (default: SmolLM2's, shipped with tagcli)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer, 64-wide model: tests of this script")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    device = refuse_without_gpu(args)
    results = measure(args, device)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
