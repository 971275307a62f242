"""The demo's path on the real embedded model: qed scores examples/molecules.csv with percentiles among
approved drugs, and its report loads in headless Chromium with no error and no request (slow: real model)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from chromium import find_chromium, visit

from tagcli.packs.store import PackStore
from tagcli.report import write_report
from tagcli.scoring.runner import score_file
from tagcli.scoring.scorer import TagScorer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "molecules.csv"


def test_the_demo_file_gets_percentiles_and_a_report(tmp_path) -> None:
    scored_path = tmp_path / "molecules.scored.csv"
    scorer = TagScorer("qed")
    score_file(scorer, EXAMPLES, scored_path)
    scored = pd.read_csv(scored_path)
    ok = scored["status"] == "ok"
    reference = PackStore().load("qed").reference
    assert reference is not None and reference.name == "ChEMBL approved drugs" and reference.rows > 2600
    assert scored.loc[ok, "pred_qed_percentile"].between(0, 100).all()
    assert scored.loc[~ok, "pred_qed_percentile"].isna().all()
    expected = reference.percentiles("pred_qed", scored.loc[ok, "pred_qed"].tolist())
    assert scored.loc[ok, "pred_qed_percentile"].tolist() == pytest.approx(expected, abs=1e-9)  # CSV round trip
    page = tmp_path / "molecules.report.html"
    summary = write_report(scored_path, page)
    assert summary.functions == ["qed"] and summary.rows == len(scored)
    assert summary.flagged == int((ok & ~scored["in_domain"].astype(bool)).sum())
    if find_chromium() is None:
        pytest.skip("Chromium is not installed (make test installs it where apt-get can)")
    result = visit(page)
    assert result.errors == [] and result.external_requests == []
