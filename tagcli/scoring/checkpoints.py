"""Window checkpoints: the batches of a scoring window done so far, on disk, so that a run killed in
the middle of a window (SIGKILL, a lost node, a full disk) loses at most `CHECKPOINT_SECONDS` of work
plus the batch that was running.

    out.parquet.parts/_checkpoints/window-000004096.json    {"window": ..., "sha256": ..., "batches": ...}

A window's batches follow from its rows alone (fixed windows: workunits.py), so a resumed run asks the
scorer for the very same batches and hands back the outputs of those the checkpoint holds: what it
writes is what an uninterrupted run writes. The file is replaced atomically (a kill while it is written
leaves the previous one), carries the digest of its batches (a damaged file is named, set aside and
its window scored again) and is removed once every unit of the window is written.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tagcli.atomic import write_json_atomic
from tagcli.io.writer import write_errors
from tagcli.scoring.scorer import BatchOutputs

CHECKPOINT_SECONDS = 30.0  # how often a window's finished batches are written (at most this much work is lost)
OnNotice = Callable[[str], None] | None


class WindowCheckpoint:
    """A `BatchJournal` (scorer.py) for one window, written to `path` at most every `every` seconds."""

    def __init__(self, path: Path, window: dict[str, int], every: float | None = None) -> None:
        self.path = path
        self.window = window  # first row and row count: a checkpoint of another window is never used
        self.every = CHECKPOINT_SECONDS if every is None else every
        self.batches: dict[str, BatchOutputs] = {}
        self.recalled = 0
        self._unsaved = 0
        self._saved_at = time.monotonic()

    @classmethod
    def resume(
        cls, path: Path, window: dict[str, int], on_notice: OnNotice = None, every: float | None = None
    ) -> WindowCheckpoint:
        """The checkpoint at `path` if a killed run left a sound one for this window, else an empty one."""
        checkpoint = cls(path, window, every)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return checkpoint
        except (OSError, ValueError) as exc:
            problem = f"unreadable ({type(exc).__name__})"
        else:
            problem = _problem(saved, window)
            if problem is None:
                checkpoint.batches = saved["batches"]
                return checkpoint
        if on_notice:
            on_notice(f"checkpoint {path} is {problem}: its window is scored again")
        path.unlink(missing_ok=True)
        return checkpoint

    def recall(self, key: str) -> BatchOutputs | None:
        outputs = self.batches.get(key)
        self.recalled += outputs is not None
        return outputs

    def record(self, key: str, outputs: BatchOutputs) -> None:
        self.batches[key] = outputs
        self._unsaved += 1
        if time.monotonic() - self._saved_at >= self.every:
            self.save()

    def save(self) -> None:
        """Write the batches done so far (nothing when none is new)."""
        if self._unsaved:
            with write_errors(str(self.path)):
                write_json_atomic(
                    self.path, {"window": self.window, "sha256": _digest(self.batches), "batches": self.batches}
                )
            self._unsaved = 0
        self._saved_at = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _digest(batches: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(batches, sort_keys=True).encode()).hexdigest()


def _problem(saved: Any, window: dict[str, int]) -> str | None:
    """Why a checkpoint read back cannot be used (None: it can)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("batches"), dict):
        return "not a checkpoint"
    if saved.get("window") != window:
        return f"of another window ({saved.get('window')})"
    if saved.get("sha256") != _digest(saved["batches"]):
        return "damaged (its content does not match its digest)"
    return None
