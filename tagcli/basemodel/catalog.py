"""What base models are available (`tagcli model list`) and what one is (`tagcli model info`).

Both read metadata only: config.json, tagcli's own metadata file, cached fingerprints and
safetensors headers. Listing never hashes weights; weights are never loaded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tagcli.basemodel.embedded import EMBEDDED_MODELS, METADATA_FILE, EmbeddedModel, is_installed, is_pulled
from tagcli.basemodel.resolve import cached_fingerprint, fingerprint_model_dir, read_json, resolve_model_dir
from tagcli.home import models_dir

_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


def list_models() -> list[dict]:
    """Embedded models (pulled or not), other dirs in models_dir(), and cached hub causal LMs."""
    rows = [_embedded_row(entry) for entry in EMBEDDED_MODELS.values()]
    root = models_dir()
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and child.name not in EMBEDDED_MODELS:
                rows.append(_dir_row(child.name, "local", child))
    rows.extend(_hub_rows())
    return rows


def _embedded_row(entry: EmbeddedModel) -> dict:
    path = models_dir() / entry.name
    pulled = is_pulled(path)
    return {
        "name": entry.name,
        "kind": "embedded",
        "pulled": pulled,
        "installed": is_installed(entry),
        "path": str(path) if pulled else None,
        "fingerprint": read_json(path / METADATA_FILE).get("fingerprint") if pulled else None,
        "source": entry.source,
        "license": entry.license,
    }


def _dir_row(name: str, kind: str, path: Path) -> dict:
    # Listing must stay cheap: only report fingerprints already computed, never hash here.
    fingerprint = read_json(path / METADATA_FILE).get("fingerprint") or cached_fingerprint(path)
    return {
        "name": name,
        "kind": kind,
        "pulled": True,
        "installed": True,
        "path": str(path),
        "fingerprint": fingerprint,
        "source": read_json(path / METADATA_FILE).get("source"),
        "license": read_json(path / METADATA_FILE).get("license"),
    }


def _hub_rows() -> list[dict]:
    """Causal LMs with safetensors weights in the local Hugging Face cache."""
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception:  # no cache yet, or an unreadable one: nothing to list
        return []
    rows = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        snapshot = max(repo.revisions, key=lambda r: r.last_modified).snapshot_path
        architectures = read_json(snapshot / "config.json").get("architectures") or []
        if any(str(a).endswith("ForCausalLM") for a in architectures) and any(snapshot.glob("*.safetensors")):
            rows.append(_dir_row(repo.repo_id, "hub", snapshot))
    return rows


def model_info(spec: str) -> dict:
    """What a base model is, from config.json and the safetensors headers (no weights loaded)."""
    model_id, path = resolve_model_dir(spec)
    config = read_json(path / "config.json")
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    params, disk_dtypes = _count_parameters(path)
    info: dict[str, Any] = {
        "id": model_id,
        "path": str(path),
        "fingerprint": fingerprint_model_dir(path),
        "architecture": (config.get("architectures") or [None])[0],
        "model_type": config.get("model_type"),
        "hidden_size": text_config.get("hidden_size"),
        "layers": text_config.get("num_hidden_layers"),
        "vocab_size": text_config.get("vocab_size"),
        "max_positions": text_config.get("max_position_embeddings"),
        "params": params,
        "dtype_on_disk": ", ".join(disk_dtypes),
    }
    if spec in EMBEDDED_MODELS:
        entry = EMBEDDED_MODELS[spec]
        info.update(source=entry.source, license=entry.license, distribution=f"{entry.distribution}=={entry.version}")
    return info


def _count_parameters(path: Path) -> tuple[int, list[str]]:
    """Parameter count and stored dtypes, read from safetensors headers only."""
    from safetensors import safe_open

    total, dtypes = 0, set()
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                tensor_slice = f.get_slice(name)
                total += math.prod(tensor_slice.get_shape())
                dtype = tensor_slice.get_dtype()
                dtypes.add(_SAFETENSORS_DTYPES.get(dtype, dtype))
    return total, sorted(dtypes)
