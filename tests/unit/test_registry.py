"""Pack registries: pulls from a real HTTP server on 127.0.0.1, folders, and the Hugging Face cache layout.

The server (`serve`) is the standard library's, serving a folder written by `listing.export`, plus
Range requests, a request log and a one-shot truncated response, so resuming is tested for real.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pytest

from helpers import domain_pack, function_pack, regression_head
from tagcli.cli.pack_rows import list_row
from tagcli.errors import PackError, UsageError
from tagcli.home import packs_dir
from tagcli.packs import listing
from tagcli.packs.format import save_pack
from tagcli.packs.install import ensure_packs, pull, remove
from tagcli.packs.registries import configured_registries, parse_registry
from tagcli.packs.store import PackStore, builtin_packs_dir
from tagcli.packs.transport import sha256_file
from tagcli.scorer import TagScorer

OTHER_FINGERPRINT = "sha256:" + "cd" * 32


# --------------------------------------------------------------------------- a registry server


class RegistryHandler(SimpleHTTPRequestHandler):
    """Static files, with Range support (unless server.ranges is off) and one-shot truncation."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Range")))  # type: ignore[attr-defined]
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        start, end = 0, len(data)
        wanted = self.headers.get("Range") if self.server.ranges else None  # type: ignore[attr-defined]
        if wanted:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted)
            assert match, wanted
            start, end = int(match[1]), min(len(data), int(match[2]) + 1 if match[2] else len(data))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:end]
        cut, how = self.server.truncate.pop(path.name, (None, None))  # type: ignore[attr-defined]
        # "short": a complete response that is shorter than the file (a cut-off copy);
        # "drop": the connection breaks after `cut` bytes of the promised length.
        self.send_header("Content-Length", str(cut if how == "short" else len(body)))
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])
        if how == "drop":
            self.wfile.flush()
            time.sleep(0.5)  # let the client read what came before the break
            self.close_connection = True


@contextmanager
def serve(directory: Path, ranges: bool = True) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RegistryHandler, directory=str(directory)))
    server.requests, server.truncate, server.ranges = [], {}, ranges  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def index_url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/index.json"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def no_configured_registries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGCLI_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.delenv("TAGCLI_REGISTRY", raising=False)


@pytest.fixture(scope="module")
def sources(base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Packs to publish: smiles (0.2.0) + logp on it, protein, and 'alien' for another base model."""
    root = tmp_path_factory.mktemp("sources")
    smiles = domain_pack(base, "smiles", seed=1)
    smiles.manifest.version = "0.2.0"
    protein = domain_pack(base, "protein", seed=2)
    logp = function_pack(base, "logp", [smiles], regression_head(base.hidden_size, ["y"], seed=3), seed=3)
    alien = function_pack(base, "alien", [smiles], seed=4, fingerprint=OTHER_FINGERPRINT)
    alien.manifest.base_model["id"] = "some/other-model"
    for pack in (smiles, protein, logp, alien):
        save_pack(pack, root / pack.name)
    return root


@pytest.fixture
def reg(sources: Path, tmp_path: Path) -> Path:
    """A registry folder (archives + index.json), fresh for each test so tests may damage it."""
    folder = tmp_path / "registry"
    for name in ("smiles", "protein", "logp", "alien"):
        listing.export(str(sources / name), folder)
    return folder


def installed() -> dict[str, str]:
    """What is under $TAGCLI_HOME/packs, name → version (dot-folders included, to catch leftovers)."""
    root = packs_dir()
    if not root.is_dir():
        return {}
    return {
        p.name: json.loads((p / "manifest.json").read_text())["version"] if (p / "manifest.json").is_file() else "?"
        for p in root.iterdir()
    }


def entry_of(folder: Path, name: str) -> dict:
    return next(e for e in json.loads((folder / "index.json").read_text())["packs"] if e["name"] == name)


def set_entry(folder: Path, pack: str, **changes) -> None:
    index = json.loads((folder / "index.json").read_text())
    for entry in index["packs"]:
        if entry["name"] == pack:
            entry.update(changes)
    (folder / "index.json").write_text(json.dumps(index))


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


# --------------------------------------------------------------------------- registries from config, folders, the hub


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


def _hub_cache(root: Path, reg: Path, repo: str = "models--org--packs") -> str:
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = root / repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / repo / "refs").mkdir()
    (root / repo / "refs" / "main").write_text(commit)
    for path in reg.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    return commit


def test_hub_registry_reads_the_hugging_face_cache_offline(
    reg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    _hub_cache(tmp_path / "hf", reg)  # HF_HUB_OFFLINE=1 for every test (conftest)
    results = pull(["logp"], [parse_registry("hf://org/packs")])
    assert [(r["name"], r["registry"]) for r in results] == [("logp", "hf://org/packs"), ("smiles", "hf://org/packs")]
    assert all(row["status"] == "ok" for row in listing.verify())
    with pytest.raises(PackError) as info:
        pull(["logp"], [parse_registry("hf://org/elsewhere")])
    assert (
        "registry hf://org/elsewhere: index.json is not in the local Hugging Face cache and downloads are off"
        in info.value.message
    )


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


def test_files_written_are_world_readable(reg: Path) -> None:
    pull(["protein"], [parse_registry(str(reg))])
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in (packs_dir() / "protein").iterdir())
    assert os.stat(packs_dir() / "protein").st_mode & 0o055 == 0o055


# --------------------------------------------------------------------------- the pack commands, in-process


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    from tagcli.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return done.value.code or 0, out, err


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
