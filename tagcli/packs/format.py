"""The tag-pack format: one directory (or one `.tagpack` tar file for transport).

    NAME/
      manifest.json       what the pack is (schema: `Manifest`)
      tags.safetensors    one float tensor [tag_length, hidden_size] per tag name
      heads.safetensors   function packs only: "<function>.<param>" tensors of its head

A *domain* pack holds one domain tag (e.g. `smiles`) and says how its inputs are cleaned.
A *function* pack holds one function tag and its head, the prompt template, and the domain
tags it was trained with, by name and sha256 (`requires`), so the loader can find them in any
order of installation. Packs record the base model's fingerprint and refuse any other model.
Everything is JSON or safetensors: nothing is ever unpickled, and files other than these three
are never opened. Every size a pack's files could make the loader spend is capped before it is
spent (the `MAX_*` limits below): a manifest is read only if small, a safetensors header only if
its length is plausible, an archive member is extracted only if it is a small-enough plain file.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
import tempfile
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tagcli import __version__
from tagcli.basemodel.resolve import short_fingerprint
from tagcli.core.domains import INPUT_KINDS, DomainInput
from tagcli.core.heads import Head, head_from_spec
from tagcli.core.prompt import NAME_RE, PromptTemplate
from tagcli.errors import PackError, first_line
from tagcli.home import make_readable
from tagcli.packs.folder import HEADS_FILE, MANIFEST, PACK_FILES, TAGS_FILE, replace_folder
from tagcli.packs.integrity import check_installed
from tagcli.packs.reference import Reference, percentile_column

FORMAT = "tagcli.pack"
FORMAT_VERSION = 1
ARCHIVE_SUFFIX = ".tagpack"
VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}\Z")
MAX_NAME_LENGTH = 64

# Limits on what a pack may make tagcli read, allocate or write; real packs are far below them.
MIB = 1 << 20
MAX_MANIFEST_BYTES = MIB  # metadata only: a few KB
MAX_TENSOR_FILE_BYTES = 256 * MIB  # tags.safetensors, heads.safetensors (a tag is tag_length x hidden floats)
MAX_TENSOR_HEADER_BYTES = MIB  # the JSON header of a safetensors file: names, dtypes, shapes of a few tensors
MAX_FILE_BYTES = {MANIFEST: MAX_MANIFEST_BYTES, TAGS_FILE: MAX_TENSOR_FILE_BYTES, HEADS_FILE: MAX_TENSOR_FILE_BYTES}
MAX_ARCHIVE_BYTES = sum(MAX_FILE_BYTES.values()) + MIB  # the three files, tar headers and padding
MAX_JSON_DEPTH = 32  # of a manifest or index (a head spec nests 4 levels)
MAX_TAG_LENGTH = 1 << 16
MAX_HIDDEN_SIZE = 1 << 17
MAX_INPUT_TOKENS = 1 << 20


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
    symmetric: bool = False  # function: its two input slots of one domain may trade places (written only when true)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] | None = None  # function: its reference distribution (reference.py), when it has one
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

    def to_data(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.symmetric:  # manifests of packs without input slots stay as they were
            del data["symmetric"]
        if self.reference is None:
            del data["reference"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_data(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Manifest:
        """A validated manifest from its JSON object. Unknown top-level keys are ignored (a newer tagcli
        may add fields); known ones must have the right types and values."""
        if not isinstance(data, dict):
            raise PackError(f"{where}: manifest must be a JSON object")
        if data.get("format") != FORMAT:
            raise PackError(f"{where}: not a tagcli pack manifest (format is {brief(data.get('format'))})")
        version = data.get("format_version")
        if not is_int(version):
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

        need(is_name(self.name), f"bad pack name {brief(self.name)} (lowercase letters, digits, - and _)")
        need(self.kind in ("domain", "function"), f"kind must be 'domain' or 'function', not {brief(self.kind)}")
        need(
            isinstance(self.version, str) and bool(VERSION_RE.match(self.version)),
            f"bad version {brief(self.version)} (up to 64 letters, digits, '.', '+', '_' and '-')",
        )
        need(is_name(self.method), f"bad method name {brief(self.method)}")
        need(
            is_int(self.tag_length, 1 if self.kind == "domain" else 0, MAX_TAG_LENGTH),
            f"tag_length must be a positive integer up to {MAX_TAG_LENGTH}, not {brief(self.tag_length)}",
        )
        need(
            is_int(self.hidden_size, 1, MAX_HIDDEN_SIZE),
            f"hidden_size must be a positive integer up to {MAX_HIDDEN_SIZE}, not {brief(self.hidden_size)}",
        )
        need(
            isinstance(self.base_model, dict)
            and isinstance(self.base_model.get("id"), str)
            and isinstance(self.base_model.get("fingerprint"), str)
            and self.base_model["fingerprint"].startswith("sha256:"),
            "base_model needs an id and a sha256: fingerprint",
        )
        for key, kind in (("description", str), ("training", dict), ("metrics", dict)):
            need(isinstance(getattr(self, key), kind), f"{key} must be a {kind.__name__}")
        need(
            isinstance(self.symmetric, bool) and (self.kind == "function" or not self.symmetric),
            "symmetric must be true or false (and true only for a function)",
        )
        need(
            isinstance(self.domains, list) and all(is_name(d) for d in self.domains),
            "domains must be a list of pack names",
        )
        if self.kind == "domain":
            need(self.reference is None, "a domain pack has no reference distribution")
            spec = self.input
            need(
                isinstance(spec, dict) and spec.get("kind") in INPUT_KINDS,
                f"domain pack needs input.kind, one of {', '.join(INPUT_KINDS)}",
            )
            assert isinstance(spec, dict)
            need(
                is_int(spec.get("max_tokens"), 1, MAX_INPUT_TOKENS),
                f"input.max_tokens must be a positive integer up to {MAX_INPUT_TOKENS}",
            )
            need(isinstance(spec.get("canonicalize", False), bool), "input.canonicalize must be true or false")
            try:
                self.domain_input()
            except TypeError as exc:
                raise PackError(f"{where}: bad input spec: {exc}") from None
            return
        need(isinstance(self.template, str), "function pack needs a prompt template")
        check_template(self.prompt_template(), self.name, self.domains, has_tag=self.tag_length > 0)
        slots = self.prompt_template().slots
        need(
            not self.symmetric or (len(slots) == 2 and len(set(slots.values())) == 1),
            f"symmetric: true needs two input slots of one domain, and the template has {brief_names(slots)}",
        )
        need(isinstance(self.head, dict), "function pack needs a head spec")
        need(
            isinstance(self.requires, dict)
            and all(
                is_name(k) and isinstance(v, dict) and isinstance(v.get("sha256"), str)
                for k, v in self.requires.items()
            ),
            "requires must map domain names to {version, sha256}",
        )


def is_int(value: Any, low: int | None = None, high: int | None = None) -> bool:
    """An integer (JSON true/false are not) within [low, high]."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def is_name(value: Any) -> bool:
    """A pack (or method) name: lowercase letters, digits, - and _, at most MAX_NAME_LENGTH characters."""
    return isinstance(value, str) and len(value) <= MAX_NAME_LENGTH and bool(NAME_RE.match(value))


