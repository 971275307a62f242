"""bench/gpu.py without a GPU: it refuses in one line with exit code 2, and its --tiny CPU smoke run works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import load_bench


@pytest.fixture(scope="module")
def gpu_bench():
    return load_bench("gpu")


@pytest.mark.parametrize("argv", [[], ["--tiny"], ["--device", "cpu"]])
def test_refuses_without_a_cuda_gpu(gpu_bench, monkeypatch, capsys, argv: list[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        gpu_bench.main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "error: bench/gpu.py needs a CUDA GPU (none found); nothing was measured\n"


def test_tiny_smoke_run_on_the_cpu(gpu_bench, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["--tiny", "--device", "cpu", "--tokenizer", str(tiny_model_dir), "--rows", "24", "--single-rows", "2"]
    gpu_bench.main([*argv, "--batch-size", "8", "--json", str(tmp_path / "r.json")])
    table = capsys.readouterr().out
    assert "| tagcli scoring (TagScorer.score) |" in table and "| one row per forward (with logits) |" in table
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["rows"] == 24 and results["batches"] == 3 and results["peak_flops"] is None
    assert all(seconds > 0 for seconds in results["seconds"].values())


def test_peak_flops_by_gpu_name(gpu_bench, monkeypatch) -> None:
    cuda = torch.device("cuda")
    for name, peak in [("NVIDIA H200", 989e12), ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device, name=name: name)
        assert gpu_bench.peak_flops(cuda, None) == (peak, name)
    assert gpu_bench.peak_flops(cuda, 700.0)[0] == 700e12  # --peak-tflops wins
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Some Future GPU")
    assert gpu_bench.peak_flops(cuda, None) == (None, "Some Future GPU")
