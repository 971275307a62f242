"""A pack registry to pull from in tests: the packs it publishes, a folder written by `listing.export`, and
the standard library's HTTP server on 127.0.0.1 serving it, with Range requests, a request log and a
one-shot truncated response, so resuming is tested for real; also the Hugging Face cache layout.

Test modules take the fixtures by assignment (`reg, sources = registry_server.reg, registry_server.sources`).
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import domain_pack, function_pack, regression_head
from tagcli.home import packs_dir
from tagcli.packs import listing
from tagcli.packs.format import save_pack

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


def hub_cache(root: Path, reg: Path, repo: str = "models--org--packs") -> str:
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = root / repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / repo / "refs").mkdir()
    (root / repo / "refs" / "main").write_text(commit)
    for path in reg.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    return commit


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    from tagcli.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return done.value.code or 0, out, err
