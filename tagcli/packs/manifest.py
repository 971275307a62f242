"""A pack's manifest.json: its schema (`Manifest`), validation, and the one place a manifest is read."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tagcli import __version__
from tagcli.core.domains import INPUT_KINDS, DomainInput
from tagcli.core.prompt import NAME_RE, PromptTemplate
from tagcli.errors import PackError, first_line
from tagcli.packs.archive import extract_archive
from tagcli.packs.folder import MANIFEST
from tagcli.packs.limits import MAX_MANIFEST_BYTES, check_file_size, is_int, parse_json, too_big
from tagcli.packs.messages import brief, brief_names

FORMAT = "tagcli.pack"
FORMAT_VERSION = 1
VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}\Z")
MAX_NAME_LENGTH = 64
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


def is_name(value: Any) -> bool:
    """A pack (or method) name: lowercase letters, digits, - and _, at most MAX_NAME_LENGTH characters."""
    return isinstance(value, str) and len(value) <= MAX_NAME_LENGTH and bool(NAME_RE.match(value))


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