def brief(value: Any, width: int = 40) -> str:
    """repr(value) cut to `width` characters: messages quote untrusted values in one short line."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an integer too long to print, or a structure too deep
        text = f"<{type(value).__name__}>"
    return text if len(text) <= width else text[: width - 1] + "…"


def brief_names(names: Iterable[Any], shown: int = 6) -> str:
    """A sorted list of names for a message: the first few, and how many there are in all."""
    items = sorted(str(n) for n in names)
    if len(items) <= shown:
        return "[" + ", ".join(brief(n) for n in items) + "]"
    return "[" + ", ".join(brief(n) for n in items[:shown]) + f", … ({len(items)} in all)]"


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
    reference: Reference | None = None  # where its predictions fall among a reference set's (function packs)

    @property
    def name(self) -> str:
        return self.manifest.name

    def tag_digest(self) -> str:
        return tag_digest(self.tags[self.name])

    def output_columns(self) -> list[str]:
        """The columns the pack adds to a scored file: its head's, then the percentiles its reference gives."""
        columns = self.head.output_columns() if self.head is not None else []
        return columns + [percentile_column(c) for c in (self.reference.columns if self.reference else [])]

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
        raise PackError(f"{where}: {TAGS_FILE} holds {brief_names(tags)}, manifest says {manifest.tags}")
    for name, vectors in tags.items():
        _check_tag(name, vectors, manifest, where)
    head = _load_head(path, manifest, where) if manifest.kind == "function" else None
    reference = None
    if head is not None and manifest.reference is not None:
        reference = Reference.from_data(manifest.reference, head.ranked_columns(), where)
    return TagPack(manifest, {k: v.float() for k, v in tags.items()}, head, path, reference)


