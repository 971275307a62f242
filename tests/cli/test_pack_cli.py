"""`tagcli pack list|pull|verify` and `predict`'s auto-pull through the installed entry point,
against registries served on 127.0.0.1: a static file server, and a stand-in for the Hugging Face Hub
(the `/ORG/REPO/resolve/REV/FILE` URLs huggingface_hub asks HF_ENDPOINT for).

Each run pays the torch import, so independent chains of commands run in parallel, once per module.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from helpers import Result, domain_pack, function_pack, regression_head, tagcli_executable, tiny_base
from tagcli.packs import listing
from tagcli.packs.format import save_pack

pytestmark = pytest.mark.slow  # every test runs the installed CLI as a subprocess

OTHER_FINGERPRINT = "sha256:" + "cd" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TIMEOUT = 180


def one_error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), str(result)
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class FakeHub(BaseHTTPRequestHandler):
    """Serves ROOT/ORG/REPO/FILE at /ORG/REPO/resolve/REV/FILE with the headers huggingface_hub reads."""

    root: Path

    def log_message(self, *args: object) -> None:
        pass

    def _head(self) -> bytes | None:
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
        file = self.root / match[1] / match[3] if match else None
        if file is None or not file.is_file():
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound" if match else "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return data

    def do_HEAD(self) -> None:
        self._head()

    def do_GET(self) -> None:
        data = self._head()
        if data is not None:
            self.wfile.write(data)


@dataclass
class Setup:
    root: Path
    model: Path
    env: dict[str, str]
    url: str  # the good registry's index
    bad_url: str  # the same with a tampered logp archive
    hub: str  # HF_ENDPOINT

    def run(self, *args: str, home: str, **env: str) -> Result:
        done = subprocess.run(
            [tagcli_executable(), *args],
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=TIMEOUT,
            env=self.env | {"TAGCLI_HOME": str(self.root / home)} | env,
        )
        return Result(list(args), done.returncode, done.stdout, done.stderr)

    def installed(self, home: str) -> list[str]:
        folder = self.root / home / "packs"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("pack-cli")
    base = tiny_base(tiny_model_dir)
    smiles = domain_pack(base, "smiles", seed=1)
    smiles.manifest.version = "0.2.0"
    logp = function_pack(base, "logp", [smiles], regression_head(base.hidden_size, ["y"], seed=3), seed=3)
    alien = function_pack(base, "alien", [smiles], seed=4, fingerprint=OTHER_FINGERPRINT)
    alien.manifest.base_model["id"] = "some/other-model"
    for pack in (smiles, logp, alien):
        listing.export(str(save_pack(pack, root / "src" / pack.name)), root / "www" / "reg")
    shutil.copytree(root / "www" / "reg", root / "www" / "bad")
    archive = root / "www" / "bad" / "logp-0.1.0.tagpack"
    archive.write_bytes(archive.read_bytes().replace(b'"logp"', b'"LOGP"', 1))
    shutil.copytree(root / "www" / "reg", root / "hub" / "org" / "packs")
    pd.DataFrame({"smiles": ["CCO", "c1ccccc1", "C1CCC"], "y": [0.1, 0.5, 0.3]}).to_csv(root / "in.csv", index=False)

    static = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root / "www")))
    hub = ThreadingHTTPServer(("127.0.0.1", 0), type("Hub", (FakeHub,), {"root": root / "hub"}))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (static, hub)]
    for thread in threads:
        thread.start()
    env = dict(os.environ)
    env.pop("TAGCLI_DEBUG", None)
    env.pop("TAGCLI_REGISTRY", None)
    env.update(
        TAGCLI_CONFIG=str(root / "no-config.toml"),
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(root / "hf"),
        OMP_NUM_THREADS="1",
    )
    port = static.server_address[1]
    yield Setup(
        root,
        tiny_model_dir,
        env,
        f"http://127.0.0.1:{port}/reg/index.json",
        f"http://127.0.0.1:{port}/bad/",
        f"http://127.0.0.1:{hub.server_address[1]}",
    )
    for server in (static, hub):
        server.shutdown()
        server.server_close()


def _from_scratch(s: Setup) -> dict[str, Result]:
    """A fresh TAGCLI_HOME: list what a registry offers, pull, verify."""
    return {
        "available": s.run("pack", "list", "--available", "--registry", s.url, "--format", "json", home="a"),
        "pull": s.run("pack", "pull", "logp", "--registry", s.url, home="a"),
        "verify": s.run("pack", "verify", "--format", "json", home="a"),
    }


def _predict(s: Setup) -> dict[str, Result]:
    model = ["--base-model", str(s.model), "--device", "cpu", "--dtype", "float32", "--no-progress"]
    runs = {
        "auto_pull": s.run(
            "predict", "in.csv", "-F", "logp", "--registry", s.url, "-o", str(s.root / "out.csv"), *model, home="b"
        ),
        "offline": s.run(
            "predict",
            "in.csv",
            "-F",
            "logp",
            "--registry",
            s.url,
            "--offline",
            "-o",
            str(s.root / "never.csv"),
            *model,
            home="b2",
        ),
        "foreign": s.run(
            "predict", "in.csv", "-F", "alien", "--registry", s.url, "-o", str(s.root / "never.csv"), *model, home="c"
        ),
    }
    # the packs just pulled, copied to another home, with one bit of logp's tag vectors flipped
    shutil.copytree(s.root / "b" / "packs", s.root / "b3" / "packs")
    tags = s.root / "b3" / "packs" / "logp" / "tags.safetensors"
    data = bytearray(tags.read_bytes())
    data[-4] ^= 0x01  # the lowest bit of the last float: the file still loads, only its sha256 tells
    tags.write_bytes(bytes(data))
    changed_out = str(s.root / "changed.csv")
    runs["changed"] = s.run("predict", "in.csv", "-F", "logp", "--offline", "-o", changed_out, *model, home="b3")
    evaluate = ["eval", "in.csv", "-F", "logp", "-t", "y", "--registry", s.url, *model[:-1], "--format", "json"]
    runs["eval_auto_pull"] = s.run(*evaluate, "--max-batch-tokens", "256", "--no-clip", home="e")
    runs["eval_offline"] = s.run(*evaluate, "--offline", home="e2")
    return runs


def _hub_and_tampered(s: Setup) -> dict[str, Result]:
    # (reading the same repo back from the HF cache with HF_HUB_OFFLINE=1 is tested in tests/unit/test_registries.py)
    return {
        "online": s.run(
            "pack", "pull", "logp", "--registry", "hf://org/packs", home="d", HF_HUB_OFFLINE="0", HF_ENDPOINT=s.hub
        ),
        "tampered": s.run("pack", "pull", "logp", "--registry", s.bad_url, home="c2"),
    }


@pytest.fixture(scope="module")
def results(setup: Setup):
    pool = ThreadPoolExecutor(max_workers=3)
    futures = {
        name: pool.submit(job, setup)
        for name, job in (("scratch", _from_scratch), ("predict", _predict), ("hub", _hub_and_tampered))
    }
    yield futures
    pool.shutdown(wait=True)


def get(results: dict[str, Future], chain: str) -> dict[str, Result]:
    return results[chain].result(timeout=TIMEOUT * 6)


# --------------------------------------------------------------------------- tests


def test_list_available_json(results, setup: Setup) -> None:
    r = get(results, "scratch")["available"]
    assert r.returncode == 0, str(r)
    rows = {(row["name"], row["status"]): row for row in json.loads(r.stdout)}
    assert {
        ("logp", "available"),
        ("smiles", "available"),
        ("alien", "available"),
        ("qed", "built-in"),
        ("smiles", "built-in"),
    } <= set(rows)
    logp = rows[("logp", "available")]
    assert logp["kind"] == "function" and logp["domains"] == ["smiles"] and logp["outputs"] == ["pred_y"]
    assert logp["source"] == setup.url and logp["version"] == "0.1.0" and logp["size"] > 0 and len(logp["sha256"]) == 64
    assert logp["base_model"] == str(setup.model) and logp["compatible"] is False  # not the default model
    assert rows[("qed", "built-in")]["compatible"] is True


def test_pull_then_verify(results, setup: Setup) -> None:
    chain = get(results, "scratch")
    r = chain["pull"]
    assert r.returncode == 0, str(r)
    assert r.stdout.splitlines()[0].startswith(f"installed logp 0.1.0 from {setup.url} -> ")
    assert "installed smiles 0.2.0" in r.stdout and "needed by logp" in r.stdout
    v = chain["verify"]
    assert v.returncode == 0, str(v)
    assert {row["name"]: row["status"] for row in json.loads(v.stdout)} == {"logp": "ok", "smiles": "ok"}


def test_predict_pulls_a_missing_pack(results, setup: Setup) -> None:
    r = get(results, "predict")["auto_pull"]
    assert r.returncode == 0, str(r)
    assert f"pulled logp 0.1.0 from {setup.url}" in r.stderr and "pulled smiles 0.2.0" in r.stderr
    assert [line for line in r.stdout.splitlines() if line.strip()][0].startswith("scored 3 rows: 2 ok, 1 invalid")
    assert pd.read_csv(setup.root / "out.csv")["status"].tolist() == ["ok", "ok", "invalid"]
    assert setup.installed("b") == ["logp", "smiles"]


def test_eval_pulls_a_missing_pack_and_takes_predicts_scorer_options(results, setup: Setup) -> None:
    r = get(results, "predict")["eval_auto_pull"]
    assert r.returncode == 0, str(r)
    assert f"pulled logp 0.1.0 from {setup.url}" in r.stderr and setup.installed("e") == ["logp", "smiles"]
    assert json.loads(r.stdout)["scored"] == 2
    offline = get(results, "predict")["eval_offline"]
    assert one_error_line(offline) == (
        "error: tag pack 'logp' is not installed, and --offline forbids pulling it "
        "(hint: run `tagcli pack pull logp` first, or drop --offline)"
    )


def test_predict_refuses_a_pulled_pack_whose_file_was_changed(results, setup: Setup) -> None:
    r = get(results, "predict")["changed"]
    assert r.returncode == 1, str(r)
    pack = (setup.root / "b3" / "packs" / "logp").resolve()
    assert one_error_line(r) == (
        f"error: pack 'logp' ({pack}): tags.safetensors was changed "
        "(hint: `tagcli pack pull logp --force` reinstalls it)"
    )
    assert not (setup.root / "changed.csv").exists()


@pytest.mark.parametrize(
    "name, home, expected",
    [
        ("offline", "b2", "error: tag pack 'logp' is not installed, and --offline forbids pulling it"),
        ("foreign", "c", "error: pack 'alien' 0.1.0 in http://127.0.0.1:"),
        ("tampered", "c2", "error: archive of logp 0.1.0 from http://127.0.0.1:"),
    ],
)
def test_failures_are_one_line_and_change_nothing(results, setup: Setup, name: str, home: str, expected: str) -> None:
    r = get(results, "hub" if name == "tampered" else "predict")[name]
    assert r.returncode == 1, str(r)
    line = one_error_line(r)
    assert line.startswith(expected), line
    assert {"foreign": "trained for base model some/other-model", "tampered": "failed its integrity check"}.get(
        name, ""
    ) in line
    assert setup.installed(home) == []
    assert not (setup.root / "never.csv").exists()


def test_hub_registry_through_hf_endpoint(results, setup: Setup) -> None:
    r = get(results, "hub")["online"]
    assert r.returncode == 0, str(r)
    assert "installed logp 0.1.0 from hf://org/packs" in r.stdout and "installed smiles 0.2.0" in r.stdout
    # huggingface_hub downloaded into its own cache, from the commit the index came from
    assert (setup.root / "hf" / "models--org--packs" / "snapshots" / COMMIT / "logp-0.1.0.tagpack").exists()
