"""A scoring run that a signal hits at an exact point, as a process of its own (test_preemption.py).

    python fault_driver.py MODEL PACKS SOURCE OUT --at batch|checkpoint|merge --signal KILL|TERM|HUP [--resume]

Scores SOURCE with the tiny model's `logp` and `active` packs in small windows and units (what the
tests compare against), checkpointing every batch, and sends itself the signal when it reaches the
point: `batch` after the third batch of the run, `checkpoint` halfway through writing a checkpoint file,
`merge` halfway through writing the merged output. SIGTERM and SIGHUP go through tagcli's own handlers:
the process prints the CLI's one line and exits 128 + the signal, as `tagcli predict` does.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tagcli.errors import format_error, watch_stop_signals
from tagcli.io import writer
from tagcli.scoring import checkpoints
from tagcli.scoring.runner import score_file
from tagcli.scoring.scorer import TagScorer

SETTINGS = {"window_rows": 12, "unit_rows": 5}  # windows of 12 rows, each cut into units of 5, 5 and 2


def scorer(model: str, packs: str) -> TagScorer:
    functions = ["logp", "active"]
    return TagScorer(functions, base_model=model, pack_dirs=[packs], device="cpu", dtype="float32", batch_size=4)


def hit(signum: int) -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signum)


def arm(point: str, signum: int, out: str) -> None:
    """Patch the code path of `point` to send `signum` there."""
    if point == "batch":
        batches = [0]
        record = checkpoints.WindowCheckpoint.record

        def record_then_hit(self: checkpoints.WindowCheckpoint, key: str, outputs: Any) -> None:
            record(self, key, outputs)
            batches[0] += 1
            if batches[0] == 3:
                hit(signum)

        checkpoints.WindowCheckpoint.record = record_then_hit  # type: ignore[method-assign]
    elif point == "checkpoint":

        def half_written(path: Path, value: Any) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.killed.tmp")
            temp.write_text(json.dumps(value)[:100])
            hit(signum)

        checkpoints.write_json_atomic = half_written  # type: ignore[assignment]
    elif point == "merge":
        write = writer.TableWriter.write

        def write_then_hit(self: writer.TableWriter, batch: Any) -> None:
            write(self, batch)
            if self.path == out:
                hit(signum)

        writer.TableWriter.write = write_then_hit  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("model", "packs", "source", "out"):
        parser.add_argument(name)
    parser.add_argument("--at", choices=["batch", "checkpoint", "merge"])
    parser.add_argument("--signal", choices=["KILL", "TERM", "HUP"])
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    watch_stop_signals("predict")
    checkpoints.CHECKPOINT_SECONDS = 0.0  # every batch reaches the checkpoint at once
    if args.at:
        arm(args.at, getattr(signal, f"SIG{args.signal}"), args.out)
    try:
        score_file(scorer(args.model, args.packs), args.source, args.out, resume=args.resume, **SETTINGS)
    except BaseException as exc:  # as the CLI reports it
        line, code = format_error(exc)
        print(f"error: {line}", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