def read_manifest_data(path: str | Path, *, strict: bool = True) -> dict[str, Any]:
    """The raw JSON object of a pack's manifest (pack directory or `.tagpack` archive), not validated.

    The one place a manifest file is read: `load_pack` validates what it returns, and lookups that only
    peek at a version, base model or `requires` pass `strict=False`. A missing, unreadable, oversized
    (over MAX_MANIFEST_BYTES), too deeply nested or non-object manifest is a one-line PackError, or with
    `strict=False` an empty dict; with `strict=False` the fields peeked at are also dropped where they
    have the wrong type (a broken pack then fails when it is loaded, saying why).
    """
    path = Path(path)
    where, file = f"pack {path}", path / MANIFEST
    try:
        if path.is_file():
            with tempfile.TemporaryDirectory() as tmp:
                extract_archive(path, Path(tmp), only=(MANIFEST,))
                return read_manifest_data(tmp, strict=strict)
        if not file.is_file():
            raise PackError(f"{where}: no {MANIFEST} (is this a tag pack?)")
        try:
            check_file_size(file, where)
            with open(file, "rb") as f:
                raw = f.read(MAX_MANIFEST_BYTES + 1)  # the file may have grown since
        except OSError as exc:
            raise PackError(f"{where}: cannot read {MANIFEST}: {first_line(exc)}") from None
        if len(raw) > MAX_MANIFEST_BYTES:
            raise PackError(too_big(where, MANIFEST, len(raw)))
        data = parse_json(raw, where, MANIFEST)
        if not isinstance(data, dict):
            raise PackError(f"{where}: manifest must be a JSON object")
        return data if strict else _peekable(data)
    except PackError:
        if strict:
            raise
        return {}


def parse_json(raw: bytes, where: str, name: str) -> Any:
    """JSON from bytes; invalid UTF-8 or JSON, or nesting deeper than MAX_JSON_DEPTH, is one PackError line."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:  # the parser's own limit, for "[[[[…" far deeper than ours
        data, too_deep = None, True
    except ValueError as exc:  # also UnicodeDecodeError, and integers too long to convert
        reason = first_line(exc).split(";")[0]
        raise PackError(f"{where}: {name} is not valid JSON ({reason})") from None
    else:
        too_deep = json_depth(data) > MAX_JSON_DEPTH
    if too_deep:
        raise PackError(f"{where}: {name} nests deeper than {MAX_JSON_DEPTH} levels; refusing it")
    return data


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in parsed JSON (without recursion; stops once past MAX_JSON_DEPTH)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                break
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _peekable(data: dict[str, Any]) -> dict[str, Any]:
    """A manifest's fields as lax readers peek at them: names and versions only if strings, `base_model`
    only its string values, `requires` only its well-formed pins (so a peek never trips on a bad type)."""
    out = {k: v for k, v in data.items() if not (k in ("name", "version", "kind") and not isinstance(v, str))}
    base = out.pop("base_model", None)
    if isinstance(base, dict):
        out["base_model"] = {k: v for k, v in base.items() if isinstance(v, str)}
    requires = out.pop("requires", None)
    if isinstance(requires, dict):
        out["requires"] = {
            k: {f: x for f, x in pin.items() if isinstance(x, str)}
            for k, pin in requires.items()
            if is_name(k) and isinstance(pin, dict)
        }
    return out


def too_big(where: str, name: str, size: int) -> str:
    cap = MAX_FILE_BYTES.get(name, MAX_TENSOR_FILE_BYTES)
    return f"{where}: {name} is {size:,} bytes, more than the {cap // MIB} MiB it may be; refusing to read it"


def check_file_size(file: Path, where: str) -> int:
    """The size of a pack file, refused (one PackError line) when over its MAX_FILE_BYTES limit."""
    size = file.stat().st_size
    if size > MAX_FILE_BYTES.get(file.name, MAX_TENSOR_FILE_BYTES):
        raise PackError(too_big(where, file.name, size))
    return size


def save_pack(pack: TagPack, path: str | Path) -> Path:
    """Write a pack directory atomically (temp dir + rename), replacing any pack already there (only a
    pack: a folder with other files is refused, see `tagcli.packs.folder`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if pack.head is not None:
        pack.manifest.head = pack.head.to_spec()
    pack.manifest.reference = pack.reference.to_data() if pack.reference is not None else None
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
        replace_folder(tmp, path)
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


def record_reference(pack: TagPack, reference: Reference) -> Path:
    """Store `reference` in a pack directory's manifest; its tensor files are left byte for byte as they are."""
    if pack.path is None or not pack.path.is_dir():
        raise PackError(
            f"cannot add a reference to pack '{pack.name}': it is not a pack directory",
            hint="pass the pack's folder (a .tagpack archive is read-only)",
        )
    where = f"pack {pack.path}"
    Reference.from_data(reference.to_data(), pack.head.ranked_columns() if pack.head else [], where)
    pack.manifest.reference = reference.to_data()
    pack.manifest.validate(where)
    temporary = pack.path.parent / f".{pack.path.name}.{MANIFEST}.tmp"  # beside the pack, never inside it
    temporary.write_text(pack.manifest.to_json(), encoding="utf-8")
    temporary.replace(pack.path / MANIFEST)  # atomic: the old manifest or the new one, never half of either
    pack.reference = reference
    return pack.path


def write_archive(pack_dir: str | Path, archive: str | Path) -> Path:
    """Pack a pack directory into one uncompressed tar (safetensors do not compress)."""
    pack_dir, archive = Path(pack_dir), Path(archive)
    with tarfile.open(archive, "w") as tar:
        for name in PACK_FILES:
            if (pack_dir / name).is_file():
                tar.add(pack_dir / name, arcname=name)
    return archive


COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
MAX_EXTENDED_HEADER_BYTES = 8 << 10  # a pax or GNU long-name header: a path and a time stamp
MAX_EXTENDED_HEADERS = 16
KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.DIRTYPE: "a directory",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CHRTYPE: "a device",
    tarfile.BLKTYPE: "a device",
    tarfile.CONTTYPE: "a contiguous file",
}


