"""Issue #16, resource bounds: one huge cell is one `invalid` row ("input too long"), not a memory spike.

Each case runs the installed CLI under a small wrapper that reports the child's peak RSS
(`getrusage(RUSAGE_CHILDREN).ru_maxrss`); the extra over a run on a tiny file is what the huge cell
cost. A cell longer than 16 characters per token of the domain's `max_tokens` is rejected before it is
tokenized (domains.py), so the model never sees it. A 50 MB CSV field is held a few times over
(parsed, written to a part, merged: the output keeps every input cell), hence its own bound.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import TIMEOUT, Setup, cli_setup, tagcli_executable
from tagcli.io.tables import open_table

pytestmark = pytest.mark.slow  # runs the installed CLI under a memory probe

MB = 1 << 20
PROTEIN = "ACDEFGHIKLMNPQRSTVWY" * 5_000  # 100,000 residues
SMILES_2MB = "C" * 2_000_000
FIELD_50MB = "C" * 50_000_000
PEAK = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:], stdout=subprocess.DEVNULL)
open(sys.argv[1], "w").write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {code}")
"""
CASES = {  # name: (input file, function, peak RSS growth allowed over the tiny run)
    "tiny": ("tiny.csv", "logp", None),
    "protein-100k": ("protein.csv", "fold", 200 * MB),
    "smiles-2mb": ("smiles.csv", "logp", 200 * MB),
    "smiles-2mb-parquet": ("smiles.parquet", "logp", 200 * MB),
    "field-50mb": ("field.csv", "logp", 600 * MB),  # measured ~450 MB: about 9x the field
}


def _write_inputs(folder: Path) -> None:
    (folder / "tiny.csv").write_text("id,smiles\nm1,CCO\nm2,CC\n")
    (folder / "protein.csv").write_text(f"id,sequence\np1,{PROTEIN}\np2,MKVLAAGIVG\n")
    (folder / "smiles.csv").write_text(f"id,smiles\nm1,{SMILES_2MB}\nm2,CCO\n")
    pq.write_table(pa.table({"id": ["m1", "m2"], "smiles": [SMILES_2MB, "CCO"]}), folder / "smiles.parquet")
    (folder / "field.csv").write_text(f'id,smiles\nm1,"{FIELD_50MB}"\nm2,CCO\n')


@pytest.fixture(scope="module")
def runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Setup, int, int]]:
    """name -> (setup, exit code, peak RSS in bytes) for every case, two at a time."""
    setup = cli_setup(tmp_path_factory.mktemp("bounds"), tiny_model_dir)
    _write_inputs(setup.root)

    def run(name: str) -> tuple[Setup, int, int]:
        source, function, _ = CASES[name]
        report = setup.root / f"{name}.peak"
        command = [tagcli_executable(), "predict", source, "-F", function, "--pack-dir", str(setup.packs)]
        command += [*setup.model_args(), "--no-progress", "-o", f"{name}.out.parquet"]
        subprocess.run(
            [sys.executable, "-c", PEAK, str(report), *command], env=setup.env, cwd=setup.root, timeout=TIMEOUT
        )
        kilobytes, code = map(int, report.read_text().split())
        return setup, code, kilobytes * 1024  # ru_maxrss is in KiB on Linux

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, name) for name in CASES}
        return {name: future.result(timeout=2 * TIMEOUT) for name, future in futures.items()}


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux (bytes on macOS)")
@pytest.mark.parametrize("name", [name for name in CASES if name != "tiny"])
def test_a_huge_cell_is_one_invalid_row_without_a_memory_spike(
    runs: dict[str, tuple[Setup, int, int]], name: str
) -> None:
    setup, code, peak = runs[name]
    _, _, baseline = runs["tiny"]
    assert code == 0 and runs["tiny"][1] == 0
    with open_table(setup.root / f"{name}.out.parquet") as reader:
        scored = pa.Table.from_batches(list(reader), schema=reader.schema)
    assert scored.column("id").to_pylist()[1] in ("m2", "p2")
    assert scored.column("status").to_pylist() == ["invalid", "ok"]
    assert scored.column("error")[0].as_py().startswith("input too long: ")
    extra = peak - baseline
    print(f"{name}: peak RSS {peak / MB:.0f} MB, {extra / MB:+.0f} MB over the tiny file ({baseline / MB:.0f} MB)")
    assert extra < CASES[name][2], f"{name} took {extra / MB:.0f} MB more than a tiny file"
