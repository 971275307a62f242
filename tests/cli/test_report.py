"""`tagcli report`: the HTML page of a scored file (tiny model, in process), streamed in bounded memory,
checked in headless Chromium; bad input is one `error:` line."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chromium import find_chromium, visit

from helpers import SMILES, write_packs
from tagcli.cli.app import run
from tagcli.packs.format import load_pack
from tagcli.packs.store import PackStore
from tagcli.report import write_report
from tagcli.report.collect import read_scored
from tagcli.scoring.references import add_reference
from tagcli.scoring.runner import score_file
from tagcli.scoring.scorer import TagScorer

OUT = Path(__file__).resolve().parents[2] / "out"


@pytest.fixture(scope="module")
def packs(base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The helper packs; `logp` ranks its predictions among a small reference set."""
    root = tmp_path_factory.mktemp("packs")
    write_packs(root, base)
    data = root.parent / "reference.csv"
    pd.DataFrame({"smiles": SMILES * 2}).to_csv(data, index=False)
    scorer = TagScorer(str(root / "logp"), base_model=base, pack_dirs=[str(root)], percentiles=False)
    add_reference(scorer, data, "tiny reference molecules", "tests")
    return root


@pytest.fixture(scope="module")
def scored(base, packs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scored CSV of 100 rows (20 invalid) with label columns `y` (logp) and `label` (active)."""
    folder = tmp_path_factory.mktemp("scored")
    values = (SMILES + ["C1CC", ""]) * 10
    labels = np.random.default_rng(0).normal(4.0, 1.0, len(values))
    classes = np.where(np.arange(len(values)) % 3 == 0, "active", "inactive")
    pd.DataFrame({"smiles": values, "y": labels, "label": classes}).to_csv(folder / "mols.csv", index=False)
    score_file(
        TagScorer(["logp", "active"], base_model=base, pack_dirs=[str(packs)]), folder / "mols.csv", folder / "s.csv"
    )
    return folder / "s.csv"


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        run(list(args))
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def text_of(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<svg.*?</svg>|<[^>]+>", " ", page, flags=re.S)).split())


def test_the_report_shows_counts_reasons_references_and_the_evaluation(
    capsys: pytest.CaptureFixture, packs: Path, scored: Path, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    code, out, _ = cli(
        capsys, "report", str(scored), "-o", str(page), "--pack-dir", str(packs), "-F", "logp", "-t", "y"
    )
    assert code == 0 and f"-> {page}" in out and "report of 100 rows (logp; 0 flagged; evaluated logp" in out
    page_html = page.read_text()
    text = text_of(page_html)
    assert "ok 80 80.0%" in text and "invalid 20 20.0%" in text
    assert "invalid: invalid SMILES 'C1CC': unclosed ring 10 9" in text and "invalid: empty cell 10 10" in text
    assert "reference: tiny reference molecules (16 rows)" in page_html  # the legend of pred_y's histogram
    assert "Evaluation against the labels in the file" in text and "label column y" in text
    assert page_html.count("<svg") == 2 and "Every row is in the plots." in text  # pred_y, and the parity plot
    assert "<script" not in page_html and not re.search(
        r'(src|href)="(?!#)', page_html
    )  # nothing to run, nothing to fetch
    assert "# logp 0.1.0" not in page_html and "<h1>logp 0.1.0</h1>" in page_html  # the card, as HTML


def test_a_classification_report_has_the_roc_and_calibration_plot(packs: Path, scored: Path, tmp_path) -> None:
    summary = write_report(
        scored, tmp_path / "r.html", functions=["active"], targets=["label"], store=PackStore([packs])
    )
    text = text_of((tmp_path / "r.html").read_text())
    assert summary.labelled == ["active"] and "label column label" in text and "roc_auc" in text
    assert "prob_active" in text and (tmp_path / "r.html").read_text().count("<svg") == 3  # 2 probabilities, ROC


def test_without_functions_the_packs_whose_columns_the_file_has_are_found(packs: Path, scored: Path, tmp_path) -> None:
    summary = write_report(scored, tmp_path / "r.html", store=PackStore([packs]))
    assert summary.functions == ["active", "logp"] and summary.labelled == []  # tiny packs record no targets
    assert "prob_active" in (tmp_path / "r.html").read_text()


def test_a_large_file_is_streamed_into_a_bounded_sample(packs: Path, tmp_path: Path) -> None:
    rows = 120_000
    rng = np.random.default_rng(1)
    status = np.where(rng.random(rows) < 0.1, "invalid", "ok")
    predictions = np.where(status == "ok", rng.normal(size=rows), np.nan)
    table = pa.table(
        {
            "smiles": ["C"] * rows,
            "pred_y": pa.array(predictions, mask=status != "ok"),
            "pred_y_percentile": pa.array(rng.uniform(0, 100, rows), mask=status != "ok"),
            "status": status,
            "error": pa.array(np.where(status == "ok", None, "bad"), pa.string()),
        }
    )
    path = tmp_path / "big.parquet"
    pq.write_table(table, path, row_group_size=10_000)
    scored = read_scored(path, [load_pack(packs / "logp")], {}, window_rows=4096, sample_rows=2000)
    assert scored.rows == rows and len(scored.sample.frame) == 2000 and scored.sampled
    assert scored.status == {"ok": int((status == "ok").sum()), "invalid": int((status != "ok").sum())}
    assert scored.reasons == {"invalid: bad": int((status != "ok").sum())}
    ok = predictions[status == "ok"]
    assert scored.numbers["pred_y"].count == len(ok) and scored.numbers["pred_y"].mean == pytest.approx(ok.mean())
    sample_rows = scored.sample.frame["row"].to_numpy()
    assert list(sample_rows) == sorted(sample_rows) and sample_rows.max() > rows * 0.9  # from the whole file
    summary = write_report(path, tmp_path / "big.html", functions=[str(packs / "logp")], sample_rows=2000)
    assert summary.sampled_rows == 2000
    assert "uniform sample of 2000 of the 120000 rows" in text_of((tmp_path / "big.html").read_text())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("-", "not standard input"),
        ("smiles\nCCO\n", "is not a scored file: it has no status and error columns"),
        ("smiles,pred_y,status,error\nCCO,abc,ok,\n", "column pred_y does not hold double values"),
    ],
)
def test_bad_input_is_one_error_line(
    capsys: pytest.CaptureFixture, packs: Path, tmp_path: Path, content: str | None, message: str
) -> None:
    source = tmp_path / "in.csv"
    if content not in (None, "-"):
        source.write_text(content)
    given = "-" if content == "-" else str(source)
    code, out, err = cli(
        capsys, "report", given, "-o", str(tmp_path / "in.report.html"), "-F", "logp", "--pack-dir", str(packs)
    )
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0].lower(), err
    assert not (tmp_path / "in.report.html").exists()


@pytest.mark.slow  # a real browser process
@pytest.mark.skipif(
    find_chromium() is None, reason="Chromium is not installed (make test installs it where apt-get can)"
)
def test_the_report_loads_in_chromium_with_no_error_and_no_request(packs: Path, scored: Path, tmp_path) -> None:
    page = tmp_path / "report.html"
    write_report(scored, page, functions=[str(packs / "logp")], targets=["y"])
    shot = OUT / "test-report.png"
    result = visit(page, screenshot=shot)
    assert result.errors == [] and result.external_requests == []
    assert result.requests == [page.resolve().as_uri()] and result.title == f"tagcli report: {scored}"
    assert result.headings >= 5 and shot.stat().st_size > 10_000