class _Refused(tarfile.TarError):
    """A member refused while its header is read (its data is never read)."""


class _CheckedTarInfo(tarfile.TarInfo):
    """Refuses, before tarfile reads them, the headers whose data tarfile would hold in memory or loop
    over: oversized or too many pax / GNU long-name headers, and sparse members (GNU or pax), whose maps
    let a small archive expand into a huge file. (tarfile's `_proc_member` hook, Python 3.8 to 3.13.)"""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _Refused(f"member {brief(self.name)} is a sparse file")
        if self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, *tarfile.GNU_TYPES):
            seen = getattr(tar, "_tagcli_extended", 0) + 1
            tar._tagcli_extended = seen  # type: ignore[attr-defined]
            if seen > MAX_EXTENDED_HEADERS:
                raise _Refused(f"more than {MAX_EXTENDED_HEADERS} extended tar headers")
            if self.size > MAX_EXTENDED_HEADER_BYTES:
                raise _Refused(f"an extended tar header of {self.size:,} bytes (at most {MAX_EXTENDED_HEADER_BYTES:,})")
            if self.type not in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                fileobj = tar.fileobj
                assert fileobj is not None
                start = fileobj.tell()
                data = fileobj.read(self.size)
                fileobj.seek(start)
                if b"GNU.sparse" in data:
                    raise _Refused("a sparse member (pax GNU.sparse header)")
        return super()._proc_member(tar)  # type: ignore[misc]


def _member_problem(member: tarfile.TarInfo, seen: Collection[str]) -> str | None:
    """Why a `.tagpack` member may not be extracted (None: it may): only the pack's files, as plain files,
    once each, each within its size limit."""
    if member.name not in PACK_FILES:
        return f"unexpected member {brief(member.name)} (a pack holds only {', '.join(PACK_FILES)})"
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return f"unexpected member {member.name!r} ({KINDS.get(member.type, 'not a plain file')})"
    if member.name in seen:
        return f"member {member.name!r} appears twice"
    if member.size > MAX_FILE_BYTES[member.name]:
        cap = MAX_FILE_BYTES[member.name] // MIB
        return f"member {member.name!r} is {member.size:,} bytes, more than the {cap} MiB it may be"
    return None


