"""The real embedded base model: pull (GGUF -> bf16 safetensors, ~15-20 s), load, run a forward."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from helpers import embedded_model_tests
from tagcli.basemodel import embedded, load, resolve

pytestmark = embedded_model_tests()


@pytest.fixture(scope="module")
def pulled_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, float]]:
    """Pull once per module into a fresh TAGCLI_HOME; yields (home, seconds the pull took)."""
    home = tmp_path_factory.mktemp("embedded-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TAGCLI_HOME", str(home))
        start = time.perf_counter()
        embedded.pull_embedded()
        yield home, time.perf_counter() - start


@pytest.fixture
def home(pulled_home: tuple[Path, float], isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TAGCLI_HOME", str(pulled_home[0]))
    return pulled_home[0]


@pytest.fixture
def base(home: Path) -> load.BaseModel:
    return load.load_base_model(device="cpu")


def test_pull_writes_a_complete_model_dir(home: Path) -> None:
    path = home / "models" / "smollm2-135m"
    assert (path / "tagcli-model.json").is_file() and (path / "config.json").is_file()
    assert any(path.glob("*.safetensors")) and (path / "tokenizer.json").is_file()
    assert [p.name for p in path.parent.iterdir()] == ["smollm2-135m"]  # no temp dirs left


def test_load_embedded_model(base: load.BaseModel, home: Path) -> None:
    assert base.id == "smollm2-135m"
    assert base.path == home / "models" / "smollm2-135m"
    assert type(base.model).__name__ == "LlamaForCausalLM"
    assert base.hidden_size == 576
    assert base.model.config.num_hidden_layers == 30
    assert base.model.config.vocab_size == 49152 and len(base.tokenizer) == 49152
    assert base.fingerprint.startswith("sha256:")
    assert not base.model.training and not any(p.requires_grad for p in base.model.parameters())
    assert base.tokenizer.pad_token is not None


def test_second_load_does_not_convert_again(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_conversion(*args: object) -> None:
        raise AssertionError("converted the GGUF again")

    monkeypatch.setattr(embedded, "_convert_gguf", no_conversion)
    monkeypatch.setattr(resolve, "hash_weights", no_conversion)  # the fingerprint comes from the cache
    again = load.load_base_model(device="cpu")  # the patches above fail it if it converts or hashes again
    assert again.id == "smollm2-135m"


def test_forward_on_smiles_gives_finite_hidden_states(base: load.BaseModel) -> None:
    batch = base.tokenizer(["CC(=O)Oc1ccccc1C(=O)O"], return_tensors="pt")
    with torch.no_grad():
        hidden = base.model.model(**batch).last_hidden_state
    assert hidden.shape == (1, batch["input_ids"].shape[1], 576)
    assert torch.isfinite(hidden.float()).all()
