"""tagcli.packs.install: pulls from a real HTTP server on 127.0.0.1 and from folders (dependencies, versions,
resumed downloads, integrity, unsafe archives), `predict`'s auto-pull, and removal.

The registry and its server are tests/registry_server.py's.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path

import pyarrow as pa
import pytest

import registry_server
from registry_server import entry_of, index_url, installed, serve, set_entry
from tagcli.errors import PackError
from tagcli.home import packs_dir
from tagcli.packs import listing
from tagcli.packs.install import ensure_packs, pull, remove
from tagcli.packs.registries import parse_registry
from tagcli.packs.store import PackStore, builtin_packs_dir
from tagcli.packs.transport import sha256_file
from tagcli.scoring.scorer import TagScorer

no_configured_registries = registry_server.no_configured_registries
reg, sources = registry_server.reg, registry_server.sources


# --------------------------------------------------------------------------- pull over HTTP


def test_pull_installs_the_pack_and_the_domain_pack_it_needs(reg: Path, base) -> None:
    with serve(reg) as server:
        results = pull(["logp"], [parse_registry(index_url(server))])
    assert [(r["name"], r["version"], r["status"], r["wanted_by"]) for r in results] == [
        ("logp", "0.1.0", "installed", None),
        ("smiles", "0.2.0", "installed", "logp"),
    ]
    assert installed() == {"logp": "0.1.0", "smiles": "0.2.0"}
    record = json.loads((packs_dir() / "logp" / ".tagcli-install.json").read_text())
    assert record["registry"] == index_url(server) and record["archive_sha256"] == entry_of(reg, "logp")["sha256"]
    assert set(record["files"]) == {"manifest.json", "tags.safetensors", "heads.safetensors"}
    assert not any((packs_dir().parent / "downloads").iterdir())  # verified downloads are not kept
    # the pulled packs are what the scorer uses: the function and, beside it, its domain pack
    scorer = TagScorer("logp", base_model=base)
    assert scorer.plans[0].domains["smiles"].path == (packs_dir() / "smiles").resolve()
    assert scorer(pa.table({"smiles": ["CCO"]})).column("status").to_pylist() == ["ok"]
    assert all(row["status"] == "ok" for row in listing.verify())


def test_dependencies_already_here_are_not_pulled_again(reg: Path) -> None:
    with serve(reg) as server:
        pull(["smiles"], [parse_registry(index_url(server))])
        server.requests.clear()
        results = pull(["logp"], [parse_registry(index_url(server))])
        again = pull(["logp"], [parse_registry(index_url(server))])
    assert [r["name"] for r in results] == ["logp"]
    assert {path for path, _ in server.requests} == {"/index.json", "/logp-0.1.0.tagpack"}
    assert [r["status"] for r in again] == ["already installed"]


def test_a_pulled_pack_replaces_the_builtin_of_that_name_and_versions_reach_either(reg: Path) -> None:
    builtin = builtin_packs_dir() / "smiles"
    assert PackStore().find("smiles") == builtin.resolve()  # the built-in smiles is 0.1.0
    pull(["smiles"], [parse_registry(str(reg))])  # a folder registry: 0.2.0 for the tiny model
    store = PackStore()
    assert store.find("smiles") == (packs_dir() / "smiles").resolve()
    assert store.find("smiles@0.2.0") == (packs_dir() / "smiles").resolve()
    assert store.find("smiles@0.1.0") == builtin.resolve()
    with pytest.raises(
        PackError, match=r"no version 9\.9 of tag pack 'smiles' is installed \(found 0\.2\.0 in .*0\.1\.0 in "
    ):
        store.find("smiles@9.9")
    assert PackStore().installed()["smiles"].path == (packs_dir() / "smiles").resolve()
    assert remove("smiles")["builtin_now_used"]
    assert PackStore().find("smiles") == builtin.resolve()


def test_unknown_version_names_the_ones_there(reg: Path) -> None:
    with serve(reg) as server:
        with pytest.raises(PackError) as info:
            pull(["logp@9.9.9"], [parse_registry(index_url(server))])
    assert (
        info.value.message == f"no version 9.9.9 of pack 'logp' in any registry (there: 0.1.0 in {index_url(server)})"
    )
    assert installed() == {}


def test_unknown_pack_and_unreachable_registry_are_one_line_errors(reg: Path) -> None:
    with serve(reg) as server:
        with pytest.raises(PackError, match=r"no pack named 'nope' in http://127\.0\.0\.1:\d+/index\.json"):
            pull(["nope"], [parse_registry(index_url(server))])
        url = index_url(server)
    with pytest.raises(PackError, match=r"pack 'logp' not found: registry .* cannot read .*index\.json"):
        pull(["logp"], [parse_registry(url)])  # the server is gone
    with pytest.raises(PackError, match="no registry is configured"):
        pull(["logp"], [])
    assert installed() == {}


# --------------------------------------------------------------------------- integrity and safety


def test_tampered_archive_is_refused_and_nothing_changes(reg: Path) -> None:
    archive = reg / entry_of(reg, "logp")["url"]
    data = bytearray(archive.read_bytes())
    data[700] ^= 0xFF  # same size, different bytes
    archive.write_bytes(bytes(data))
    with serve(reg) as server:
        with pytest.raises(PackError) as info:
            pull(["logp"], [parse_registry(index_url(server))])
    assert "failed its integrity check (sha256" in info.value.message and "nothing was installed" in info.value.message
    assert "\n" not in str(info.value)
    assert installed() == {}
    assert list((packs_dir().parent / "downloads").iterdir()) == []  # the bad download is discarded


def test_a_bad_dependency_stops_the_whole_pull(reg: Path) -> None:
    archive = reg / entry_of(reg, "smiles")["url"]
    archive.write_bytes(archive.read_bytes()[:600] + b"tampered" + archive.read_bytes()[608:])
    with pytest.raises(PackError, match="smiles 0.2.0 .* failed its integrity check"):
        pull(["logp"], [parse_registry(str(reg))])
    assert installed() == {}  # logp was fine, but is not installed without its domain pack


@pytest.mark.parametrize("how", ["short", "drop"])
def test_truncated_download_resumes_with_a_range_request(reg: Path, how: str) -> None:
    name, size, sha = (entry_of(reg, "logp")[k] for k in ("url", "size", "sha256"))
    part = packs_dir().parent / "downloads" / f"{sha}.tagpack.part"
    with serve(reg) as server:
        server.truncate[name] = (3000, how)
        with pytest.raises(PackError) as info:
            pull(["logp"], [parse_registry(index_url(server))])
        message = info.value.message
        if how == "short":
            assert message == f"download of logp 0.1.0 from {index_url(server)} ended early at 3000 of {size} bytes", (
                message
            )
        else:
            assert re.fullmatch(rf"download of logp 0\.1\.0 from \S+ stopped at \d+ of {size} bytes \(.+\)", message), (
                message
            )
        assert "run the same command again" in info.value.hint
        assert installed() == {}
        kept = part.stat().st_size
        assert kept == 3000 or (how == "drop" and 0 <= kept <= 3000)
        server.requests.clear()
        results = pull(["logp"], [parse_registry(index_url(server))])
    assert [r["name"] for r in results] == ["logp", "smiles"]
    if kept:
        assert (f"/{name}", f"bytes={kept}-{size - 1}") in server.requests  # only the rest was asked for
    assert not part.exists()
    assert all(row["status"] == "ok" for row in listing.verify())


def test_resume_from_a_server_without_range_support_starts_over(reg: Path) -> None:
    entry = entry_of(reg, "smiles")
    part = packs_dir().parent / "downloads" / f"{entry['sha256']}.tagpack.part"
    part.parent.mkdir(parents=True)
    part.write_bytes((reg / entry["url"]).read_bytes()[:1000])
    with serve(reg, ranges=False) as server:
        results = pull(["smiles"], [parse_registry(index_url(server))])
    assert results[0]["status"] == "installed" and installed() == {"smiles": "0.2.0"}


def _evil_archive(folder: Path, member: tarfile.TarInfo, payload: bytes = b"x") -> None:
    good = folder / entry_of(folder, "protein")["url"]
    buffer = io.BytesIO()
    with tarfile.open(good) as src, tarfile.open(fileobj=buffer, mode="w") as out:
        for m in src.getmembers():
            out.addfile(m, src.extractfile(m))
        out.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    good.write_bytes(buffer.getvalue())
    set_entry(folder, "protein", size=len(buffer.getvalue()), sha256=sha256_file(good))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "extra"])
def test_unsafe_archives_are_refused(reg: Path, tmp_path: Path, kind: str) -> None:
    if kind == "symlink":
        member = tarfile.TarInfo("tags.safetensors.link")
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    else:
        member = tarfile.TarInfo(
            {"dotdot": "../../evil.txt", "absolute": str(tmp_path / "evil.txt"), "extra": "run.py"}[kind]
        )
        member.size = 1
    _evil_archive(reg, member)
    with serve(reg) as server:
        with pytest.raises(PackError, match=r"unexpected member .*; refusing to extract"):
            pull(["protein"], [parse_registry(index_url(server))])
    assert installed() == {}
    assert not list(tmp_path.rglob("evil.txt"))


def test_an_archive_that_is_not_what_its_entry_says_is_refused(reg: Path) -> None:
    set_entry(
        reg,
        "protein",
        url=entry_of(reg, "smiles")["url"],
        size=entry_of(reg, "smiles")["size"],
        sha256=entry_of(reg, "smiles")["sha256"],
    )
    with pytest.raises(PackError, match=r"holds pack 'smiles' 0\.2\.0, not what its index entry says"):
        pull(["protein"], [parse_registry(str(reg))])
    assert installed() == {}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sha256": "xyz"}, "sha256 must be 64 hex digits"),
        ({"name": "../etc"}, "bad or missing name"),
        ({"size": -1}, "size must be a positive integer"),
    ],
)
def test_malformed_index_entries_are_refused(reg: Path, change: dict, message: str) -> None:
    set_entry(reg, "protein", **change)
    with pytest.raises(PackError, match=re.escape(message)):
        pull(["smiles"], [parse_registry(str(reg))])  # one bad entry makes the whole index unusable


def test_interrupted_installs_leave_no_pack_behind(reg: Path) -> None:
    stale = packs_dir() / ".incoming-999999999-abc" / "protein"  # left by a pull that was killed
    stale.mkdir(parents=True)
    (stale / "manifest.json").write_text("{}")
    found = PackStore().installed().values()
    assert all(
        stale.parent not in Path(getattr(p, "path", "/")).parents for p in found
    )  # a staging folder is never a pack
    pull(["protein"], [parse_registry(str(reg))])
    assert installed() == {"protein": "0.1.0"}  # and it is cleaned up by the next pull


# --------------------------------------------------------------------------- predict: auto-pull, offline, base model


def test_predict_pulls_what_is_missing(reg: Path, base, tiny_model_dir: Path) -> None:
    pulled = []
    with serve(reg) as server:
        functions, domains = ensure_packs(
            ["logp"], None, registries=[index_url(server)], base_model=str(tiny_model_dir), on_pull=pulled.append
        )
        assert (functions, domains) == (["logp"], None)
        assert [r["name"] for r in pulled] == ["logp", "smiles"]
        pulled.clear()
        assert ensure_packs(["logp@0.1.0"], ["smiles"], registries=[index_url(server)]) == (
            [str((packs_dir() / "logp").resolve())],
            ["smiles"],
        )
    assert pulled == []
    assert TagScorer(functions, base_model=base)(pa.table({"smiles": ["CCO", "C1CC"]})).column(
        "status"
    ).to_pylist() == ["ok", "invalid"]


def test_offline_never_pulls(reg: Path, tiny_model_dir: Path) -> None:
    with serve(reg) as server:
        with pytest.raises(PackError) as info:
            ensure_packs(["logp"], None, registries=[index_url(server)], offline=True, base_model=str(tiny_model_dir))
        assert info.value.message == "tag pack 'logp' is not installed, and --offline forbids pulling it"
        assert server.requests == []
        rows, warnings = listing.list_packs([parse_registry(index_url(server))], available=True, offline=True)
        assert server.requests == [] and "needs the network, and --offline is set" in warnings[0]
    assert installed() == {}
    # a folder registry needs no network
    assert [r["name"] for r in pull(["protein"], [parse_registry(str(reg))], offline=True)] == ["protein"]


def test_a_pack_for_another_base_model_is_refused_before_anything_is_installed(reg: Path, tiny_model_dir: Path) -> None:
    with serve(reg) as server:
        with pytest.raises(PackError) as info:
            ensure_packs(["alien"], None, registries=[index_url(server)], base_model=str(tiny_model_dir))
    assert info.value.message.startswith("pack 'alien' 0.1.0 in http://127.0.0.1:")
    assert "was trained for base model some/other-model (sha256:cdcdcdcdcdcd), not " in info.value.message
    assert info.value.hint == "pass --base-model some/other-model"
    assert installed() == {}


def test_files_written_are_world_readable(reg: Path) -> None:
    pull(["protein"], [parse_registry(str(reg))])
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in (packs_dir() / "protein").iterdir())
    assert os.stat(packs_dir() / "protein").st_mode & 0o055 == 0o055
