"""Golden predictions: prove that a change to tagcli leaves every built-in pack's numbers as they were.

    python bench/golden.py write DIR     # each built-in function pack on its public test split -> DIR
    python bench/golden.py compare A B   # identical (bit for bit) or a list of what differs

It drives the installed `tagcli` command (the interface users have), so the same script runs against
any version of the code: write once before a refactor, once after, then compare. Device and dtype
are recorded beside the predictions and must match for a comparison to mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# built-in function pack -> its public test split
CASES = {"qed": "qed_test", "protein-descriptors": "protein_test", "binding-affinity": "ba_kiba_test"}


def tagcli(*args: str) -> str:
    command = [sys.executable, "-m", "tagcli", *args]
    return subprocess.run(
        command, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    ).stdout


def write(out: Path, dtype: str, rows: int | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for function, split in CASES.items():
        source = DATA / f"{split}.parquet"
        if rows is not None:
            source = out / f"{split}.input.parquet"
            pq.write_table(pq.read_table(DATA / f"{split}.parquet").slice(0, rows), source)
        summary = tagcli(
            "predict",
            "--function",
            function,
            str(source),
            "-o",
            str(out / f"{function}.parquet"),
            "--dtype",
            dtype,
            "--no-progress",
            "--format",
            "json",
        )
        print(function, json.loads(summary)["rows"], "rows", flush=True)
    listing = json.loads(tagcli("pack", "list", "--format", "json"))
    (out / "pack-list.json").write_text(json.dumps(sorted(listing, key=lambda r: r["name"]), indent=1, sort_keys=True))
    (out / "settings.json").write_text(json.dumps({"dtype": dtype, "rows": rows, "cpu_bf16": _cpu_bf16()}))


def _cpu_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _listing(folder: Path) -> object:
    """The pack listing with checkout-specific folders cut down to the part after the repository."""
    return json.loads(re.sub(r'"[^"]*/(tagpacks|recipes)(?=[/"])', r'"\1', (folder / "pack-list.json").read_text()))


def compare(a: Path, b: Path) -> int:
    problems = []
    if json.loads((a / "settings.json").read_text()) != json.loads((b / "settings.json").read_text()):
        problems.append("settings.json differs (device, dtype or rows): the comparison means nothing")
    if _listing(a) != _listing(b):
        problems.append("pack-list.json differs")
    for function in CASES:
        left, right = pq.read_table(a / f"{function}.parquet"), pq.read_table(b / f"{function}.parquet")
        if not left.equals(right):
            diff = [c for c in left.column_names if c not in right.column_names or not left[c].equals(right[c])]
            problems.append(f"{function}: columns differ: {diff or 'schema'}")
        else:
            print(f"{function}: {left.num_rows} rows identical")
    for line in problems:
        print("DIFFERENT:", line)
    print("identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("out", type=Path)
    w.add_argument("--dtype", default="auto")
    w.add_argument("--rows", type=int, default=None, help="only the first N rows of each split")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "write":
        write(args.out, args.dtype, args.rows)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
