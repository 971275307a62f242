"""`tagcli eval --plot`: a parity plot (regression) or ROC curves (classification) as a real image."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import SMILES, write_packs
from tagcli.errors import TagcliError, UsageError
from tagcli.plots import write_plot
from tagcli.scoring.evaluation import score_labeled
from tagcli.scoring.scorer import TagScorer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def packs(base, tmp_path: Path) -> Path:
    write_packs(tmp_path / "packs", base)
    return tmp_path / "packs"


def scores(base, packs: Path, tmp_path: Path, function: str, labels: dict[str, list]):
    values = SMILES * 3
    frame = pd.DataFrame({"smiles": values + ["C1CC"], **{k: v * 3 + [v[0]] for k, v in labels.items()}})
    frame.to_csv(tmp_path / "labeled.csv", index=False)
    scorer = TagScorer(function, base_model=base, pack_dirs=[str(packs)])
    return score_labeled(scorer, tmp_path / "labeled.csv", list(labels))


def image_size(path: Path) -> tuple[int, int]:
    import matplotlib.image

    return matplotlib.image.imread(path).shape[:2]


def test_regression_gets_a_parity_plot(base, packs: Path, tmp_path: Path) -> None:
    labeled = scores(base, packs, tmp_path, "logp", {"y": [float(len(s)) for s in SMILES]})
    path = write_plot(labeled, tmp_path / "parity.png", title="logp")
    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width = image_size(path)
    assert width > 600 and height > 300  # two panels side by side: parity and residuals


def test_classification_gets_a_roc_curve(base, packs: Path, tmp_path: Path) -> None:
    labeled = scores(base, packs, tmp_path, "active", {"label": ["active", "inactive"] * 4})
    path = write_plot(labeled, tmp_path / "roc.png")
    assert path.read_bytes()[:8] == PNG_MAGIC and min(image_size(path)) > 300


def test_svg_by_suffix_and_an_unwritable_path(base, packs: Path, tmp_path: Path) -> None:
    labeled = scores(base, packs, tmp_path, "logp", {"y": list(np.arange(len(SMILES), dtype=float))})
    assert write_plot(labeled, tmp_path / "parity.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(TagcliError, match="cannot write plot"):
        write_plot(labeled, tmp_path / "no-such-folder" / "parity.png")


def test_without_matplotlib_the_error_names_the_extra(base, packs: Path, tmp_path: Path, monkeypatch) -> None:
    labeled = scores(base, packs, tmp_path, "logp", {"y": [1.0] * len(SMILES)})
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(TagcliError, match="needs matplotlib") as caught:
        write_plot(labeled, tmp_path / "parity.png")
    assert "tagcli[plot]" in str(caught.value)


def test_nothing_scored_is_nothing_to_plot(base, packs: Path, tmp_path: Path) -> None:
    pd.DataFrame({"smiles": ["C1CC"], "y": [1.0]}).to_csv(tmp_path / "bad.csv", index=False)
    labeled = score_labeled(TagScorer("logp", base_model=base, pack_dirs=[str(packs)]), tmp_path / "bad.csv", ["y"])
    with pytest.raises(UsageError, match="nothing to plot"):
        write_plot(labeled, tmp_path / "parity.png")
