"""The tag-pack format: round trips, archives, and one-line refusals of every defect."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import classification_head, domain_pack, function_pack, regression_head
from tagcli.core.prompt import PromptTemplate
from tagcli.errors import PackError
from tagcli.packs.archive import write_archive
from tagcli.packs.format import load_pack, save_pack, tag_digest
from tagcli.packs.manifest import FORMAT_VERSION, Manifest, check_template, read_manifest_data
from tagcli.packs.store import PackStore, sibling_pack
from tagcli.scoring.scorer import TagScorer

OTHER_FINGERPRINT = "sha256:" + "ab" * 32


@pytest.fixture
def packs(base, tmp_path: Path) -> dict[str, Path]:
    """A domain pack and a function pack on disk (siblings, as installed)."""
    smiles = domain_pack(base, "smiles", seed=1)
    logp = function_pack(base, "logp", [smiles], regression_head(base.hidden_size, ["y"], seed=2), seed=2)
    return {
        "smiles": save_pack(smiles, tmp_path / "packs" / "smiles"),
        "logp": save_pack(logp, tmp_path / "packs" / "logp"),
    }


def hidden_of(base) -> torch.Tensor:
    return torch.randn(5, base.hidden_size, generator=torch.Generator().manual_seed(7))


# --------------------------------------------------------------------------- round trips


def test_domain_pack_round_trip(base, tmp_path: Path) -> None:
    pack = domain_pack(base, "protein", seed=3, max_tokens=99, canonicalize=True)
    path = save_pack(pack, tmp_path / "protein")
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "tags.safetensors"]
    loaded = load_pack(path)
    assert loaded.path == path and loaded.name == "protein" and loaded.head is None
    assert torch.equal(loaded.tags["protein"], pack.tags["protein"])
    m = loaded.manifest
    assert (m.kind, m.version, m.tag_length, m.hidden_size) == ("domain", "0.1.0", 3, base.hidden_size)
    assert m.base_model == {"id": base.id, "fingerprint": base.fingerprint}
    assert m.domain_input().kind == "protein" and m.domain_input().max_tokens == 99 and m.domain_input().canonicalize
    assert m.format == "tagcli.pack" and m.format_version == FORMAT_VERSION
    assert loaded.tag_digest() == pack.tag_digest() == tag_digest(pack.tags["protein"])


def test_function_pack_round_trip_keeps_head_outputs(base, tmp_path: Path) -> None:
    smiles = domain_pack(base, "smiles")
    head = regression_head(base.hidden_size, ["a", "b"], seed=4)
    with torch.no_grad():
        head.feature_mean.normal_()
        head.feature_std.uniform_(0.5, 2.0)
    pack = function_pack(base, "multi", [smiles], head, seed=5)
    pack.manifest.metrics = {"val": {"mse": 0.5}}
    path = save_pack(pack, tmp_path / "multi")
    loaded = load_pack(path)
    assert torch.equal(loaded.tags["multi"], pack.tags["multi"])
    hidden = hidden_of(base)
    with torch.no_grad():
        expected, got = (
            head.predict(SimpleNamespace(hidden=hidden)),
            loaded.head.predict(SimpleNamespace(hidden=hidden)),
        )
    assert list(got) == ["pred_a", "pred_b"]
    for column in expected:
        torch.testing.assert_close(got[column], expected[column], atol=0, rtol=0)
    m = loaded.manifest
    assert m.kind == "function" and m.domains == ["smiles"] and m.template == "{tag:smiles}{input:smiles}{tag:multi}"
    assert m.head == head.to_spec()
    assert m.requires == {"smiles": {"version": "0.1.0", "sha256": smiles.tag_digest()}}
    assert m.metrics == {"val": {"mse": 0.5}}
    assert not loaded.head.training


def test_classification_pack_round_trip(base, tmp_path: Path) -> None:
    smiles = domain_pack(base, "smiles")
    head = classification_head(base.hidden_size, "label", ["a", "b", "c"], seed=2)
    loaded = load_pack(save_pack(function_pack(base, "tox", [smiles], head), tmp_path / "tox"))
    hidden = hidden_of(base)
    with torch.no_grad():
        got, expected = (
            loaded.head.predict(SimpleNamespace(hidden=hidden)),
            head.predict(SimpleNamespace(hidden=hidden)),
        )
    assert got["pred_label"] == expected["pred_label"]
    torch.testing.assert_close(got["prob_c"], expected["prob_c"], atol=0, rtol=0)
    torch.testing.assert_close(sum(got[f"prob_{c}"] for c in "abc"), torch.ones(5))


def test_save_pack_replaces_an_existing_pack(base, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=1), tmp_path / "smiles")
    second = domain_pack(base, "smiles", seed=2)
    save_pack(second, tmp_path / "smiles")
    assert torch.equal(load_pack(tmp_path / "smiles").tags["smiles"], second.tags["smiles"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smiles"]  # no temp dirs left


def test_archive_round_trip(packs: dict[str, Path], tmp_path: Path) -> None:
    archive = write_archive(packs["logp"], tmp_path / "logp.tagpack")
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["heads.safetensors", "manifest.json", "tags.safetensors"]
    from_dir, from_archive = load_pack(packs["logp"]), load_pack(archive)
    assert from_archive.path == archive
    assert from_archive.manifest == from_dir.manifest
    assert torch.equal(from_archive.tags["logp"], from_dir.tags["logp"])
    for key, value in from_dir.head.state_dict().items():
        assert torch.equal(from_archive.head.state_dict()[key], value)
    assert PackStore().find(str(archive)) == archive.resolve()


def test_one_manifest_reader_for_directories_and_archives(packs: dict[str, Path], tmp_path: Path) -> None:
    archive = write_archive(packs["logp"], tmp_path / "logp.tagpack")
    on_disk = json.loads((packs["logp"] / "manifest.json").read_text())
    assert read_manifest_data(packs["logp"]) == read_manifest_data(archive) == on_disk
    (packs["smiles"] / "manifest.json").write_text("[1, 2]")  # JSON, but not a manifest object
    (tmp_path / "junk.tagpack").write_bytes(b"not a tar file")
    for unreadable, words in [
        (packs["smiles"], "manifest must be a JSON object"),
        (tmp_path / "nowhere", "no manifest.json"),
        (tmp_path / "junk.tagpack", "not a readable tar file"),
    ]:
        with pytest.raises(PackError, match=words):
            read_manifest_data(unreadable)
        assert read_manifest_data(unreadable, strict=False) == {}  # peeking never fails


def test_sibling_pack_is_the_named_pack_in_the_same_folder(packs: dict[str, Path]) -> None:
    smiles = packs["smiles"].resolve()
    assert sibling_pack(packs["logp"], "smiles") == smiles
    assert sibling_pack(packs["logp"].parent / "not-pulled-yet", "smiles") == smiles  # where a pull will put it
    assert sibling_pack(write_archive(packs["logp"], packs["logp"].parent / "logp.tagpack"), "smiles") == smiles
    assert sibling_pack(packs["logp"], "protein") is None  # not there
    assert sibling_pack(packs["logp"], "../packs/smiles") is None  # a NAME only, never a path
    assert sibling_pack(packs["logp"], "smiles@0.1.0") is None
    assert PackStore().load("smiles", near=packs["logp"]).path == smiles  # the store looks there first


# --------------------------------------------------------------------------- refusals


def edit_manifest(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads((path / "manifest.json").read_text())
    change(data)
    (path / "manifest.json").write_text(json.dumps(data))


def refused(path: Path, *words: str) -> str:
    with pytest.raises(PackError) as info:
        load_pack(path)
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


def test_missing_manifest(packs: dict[str, Path]) -> None:
    (packs["smiles"] / "manifest.json").unlink()
    refused(packs["smiles"], "no manifest.json")


def test_missing_directory(tmp_path: Path) -> None:
    refused(tmp_path / "nowhere", "no manifest.json")


def test_invalid_json(packs: dict[str, Path]) -> None:
    (packs["smiles"] / "manifest.json").write_text('{"name": "smiles",')
    refused(packs["smiles"], "not valid JSON")


def test_manifest_not_an_object(packs: dict[str, Path]) -> None:
    (packs["smiles"] / "manifest.json").write_text("[1, 2]")
    refused(packs["smiles"], "JSON object")


def test_wrong_format(packs: dict[str, Path]) -> None:
    edit_manifest(packs["smiles"], lambda m: m.update(format="something.else"))
    refused(packs["smiles"], "not a tagcli pack manifest", "something.else")


def test_newer_format_version(packs: dict[str, Path]) -> None:
    edit_manifest(packs["smiles"], lambda m: m.update(format_version=FORMAT_VERSION + 1))
    message = refused(packs["smiles"], "newer", str(FORMAT_VERSION + 1))
    assert "upgrade tagcli" in message


def test_missing_manifest_field(packs: dict[str, Path]) -> None:
    edit_manifest(packs["smiles"], lambda m: m.pop("hidden_size"))
    refused(packs["smiles"], "lacks hidden_size")


def test_bad_kind(packs: dict[str, Path]) -> None:
    edit_manifest(packs["smiles"], lambda m: m.update(kind="banana"))
    refused(packs["smiles"], "kind must be")


def test_unknown_input_kind(packs: dict[str, Path]) -> None:
    edit_manifest(packs["smiles"], lambda m: m["input"].update(kind="dna"))
    refused(packs["smiles"], "input.kind")


@pytest.mark.parametrize("field, value", [("tag_length", 4), ("hidden_size", 16)])
def test_tag_shape_mismatch(packs: dict[str, Path], field: str, value: int) -> None:
    edit_manifest(packs["smiles"], lambda m: m.update({field: value}))
    refused(packs["smiles"], "tag 'smiles' has shape", "manifest says")


def test_tags_file_with_wrong_tag_name(packs: dict[str, Path]) -> None:
    path = packs["smiles"] / "tags.safetensors"
    save_file({"other": load_file(path)["smiles"]}, path)
    refused(packs["smiles"], "tags.safetensors holds ['other']")


def test_nan_in_tags(packs: dict[str, Path]) -> None:
    path = packs["smiles"] / "tags.safetensors"
    tags = load_file(path)
    tags["smiles"][1, 2] = float("nan")
    save_file(tags, path)
    refused(packs["smiles"], "tag 'smiles'", "NaN")


def test_integer_tags(packs: dict[str, Path]) -> None:
    path = packs["smiles"] / "tags.safetensors"
    save_file({"smiles": torch.zeros(load_file(path)["smiles"].shape, dtype=torch.int32)}, path)
    refused(packs["smiles"], "dtype")


def test_missing_tags_file(packs: dict[str, Path]) -> None:
    (packs["smiles"] / "tags.safetensors").unlink()
    refused(packs["smiles"], "missing tags.safetensors")


def test_unreadable_tags_file(packs: dict[str, Path]) -> None:
    (packs["smiles"] / "tags.safetensors").write_bytes(b"\x00\x01garbage")
    refused(packs["smiles"], "tags.safetensors is not a readable safetensors file")


def test_missing_heads_file(packs: dict[str, Path]) -> None:
    (packs["logp"] / "heads.safetensors").unlink()
    refused(packs["logp"], "missing heads.safetensors")


def test_head_tensor_shape_mismatch(packs: dict[str, Path]) -> None:
    path = packs["logp"] / "heads.safetensors"
    heads = load_file(path)
    heads["logp.members.0.weight"] = torch.zeros(2, heads["logp.members.0.weight"].shape[1])
    save_file(heads, path)
    refused(packs["logp"], "head tensor 'members.0.weight' has shape (2,")


def test_head_tensor_missing(packs: dict[str, Path]) -> None:
    path = packs["logp"] / "heads.safetensors"
    heads = load_file(path)
    del heads["logp.members.0.bias"]
    save_file(heads, path)
    refused(packs["logp"], "heads.safetensors lacks ['logp.members.0.bias']")


def test_nan_in_head(packs: dict[str, Path]) -> None:
    path = packs["logp"] / "heads.safetensors"
    heads = load_file(path)
    heads["logp.members.0.bias"][0] = float("inf")
    save_file(heads, path)
    refused(packs["logp"], "head tensor 'members.0.bias'", "infinite")


def test_unknown_head_type(packs: dict[str, Path]) -> None:
    edit_manifest(packs["logp"], lambda m: m.update(head={"type": "transformer"}))
    refused(packs["logp"], "unknown head type 'transformer'", "regression")


def test_bad_head_spec(packs: dict[str, Path]) -> None:
    edit_manifest(
        packs["logp"], lambda m: m.update(head={"type": "classification", "target": "x", "classes": ["only"]})
    )
    refused(packs["logp"], "at least two 'classes'")


@pytest.mark.parametrize(
    "template, words",
    [
        ("{tag:smiles}{input:smiles}", ["lacks {tag:logp}"]),
        ("{input:smiles}", ["lacks {tag:logp}"]),
        ("{tag:smiles}{input:smiles}{tag:other}", ["{tag:logp}", "neither"]),
        ("{tag:protein}{input:protein}{tag:logp}", ["differ from the domains"]),
        ("{tag:smiles}{input:smiles}{tag:logp", ["malformed placeholder"]),
    ],
)
def test_template_problems(packs: dict[str, Path], template: str, words: list[str]) -> None:
    edit_manifest(packs["logp"], lambda m: m.update(template=template))
    refused(packs["logp"], *words)


@pytest.mark.parametrize(
    "template, has_tag, fits",
    [
        ("{tag:smiles}{input:smiles}{tag:logp}", True, True),
        ("{tag:logp}{input:smiles}", True, True),  # any layout: the method that trained it decides
        ("{input:smiles}", False, True),  # a linear probe
        ("{input:smiles}{tag:logp}", False, False),  # no vectors for its own tag
        ("{tag:smiles}{input:smiles}", True, False),  # vectors it never uses
    ],
)
def test_templates_must_use_exactly_the_tags_the_pack_has(template: str, has_tag: bool, fits: bool) -> None:
    check = lambda: check_template(PromptTemplate(template), "logp", ["smiles"], has_tag)  # noqa: E731
    if fits:
        check()
    else:
        with pytest.raises(PackError, match="does not fit"):
            check()


def test_function_pack_without_template(packs: dict[str, Path]) -> None:
    edit_manifest(packs["logp"], lambda m: m.pop("template"))
    refused(packs["logp"], "prompt template")


def test_malformed_requires_is_a_pack_error(base, packs: dict[str, Path]) -> None:
    edit_manifest(packs["logp"], lambda m: m.update(requires={"smiles": "sha256:abc"}))
    with pytest.raises(PackError, match="requires"):
        load_pack(packs["logp"])
        TagScorer("logp", base_model=base, pack_dirs=[str(packs["logp"].parent)])


def test_non_numeric_head_statistics_are_a_pack_error(packs: dict[str, Path]) -> None:
    edit_manifest(packs["logp"], lambda m: m["head"]["targets"][0].update(mean="abc"))
    refused(packs["logp"], "mean")


def _archive_with(tmp_path: Path, add: Callable[[tarfile.TarFile], None]) -> Path:
    archive = tmp_path / "evil.tagpack"
    with tarfile.open(archive, "w") as tar:
        add(tar)
    return archive


def test_archive_with_parent_path_member(packs: dict[str, Path], tmp_path: Path) -> None:
    def add(tar: tarfile.TarFile) -> None:
        for name in ("manifest.json", "tags.safetensors"):
            tar.add(packs["smiles"] / name, arcname=name)
        data = b"pwned"
        info = tarfile.TarInfo("../evil")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    archive = _archive_with(tmp_path, add)
    refused(archive, "unexpected member '../evil'")
    assert not (tmp_path / "evil").exists() and not (archive.parent.parent / "evil").exists()


def test_archive_with_symlink_member(packs: dict[str, Path], tmp_path: Path) -> None:
    def add(tar: tarfile.TarFile) -> None:
        tar.add(packs["smiles"] / "tags.safetensors", arcname="tags.safetensors")
        info = tarfile.TarInfo("manifest.json")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)

    refused(_archive_with(tmp_path, add), "unexpected member 'manifest.json'")


def test_archive_that_is_not_a_tar_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "broken.tagpack"
    archive.write_bytes(b"this is not a tar file" * 50)
    with pytest.raises(PackError, match="not a readable tar file"):
        load_pack(archive)


def test_archive_that_is_not_a_tar_is_refused_in_one_line(tmp_path: Path) -> None:
    archive = tmp_path / "broken.tagpack"
    archive.write_bytes(b"this is not a tar file" * 50)
    refused(archive, "not a readable tar file")


# --------------------------------------------------------------------------- base-model fingerprint


def test_check_base_model(base, packs: dict[str, Path]) -> None:
    pack = load_pack(packs["smiles"])
    pack.check_base_model(base.id, base.fingerprint)  # the right model passes
    with pytest.raises(PackError) as info:
        pack.check_base_model("other-model", OTHER_FINGERPRINT)
    message = str(info.value)
    assert "pack 'smiles' was trained for base model" in message and "other-model" in message
    assert base.fingerprint[:19] in message and "\n" not in message
    assert info.value.hint == f"pass --base-model {base.id}"


@pytest.mark.parametrize("wrong", ["logp", "smiles"])
def test_scorer_refuses_packs_for_another_model(base, tmp_path: Path, wrong: str) -> None:
    """Either the function pack or its domain pack records another base model."""
    smiles = domain_pack(base, "smiles", seed=1, fingerprint=OTHER_FINGERPRINT if wrong == "smiles" else None)
    logp = function_pack(base, "logp", [smiles], fingerprint=OTHER_FINGERPRINT if wrong == "logp" else None)
    save_pack(smiles, tmp_path / "p" / "smiles")
    save_pack(logp, tmp_path / "p" / "logp")
    with pytest.raises(PackError, match=f"pack '{wrong}' was trained for base model"):
        TagScorer("logp", base_model=base, pack_dirs=[str(tmp_path / "p")], device="cpu")
    # the same refusal when the base model is named by its directory
    with pytest.raises(PackError, match=f"pack '{wrong}' was trained for base model"):
        TagScorer(str(tmp_path / "p" / "logp"), base_model=str(base.path), device="cpu", dtype="float32")


def test_save_pack_validates_the_manifest(base, tmp_path: Path) -> None:
    pack = domain_pack(base, "smiles")
    pack.manifest.name = "Bad Name"
    with pytest.raises(PackError, match="bad pack name"):
        save_pack(pack, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_manifest_json_round_trip(base) -> None:
    manifest = domain_pack(base, "smiles").manifest
    assert Manifest.from_dict(json.loads(manifest.to_json()), "here") == manifest
