"""tagcli.packs.integrity: pulled packs are re-checked against their install record at every load (#17).

A pack pulled from a registry carries `.tagcli-install.json` with each file's sha256. A file changed,
deleted or added since the pull makes every load refuse the pack with the line `pack verify` reports;
built-in and hand-placed packs (no record) load as before.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

import registry_server
from helpers import domain_pack, function_pack, regression_head
from tagcli.errors import PackError
from tagcli.home import packs_dir
from tagcli.packs import integrity, listing
from tagcli.packs.format import load_pack, save_pack
from tagcli.packs.install import pull
from tagcli.packs.registries import parse_registry
from tagcli.packs.store import PackStore, builtin_packs_dir
from tagcli.scoring.scorer import TagScorer

HINT = "(hint: `tagcli pack pull logp --force` reinstalls it)"


no_configured_registries = registry_server.no_configured_registries


@pytest.fixture(scope="module")
def registry(base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder registry offering smiles 0.2.0 and logp (a regression function on smiles)."""
    root = tmp_path_factory.mktemp("installed-packs")
    smiles = domain_pack(base, "smiles", seed=1)
    smiles.manifest.version = "0.2.0"
    logp = function_pack(base, "logp", [smiles], regression_head(base.hidden_size, ["y"], seed=3), seed=3)
    for pack in (smiles, logp):
        listing.export(str(save_pack(pack, root / "src" / pack.name)), root / "registry")
    return root / "registry"


@pytest.fixture
def logp(registry: Path) -> Path:
    """logp and smiles pulled into this test's TAGCLI_HOME; the (resolved) folder of logp."""
    pull(["logp"], [parse_registry(str(registry))])
    return (packs_dir() / "logp").resolve()


def flip_byte(file: Path, offset: int) -> None:
    """Change one bit of one byte in place (same size): in a safetensors data area, the last bit of a float."""
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x01
    file.write_bytes(bytes(data))


def refusal(path: Path, problems: str) -> str:
    return f"pack '{path.name}' ({path}): {problems} {HINT}"


def score(base) -> list[str]:
    table = TagScorer(["logp"], base_model=base)(pa.table({"smiles": ["CCO", "C1CC"]}))
    return table.column("status").to_pylist()


def test_an_untouched_pulled_pack_loads_and_predicts(logp: Path, base) -> None:
    assert (logp / integrity.INSTALL_RECORD).is_file()
    assert PackStore().load("logp").manifest.version == "0.1.0"
    assert score(base) == ["ok", "invalid"]
    assert [row["status"] for row in listing.verify()] == ["ok", "ok"]


@pytest.mark.parametrize(
    "file, offset",
    [("tags.safetensors", -4), ("heads.safetensors", -4), ("manifest.json", None)],
)
def test_a_changed_file_refuses_the_pack_at_every_load(logp: Path, base, file: str, offset: int | None) -> None:
    target = logp / file
    if offset is None:  # one byte of the manifest: version 0.1.0 -> 0.1.1, still a valid manifest
        text = target.read_bytes()
        target.write_bytes(text.replace(b'"version": "0.1.0"', b'"version": "0.1.1"', 1))
        assert target.read_bytes() != text
    else:
        flip_byte(target, offset)
    load_pack(logp, check_install=False)  # the change alone would go unnoticed: the pack still loads
    expected = refusal(logp, f"{file} was changed")
    for load in (lambda: load_pack(logp), lambda: PackStore().load("logp"), lambda: score(base)):
        with pytest.raises(PackError) as info:
            load()
        assert str(info.value) == expected
    assert listing.verify("logp")[0]["problems"] == [f"{file} was changed"]  # the same words as `pack verify`
    assert str(PackStore().installed()["logp"]) == expected  # `pack list` shows it as broken


def test_pull_force_repairs_a_changed_pack(logp: Path, registry: Path, base) -> None:
    flip_byte(logp / "tags.safetensors", -4)
    with pytest.raises(PackError, match="tags.safetensors was changed"):
        PackStore().load("logp")
    pull(["logp"], [parse_registry(str(registry))], force=True)
    assert score(base) == ["ok", "invalid"]


@pytest.mark.parametrize("stray", ["stray.pkl", "weights.bin", ".hidden"])
def test_an_extra_file_refuses_the_pack(logp: Path, stray: str) -> None:
    (logp / stray).write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(PackError) as info:
        PackStore().load("logp")
    assert str(info.value) == refusal(logp, f"{stray} is not part of the pack")


def test_a_deleted_file_refuses_the_pack(logp: Path) -> None:
    (logp / "heads.safetensors").unlink()
    with pytest.raises(PackError) as info:
        PackStore().load("logp")
    assert str(info.value) == refusal(logp, "heads.safetensors is missing")


def test_a_pulled_pack_without_its_manifest_is_refused_not_replaced_by_the_builtin(logp: Path, base) -> None:
    smiles = logp.parent / "smiles"  # pulled smiles 0.2.0 stands in front of the built-in smiles
    (smiles / "manifest.json").unlink()
    assert PackStore().find("smiles") == smiles
    with pytest.raises(PackError) as info:
        PackStore().load("smiles")
    assert str(info.value).startswith(f"pack 'smiles' ({smiles}): manifest.json is missing (hint: ")
    with pytest.raises(PackError, match="pack 'smiles' .*: manifest.json is missing"):
        score(base)  # logp's domain pack is its pulled sibling, not the built-in
    assert listing.verify("smiles")[0]["problems"][0] == "manifest.json is missing"


def test_an_unreadable_install_record_refuses_the_pack(logp: Path) -> None:
    (logp / integrity.INSTALL_RECORD).write_text("{not json", encoding="utf-8")
    with pytest.raises(PackError) as info:
        PackStore().load("logp")
    assert str(info.value) == refusal(logp, f"its install record {integrity.INSTALL_RECORD} is not readable")
    assert listing.verify("logp")[0]["status"] == "failed"


def test_the_digest_cache_saves_rehashing_but_not_a_later_change(logp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[str] = []
    real = integrity.hashlib.sha256

    def counting(*args: object):
        hashed.append("x")
        return real(*args)

    monkeypatch.setattr(integrity.hashlib, "sha256", counting)
    load_pack(logp)
    first = len(hashed)
    load_pack(logp)
    assert first >= 3 and len(hashed) == first  # a second load in the process hashes nothing

    tags = logp / "tags.safetensors"
    before = tags.stat()
    flip_byte(tags, -4)  # same size; then a later mtime, as any write gives
    os.utime(tags, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    with pytest.raises(PackError) as info:
        load_pack(logp)
    assert str(info.value) == refusal(logp, "tags.safetensors was changed")


def test_builtin_and_hand_placed_packs_have_no_record_and_load_as_before(registry: Path) -> None:
    assert PackStore().load("qed").path == (builtin_packs_dir() / "qed").resolve()
    by_hand = packs_dir() / "logp"
    shutil.copytree(registry.parent / "src" / "logp", by_hand)
    (by_hand / "notes.txt").write_text("mine")  # no install record: nothing to compare against
    assert PackStore().load("logp").manifest.name == "logp"
    assert listing.verify("logp")[0]["status"] == "ok (loads; no install record to compare)"
