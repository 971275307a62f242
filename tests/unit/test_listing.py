"""tagcli.packs.listing: `pack list` rows against a registry, `pack export`, `pack verify`, `pack info`,
and the pack commands in-process (the registry and its server are tests/registry_server.py's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import registry_server
from registry_server import cli, entry_of, index_url, installed, serve
from tagcli.cli.pack_rows import list_row
from tagcli.errors import PackError
from tagcli.home import packs_dir
from tagcli.packs import listing
from tagcli.packs.install import pull, remove
from tagcli.packs.registries import parse_registry

no_configured_registries = registry_server.no_configured_registries
reg, sources = registry_server.reg, registry_server.sources


def list_rows(url: str, **options: str) -> tuple[list[dict], list[str]]:
    """`list_packs` of the installed packs and those at `url`, as the JSON rows `tagcli pack list` prints."""
    listed, warnings = listing.list_packs([parse_registry(url)], available=True, **options)
    return [list_row(item) for item in listed], warnings


def test_listing_marks_other_base_models_incompatible(reg: Path, tiny_model_dir: Path) -> None:
    with serve(reg) as server:
        rows, warnings = list_rows(index_url(server), base_model=str(tiny_model_dir))
        everything, _ = list_rows(index_url(server))
    assert warnings == []
    assert sorted(r["name"] for r in rows) == ["logp", "protein", "smiles"]  # tiny-model packs only
    assert all(r["status"] == "available" and r["compatible"] for r in rows)
    by_name = {(r["name"], r["status"]): r for r in everything}
    assert by_name[("alien", "available")]["compatible"] is False
    assert by_name[("qed", "built-in")]["compatible"] is True  # against the default model
    assert by_name[("logp", "available")]["size"] == entry_of(reg, "logp")["size"]


def test_export_updates_the_index_and_a_folder_without_one_still_works(
    reg: Path, sources: Path, tmp_path: Path
) -> None:
    before = json.loads((reg / "index.json").read_text())["packs"]
    listing.export(str(sources / "logp"), reg)  # the same name and version: replaced, not added
    after = json.loads((reg / "index.json").read_text())["packs"]
    assert [e["name"] for e in after] == [e["name"] for e in before] == ["alien", "logp", "protein", "smiles"]
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("logp", "smiles"):
        (bare / entry_of(reg, name)["url"]).write_bytes((reg / entry_of(reg, name)["url"]).read_bytes())
    assert [r["name"] for r in pull(["logp"], [parse_registry(str(bare))])] == ["logp", "smiles"]


# --------------------------------------------------------------------------- verify, rm, info


def test_verify_finds_changed_and_extra_files(reg: Path) -> None:
    pull(["logp"], [parse_registry(str(reg))])
    tags = packs_dir() / "logp" / "tags.safetensors"
    tags.write_bytes(tags.read_bytes()[:-4] + b"\0\0\0\0")
    (packs_dir() / "smiles" / "notes.txt").write_text("hi")
    rows = {r["name"]: r for r in listing.verify()}
    assert rows["logp"]["status"] == "failed" and rows["logp"]["problems"][0] == "tags.safetensors was changed"
    assert rows["smiles"]["problems"] == ["notes.txt is not part of the pack"]
    assert listing.verify("qed")[0]["status"].startswith("ok (loads; no install record")


def test_rm_and_info(reg: Path) -> None:
    pull(["logp"], [parse_registry(str(reg))])
    info = listing.pack_info("logp")
    assert info["status"] == "installed" and info["installed_from"]["registry"] == str(reg)
    remote = listing.pack_info("alien", [parse_registry(str(reg))])  # not built in, not installed
    assert remote["status"] == "available" and remote["sha256"] == entry_of(reg, "alien")["sha256"]
    result = remove("smiles")
    assert result["needed_by"] == ["logp"] and result["builtin_now_used"]  # the built-in smiles is used again
    assert installed() == {"logp": "0.1.0"}
    with pytest.raises(PackError, match="'qed' is a built-in pack"):
        remove("qed")
    with pytest.raises(PackError, match="no installed pack named 'nope'"):
        remove("nope")


# --------------------------------------------------------------------------- the pack commands, in-process


def test_pack_commands(
    reg: Path, sources: Path, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out, _ = cli(
        capsys, "pack", "export", str(sources / "protein"), "--to", str(tmp_path / "mine"), "--format", "json"
    )
    assert code == 0 and json.loads(out)["url"] == "protein-0.1.0.tagpack"
    assert [e["name"] for e in json.loads((tmp_path / "mine" / "index.json").read_text())["packs"]] == ["protein"]
    code, out, _ = cli(
        capsys,
        "pack",
        "list",
        "--available",
        "--registry",
        str(reg),
        "--base-model",
        str(tiny_model_dir),
        "--format",
        "json",
    )
    assert code == 0 and sorted(r["name"] for r in json.loads(out)) == ["logp", "protein", "smiles"]
    code, out, err = cli(capsys, "pack", "pull", "logp@9.9", "--registry", str(reg))
    assert (
        (code, out) == (1, "")
        and err.strip()
        == f"error: no version 9.9 of pack 'logp' in any registry (there: 0.1.0 in {reg}) "
        "(hint: `tagcli pack pull logp` takes the newest)"
    )
    code, out, _ = cli(capsys, "pack", "pull", "protein", "--registry", str(tmp_path / "mine"))
    assert code == 0 and out.startswith("installed protein 0.1.0 from ")
    code, out, _ = cli(capsys, "pack", "info", "protein", "--format", "json")
    assert code == 0 and json.loads(out)["installed_from"]["registry"] == str(tmp_path / "mine")
    code, out, err = cli(capsys, "pack", "rm", "qed")
    assert code == 1 and err.startswith("error: 'qed' is a built-in pack")
    code, out, _ = cli(capsys, "pack", "rm", "protein")
    assert code == 0 and out.startswith("removed protein 0.1.0") and installed() == {}
    code, _, err = cli(capsys, "pack", "pull", "protein", "--registry", "hf://nope")
    assert code == 2 and err.startswith("error: bad Hugging Face registry")
