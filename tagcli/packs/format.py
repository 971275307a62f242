"""The tag-pack format: one directory (or one `.tagpack` tar file for transport).

    NAME/
      manifest.json       what the pack is (schema: `Manifest`)
      tags.safetensors    one float tensor [tag_length, hidden_size] per tag name
      heads.safetensors   function packs only: "<function>.<param>" tensors of its head

A *domain* pack holds one domain tag (e.g. `smiles`) and says how its inputs are cleaned.
A *function* pack holds one function tag and its head, the prompt template, and the domain
tags it was trained with, by name and sha256 (`requires`), so the loader can find them in any
order of installation. Packs record the base model's fingerprint and refuse any other model.
Everything is JSON or safetensors: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tagcli import __version__
from tagcli.core.domains import INPUT_KINDS, DomainInput
from tagcli.core.heads import Head, head_from_spec
from tagcli.core.prompt import NAME_RE, PromptTemplate
from tagcli.errors import PackError, first_line
from tagcli.home import make_readable
from tagcli.packs.integrity import check_installed

FORMAT = "tagcli.pack"
FORMAT_VERSION = 1
MANIFEST, TAGS_FILE, HEADS_FILE = "manifest.json", "tags.safetensors", "heads.safetensors"
PACK_FILES = (MANIFEST, TAGS_FILE, HEADS_FILE)
ARCHIVE_SUFFIX = ".tagpack"


@dataclass
class Manifest:
    name: str
    kind: Literal["domain", "function"]
    version: str
    tag_length: int
    hidden_size: int
    base_model: dict[str, str]  # {"id": ..., "fingerprint": "sha256:..."}
    description: str = ""
    domains: list[str] = field(default_factory=list)  # function: domains trained with, in template order
    input: dict[str, Any] | None = None  # domain: DomainInput fields
    template: str | None = None  # function: prompt template
    head: dict[str, Any] | None = None  # function: head spec (heads.py)
    requires: dict[str, dict[str, str]] = field(default_factory=dict)  # function: domain → {version, sha256}
    method: str = "tag-llm"  # function: tag-llm, or the prompt-tuning / linear-probe baselines
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    tagcli_version: str = __version__

    @property
    def tags(self) -> list[str]:
        return [self.name] if self.tag_length > 0 else []  # a linear probe has no tag of its own

    def domain_input(self) -> DomainInput:
        assert self.input is not None
        return DomainInput(**self.input)

    def prompt_template(self) -> PromptTemplate:
        assert self.template is not None
        return PromptTemplate(self.template)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Manifest:
        if not isinstance(data, dict):
            raise PackError(f"{where}: manifest must be a JSON object")
        if data.get("format") != FORMAT:
            raise PackError(f"{where}: not a tagcli pack manifest (format is {data.get('format')!r})")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise PackError(f"{where}: manifest lacks an integer format_version")
        if version > FORMAT_VERSION:
            raise PackError(
                f"{where}: pack format {version!r} is newer than this tagcli reads ({FORMAT_VERSION})",
                hint="upgrade tagcli",
            )
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("name", "kind", "version", "tag_length", "hidden_size", "base_model") if k not in data]
        if missing:
            raise PackError(f"{where}: manifest lacks {', '.join(missing)}")
        try:
            manifest = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise PackError(f"{where}: bad manifest: {exc}") from None
        manifest.validate(where)
        return manifest

    def validate(self, where: str) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise PackError(f"{where}: {what}")

        need(
            isinstance(self.name, str) and bool(NAME_RE.match(self.name)),
            f"bad pack name {self.name!r} (lowercase letters, digits, - and _)",
        )
        need(self.kind in ("domain", "function"), f"kind must be 'domain' or 'function', not {self.kind!r}")
        need(isinstance(self.method, str) and bool(NAME_RE.match(self.method)), f"bad method name {self.method!r}")
        need(
            isinstance(self.tag_length, int) and self.tag_length >= (1 if self.kind == "domain" else 0),
            "tag_length must be a positive integer",
        )
        need(isinstance(self.hidden_size, int) and self.hidden_size > 0, "hidden_size must be a positive integer")
        need(
            isinstance(self.base_model, dict) and str(self.base_model.get("fingerprint", "")).startswith("sha256:"),
            "base_model needs an id and a sha256: fingerprint",
        )
        if self.kind == "domain":
            need(
                isinstance(self.input, dict) and self.input.get("kind") in INPUT_KINDS,
                f"domain pack needs input.kind, one of {', '.join(INPUT_KINDS)}",
            )
            try:
                self.domain_input()
            except TypeError as exc:
                raise PackError(f"{where}: bad input spec: {exc}") from None
            return
        need(isinstance(self.template, str), "function pack needs a prompt template")
        check_template(self.prompt_template(), self.name, self.domains, has_tag=self.tag_length > 0)
        need(isinstance(self.head, dict), "function pack needs a head spec")
        need(
            isinstance(self.requires, dict)
            and all(isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in self.requires.values()),
            "requires must map domain names to {version, sha256}",
        )


def check_template(template: PromptTemplate, name: str, domains: list[str], has_tag: bool) -> None:
    """What any function pack's template must satisfy, whatever method trained it: its inputs are its
    domains, its tags are those domains' tags or its own, and it uses its own tag iff it has one.
    (How a method lays the tags out is checked when it trains: `tagcli.train.methods`.)"""
    template.validate()
    problem = None
    if sorted(set(template.inputs)) != sorted(set(domains)):
        problem = f"its inputs {template.inputs} differ from the domains {domains}"
    elif not set(template.tags) <= set(domains) | {name}:
        problem = f"it uses tags that are neither its domains' nor its own {{tag:{name}}}"
    elif has_tag != (name in template.tags):
        vectors, usage = ("has", "lacks") if has_tag else ("has no", "uses")
        problem = f"the pack {vectors} tag vectors but its template {usage} {{tag:{name}}}"
    if problem:
        raise PackError(f"prompt template {template.text!r} does not fit: {problem}")


@dataclass
class TagPack:
    manifest: Manifest
    tags: dict[str, torch.Tensor]  # name → [tag_length, hidden_size] float32
    head: Head | None = None
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    def tag_digest(self) -> str:
        return tag_digest(self.tags[self.name])

    def check_base_model(self, model_id: str, fingerprint: str) -> None:
        """Refuse to run on a base model other than the one the pack was trained for."""
        expected = self.manifest.base_model
        if expected["fingerprint"] != fingerprint:
            raise PackError(
                f"pack '{self.name}' was trained for base model {expected.get('id')} "
                f"({short_fingerprint(expected['fingerprint'])}), "
                f"not {model_id} ({short_fingerprint(fingerprint)})",
                hint=f"pass --base-model {expected.get('id')}",
            )


def tag_digest(vectors: torch.Tensor) -> str:
    """sha256 of a tag's float32 values: how function packs pin the domain tags they were trained with."""
    return "sha256:" + hashlib.sha256(vectors.detach().float().contiguous().cpu().numpy().tobytes()).hexdigest()


