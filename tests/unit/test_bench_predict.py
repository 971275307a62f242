"""bench/predict.py's readout comparison and --cpu-options, as a smoke run on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import load_bench


@pytest.fixture(scope="module")
def predict_bench():
    return load_bench("predict")


def test_readout_and_cpu_options_smoke_run(predict_bench, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    if not (predict_bench.DATA.exists() and predict_bench.DRUG_LIKE.exists()):
        pytest.skip("shared data not present")
    skip = ["--rows", "0", "--rss-rows", "0", "--unit-rows-rows", "0"]
    argv = [*skip, "--readout-rows", "6", "--batch-size", "4", "--base-model", str(tiny_model_dir)]
    argv += ["--pooled-readout", "input-mean+tag-mean@1", "--cpu-options", "threads,int8"]
    predict_bench.main([*argv, "--json", str(tmp_path / "r.json")])
    table = capsys.readouterr().out
    assert "CPU flags:" in table and "(auto dtype)" in table and "load average" in table
    assert "| new readout `input-mean+tag-mean@1" in table and "| fp32 CPU option: int8 dynamic Linear" in table
    results = json.loads((tmp_path / "r.json").read_text())
    readout = results["readout"]
    assert readout["rows"] == {"MOSES": 6, "drug-like": 6} and readout["blocks_run"] == {
        "paper": 2,
        "pooled": 1,
        "of": 2,
    }
    assert "float32" in readout["by_dtype"]
    options = results["cpu_options"]["options"]
    plain = next(iter(options.values()))
    assert plain["quality"]["max_abs_diff"] == 0 and plain["quality"]["std_cosine_min"] == pytest.approx(1.0)
    assert all(o["seconds"] > 0 and o["quality"]["cosine_min"] <= 1 + 1e-9 for o in options.values())
