"""The multi-node path: `TagScorer` as a Ray Data `map_batches` class, on a local Ray instance.

Needs the optional extra (`pip install tagcli[ray]`; CI installs it). Ray starts actors that build
their own TagScorer from `fn_constructor_kwargs`, so the packs and the tiny model go by path.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.parquet as pq
import pytest

from helpers import SMILES, write_packs
from tagcli import TagScorer
from tagcli.packs.format import load_pack
from tagcli.scoring.distributed import WindowScorer, window_dataset
from tagcli.scoring.references import add_reference
from tagcli.scoring.runner import score_file

pytestmark = pytest.mark.slow  # starts a local Ray instance and its actors (~35 s)

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install tagcli[ray])")


@pytest.fixture(scope="module")
def local_ray():
    # Logical CPUs: the two scorer actors hold one each, and the Parquet read tasks need their own
    # (with only two, the reads could never be scheduled and the pipeline would wait forever).
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_tag_scorer_in_ray_data_map_batches(local_ray, base, tiny_model_dir: Path, tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    write_packs(packs, base)
    reference_set = tmp_path / "reference.csv"
    reference_set.write_text("smiles\n" + "\n".join(SMILES) + "\n")
    add_reference(TagScorer(str(packs / "logp"), base_model=base, pack_dirs=[str(packs)]), reference_set, "set", "")
    values = [SMILES[i % len(SMILES)] + "C" * (i % 5) for i in range(200)] + ["C1CC", ""]
    source = tmp_path / "mols.parquet"
    pq.write_table(pa.table({"id": list(range(len(values))), "smiles": values}), source, row_group_size=50)
    options = {
        "function": ["logp", "active"],
        "base_model": str(tiny_model_dir),
        "device": "cpu",
        "dtype": "float32",
        "pack_dirs": [str(packs)],
    }

    scored = (
        local_ray.data.read_parquet(str(source))
        .map_batches(
            TagScorer,
            fn_constructor_kwargs=options,
            compute=local_ray.data.ActorPoolStrategy(size=2),  # `concurrency=2` in Ray < 2.51
            num_cpus=1,
            batch_size=64,
            batch_format="pyarrow",  # on GPUs: num_gpus=1 per actor, device="cuda"
        )
        .to_pandas()
        .sort_values("id", ignore_index=True)
    )

    expected = TagScorer(**options)(pq.read_table(source)).to_pandas()
    assert list(scored.columns) == list(expected.columns)
    assert scored["id"].tolist() == list(range(len(values)))  # every row once
    assert scored["status"].tolist() == expected["status"].tolist()
    assert (
        scored["status"].tail(2).tolist() == ["invalid", "invalid"]
        and scored.loc[scored["status"] == "invalid", "pred_y"].isna().all()
    )
    for column in ("pred_y", "prob_active"):
        ok = expected["status"] == "ok"
        assert scored.loc[ok, column].to_numpy() == pytest.approx(expected.loc[ok, column].to_numpy(), abs=1e-5)
    # each actor ranks its own predictions among the pack's reference, as predict does
    reference = load_pack(packs / "logp").reference
    ranked = scored[scored["status"] == "ok"]
    assert ranked["pred_y_percentile"].tolist() == reference.percentiles("pred_y", ranked["pred_y"].tolist())


def test_window_scorer_writes_what_predict_writes(local_ray, base, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Actors that score whole windows of the file: the batches `predict` runs, so bf16 numbers match too."""
    packs = tmp_path / "packs"
    write_packs(packs, base)
    values = [SMILES[i % len(SMILES)] + "C" * (i % 5) for i in range(100)] + ["C1CC", ""]
    source = tmp_path / "mols.csv"
    pa.csv.write_csv(pa.table({"id": list(range(len(values))), "smiles": values}), source)
    options = {"function": ["logp", "active"], "base_model": str(tiny_model_dir), "device": "cpu",
               "dtype": "bfloat16", "pack_dirs": [str(packs)], "batch_size": 4}  # fmt: skip
    scored = (
        window_dataset(source, window_rows=16)
        .map_batches(
            WindowScorer,
            fn_constructor_kwargs=options,
            compute=local_ray.data.ActorPoolStrategy(size=2),
            num_cpus=1,
            batch_size=1,
            batch_format="pyarrow",
        )
        .to_arrow_refs()
    )
    table = pa.concat_tables(local_ray.get(scored)).sort_by("id")
    expected = tmp_path / "predict.parquet"
    score_file(TagScorer(**options), source, expected, window_rows=16, unit_rows=5)
    assert table.equals(pq.read_table(expected).sort_by("id"))  # ids are CSV strings: both sorted as text