def load_pack(path: str | Path, *, check_install: bool = True) -> TagPack:
    """Load and validate a pack directory or `.tagpack` archive; any defect is one PackError line.

    A pulled pack (one with an install record) must first still match that record: a file changed,
    missing or added since the pull refuses it (`integrity.check_installed`; `pack verify`, which
    reports those problems itself, passes `check_install=False`).
    """
    path = Path(path)
    if check_install:
        check_installed(path)
    if path.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            extract_archive(path, Path(tmp))
            pack = load_pack(Path(tmp))
            pack.path = path
            return pack
    where = f"pack {path}"
    manifest = Manifest.from_dict(read_manifest_data(path), where)
    tags = _load_tensors(path / TAGS_FILE, where)
    if sorted(tags) != manifest.tags:
        raise PackError(f"{where}: {TAGS_FILE} holds {sorted(tags)}, manifest says {manifest.tags}")
    for name, vectors in tags.items():
        _check_tag(name, vectors, manifest, where)
    head = _load_head(path, manifest, where) if manifest.kind == "function" else None
    return TagPack(manifest, {k: v.float() for k, v in tags.items()}, head, path)


def read_manifest_data(path: str | Path, *, strict: bool = True) -> dict[str, Any]:
    """The raw JSON object of a pack's manifest (pack directory or `.tagpack` archive), not validated.

    The one place a manifest file is read: `load_pack` validates what it returns, and lookups that only
    peek at a version, base model or `requires` pass `strict=False`. A missing, unreadable or non-object
    manifest is a one-line PackError, or with `strict=False` an empty dict.
    """
    path = Path(path)
    where, file = f"pack {path}", path / MANIFEST
    try:
        if path.is_file():
            with tempfile.TemporaryDirectory() as tmp:
                extract_archive(path, Path(tmp))
                return read_manifest_data(tmp)
        if not file.is_file():
            raise PackError(f"{where}: no {MANIFEST} (is this a tag pack?)")
        try:
            data = json.loads(file.read_bytes().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PackError(f"{where}: {MANIFEST} is not valid JSON: {exc}") from None
        except OSError as exc:
            raise PackError(f"{where}: cannot read {MANIFEST}: {first_line(exc)}") from None
        if not isinstance(data, dict):
            raise PackError(f"{where}: manifest must be a JSON object")
        return data
    except PackError:
        if strict:
            raise
        return {}


def save_pack(pack: TagPack, path: str | Path) -> Path:
    """Write a pack directory atomically (temp dir + rename), replacing any pack already there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if pack.head is not None:
        pack.manifest.head = pack.head.to_spec()
    pack.manifest.validate(f"pack {path}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file({k: v.detach().float().contiguous().cpu() for k, v in pack.tags.items()}, tmp / TAGS_FILE)
        if pack.head is not None:
            head_state = pack.head.state_dict().items()
            state = {f"{pack.name}.{k}": v.detach().float().contiguous().cpu() for k, v in head_state}
            save_file(state, tmp / HEADS_FILE)
        (tmp / MANIFEST).write_text(pack.manifest.to_json(), encoding="utf-8")
        make_readable(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pack.path = path
    return path


def record_metrics(pack: TagPack, split: str, metrics: dict[str, Any]) -> Path:
    """Store `metrics` as the pack's `split` metrics (e.g. "test", shown by `tagcli pack list`)."""
    if pack.path is None or not pack.path.is_dir():
        raise PackError(f"cannot record metrics in pack '{pack.name}': it is not a pack directory")
    pack.manifest.metrics = {**pack.manifest.metrics, split: metrics}
    return save_pack(pack, pack.path)


def write_archive(pack_dir: str | Path, archive: str | Path) -> Path:
    """Pack a pack directory into one uncompressed tar (safetensors do not compress)."""
    pack_dir, archive = Path(pack_dir), Path(archive)
    with tarfile.open(archive, "w") as tar:
        for name in PACK_FILES:
            if (pack_dir / name).is_file():
                tar.add(pack_dir / name, arcname=name)
    return archive


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a `.tagpack`, refusing links, directories, paths and unexpected members."""
    try:
        with tarfile.open(archive, "r") as tar:
            members = tar.getmembers()
            for member in members:
                if member.name not in PACK_FILES or not member.isfile():
                    raise PackError(f"pack archive {archive}: unexpected member {member.name!r}; refusing to extract")
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as exc:
        reason = (str(exc).strip().splitlines() or ["unknown error"])[0]
        raise PackError(f"pack archive {archive} is not a readable tar file ({reason})") from None


def _load_tensors(path: Path, where: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PackError(f"{where}: missing {path.name}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise PackError(f"{where}: {path.name} is not a readable safetensors file: {first_line(exc)}") from None


def _check_tag(name: str, vectors: torch.Tensor, manifest: Manifest, where: str) -> None:
    expected = (manifest.tag_length, manifest.hidden_size)
    if tuple(vectors.shape) != expected:
        raise PackError(f"{where}: tag '{name}' has shape {tuple(vectors.shape)}, manifest says {expected}")
    if not vectors.is_floating_point():
        raise PackError(f"{where}: tag '{name}' has dtype {vectors.dtype}, expected a float type")
    if not torch.isfinite(vectors).all():
        raise PackError(f"{where}: tag '{name}' contains NaN or infinite values")


def _load_head(path: Path, manifest: Manifest, where: str) -> Head:
    assert manifest.head is not None
    head = head_from_spec(manifest.head, manifest.hidden_size)
    tensors = _load_tensors(path / HEADS_FILE, where)
    prefix = f"{manifest.name}."
    state = {k[len(prefix) :]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
    expected = head.state_dict()
    if sorted(state) != sorted(expected):
        wanted = sorted(prefix + k for k in expected)
        raise PackError(f"{where}: {HEADS_FILE} holds {sorted(tensors)}, expected {wanted}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise PackError(
                f"{where}: head tensor '{key}' has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
            )
        if not torch.isfinite(value).all():
            raise PackError(f"{where}: head tensor '{key}' contains NaN or infinite values")
    head.load_state_dict(state)
    problem = head.check_state()
    if problem:
        raise PackError(f"{where}: head of '{manifest.name}' refused: {problem}")
    return head.eval()


def short_fingerprint(fingerprint: str) -> str:
    return fingerprint[:19] + "…" if len(fingerprint) > 20 else fingerprint
