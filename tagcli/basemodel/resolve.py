"""Resolve a base model spec to a local directory of safetensors weights, and fingerprint it.

A spec is an embedded model name, a local directory or a Hugging Face repo id (`repo@revision`).
The fingerprint is a sha256 over tensor contents, cached by file stats in `tagcli_home()`.

Imports nothing heavy at module level (torch, transformers and huggingface_hub are imported
inside the functions that need them): pack listings import this module and must start fast.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tagcli.atomic import write_json_atomic
from tagcli.errors import BaseModelError, UsageError
from tagcli.home import tagcli_home
from tagcli.hub import hub_errors, hub_offline

DEFAULT_BASE_MODEL = "smollm2-135m"
FINGERPRINT_CACHE = "fingerprints.json"
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


# --------------------------------------------------------------------------- resolving specs


def _looks_like_path(spec: str) -> bool:
    # Hub ids are "name" or "org/name" (plus "@revision"); anything else path-like is a path.
    repo_id = spec.partition("@")[0]
    return spec.startswith((".", "~")) or os.path.isabs(spec) or repo_id.count("/") > 1 or "\\" in repo_id


def _split_revision(spec: str) -> tuple[str, str | None]:
    repo_id, _, revision = spec.partition("@")
    return repo_id, revision or None


def resolve_model_dir(spec: str, offline: bool | None = None) -> tuple[str, Path]:
    """Turn a model spec into (id, local dir with safetensors weights).

    spec: an embedded name (converted locally, works offline), an existing local directory,
    or a Hugging Face repo id, optionally `repo@revision`. offline=None follows HF_HUB_OFFLINE.
    """
    # embedded.py imports this module (for fingerprints), so import it here, at call time.
    from tagcli.basemodel.embedded import EMBEDDED_MODELS, pull_embedded

    spec = spec.strip()
    if not spec:
        raise UsageError("empty base model name", hint=f"use {DEFAULT_BASE_MODEL}, a local directory or an HF repo id")
    if spec in EMBEDDED_MODELS:
        model_id, path = spec, pull_embedded(spec)
    elif Path(spec).expanduser().is_dir():
        path = Path(spec).expanduser().resolve()
        model_id = str(path)
    elif Path(spec).expanduser().exists():
        raise BaseModelError(f"base model path is not a directory: {spec}", hint="pass the model's directory")
    elif _looks_like_path(spec):
        raise BaseModelError(f"base model directory not found: {spec}", hint="pass an existing model directory")
    else:
        model_id, path = spec, _snapshot(spec, offline, embedded_names=list(EMBEDDED_MODELS))
    _check_weights(path)
    return model_id, path


def _snapshot(spec: str, offline: bool | None, embedded_names: list[str]) -> Path:
    """Download (or find in the HF cache) the safetensors files of a hub repo."""
    from huggingface_hub import snapshot_download

    repo_id, revision = _split_revision(spec)
    offline = hub_offline() if offline is None else offline
    hint = f"pass an embedded model ({', '.join(embedded_names)}), a local directory or a Hugging Face repo id"
    subject = f"base model {spec}"
    with hub_errors(
        BaseModelError, subject, repo_id, revision, offline=offline, invalid_hint=hint, instead="pass a local directory"
    ):
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=HUB_PATTERNS,  # never fetch pickled *.bin weights
                local_files_only=offline,
            )
        )


def _check_weights(path: Path) -> None:
    """Require safetensors weights: pickled checkpoints can run arbitrary code when loaded."""
    if any(path.glob("*.safetensors")):
        return
    if any(p for pattern in PICKLE_WEIGHTS for p in path.glob(pattern)):
        raise BaseModelError(
            f"{path} has only pickle weights (e.g. pytorch_model.bin); tagcli loads safetensors only",
            hint="re-save it with save_pretrained(..., safe_serialization=True) or use a repo with *.safetensors",
        )
    raise BaseModelError(f"{path} has no *.safetensors weights", hint="pass a Hugging Face causal LM directory")


# --------------------------------------------------------------------------- fingerprints


def fingerprint_model_dir(path: Path) -> str:
    """sha256 over the tensor contents of all *.safetensors files, cached by file stats."""
    path = Path(path).resolve()
    _check_weights(path)
    cached = cached_fingerprint(path)
    if cached:
        return cached
    fingerprint = hash_weights(path)
    remember_fingerprint(path, fingerprint)
    return fingerprint


def hash_weights(path: Path) -> str:
    """Hash (name, dtype, shape, bytes) of every tensor in name order, ignoring file headers.

    Sharding, tensor order within files and header metadata do not change the result, so a
    re-saved copy of the same weights has the same fingerprint. Not cached: see fingerprint_model_dir.
    """
    import torch
    from safetensors import safe_open

    files: dict[str, Path] = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                if name in files:
                    raise BaseModelError(f"tensor {name} appears in both {files[name].name} and {file.name}")
                files[name] = file
    digest = hashlib.sha256()
    with ExitStack() as stack:
        handles = {file: stack.enter_context(safe_open(file, framework="pt")) for file in set(files.values())}
        for name in sorted(files):
            handle = handles[files[name]]
            tensor_slice = handle.get_slice(name)
            header = f"{name}\0{tensor_slice.get_dtype()}\0{list(tensor_slice.get_shape())}\0"
            digest.update(header.encode())
            # A uint8 view gives the exact stored bytes for any dtype, bf16 included (numpy has no bf16).
            digest.update(handle.get_tensor(name).contiguous().reshape(-1).view(torch.uint8).numpy())
    return f"sha256:{digest.hexdigest()}"


def short_fingerprint(fingerprint: Any) -> str:
    """`sha256:` and the first 12 hex digits, like a short git hash (no ellipsis: it is a complete token)."""
    text = str(fingerprint or "?")
    return text[: len("sha256:") + 12] if text.startswith("sha256:") else text


def _weight_stats(path: Path) -> list[list[Any]]:
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(path.glob("*.safetensors"))]


def _cache_file() -> Path:
    return tagcli_home() / FINGERPRINT_CACHE


def cached_fingerprint(path: Path) -> str | None:
    """The cached fingerprint if the weight files are unchanged (same names, sizes, mtimes)."""
    entry = read_json(_cache_file()).get(str(Path(path).resolve()))
    if isinstance(entry, dict) and entry.get("files") == _weight_stats(path):
        fingerprint = entry.get("fingerprint")
        return fingerprint if isinstance(fingerprint, str) else None
    return None


def remember_fingerprint(path: Path, fingerprint: str | None) -> None:
    """Cache `fingerprint` for the weights now in `path`; None (nothing known) is ignored."""
    if not fingerprint:
        return
    cache = read_json(_cache_file())
    cache[str(Path(path).resolve())] = {"files": _weight_stats(path), "fingerprint": fingerprint}
    try:
        write_json_atomic(_cache_file(), cache)
    except OSError:
        pass  # a read-only home only costs a re-hash next time


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from disk; missing or corrupt files read as empty (they get rewritten)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
