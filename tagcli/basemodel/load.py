"""Load a base model frozen: choose the device and dtype, resolve and fingerprint the spec, load it.

This is the one basemodel module that imports torch at module level; transformers is still
imported only when a model is loaded.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tagcli.basemodel.resolve import DEFAULT_BASE_MODEL, fingerprint_model_dir, resolve_model_dir
from tagcli.errors import BaseModelError, UsageError, first_line

if TYPE_CHECKING:  # transformers is imported lazily: `tagcli model list` should start fast
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class BaseModel:
    """A loaded, frozen base model and what identifies it (packs record `id` and `fingerprint`)."""

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

    @property
    def n_layers(self) -> int:
        """Decoder blocks (what a readout's layer numbers may reach)."""
        return int(self.model.config.num_hidden_layers)


# --------------------------------------------------------------------------- device and dtype

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def select_device(spec: str = "auto") -> torch.device:
    """ "auto" picks cuda, then mps, then cpu; explicit devices are checked to exist.

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
    """ "auto" is bf16 where the hardware runs it natively, else fp32; or an explicit name."""
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
def quiet_transformers() -> Iterator[None]:
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
        id=model_id,
        path=path,
        fingerprint=fingerprint,
        model=model,
        tokenizer=tokenizer,
        device=torch_device,
        dtype=torch_dtype,
    )


def _load_pretrained(path: Path, dtype: torch.dtype) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
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
