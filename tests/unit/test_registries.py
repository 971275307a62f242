"""tagcli.packs.registries: where registries come from (options, $TAGCLI_REGISTRY, the config file) and
an hf:// registry read from the Hugging Face cache offline."""

from __future__ import annotations

from pathlib import Path

import pytest

import registry_server
from registry_server import hub_cache
from tagcli.errors import PackError, UsageError
from tagcli.packs import listing
from tagcli.packs.install import pull
from tagcli.packs.registries import configured_registries, parse_registry

no_configured_registries = registry_server.no_configured_registries
reg, sources = registry_server.reg, registry_server.sources


def test_registries_come_from_options_env_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir()
    config.write_text('registries = ["packs", "hf://org/packs@v2", "https://example.org/reg/"]\n')
    monkeypatch.setenv("TAGCLI_CONFIG", str(config))
    monkeypatch.setenv("TAGCLI_REGISTRY", "file:///srv/reg/index.json, hf://datasets/org/more")
    found = configured_registries(["https://example.org/reg/"])
    assert [type(r).__name__ for r in found] == [
        "UrlRegistry",
        "UrlRegistry",
        "HubRegistry",
        "FolderRegistry",
        "HubRegistry",
    ]
    assert found[0].index_url == "https://example.org/reg/index.json"
    assert (found[2].repo_id, found[2].repo_type) == ("org/more", "dataset")
    assert found[3].folder == (config.parent / "packs").resolve()
    assert (found[4].repo_id, found[4].revision) == ("org/packs", "v2")
    config.write_text("registries = 'oops'\n")
    with pytest.raises(UsageError, match="must be a list of strings"):
        configured_registries()
    with pytest.raises(UsageError, match="bad Hugging Face registry"):
        parse_registry("hf://just-a-name")


def test_hub_registry_reads_the_hugging_face_cache_offline(
    reg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    hub_cache(tmp_path / "hf", reg)  # HF_HUB_OFFLINE=1 for every test (conftest)
    results = pull(["logp"], [parse_registry("hf://org/packs")])
    assert [(r["name"], r["registry"]) for r in results] == [("logp", "hf://org/packs"), ("smiles", "hf://org/packs")]
    assert all(row["status"] == "ok" for row in listing.verify())
    with pytest.raises(PackError) as info:
        pull(["logp"], [parse_registry("hf://org/elsewhere")])
    assert (
        "registry hf://org/elsewhere: index.json is not in the local Hugging Face cache and downloads are off"
        in info.value.message
    )
