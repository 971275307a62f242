"""Pack registries: where packs are pulled from, and how they are installed, verified, removed and exported.

A registry is one of

    hf://ORG/REPO[@REVISION]     a Hugging Face Hub repo with index.json at its root (hf://datasets/ORG/REPO
                                 for a dataset repo), read with huggingface_hub: its cache, tokens,
                                 HF_HUB_OFFLINE, HF_ENDPOINT and revisions behave as for models
    https://HOST/PATH/index.json an index on any static file server (`tagcli pack export` writes one);
    file:///PATH/index.json      any other URL fsspec opens works too (s3://… with s3fs, …);
                                 a URL not ending in .json means URL/index.json
    /a/local/folder              a folder with an index.json (without one: the *.tagpack files in it)

and they are searched in this order: `--registry` (as given), `TAGCLI_REGISTRY` (space- or
comma-separated), then `registries = [...]` in the TOML config file (`$TAGCLI_CONFIG`, else
tagcli's user config dir, e.g. ~/.config/tagcli/config.toml; relative folders there are relative to
the file). Local packs (see `tagcli.packs.store`) always come before any registry.

index.json:

    {"format": "tagcli.index", "format_version": 1,
     "packs": [{"name", "version", "kind", "description", "method", "domains", "outputs", "requires",
                "base_model": {"id", "fingerprint"}, "metrics", "size", "sha256", "url"}, ...]}

`url` is relative to the index (or absolute); `sha256` and `size` are those of the `.tagpack` archive.

Installing is all-or-nothing: every archive of a pull (the pack and the domain packs it needs) is
downloaded to `$TAGCLI_HOME/downloads/SHA256.tagpack.part`, checked against the index's size and
sha256, extracted into a staging folder inside `$TAGCLI_HOME/packs` (the extractor refuses links,
absolute paths, `..` and unexpected members), loaded and validated, matched against its index entry
(name, version, base model fingerprint, and the domain tag digests a function pins), and only then
renamed into place as `$TAGCLI_HOME/packs/NAME/` with an install record (`.tagcli-install.json`:
source, version, archive sha256, per-file sha256) that `pack verify` re-hashes against. A failure at
any step leaves the installed packs as they were. An interrupted download keeps its `.part`, and the
next pull asks for the remaining bytes only (an HTTP Range request; servers without Range support
send the file again from the start). Nothing is unpickled anywhere: JSON, tar and safetensors only.

Downloads use fsspec, the file-system layer pandas, pyarrow, dask and huggingface_hub build on, so
one code path reads http(s) (through aiohttp, its `fsspec[http]` extra), file:// and local paths,
and other object stores; it does ranged reads, which is what resuming needs. Hub registries go
through huggingface_hub's own `hf_hub_download` (which resumes and caches by itself).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import posixpath
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urljoin

import platformdirs

from tagcli import __version__
from tagcli.errors import PackError, UsageError, first_line
from tagcli.home import env_true, make_readable, packs_dir, tagcli_home, write_json_atomic
from tagcli.packs.format import ARCHIVE_SUFFIX, MANIFEST, TagPack, extract_archive, load_pack, short_fingerprint, write_archive
from tagcli.core.prompt import NAME_RE
from tagcli.packs.store import INSTALL_RECORD, VERSION_RE, PackStore, builtin_packs_dir, is_pulled, split_ref

INDEX_FORMAT = "tagcli.index"
INDEX_FORMAT_VERSION = 1
INDEX_FILE = "index.json"
ENV_REGISTRY = "TAGCLI_REGISTRY"
ENV_CONFIG = "TAGCLI_CONFIG"
CHUNK = 1 << 20  # bytes per read (and per Range request when resuming)
SHA256_RE = re.compile(r"[0-9a-f]{64}\Z")
HEADLINE = ("pearson", "mse", "accuracy", "roc_auc", "perplexity")


# --------------------------------------------------------------------------- index entries


@dataclass
class IndexEntry:
    """One pack version a registry offers (one element of index.json's "packs")."""

    name: str
    version: str
    kind: str
    sha256: str  # of the .tagpack archive, hex
    size: int  # of the .tagpack archive, bytes
    url: str  # relative to the index, or absolute
    base_model: dict[str, str]
    description: str = ""
    method: str = "tag-llm"
    domains: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    requires: dict[str, dict[str, str]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    registry: Registry | None = field(default=None, compare=False, repr=False)

    KEYS = ("name", "version", "kind", "description", "method", "domains", "outputs", "requires", "base_model", "metrics", "size", "sha256", "url")

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.KEYS}

    @property
    def source(self) -> str:
        return self.registry.spec if self.registry else "?"

    @classmethod
    def from_dict(cls, data: Any, where: str) -> IndexEntry:
        if not isinstance(data, dict):
            raise PackError(f"{where}: a pack entry is not a JSON object")
        label = f"{where}: entry {data.get('name')!r} {data.get('version')!r}"

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise PackError(f"{label}: {what}", hint="fix the index, or re-create it with `tagcli pack export`")

        need(isinstance(data.get("name"), str) and bool(NAME_RE.match(data["name"])), "bad or missing name")
        need(isinstance(data.get("version"), str) and bool(VERSION_RE.match(data["version"])), "bad or missing version")
        need(data.get("kind") in ("domain", "function"), "kind must be 'domain' or 'function'")
        sha = str(data.get("sha256", "")).removeprefix("sha256:").lower()
        need(bool(SHA256_RE.match(sha)), "sha256 must be 64 hex digits")
        need(isinstance(data.get("size"), int) and data["size"] > 0, "size must be a positive integer")
        need(isinstance(data.get("url"), str) and bool(data["url"]), "missing url")
        base = data.get("base_model")
        need(isinstance(base, dict) and str(base.get("fingerprint", "")).startswith("sha256:"), "base_model needs an id and a sha256: fingerprint")
        requires = data.get("requires") or {}
        need(
            isinstance(requires, dict)
            and all(NAME_RE.match(str(k)) and isinstance(v, dict) and isinstance(v.get("sha256"), str) for k, v in requires.items()),
            "requires must map domain names to {version, sha256}",
        )
        for key, kind in (("domains", list), ("outputs", list), ("metrics", dict), ("description", str), ("method", str)):
            need(data.get(key) is None or isinstance(data[key], kind), f"{key} must be a {kind.__name__}")
        return cls(
            name=data["name"], version=data["version"], kind=data["kind"], sha256=sha, size=data["size"], url=data["url"],
            base_model={"id": str(base.get("id", "")), "fingerprint": base["fingerprint"]},
            description=data.get("description") or "", method=data.get("method") or "tag-llm",
            domains=list(data.get("domains") or []), outputs=list(data.get("outputs") or []),
            requires={k: dict(v) for k, v in requires.items()}, metrics=dict(data.get("metrics") or {}),
        )

    @classmethod
    def from_pack(cls, pack: TagPack, archive: Path, url: str) -> IndexEntry:
        m = pack.manifest
        return cls(
            name=m.name, version=m.version, kind=m.kind, sha256=sha256_file(archive), size=archive.stat().st_size, url=url,
            base_model=dict(m.base_model), description=m.description, method=m.method, domains=list(m.domains),
            outputs=pack.head.output_columns() if pack.head else [], requires=dict(m.requires), metrics=dict(m.metrics),
        )


def parse_index(raw: bytes, where: str) -> list[IndexEntry]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackError(f"{where}: {INDEX_FILE} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        raise PackError(f"{where}: not a tagcli pack index (format is {data.get('format') if isinstance(data, dict) else None!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or version > INDEX_FORMAT_VERSION:
        raise PackError(f"{where}: index format_version {version!r} is not one this tagcli reads ({INDEX_FORMAT_VERSION})", hint="upgrade tagcli")
    if not isinstance(data.get("packs"), list):
        raise PackError(f"{where}: index has no 'packs' list")
    return [IndexEntry.from_dict(item, where) for item in data["packs"]]


def index_document(entries: Iterable[IndexEntry]) -> dict[str, Any]:
    ordered = sorted(entries, key=lambda e: (e.name, version_key(e.version)))
    return {"format": INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION, "packs": [e.to_dict() for e in ordered]}


def version_key(version: str) -> tuple:
    """Order versions the PEP 440 way where they parse, else as text (and below those that parse)."""
    from packaging.version import InvalidVersion, Version

    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


# --------------------------------------------------------------------------- registries


class Registry:
    """Where packs can be pulled from. `entries` lists them; `fetch` returns a verified local archive."""

    spec: str
    remote: bool = True  # needs the network (refused with --offline)

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._entries: list[IndexEntry] | None = None
        self._error: PackError | None = None

    def entries(self, offline: bool = False) -> list[IndexEntry]:
        """The packs it offers; read once (a failure too: an unreachable registry is not asked again)."""
        if self._error is not None:
            raise self._error
        if self._entries is None:
            try:
                entries = self._load_entries(offline)
            except PackError as exc:
                self._error = exc
                raise
            for entry in entries:
                entry.registry = self
            self._entries = entries
        return self._entries

    def _load_entries(self, offline: bool) -> list[IndexEntry]:
        raise NotImplementedError

    def fetch(self, entry: IndexEntry, offline: bool = False) -> Path:
        raise NotImplementedError

    def _refuse_offline(self, what: str) -> None:
        raise PackError(f"registry {self.spec}: {what} needs the network, and --offline is set", hint="drop --offline, or use an installed pack")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class UrlRegistry(Registry):
    """An index.json at a URL (http, https, file, or any fsspec protocol) or a local path."""

    def __init__(self, spec: str, index_url: str) -> None:
        super().__init__(spec)
        self.index_url = index_url
        self.remote = _protocol(index_url) not in ("file", "local")

    def _load_entries(self, offline: bool) -> list[IndexEntry]:
        if offline and self.remote:
            self._refuse_offline("reading its index")
        return parse_index(read_url(self.index_url, f"registry {self.spec}"), f"registry {self.spec}")

    def archive_url(self, entry: IndexEntry) -> str:
        if "://" in entry.url:
            return entry.url
        if "://" in self.index_url:
            return urljoin(self.index_url, entry.url)
        return str(Path(self.index_url).parent / entry.url)

    def fetch(self, entry: IndexEntry, offline: bool = False) -> Path:
        url = self.archive_url(entry)
        if offline and _protocol(url) not in ("file", "local"):
            self._refuse_offline(f"downloading {entry.name} {entry.version}")
        return download(url, entry.size, entry.sha256, f"{entry.name} {entry.version} from {self.spec}")


class FolderRegistry(UrlRegistry):
    """A local folder: its index.json, or else the `.tagpack` archives it holds."""

    def __init__(self, spec: str, folder: Path) -> None:
        super().__init__(spec, str(folder / INDEX_FILE))
        self.folder = folder
        self.remote = False

    def _load_entries(self, offline: bool) -> list[IndexEntry]:
        if (self.folder / INDEX_FILE).is_file():
            return super()._load_entries(offline)
        if not self.folder.is_dir():
            raise PackError(f"registry {self.spec}: no such folder", hint="pass a folder written by `tagcli pack export`, or an index URL")
        entries = []
        for archive in sorted(self.folder.glob(f"*{ARCHIVE_SUFFIX}")):
            entries.append(IndexEntry.from_pack(load_pack(archive), archive, archive.name))
        return entries


class HubRegistry(Registry):
    """A Hugging Face Hub repo holding index.json and the archives, read through huggingface_hub."""

    def __init__(self, spec: str, repo_id: str, revision: str | None, repo_type: str) -> None:
        super().__init__(spec)
        self.repo_id, self.revision, self.repo_type = repo_id, revision, repo_type
        self._commit: str | None = None  # the commit the index came from; archives are read from the same one

    def _load_entries(self, offline: bool) -> list[IndexEntry]:
        path = self._download(INDEX_FILE, offline, self.revision)
        if re.fullmatch(r"[0-9a-f]{40}", path.parent.name) and path.parent.parent.name == "snapshots":
            self._commit = path.parent.name
        return parse_index(path.read_bytes(), f"registry {self.spec}")

    def fetch(self, entry: IndexEntry, offline: bool = False) -> Path:
        label = f"{entry.name} {entry.version} from {self.spec}"
        if "://" in entry.url:
            if offline:
                self._refuse_offline(f"downloading {entry.name} {entry.version}")
            return download(entry.url, entry.size, entry.sha256, label)
        filename = posixpath.normpath(entry.url.lstrip("/"))
        if filename.startswith(".."):
            raise PackError(f"registry {self.spec}: entry {entry.name} {entry.version} points outside the repo ({entry.url})")
        path = self._download(filename, offline, self._commit or self.revision)
        check_archive(path, entry.size, entry.sha256, label, discard=False)
        return path

    def _download(self, filename: str, offline: bool, revision: str | None) -> Path:
        from huggingface_hub import errors as hf_errors
        from huggingface_hub import hf_hub_download

        # huggingface_hub reads HF_HUB_OFFLINE once at import; re-read it so a later change counts.
        offline = offline or env_true("HF_HUB_OFFLINE") or env_true("TRANSFORMERS_OFFLINE")
        where = f"registry {self.spec}"
        options: dict[str, Any] = {}
        if "tqdm_class" in inspect.signature(hf_hub_download).parameters:  # newer huggingface_hub
            options["tqdm_class"] = _quiet_tqdm()
        not_found = (hf_errors.EntryNotFoundError, getattr(hf_errors, "RemoteEntryNotFoundError", hf_errors.EntryNotFoundError))
        try:
            return Path(
                hf_hub_download(self.repo_id, filename, repo_type=self.repo_type, revision=revision, local_files_only=offline, **options)
            )
        except hf_errors.LocalEntryNotFoundError:
            if offline:
                raise PackError(
                    f"{where}: {filename} is not in the local Hugging Face cache and downloads are off",
                    hint="run once online (without HF_HUB_OFFLINE / --offline)",
                ) from None
            raise PackError(f"{where}: could not reach the Hugging Face hub for {filename}, and it is not cached", hint="check the network or HF_ENDPOINT") from None
        except hf_errors.GatedRepoError:
            raise PackError(f"{where}: the repo is gated", hint="accept its terms online and run `hf auth login`") from None
        except hf_errors.RepositoryNotFoundError:
            raise PackError(f"{where}: repo {self.repo_id} was not found", hint="check the name (and log in for a private repo)") from None
        except hf_errors.RevisionNotFoundError:
            raise PackError(f"{where}: revision {revision!r} was not found", hint="check the part after @") from None
        except not_found:
            raise PackError(f"{where}: the repo has no {filename}", hint="a pack registry repo holds index.json at its root") from None
        except (hf_errors.HfHubHTTPError, hf_errors.HFValidationError, OSError) as exc:
            raise PackError(f"{where}: could not download {filename}: {first_line(exc)}") from None
        except Exception as exc:  # httpx connection errors, which huggingface_hub lets through
            if type(exc).__module__.split(".")[0] not in {"httpx", "httpx2", "httpcore", "requests", "urllib3"}:
                raise
            raise PackError(f"{where}: could not reach the Hugging Face hub: {first_line(exc)}", hint="check the network or HF_ENDPOINT") from None


def _quiet_tqdm() -> type:
    """huggingface_hub's progress bars would clutter stderr, which carries the one-line errors."""
    from tqdm.auto import tqdm

    class Quiet(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Quiet


def parse_registry(spec: str, base_dir: Path | None = None) -> Registry:
    """A registry from its spec: hf://ORG/REPO[@REV], a URL (of index.json or its folder), or a local folder."""
    text = spec.strip()
    if not text:
        raise UsageError("empty registry", hint="hf://ORG/REPO[@REVISION], https://…/index.json, file://… or a folder")
    if text.startswith("hf://"):
        rest, repo_type = text[len("hf://"):], "model"
        for prefix, kind in (("datasets/", "dataset"), ("models/", "model")):
            if rest.startswith(prefix):
                rest, repo_type = rest[len(prefix):], kind
        repo_id, at, revision = rest.partition("@")
        parts = repo_id.strip("/").split("/")
        if len(parts) != 2 or not all(parts) or (at and not revision):
            raise UsageError(f"bad Hugging Face registry {spec!r}", hint="use hf://ORG/REPO or hf://ORG/REPO@REVISION")
        return HubRegistry(text, "/".join(parts), revision or None, repo_type)
    if "://" in text:
        return UrlRegistry(text, text if text.lower().endswith(".json") else text.rstrip("/") + "/" + INDEX_FILE)
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    path = path.resolve()
    if path.suffix.lower() == ".json":
        return UrlRegistry(text, str(path))
    return FolderRegistry(text, path)


def config_path() -> Path:
    env = os.environ.get(ENV_CONFIG)
    return Path(env).expanduser() if env else Path(platformdirs.user_config_dir("tagcli")) / "config.toml"


def configured_registries(cli: Sequence[str] = ()) -> list[Registry]:
    """--registry values, then TAGCLI_REGISTRY, then the config file's `registries`; first occurrence wins."""
    specs: list[tuple[str, Path | None]] = [(s, None) for s in cli]
    specs += [(s, None) for s in re.split(r"[\s,]+", os.environ.get(ENV_REGISTRY, "")) if s]
    path = config_path()
    if path.is_file():
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            config = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
        listed = config.get("registries", [])
        if not isinstance(listed, list) or not all(isinstance(s, str) for s in listed):
            raise UsageError(f"config file {path}: 'registries' must be a list of strings", hint='registries = ["hf://org/packs", "https://host/packs/index.json"]')
        specs += [(s, path.parent) for s in listed]
    registries, seen = [], set()
    for spec, base in specs:
        registry = parse_registry(spec, base)
        if registry.spec not in seen:
            seen.add(registry.spec)
            registries.append(registry)
    return registries


# --------------------------------------------------------------------------- downloads


class _NoRanges(Exception):
    """The server answered a Range request with the whole file."""


def downloads_dir() -> Path:
    return tagcli_home() / "downloads"


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "local"


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError:  # pragma: no cover - a dependency
        raise PackError("fsspec is not installed", hint="pip install 'fsspec[http]'") from None
    options: dict[str, Any] = {}
    if _protocol(url) in ("http", "https"):
        try:
            import aiohttp
        except ImportError:
            raise PackError(f"cannot read {url}: aiohttp is not installed", hint="pip install 'fsspec[http]'") from None
        # No overall limit (archives can be large), but never hang on a dead connection; honour HTTP(S)_PROXY.
        options["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120), "trust_env": True}
    try:
        return url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:
        raise PackError(f"cannot read {url}: {first_line(exc)}", hint="install the fsspec package for that protocol") from None


def read_url(url: str, where: str) -> bytes:
    """The whole content of a (small) file at a URL or path, e.g. an index."""
    fs, path = _filesystem(url)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise PackError(f"{where}: {url} not found", hint="check the registry address (an index.json, its folder, or hf://ORG/REPO)") from None
    except Exception as exc:
        raise PackError(f"{where}: cannot read {url}: {_describe(exc)}", hint="check the address and the network") from None


def download(url: str, size: int, sha256: str, label: str) -> Path:
    """Download to $TAGCLI_HOME/downloads/SHA256.tagpack.part, resuming a partial one; check size and sha256.

    Returns the verified file. A hash or size mismatch discards the file; an interrupted transfer keeps
    it, so the next call asks only for the rest.
    """
    part = downloads_dir() / f"{sha256}{ARCHIVE_SUFFIX}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    if have < size:
        try:
            _copy(url, part, have, size, label)
        except _NoRanges:
            part.unlink(missing_ok=True)
            _copy(url, part, 0, size, label)
    got = part.stat().st_size
    if got < size:
        raise PackError(f"download of {label} ended early at {got} of {size} bytes", hint="run the same command again to resume it")
    check_archive(part, size, sha256, label, discard=True)
    return part


def _copy(url: str, part: Path, offset: int, size: int, label: str) -> None:
    fs, path = _filesystem(url)
    http = _protocol(url) in ("http", "https")
    written = offset
    try:
        if not http:
            source = fs.open(path, "rb")
            source.seek(offset)
        elif offset == 0:
            source = fs.open(path, "rb", block_size=0, size=size)  # one streamed GET
        else:
            # Random access: each read is a Range request for the next bytes (reads never pass `size`, so
            # fsspec can tell a server that ignores Range, and answers with the whole file, from one that does).
            source = fs.open(path, "rb", block_size=CHUNK, size=size, cache_type="none")
            source.seek(offset)
    except FileNotFoundError:
        raise PackError(f"{label}: {url} not found", hint="the registry's index lists an archive its server does not have") from None
    except ValueError as exc:
        if offset:
            raise _NoRanges() from exc
        raise PackError(f"{label}: cannot download {url}: {_describe(exc)}") from None
    except Exception as exc:
        raise PackError(f"{label}: cannot download {url}: {_describe(exc)}", hint="check the address and the network") from None
    with source, open(part, "ab") as out:
        first = True
        while True:
            try:
                chunk = source.read(max(1, min(CHUNK, size - written)) if http and offset else CHUNK)
            except ValueError as exc:
                if first and offset:
                    raise _NoRanges() from exc
                raise PackError(f"download of {label} stopped at {written} of {size} bytes ({_describe(exc)})", hint="run the same command again to resume it") from None
            except Exception as exc:
                raise PackError(f"download of {label} stopped at {written} of {size} bytes ({_describe(exc)})", hint="run the same command again to resume it") from None
            first = False
            if not chunk:
                return
            out.write(chunk)
            out.flush()
            written += len(chunk)
            if written > size:
                return  # more than the index says: the size/hash check below refuses it


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_archive(path: Path, size: int, sha256: str, label: str, discard: bool) -> None:
    got_size, got = path.stat().st_size, sha256_file(path)
    if got_size == size and got == sha256:
        return
    if discard:
        path.unlink(missing_ok=True)
    what = f"size {got_size} instead of {size} bytes" if got_size != size else f"sha256 {got[:12]}… instead of {sha256[:12]}…"
    raise PackError(
        f"archive of {label} failed its integrity check ({what}); {'discarded, ' if discard else ''}nothing was installed",
        hint="the archive differs from the one its index entry describes; re-export the registry or ask its owner",
    )


# --------------------------------------------------------------------------- resolving and pulling


def find_remote(name: str, version: str | None, registries: Sequence[Registry], offline: bool = False) -> IndexEntry:
    """The entry for NAME (newest version in the first registry that has it) or NAME@VERSION."""
    errors: list[PackError] = []
    other_versions: list[str] = []
    for registry in registries:
        try:
            entries = registry.entries(offline)
        except PackError as exc:
            errors.append(exc)
            continue
        matching = [e for e in entries if e.name == name]
        if not matching:
            continue
        if version is None:
            return max(matching, key=lambda e: version_key(e.version))
        for entry in matching:
            if entry.version == version:
                return entry
        other_versions += [f"{e.version} in {registry.spec}" for e in matching]
    if other_versions:
        raise PackError(f"no version {version} of pack '{name}' in any registry (there: {', '.join(other_versions)})", hint=f"`tagcli pack pull {name}` takes the newest")
    if errors:
        raise PackError(f"pack '{name}' not found: {errors[0].message}", hint=errors[0].hint)
    if not registries:
        raise PackError(
            f"tag pack '{name}' is not installed and no registry is configured",
            hint=f"pass --registry (hf://ORG/REPO, https://…/index.json or a folder), set {ENV_REGISTRY}, or list registries in {config_path()}",
        )
    raise PackError(f"no pack named '{name}' in {', '.join(r.spec for r in registries)}", hint="`tagcli pack list --available` shows what they offer")


@dataclass
class PullItem:
    entry: IndexEntry
    wanted_by: str | None = None  # the function pack that needs this domain pack; None if asked for


def plan_pull(refs: Sequence[str], registries: Sequence[Registry], store: PackStore, offline: bool = False) -> list[PullItem]:
    """The entries to install for `refs`, plus the domain packs they need that are not already here."""
    plan: dict[str, PullItem] = {}
    queue: list[tuple[str, str | None, str | None]] = [(*split_ref(ref), None) for ref in refs]
    while queue:
        name, version, wanted_by = queue.pop(0)
        if name in plan:
            planned = plan[name].entry
            if version and planned.version != version:
                raise PackError(f"pack '{name}' is wanted at versions {planned.version} and {version} at once", hint="pull them one at a time")
            continue
        entry = find_remote(name, version, registries, offline)
        plan[name] = PullItem(entry, wanted_by)
        for domain, pin in entry.requires.items():
            if domain not in plan and not requirement_met(domain, pin, store, beside=packs_dir() / entry.name):
                queue.append((domain, pin.get("version") or None, entry.name))
    return list(plan.values())


def requirement_met(domain: str, pin: dict[str, str], store: PackStore, beside: Path) -> bool:
    """Whether the domain pack the scorer would use for a function at `beside` is the pinned one."""
    sibling = beside.parent / domain
    try:
        path = sibling if (sibling / MANIFEST).is_file() else store.find(domain)
        return load_pack(path).tag_digest() == pin.get("sha256")
    except (PackError, KeyError):  # missing, broken, or a pack without a tag of that name
        return False


def install(items: Sequence[PullItem], offline: bool = False, force: bool = False) -> list[dict[str, Any]]:
    """Download, verify and install `items` all together (see the module docstring); one record per item."""
    root = packs_dir()
    root.mkdir(parents=True, exist_ok=True)
    _clean_stale(root)
    results: list[dict[str, Any]] = []
    todo = []
    for item in items:
        if not force and _same_install(root / item.entry.name, item.entry):
            results.append(_result(item, root / item.entry.name, "already installed"))
        else:
            todo.append(item)
    if not todo:
        return results
    staging = Path(tempfile.mkdtemp(prefix=f".incoming-{os.getpid()}-", dir=root))
    downloaded: list[Path] = []
    try:
        staged = []
        for item in todo:
            entry = item.entry
            assert entry.registry is not None
            archive = entry.registry.fetch(entry, offline)
            if archive.parent == downloads_dir():
                downloaded.append(archive)
            target = staging / entry.name
            target.mkdir()
            extract_archive(archive, target)
            pack = load_pack(target)
            _check_matches(pack, entry)
            _write_record(target, entry, item)
            make_readable(target)
            staged.append((item, target, pack))
        digests = {item.entry.name: pack.tag_digest() for item, _, pack in staged if pack.name in pack.tags}
        for item, _, pack in staged:
            for domain, pin in pack.manifest.requires.items():
                if domain in digests and digests[domain] != pin.get("sha256"):
                    raise PackError(
                        f"{item.entry.name} {item.entry.version} was trained with another '{domain}' tag than the {domain} "
                        f"{staged_version(staged, domain)} in {item.entry.source}; nothing was installed",
                        hint=f"the registry should offer {domain} {pin.get('version')}",
                    )
        for item, target, _ in staged:
            results.append(_result(item, _move_into_place(target, root / item.entry.name), "installed"))
    finally:
        # Verified downloads are not kept (installed, or refused); only an interrupted one stays, to resume.
        shutil.rmtree(staging, ignore_errors=True)
        for path in downloaded:
            path.unlink(missing_ok=True)
    return results


def staged_version(staged: list, name: str) -> str:
    return next((item.entry.version for item, _, _ in staged if item.entry.name == name), "?")


def pull(
    refs: Sequence[str], registries: Sequence[Registry], *, pack_dirs: Sequence[str] = (), offline: bool = False, force: bool = False
) -> list[dict[str, Any]]:
    """`tagcli pack pull`: install the registry copies of `refs` (and missing domain packs) under $TAGCLI_HOME."""
    if not refs:
        raise UsageError("name at least one pack to pull")
    return install(plan_pull(refs, registries, PackStore(pack_dirs), offline), offline=offline, force=force)


def _check_matches(pack: TagPack, entry: IndexEntry) -> None:
    m, where = pack.manifest, f"archive of {entry.name} {entry.version} from {entry.source}"
    if (m.name, m.version) != (entry.name, entry.version):
        raise PackError(f"{where} holds pack '{m.name}' {m.version}, not what its index entry says; refusing it")
    if m.base_model.get("fingerprint") != entry.base_model.get("fingerprint"):
        raise PackError(f"{where} records another base model fingerprint than its index entry; refusing it")


def _write_record(target: Path, entry: IndexEntry, item: PullItem) -> None:
    files = {p.name: sha256_file(p) for p in sorted(target.iterdir()) if p.is_file()}
    record = {
        "name": entry.name,
        "version": entry.version,
        "registry": entry.source,
        "url": entry.url,
        "archive_sha256": entry.sha256,
        "archive_size": entry.size,
        "files": files,
        "wanted_by": item.wanted_by,
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tagcli_version": __version__,
    }
    (target / INSTALL_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_record(pack_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((pack_dir / INSTALL_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _same_install(path: Path, entry: IndexEntry) -> bool:
    record = read_record(path) if is_pulled(path) else None
    return bool(record) and record.get("archive_sha256") == entry.sha256 and not _file_problems(path, record)


def _move_into_place(staged: Path, dest: Path) -> Path:
    """Rename the staged pack to its place; a pack already there is swapped out, then deleted."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.parent / f".old-{os.getpid()}-{dest.name}-{os.urandom(4).hex()}"
        os.replace(dest, old)
    try:
        os.replace(staged, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        _remove(old)
    return dest


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _clean_stale(root: Path) -> None:
    """Remove staging/old folders left by pulls that were killed (their process is gone)."""
    for entry in root.glob(".*-*-*"):
        match = re.match(r"\.(incoming|old|removing)-(\d+)-", entry.name)
        if match and not _pid_alive(int(match.group(2))):
            _remove(entry)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _result(item: PullItem, path: Path, status: str) -> dict[str, Any]:
    e = item.entry
    return {
        "name": e.name, "version": e.version, "kind": e.kind, "status": status, "registry": e.source,
        "sha256": e.sha256, "size": e.size, "wanted_by": item.wanted_by, "path": str(path),
    }


# --------------------------------------------------------------------------- predict: pull what is missing


def ensure_packs(
    functions: Sequence[str],
    domains: Sequence[str] | None,
    *,
    registries: Sequence[str] = (),
    pack_dirs: Sequence[str] = (),
    offline: bool = False,
    base_model: str | None = None,
    on_pull: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[str], list[str] | None]:
    """Make the packs a `predict` names available, pulling missing ones unless `offline`.

    Returns the function and domain references to hand to the scorer (a function's NAME@VERSION
    becomes the resolved path; a domain's becomes its NAME). `registries` are --registry values; they
    and the configured ones are read only when something is missing. A local function pack whose domain
    packs are nowhere to be found gets the pinned versions pulled. Pulled packs must fit the base
    model the run will use (`base_model`, else the first function's own, as the scorer does): one
    that does not is refused before anything is installed.
    """
    store = PackStore(pack_dirs)
    wanted: list[str] = []
    local: dict[str, Path] = {}
    for ref in functions:
        path = _find_local(store, ref)
        if path is None:
            wanted.append(ref)
            continue
        local[ref] = path
        if not domains:
            for domain, pin in (_peek_manifest(path).get("requires") or {}).items():
                if not (path.parent / domain / MANIFEST).is_file() and _find_local(store, domain) is None:
                    wanted.append(f"{domain}@{pin['version']}" if isinstance(pin, dict) and pin.get("version") else domain)
    for ref in domains or ():
        if _find_local(store, ref) is None:
            wanted.append(ref)
    out_domains = [ref if Path(ref).expanduser().exists() else split_ref(ref)[0] for ref in domains] if domains else None
    installed: dict[str, str] = {}
    if wanted:
        if offline:
            raise PackError(f"tag pack '{wanted[0]}' is not installed, and --offline forbids pulling it", hint=f"run `tagcli pack pull {wanted[0]}` first, or drop --offline")
        plan = plan_pull(wanted, configured_registries(registries), store)
        by_name = {item.entry.name: item.entry for item in plan}
        spec = base_model
        if spec is None and functions:  # the scorer runs on the first function's own base model
            first = functions[0]
            spec = (_peek_manifest(local[first]).get("base_model") or {}).get("id") if first in local else by_name[split_ref(first)[0]].base_model.get("id")
        if spec:
            model_id, fingerprint = model_fingerprint(spec)
            for item in plan:
                expected = item.entry.base_model
                if expected.get("fingerprint") != fingerprint:
                    raise PackError(
                        f"pack '{item.entry.name}' {item.entry.version} in {item.entry.source} was trained for base model "
                        f"{expected.get('id')} ({short_fingerprint(expected.get('fingerprint', ''))}), not {model_id} ({short_fingerprint(fingerprint)}); not pulled",
                        hint=f"pass --base-model {expected.get('id')}",
                    )
        for result in install(plan):
            installed[result["name"]] = result["path"]
            if on_pull and result["status"] == "installed":
                on_pull(result)
    out_functions = []
    for ref in functions:
        if "@" not in ref or Path(ref).expanduser().exists():
            out_functions.append(ref)
        else:
            out_functions.append(str(local[ref]) if ref in local else installed[split_ref(ref)[0]])
    return out_functions, out_domains


def _find_local(store: PackStore, ref: str) -> Path | None:
    """The local pack `ref` names, or None when a NAME[@VERSION] is not here; other failures raise."""
    try:
        return store.find(ref)
    except PackError:
        if not NAME_RE.match(ref.partition("@")[0]) or Path(ref).expanduser().exists():
            raise
        split_ref(ref)  # a malformed NAME@VERSION is an error, not something to pull
        return None


def _peek_manifest(path: Path) -> dict[str, Any]:
    if path.is_file():
        return vars(load_pack(path).manifest)
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def model_fingerprint(spec: str) -> tuple[str, str]:
    """(id, fingerprint) of a base model spec, as the scorer will see it (fingerprints are cached)."""
    from tagcli.basemodel.resolve import fingerprint_model_dir, resolve_model_dir

    model_id, path = resolve_model_dir(spec)
    return model_id, fingerprint_model_dir(path)


# --------------------------------------------------------------------------- list, info, verify, rm, export


def headline_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The test split's headline metrics if the pack has them, else validation's."""
    split = "test" if metrics.get("test") else "val"
    chosen = metrics.get(split) or {}
    return {"split": split} | {k: round(chosen[k], 4) for k in HEADLINE if isinstance(chosen.get(k), float)}


def pack_summary(pack: TagPack) -> dict[str, Any]:
    m = pack.manifest
    return {
        "name": m.name,
        "kind": m.kind,
        "version": m.version,
        "domains": m.domains or [m.name],
        "outputs": pack.head.output_columns() if pack.head else [],
        "base_model": m.base_model.get("id"),
        "fingerprint": m.base_model.get("fingerprint"),
        "method": m.method,
        "metrics": headline_metrics(m.metrics),
        "path": str(pack.path),
    }


def _entry_row(entry: IndexEntry) -> dict[str, Any]:
    return {
        "name": entry.name, "kind": entry.kind, "version": entry.version, "domains": entry.domains or [entry.name],
        "outputs": entry.outputs, "base_model": entry.base_model.get("id"), "fingerprint": entry.base_model.get("fingerprint"),
        "method": entry.method, "metrics": headline_metrics(entry.metrics), "size": entry.size, "status": "available",
        "source": entry.source, "sha256": entry.sha256, "url": entry.url,
    }


def _dir_size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.name != INSTALL_RECORD)


def reference_fingerprint(base_model: str | None) -> tuple[str, str | None]:
    """(label, fingerprint or None) of the model packs are checked against in listings; cheap where possible."""
    from tagcli.basemodel.resolve import DEFAULT_BASE_MODEL

    spec = base_model or DEFAULT_BASE_MODEL
    if spec.startswith("sha256:"):
        return spec, spec
    if Path(spec).expanduser().is_dir():
        return model_fingerprint(str(Path(spec).expanduser()))
    known = set()
    for directory in (builtin_packs_dir(), packs_dir()):
        for manifest in directory.glob(f"*/{MANIFEST}") if directory.is_dir() else []:
            base = _peek_manifest(manifest.parent).get("base_model") or {}
            if base.get("id") == spec and isinstance(base.get("fingerprint"), str):
                known.add(base["fingerprint"])
    return spec, (known.pop() if len(known) == 1 else None)


def list_packs(
    registries: Sequence[Registry] = (),
    *,
    pack_dirs: Sequence[str] = (),
    available: bool = False,
    base_model: str | None = None,
    offline: bool = False,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Installed packs (and with `available`, those the registries offer): rows, plus warnings about registries."""
    store = PackStore(pack_dirs)
    rows: list[dict[str, Any]] = []
    installed_sha: dict[tuple[str, str], dict[str, Any]] = {}
    for name, pack in store.installed().items():
        if isinstance(pack, PackError):
            rows.append({"name": name, "kind": "broken", "status": "broken", "error": str(pack)})
            continue
        assert pack.path is not None
        record = read_record(pack.path) if pack.path.is_dir() else None
        row = pack_summary(pack) | {"size": _dir_size(pack.path), "status": store.origin(pack.path)}
        row["source"] = record.get("registry") if record else str(pack.path.parent)
        if record:
            row["sha256"] = record.get("archive_sha256")
            installed_sha[(name, row["version"])] = row
        rows.append(row)
    warnings: list[str] = []
    if available and not registries:
        warnings.append(f"no pack registry is configured (--registry, {ENV_REGISTRY}, or `registries` in {config_path()})")
    if available:
        for registry in registries:
            try:
                entries = registry.entries(offline)
            except PackError as exc:
                warnings.append(str(exc))
                continue
            for entry in entries:
                same = installed_sha.get((entry.name, entry.version))
                if same is not None and same.get("sha256") == entry.sha256:
                    continue  # that exact archive is what is installed
                rows.append(_entry_row(entry))
    label, fingerprint = reference_fingerprint(base_model)
    for row in rows:
        if "fingerprint" in row:
            row["compatible"] = row["fingerprint"] == fingerprint if fingerprint else row.get("base_model") == label
    if base_model:
        rows = [row for row in rows if row.get("compatible")]
    return rows, warnings


def pack_info(ref: str, registries: Sequence[Registry] = (), *, pack_dirs: Sequence[str] = (), offline: bool = False) -> dict[str, Any]:
    """One pack's manifest (installed), or its index entry (in a registry)."""
    store = PackStore(pack_dirs)
    try:
        pack = store.load(ref)
    except PackError as local_error:
        if Path(ref).expanduser().exists() or not registries:
            raise
        try:
            name, version = split_ref(ref)
        except PackError:
            raise local_error from None
        entry = find_remote(name, version, registries, offline)
        return entry.to_dict() | {"status": "available", "registry": entry.source}
    assert pack.path is not None
    info = vars(pack.manifest) | {"path": str(pack.path), "tag_sha256": pack.tag_digest() if pack.name in pack.tags else None, "status": store.origin(pack.path)}
    record = read_record(pack.path) if pack.path.is_dir() else None
    if record:
        info["installed_from"] = {k: record.get(k) for k in ("registry", "url", "archive_sha256", "installed_at", "wanted_by")}
    return info


def _file_problems(path: Path, record: dict[str, Any]) -> list[str]:
    files = record.get("files")
    if not isinstance(files, dict) or not files:
        return ["the install record lists no files"]
    problems = []
    for name, digest in sorted(files.items()):
        file = path / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(file) != digest:
            problems.append(f"{name} was changed")
    for extra in sorted(p.name for p in path.iterdir() if p.name not in files and p.name != INSTALL_RECORD):
        problems.append(f"{extra} is not part of the pack")
    return problems


def verify(name: str | None = None, *, pack_dirs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Re-hash installed packs against their install records (built-in and hand-placed packs: load them)."""
    store = PackStore(pack_dirs)
    if name is not None:
        found = store.find(name)
        paths = {found.name.removesuffix(ARCHIVE_SUFFIX): found}
    else:
        paths = {}
        root = packs_dir()
        for candidate in sorted(root.iterdir()) if root.is_dir() else []:
            if NAME_RE.match(candidate.name) and (candidate / MANIFEST).is_file():
                paths[candidate.name] = candidate
    rows = []
    for pack_name, path in paths.items():
        record = read_record(path) if path.is_dir() and is_pulled(path) else None
        row: dict[str, Any] = {"name": pack_name, "version": None, "status": "ok", "problems": [], "path": str(path), "origin": store.origin(path)}
        if record:
            row["version"] = record.get("version")
            row["problems"] = _file_problems(path, record)
        try:
            pack = load_pack(path)
            row["version"] = row["version"] or pack.manifest.version
        except PackError as exc:
            row["problems"].append(exc.message)
        if row["problems"]:
            row["status"] = "failed"
        elif not record:
            row["status"] = "ok (loads; no install record to compare)"
        rows.append(row)
    return rows


def remove(name: str) -> dict[str, Any]:
    """`tagcli pack rm NAME`: delete an installed pack (never a built-in); reports packs that need it."""
    pack_name, _ = split_ref(name)
    path = packs_dir() / pack_name
    if not (path / MANIFEST).is_file():
        if (builtin_packs_dir() / pack_name / MANIFEST).is_file():
            raise PackError(f"'{pack_name}' is a built-in pack, not an installed one; there is nothing to remove", hint="built-in packs ship with tagcli")
        raise PackError(f"no installed pack named '{pack_name}' in {packs_dir()}", hint="`tagcli pack list` shows installed packs")
    version = _peek_manifest(path).get("version")
    needed_by = sorted(
        other.name for other in packs_dir().iterdir()
        if other.name != pack_name and pack_name in (_peek_manifest(other).get("requires") or {})
    )
    trash = path.parent / f".removing-{os.getpid()}-{os.urandom(4).hex()}"
    os.replace(path, trash)  # gone from the store at once, even if deleting the files is interrupted
    _remove(trash)
    builtin = (builtin_packs_dir() / pack_name / MANIFEST).is_file()
    return {"name": pack_name, "version": version, "path": str(path), "needed_by": needed_by, "builtin_now_used": builtin}


def export(ref: str, to_dir: str | Path, *, pack_dirs: Sequence[str] = ()) -> dict[str, Any]:
    """Write a pack's `.tagpack` into `to_dir` and add (or replace) its entry in `to_dir/index.json`."""
    store = PackStore(pack_dirs)
    pack = store.load(ref)
    assert pack.path is not None
    to_dir = Path(to_dir).expanduser()
    to_dir.mkdir(parents=True, exist_ok=True)
    index_path = to_dir / INDEX_FILE
    entries = parse_index(index_path.read_bytes(), f"index {index_path}") if index_path.is_file() else []
    m = pack.manifest
    filename = f"{m.name}-{m.version}{ARCHIVE_SUFFIX}"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", dir=to_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if pack.path.is_file():
            shutil.copyfile(pack.path, tmp)
        else:
            write_archive(pack.path, tmp)
        tmp.chmod(0o644)
        entry = IndexEntry.from_pack(pack, tmp, filename)
        os.replace(tmp, to_dir / filename)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    entries = [e for e in entries if (e.name, e.version) != (m.name, m.version)] + [entry]
    write_json_atomic(index_path, index_document(entries))
    return entry.to_dict() | {"archive": str(to_dir / filename), "index": str(index_path)}




# --------------------------------------------------------------------------- small helpers






def _describe(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__




__all__ = [
    "FolderRegistry", "HubRegistry", "IndexEntry", "Registry", "UrlRegistry", "configured_registries",
    "download", "ensure_packs", "export", "find_remote", "install", "list_packs", "pack_info", "parse_registry", "plan_pull",
    "pull", "remove", "verify",
]