def extract_archive(archive: Path, dest: Path, only: Collection[str] = PACK_FILES, *, label: str | None = None) -> None:
    """Extract a `.tagpack` (an uncompressed tar) into `dest`; `only`: just these of its files.

    Every header is checked before anything is written: a member that is not one of the pack's files,
    not a plain file (a link, directory, device or sparse file), there twice, or larger than its
    MAX_FILE_BYTES limit refuses the whole archive, as does a compressed one (nothing is decompressed).
    Refusals name the archive as `label` (default: "pack archive PATH").
    """
    where = label or f"pack archive {archive}"
    try:
        with open(archive, "rb") as f:
            magic = f.read(8)
    except OSError as exc:
        raise PackError(f"cannot read {where}: {first_line(exc)}") from None
    for prefix, kind in COMPRESSED.items():
        if magic.startswith(prefix):
            raise PackError(
                f"{where} is {kind}-compressed; a .tagpack is a plain tar file",
                hint="re-create it with `tagcli pack export`",
            )
    try:
        with tarfile.open(archive, "r:", tarinfo=_CheckedTarInfo) as tar:
            members: dict[str, tarfile.TarInfo] = {}
            while (member := tar.next()) is not None:
                problem = _member_problem(member, members)
                if problem:
                    raise PackError(f"{where}: {problem}; refusing to extract")
                members[member.name] = member
            wanted = [m for name, m in members.items() if name in only]
            tar.extractall(dest, members=wanted, filter="data")
    except _Refused as exc:
        raise PackError(f"{where}: {exc}; refusing to extract") from None
    except (tarfile.TarError, ValueError, EOFError, RecursionError, UnicodeError) as exc:
        # tarfile raises more than TarError on crafted headers (a ValueError from a bad sparse map, …)
        raise PackError(f"{where} is not a readable tar file ({first_line(exc)})") from None


def _load_tensors(path: Path, where: str) -> dict[str, torch.Tensor]:
    """A pack's safetensors file, its size and header length checked before safetensors parses it."""
    if not path.is_file():
        raise PackError(f"{where}: missing {path.name}")
    unreadable = f"{where}: {path.name} is not a readable safetensors file"
    try:
        size = check_file_size(path, where)
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise PackError(f"{unreadable}: {first_line(exc)}") from None
    if head.startswith(b"PK\x03\x04"):
        raise PackError(
            f"{unreadable}: it is a zip file, as torch.save writes (a pickle inside); tagcli never unpickles",
            hint="convert it with safetensors.torch.save_file",
        )
    declared = int.from_bytes(head, "little") if len(head) == 8 else None
    if declared is None or declared > min(MAX_TENSOR_HEADER_BYTES, size - 8):
        what = "it is too short" if declared is None else f"its header length field says {declared:,} bytes"
        limit = f"the file has {size:,} bytes; a header may have {MAX_TENSOR_HEADER_BYTES:,}"
        raise PackError(f"{unreadable}: {what} ({limit})")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise PackError(f"{unreadable}: {first_line(exc)}") from None


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
    try:
        with torch.device("meta"):  # shapes only: a manifest alone must not make tagcli allocate (hidden x targets)
            spec_head = head_from_spec(manifest.head, manifest.hidden_size)
    except PackError as exc:
        raise PackError(f"{where}: {exc.message}", hint=exc.hint) from None
    expected = {k: tuple(v.shape) for k, v in spec_head.state_dict().items()}
    tensors = _load_tensors(path / HEADS_FILE, where)
    prefix = f"{manifest.name}."
    state = spec_head.upgrade_state(
        manifest.head, {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    )
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        problems = [f"lacks {brief_names(prefix + k for k in missing)}"] if missing else []
        problems += [f"holds unexpected {brief_names(prefix + k for k in extra)}"] if extra else []
        raise PackError(f"{where}: {HEADS_FILE} {' and '.join(problems)}")
    for key, value in sorted(state.items()):  # the first problem in name order: one message every time
        if tuple(value.shape) != expected[key]:
            raise PackError(f"{where}: head tensor '{key}' has shape {tuple(value.shape)}, expected {expected[key]}")
        if not value.is_floating_point():
            raise PackError(f"{where}: head tensor '{key}' has dtype {value.dtype}, expected a float type")
        if not torch.isfinite(value).all():
            raise PackError(f"{where}: head tensor '{key}' contains NaN or infinite values")
    head = head_from_spec(manifest.head, manifest.hidden_size)
    head.load_state_dict({k: v.float() for k, v in state.items()})
    problem = head.check_state()
    if problem:
        raise PackError(f"{where}: head of '{manifest.name}' refused: {problem}")
    return head.eval()
