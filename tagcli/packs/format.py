"""The tag-pack format: one directory (or one `.tagpack` tar file for transport), loaded and saved.

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
spent (`tagcli.packs.limits`): a manifest is read only if small, a safetensors header only if
its length is plausible, an archive member is extracted only if it is a small-enough plain file.

The manifest's schema and reader are in `manifest.py`, archives in `archive.py`.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tagcli.atomic import write_text_atomic
from tagcli.basemodel.resolve import short_fingerprint
from tagcli.core.heads import Head, head_from_spec
from tagcli.errors import PackError, first_line
from tagcli.home import make_readable
from tagcli.packs.archive import extract_archive
from tagcli.packs.folder import HEADS_FILE, MANIFEST, TAGS_FILE, replace_folder
from tagcli.packs.integrity import check_installed
from tagcli.packs.limits import MAX_TENSOR_HEADER_BYTES, check_file_size
from tagcli.packs.manifest import Manifest, read_manifest_data
from tagcli.packs.messages import brief_names
from tagcli.packs.reference import Reference, percentile_column


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
    # the temp file beside the pack, never inside it (a pack folder holds only the pack's files)
    write_text_atomic(pack.path / MANIFEST, pack.manifest.to_json(), directory=pack.path.parent)
    pack.reference = reference
    return pack.path


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
