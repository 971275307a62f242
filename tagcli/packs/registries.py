"""Pack registries: where packs are pulled from (installing them is `tagcli.packs.install`).

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
the file). Local packs (see `tagcli.packs.store`) always come before any registry. Hub registries go
through huggingface_hub's own `hf_hub_download` (which resumes and caches by itself); the others
through `tagcli.packs.transport`.
"""

from __future__ import annotations

import inspect
import os
import posixpath
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import platformdirs

from tagcli.errors import PackError, UsageError
from tagcli.hub import hub_errors, hub_offline
from tagcli.packs.archive import ARCHIVE_SUFFIX
from tagcli.packs.format import load_pack
from tagcli.packs.index import INDEX_FILE, MAX_INDEX_BYTES, IndexEntry, parse_index
from tagcli.packs.transport import check_archive, download, read_url, url_protocol

ENV_REGISTRY = "TAGCLI_REGISTRY"
ENV_CONFIG = "TAGCLI_CONFIG"


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
        raise PackError(
            f"registry {self.spec}: {what} needs the network, and --offline is set",
            hint="drop --offline, or use an installed pack",
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class UrlRegistry(Registry):
    """An index.json at a URL (http, https, file, or any fsspec protocol) or a local path."""

    def __init__(self, spec: str, index_url: str) -> None:
        super().__init__(spec)
        self.index_url = index_url
        self.remote = url_protocol(index_url) not in ("file", "local")

    def _load_entries(self, offline: bool) -> list[IndexEntry]:
        if offline and self.remote:
            self._refuse_offline("reading its index")
        where = f"registry {self.spec}"
        return parse_index(read_url(self.index_url, where, MAX_INDEX_BYTES), where)

    def archive_url(self, entry: IndexEntry) -> str:
        """Where an entry's archive is: its own URL if absolute, else beside the index."""
        if "://" in entry.url:
            return entry.url
        if "://" in self.index_url:
            return urljoin(self.index_url, entry.url)
        return str(Path(self.index_url).parent / entry.url)

    def fetch(self, entry: IndexEntry, offline: bool = False) -> Path:
        url = self.archive_url(entry)
        if offline and url_protocol(url) not in ("file", "local"):
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
            raise PackError(
                f"registry {self.spec}: no such folder",
                hint="pass a folder written by `tagcli pack export`, or an index URL",
            )
        archives = sorted(self.folder.glob(f"*{ARCHIVE_SUFFIX}"))
        return [IndexEntry.from_pack(load_pack(archive), archive, archive.name) for archive in archives]


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
        where = f"registry {self.spec}"
        return parse_index(read_url(str(path), where, MAX_INDEX_BYTES), where)

    def fetch(self, entry: IndexEntry, offline: bool = False) -> Path:
        label = f"{entry.name} {entry.version} from {self.spec}"
        if "://" in entry.url:
            if offline:
                self._refuse_offline(f"downloading {entry.name} {entry.version}")
            return download(entry.url, entry.size, entry.sha256, label)
        filename = posixpath.normpath(entry.url.lstrip("/"))
        if filename.startswith(".."):
            raise PackError(
                f"registry {self.spec}: entry {entry.name} {entry.version} points outside the repo ({entry.url})"
            )
        path = self._download(filename, offline, self._commit or self.revision)
        check_archive(path, entry.size, entry.sha256, label, discard=False)
        return path

    def _download(self, filename: str, offline: bool, revision: str | None) -> Path:
        """`filename` from the repo (or the local HF cache); every hub failure is a one-line PackError."""
        from huggingface_hub import hf_hub_download

        offline = hub_offline(offline)
        options: dict[str, Any] = {}
        if "tqdm_class" in inspect.signature(hf_hub_download).parameters:  # newer huggingface_hub
            options["tqdm_class"] = _quiet_tqdm()
        subject = f"registry {self.spec}: {filename}"
        missing = "a pack registry repo holds index.json at its root"
        with hub_errors(PackError, subject, self.repo_id, revision, offline=offline, missing_hint=missing):
            return Path(
                hf_hub_download(
                    self.repo_id,
                    filename,
                    repo_type=self.repo_type,
                    revision=revision,
                    local_files_only=offline,
                    **options,
                )
            )


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
        rest, repo_type = text[len("hf://") :], "model"
        for prefix, kind in (("datasets/", "dataset"), ("models/", "model")):
            if rest.startswith(prefix):
                rest, repo_type = rest[len(prefix) :], kind
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
    """The TOML config file that may list `registries` ($TAGCLI_CONFIG, else the user config dir)."""
    env = os.environ.get(ENV_CONFIG)
    return Path(env).expanduser() if env else Path(platformdirs.user_config_dir("tagcli")) / "config.toml"


def configured_registries(cli: Sequence[str] = ()) -> list[Registry]:
    """--registry values, then TAGCLI_REGISTRY, then the config file's `registries`; first occurrence wins."""
    specs: list[tuple[str, Path | None]] = [(s, None) for s in cli]
    specs += [(s, None) for s in re.split(r"[\s,]+", os.environ.get(ENV_REGISTRY, "")) if s]
    path = config_path()
    if path.is_file():
        specs += [(s, path.parent) for s in _config_registries(path)]
    registries, seen = [], set()
    for spec, base in specs:
        registry = parse_registry(spec, base)
        if registry.spec not in seen:
            seen.add(registry.spec)
            registries.append(registry)
    return registries


def _config_registries(path: Path) -> list[str]:
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
        raise UsageError(
            f"config file {path}: 'registries' must be a list of strings",
            hint='registries = ["hf://org/packs", "https://host/packs/index.json"]',
        )
    return listed
