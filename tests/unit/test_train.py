"""The training loop on the tiny model (fp32, CPU, a few steps per run)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

import tagcli.train as train_module
from helpers import PAPER_HEAD, PROTEINS, SMILES, domain_pack
from tagcli.core.batching import epoch_batches
from tagcli.core.model import TaggedModel
from tagcli.core.prompt import PromptEncoder, PromptTemplate, collate
from tagcli.core.readout import PAPER
from tagcli.errors import UsageError
from tagcli.packs.format import load_pack, save_pack, tag_digest
from tagcli.scoring.scorer import TagScorer
from tagcli.train import TrainConfig, init_tag, train
from tagcli.train.data import Examples
from tagcli.train.features import readouts
from tagcli.train.methods import method_for


def molecules(n: int = 40, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        "C" * int(rng.integers(1, 12)) + str(rng.choice(["O", "N", "Cl", "c1ccccc1", "", "C(=O)O"])) for _ in range(n)
    ]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Labeled molecules: y = number of characters, z = hetero atoms, label = has oxygen."""
    values = molecules()
    frame = pd.DataFrame(
        {
            "smiles": values,
            "y": [float(len(v)) for v in values],
            "z": [float(v.count("O") + 2 * v.count("N")) for v in values],
            "label": ["oxygen" if "O" in v else "none" for v in values],
        }
    )
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    return path


def config(stage: int, data: Path, out: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = dict(
        data=str(data),
        out=str(out),
        domains=["smiles"],
        tag_length=2,
        max_steps=4,
        batch_size=8,
        eval_every=2,
        checkpoint_every=2,
        patience=0,
        device="cpu",
        dtype="float32",
        lr=1e-3,
        head_lr=1e-3,
    )
    if stage > 1:
        values.update(function="fn", targets=["y"], init_samples=512)
        if overrides.get("task", "regression") in ("regression", "classification"):
            values.update(PAPER_HEAD)
    values.update(overrides)
    return TrainConfig.from_flat({"stage": stage, **values})


class Recorder:
    """Captures the TaggedModel that `train` builds (by patching the class train.py uses)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.models: list[TaggedModel] = []
        self.losses: list[tuple[Any, torch.Tensor]] = []
        recorder = self

        class Recording(TaggedModel):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                recorder.models.append(self)

            def next_token_loss(self, batch, targets):
                recorder.losses.append((batch, targets.clone()))
                return super().next_token_loss(batch, targets)

        monkeypatch.setattr(train_module, "TaggedModel", Recording)

    @property
    def model(self) -> TaggedModel:
        assert len(self.models) == 1
        return self.models[0]


def step_losses(events: list[dict]) -> list[float]:
    return [e["loss"] for e in events if e["event"] == "step"]


# --------------------------------------------------------------------------- init and config


def test_init_tag_is_the_mean_embedding_at_the_mean_norm(base) -> None:
    tag = init_tag(base.model, 3)
    table = base.model.get_input_embeddings().weight.detach().float()
    assert tag.shape == (3, base.hidden_size) and tag.dtype == torch.float32
    for row in tag:
        torch.testing.assert_close(row.norm(), table.norm(dim=1).mean())
        cosine = torch.nn.functional.cosine_similarity(row, table.mean(0), dim=0)
        assert cosine.item() == pytest.approx(1.0, abs=1e-6)
    # a fresh tensor, not a view of the embedding table
    tag.add_(1.0)
    assert not torch.equal(init_tag(base.model, 3), tag)


@pytest.mark.parametrize(
    "stage, overrides, message",
    [
        (1, {"domains": []}, "at least one --domain"),
        (1, {"domains": ["smiles", "protein"]}, "one domain tag at a time"),
        (2, {"function": None}, "needs --function and --target"),
        (2, {"targets": []}, "needs --function and --target"),
        (2, {"domains": ["protein", "smiles"]}, "use stage 3"),
        (2, {"batch_size": 0}, "--batch-size must be at least 1, got 0"),
        (2, {"tag_length": 0}, "--tag-length must be from 1 to 1024, got 0"),
        (1, {"method": "prompt-tuning"}, "stages 2 and 3"),
        (2, {"method": "linear-probe", "task": "text"}, "no text output"),
        (2, {"version": "../../evil"}, "bad --version"),
        (2, {"task": "classification", "calibrate": True}, "--calibrate is an option of the regression head"),
    ],
)
def test_config_errors(tmp_path: Path, stage: int, overrides: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        method_for(config(stage, tmp_path / "x.csv", tmp_path / "out", **overrides))


@pytest.mark.parametrize(
    "method, template, fits",
    [
        ("tag-llm", "{tag:smiles}{input:smiles}{tag:fn}", True),
        ("tag-llm", "{tag:smiles}{input:smiles}{tag:fn}.", False),  # the function tag closes the prompt
        ("tag-llm", "{input:smiles}", False),
        ("prompt-tuning", "{tag:fn}{input:smiles}", True),
        ("prompt-tuning", "{tag:smiles}{input:smiles}{tag:fn}", False),  # exactly one tag, its own
        ("linear-probe", "{input:smiles}", True),
        ("linear-probe", "{input:smiles}{tag:fn}", False),
        ("tag-llm", "{tag:protein}{input:protein}{tag:fn}", False),  # inputs are not the domains
    ],
)
def test_templates_must_fit_the_method(tmp_path: Path, method: str, template: str, fits: bool) -> None:
    def check():
        return method_for(config(2, tmp_path / "x.csv", tmp_path / "fn", method=method, template=template)).template()  # noqa: E731

    if fits:
        assert check().text == template
    else:
        with pytest.raises(UsageError, match="does not fit"):
            check()


@pytest.mark.slow
def test_stage1_template_must_end_with_the_input(base, data: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="stage-1 template"):
        train(config(1, data, tmp_path / "smiles", template="{input:smiles}{tag:smiles} end"), base)


@pytest.mark.slow
def test_missing_target_column(base, data: Path, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles"), tmp_path / "smiles")
    with pytest.raises(UsageError, match="no target column 'nope'"):
        train(config(2, data, tmp_path / "fn", targets=["nope"]), base)


# --------------------------------------------------------------------------- stage 1


@pytest.mark.slow
def test_stage1_targets_are_the_input_tokens_only(
    base, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(monkeypatch)
    template = "SMILES {tag:smiles} is {input:smiles}"
    train(config(1, data, tmp_path / "smiles", template=template, tag_length=3, max_steps=2, eval_every=100), base)
    assert recorder.losses
    for batch, targets in recorder.losses:
        real = batch.attention_mask.bool()
        on_tag = batch.slots >= 0
        assert on_tag.any() and (targets[on_tag] == -100).all()  # never a tag position
        assert (targets[~real] == -100).all()  # never padding
        # each row's targets are exactly its trailing input tokens, never the template text
        for i in range(len(targets)):
            length = int(real[i].sum())
            has_target = (targets[i] != -100).nonzero().flatten().tolist()
            assert has_target, "every row has input tokens to predict"
            assert has_target == list(range(has_target[0], length))
            assert targets[i, has_target].tolist() == batch.input_ids[i, has_target].tolist()
            assert (batch.slots[i, : has_target[0]] >= 0).sum() == 3  # the whole tag comes before
            assert batch.slots[i, has_target[0] - 1] == -1  # the text " is " separates tag and input
    # the input tokens really are the SMILES: decode one row's targets back
    batch, targets = recorder.losses[0]
    row = targets[0][targets[0] != -100].tolist()
    assert base.tokenizer.decode(row) in set(molecules())


@pytest.mark.slow
def test_stage1_loss_decreases_and_only_the_tag_changes(
    base, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(monkeypatch)
    backbone = {k: v.clone() for k, v in base.model.state_dict().items()}
    events: list[dict] = []
    # One batch holds every training row, so every step's loss is on the same rows.
    pack = train(
        config(1, data, tmp_path / "smiles", max_steps=12, batch_size=64, lr=1e-2, eval_every=4), base, events.append
    )
    losses = step_losses(events)
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05
    evals = [e["metrics"]["loss"] for e in events if e["event"] == "eval"]
    assert evals[-1] < evals[0]
    after = base.model.state_dict()
    assert after.keys() == backbone.keys()
    assert all(torch.equal(after[k], v) for k, v in backbone.items())
    assert not any(p.requires_grad for p in base.model.parameters())
    assert not torch.equal(recorder.model.tags["smiles"].detach(), init_tag(base.model, 2))
    # the pack: a domain pack whose tag is the trained one
    loaded = load_pack(tmp_path / "smiles")
    assert loaded.manifest.kind == "domain" and loaded.head is None
    assert loaded.manifest.domain_input().kind == "smiles"
    assert loaded.manifest.base_model == {"id": base.id, "fingerprint": base.fingerprint}
    assert torch.equal(loaded.tags["smiles"], pack.tags["smiles"])
    assert loaded.manifest.training["stage"] == 1 and loaded.manifest.training["steps"] == 12
    assert loaded.manifest.metrics["val"]["loss"] == pytest.approx(min(evals))


# --------------------------------------------------------------------------- stage 2


@pytest.mark.slow
def test_stage2_trains_only_the_function_tag_and_head(
    base, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    domain = domain_pack(base, "smiles", seed=3)
    save_pack(domain, tmp_path / "packs" / "smiles")
    recorder = Recorder(monkeypatch)
    backbone = {k: v.clone() for k, v in base.model.state_dict().items()}
    snapshots: list[dict[str, torch.Tensor]] = []

    def on_progress(event: dict) -> None:
        if event["event"] == "step":
            snapshots.append({name: t.detach().clone() for name, t in recorder.model.tags.items()})

    pack = train(
        config(2, data, tmp_path / "out" / "fn", pack_dirs=[str(tmp_path / "packs")], max_steps=3), base, on_progress
    )
    model = recorder.model
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "tags.fn",
        "heads.fn.members.0.weight",
        "heads.fn.members.0.bias",
    }
    start = init_tag(base.model, 2)
    assert len(snapshots) == 3
    for snapshot in snapshots:
        assert torch.equal(snapshot["smiles"], domain.tags["smiles"])  # the domain tag never moves
        assert not torch.equal(snapshot["fn"], start)  # the function tag does
    assert all(torch.equal(base.model.state_dict()[k], v) for k, v in backbone.items())
    m = pack.manifest
    assert m.kind == "function" and m.domains == ["smiles"] and m.template == "{tag:smiles}{input:smiles}{tag:fn}"
    assert m.requires == {"smiles": {"version": "0.1.0", "sha256": tag_digest(domain.tags["smiles"])}}
    assert m.head["type"] == "regression" and m.head["targets"][0]["name"] == "y"
    # the head's target statistics are those of the training labels
    y = pd.read_csv(data)["y"]
    assert 0.5 * y.mean() < m.head["targets"][0]["mean"] < 1.5 * y.mean()


@pytest.mark.slow
def test_a_readout_the_function_tag_cannot_reach_skips_the_tag_steps(base, data: Path, tmp_path: Path) -> None:
    """input-mean reads the inputs only, which a causal model computes before the function tag: training
    the tag could not change the head's features, so `train` says so and fits the head straight away."""
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "packs" / "smiles")
    events: list[dict] = []
    packs = [str(tmp_path / "packs")]
    pack = train(
        config(2, data, tmp_path / "out" / "fn", pack_dirs=packs, max_steps=3, readout="input-mean@1,2"),
        base,
        events.append,
    )
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("--readout input-mean@1,2 reads no position of the function tag" in w for w in warnings)
    assert step_losses(events) == []
    assert torch.equal(pack.tags["fn"], init_tag(base.model, 2))  # never trained
    assert pack.manifest.head["readout"] == {"pools": ["input-mean"], "layers": [1, 2]}
    assert pack.manifest.metrics["val"]  # the final head was fitted and validated


@pytest.mark.slow
def test_stage2_loss_decreases_on_a_learnable_target(base, tmp_path: Path) -> None:
    """Training fits row-specific labels that the ridge start cannot.

    On the tiny model, length-like targets are linear in the readout, so the ridge-initialised head
    already fits them and there is nothing left to learn; per-row noise labels can only be fitted
    by training. One batch holds every row, so each step's loss is on the same rows.
    """
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    values = molecules()
    noise = np.random.default_rng(1).normal(size=len(values))
    pd.DataFrame({"smiles": values, "noise": noise}).to_csv(tmp_path / "d.csv", index=False)
    events: list[dict] = []
    cfg = config(
        2,
        tmp_path / "d.csv",
        tmp_path / "fn",
        targets=["noise"],
        batch_size=64,
        max_steps=12,
        lr=1e-4,
        head_lr=1e-2,
        eval_every=100,
    )
    train(cfg, base, events.append)
    losses = step_losses(events)
    assert len(losses) == 12
    assert all(later < losses[0] for later in losses[1:])
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])


@pytest.mark.slow
def test_stage2_pack_loads_and_scores(base, data: Path, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    pack = train(config(2, data, tmp_path / "fn", targets=["y", "z"]), base)
    loaded = load_pack(tmp_path / "fn")
    assert loaded.head.output_columns() == ["pred_y", "pred_z", "domain_score", "in_domain"]
    assert torch.equal(loaded.tags["fn"], pack.tags["fn"])
    assert set(loaded.manifest.metrics["val"]) >= {"mse", "pearson", "standardized_mse", "targets"}
    assert loaded.manifest.training["data"]["train_rows"] + loaded.manifest.training["data"]["val_rows"] == 40
    table = pa.table({"smiles": SMILES[:3] + ["C1CC"]})
    for base_model in (base, str(base.path)):
        scorer = TagScorer("fn", base_model=base_model, pack_dirs=[str(tmp_path)], device="cpu", dtype="float32")
        out = scorer(table)
        assert out.column("status").to_pylist() == ["ok", "ok", "ok", "invalid"]
        assert all(v is not None and np.isfinite(v) for v in out.column("pred_y").to_pylist()[:3])


@pytest.mark.slow
def test_classification_training(base, data: Path, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    pack = train(
        config(2, data, tmp_path / "oxy", function="oxy", targets=["label"], task="classification", max_steps=3), base
    )
    loaded = load_pack(tmp_path / "oxy")
    assert loaded.manifest.head == {
        "type": "classification",
        "target": "label",
        "classes": ["none", "oxygen"],
        "readout": {"pools": ["tag-last"], "layers": []},
        "members": 1,
        "hidden_units": 0,
        "domain_components": 16,
        "version": 2,
    }
    assert set(loaded.manifest.metrics["val"]) >= {"accuracy", "roc_auc", "log_loss"}
    hidden = torch.randn(6, base.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        predicted = loaded.head.predict(SimpleNamespace(hidden=hidden))
    torch.testing.assert_close(predicted["prob_none"] + predicted["prob_oxygen"], torch.ones(6))
    assert set(predicted["pred_label"]) <= {"none", "oxygen"}
    out = TagScorer("oxy", base_model=base, pack_dirs=[str(tmp_path)])(pd.DataFrame({"smiles": SMILES}))
    np.testing.assert_allclose(out["prob_none"] + out["prob_oxygen"], 1.0, atol=1e-6)
    assert pack.name == "oxy"


@pytest.mark.slow
def test_classification_needs_two_classes(base, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles"), tmp_path / "smiles")
    pd.DataFrame({"smiles": SMILES, "label": ["a"] * len(SMILES)}).to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(UsageError, match="at least two classes"):
        train(config(2, tmp_path / "one.csv", tmp_path / "c", targets=["label"], task="classification"), base)


def _data_with_bad_rows(base, tmp_path: Path, seed: int = 0) -> pd.DataFrame:
    save_pack(domain_pack(base, "smiles"), tmp_path / "smiles")
    values = molecules(20, seed)
    frame = pd.DataFrame({"smiles": values, "y": [float(len(v)) for v in values], "label": ["a", "b"] * 10})
    frame.loc[2, "smiles"] = "C1CC"
    frame.loc[5, "y"] = np.nan
    frame.loc[5, "label"] = None
    return frame


@pytest.mark.slow
def test_rows_with_bad_inputs_or_missing_labels_are_dropped(base, tmp_path: Path) -> None:
    frame = _data_with_bad_rows(base, tmp_path)
    frame.to_parquet(tmp_path / "d.parquet", index=False)  # missing labels are nulls
    _data_with_bad_rows(base, tmp_path, seed=7).to_parquet(tmp_path / "v.parquet", index=False)
    data, val = str(tmp_path / "d.parquet"), str(tmp_path / "v.parquet")
    pack = train(config(2, data, tmp_path / "fn", val=val, max_steps=1), base)
    counts = pack.manifest.training["data"]
    assert (counts["train_rows"], counts["val_rows"], counts["dropped_rows"]) == (18, 18, 4)
    pack = train(
        config(
            2, data, tmp_path / "cls", function="cls", targets=["label"], task="classification", val=val, max_steps=1
        ),
        base,
    )
    assert pack.head.classes == ["a", "b"]
    assert pack.manifest.training["data"]["dropped_rows"] == 4


@pytest.mark.slow
def test_blank_regression_label_in_csv_is_dropped(base, tmp_path: Path) -> None:
    _data_with_bad_rows(base, tmp_path).to_csv(tmp_path / "d.csv", index=False)
    _data_with_bad_rows(base, tmp_path, seed=7).to_csv(tmp_path / "v.csv", index=False)
    data = str(tmp_path / "d.csv")
    pack = train(config(2, data, tmp_path / "fn", val=str(tmp_path / "v.csv"), max_steps=1), base)
    assert pack.manifest.training["data"]["dropped_rows"] == 4


@pytest.mark.slow
def test_blank_class_label_in_csv_is_not_a_class(base, tmp_path: Path) -> None:
    _data_with_bad_rows(base, tmp_path).to_csv(tmp_path / "d.csv", index=False)
    _data_with_bad_rows(base, tmp_path, seed=7).to_csv(tmp_path / "v.csv", index=False)
    data, val = str(tmp_path / "d.csv"), str(tmp_path / "v.csv")
    pack = train(
        config(
            2, data, tmp_path / "cls", function="cls", targets=["label"], task="classification", val=val, max_steps=1
        ),
        base,
    )
    assert pack.head.classes == ["a", "b"]


@pytest.mark.slow
def test_stage3_pairs(base, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=1), tmp_path / "smiles")
    save_pack(domain_pack(base, "protein", seed=2), tmp_path / "protein")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "sequence": [PROTEINS[i % 4] for i in range(16)],
            "smiles": [SMILES[i % 8] for i in range(16)],
            "kd": rng.normal(size=16),
        }
    )
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    train(
        config(
            3, tmp_path / "pairs.csv", tmp_path / "bind", domains=["protein", "smiles"], function="bind", targets=["kd"]
        ),
        base,
    )
    loaded = load_pack(tmp_path / "bind")
    assert loaded.manifest.template == "{tag:protein}{input:protein}{tag:smiles}{input:smiles}{tag:bind}"
    assert set(loaded.manifest.requires) == {"protein", "smiles"}
    out = TagScorer("bind", base_model=base, pack_dirs=[str(tmp_path)])(frame)
    assert (out["status"] == "ok").all() and out["pred_kd"].notna().all()


@pytest.mark.slow
def test_prompt_tuning_baseline_has_the_tag_budget_in_front(
    base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_pack(domain_pack(base, "smiles", seed=1), tmp_path / "smiles")
    save_pack(domain_pack(base, "protein", seed=2), tmp_path / "protein")
    frame = pd.DataFrame(
        {
            "sequence": [PROTEINS[i % 4] for i in range(16)],
            "smiles": [SMILES[i % 8] for i in range(16)],
            "kd": np.arange(16.0),
        }
    )
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    recorder = Recorder(monkeypatch)
    train(
        config(
            3,
            tmp_path / "pairs.csv",
            tmp_path / "pt",
            domains=["protein", "smiles"],
            function="pt",
            targets=["kd"],
            method="prompt-tuning",
        ),
        base,
    )
    loaded = load_pack(tmp_path / "pt")
    # k = 3 tags (two domains + function) of p = 2 vectors each, all in one soft prompt in front.
    assert loaded.tags["pt"].shape == (6, base.hidden_size) and loaded.manifest.tag_length == 6
    assert loaded.manifest.template == "{tag:pt}{input:protein} {input:smiles}"
    assert loaded.manifest.method == "prompt-tuning" and loaded.manifest.requires == {}
    assert not torch.equal(recorder.models[0].tags["pt"].detach(), init_tag(base.model, 6))  # it trained
    out = TagScorer("pt", base_model=base, pack_dirs=[str(tmp_path)])(frame)
    assert (out["status"] == "ok").all() and out["pred_kd"].notna().all()


@pytest.mark.slow
def test_linear_probe_baseline_has_no_tags(base, data: Path, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    pack = train(config(2, data, tmp_path / "probe", function="probe", method="linear-probe"), base)
    loaded = load_pack(tmp_path / "probe")
    assert loaded.tags == {} and loaded.manifest.tag_length == 0 and loaded.manifest.template == "{input:smiles}"
    assert pack.manifest.training["steps"] == 0  # the ridge fit is the probe
    # Nothing is fitted or validated before the final head: its validation is the only one.
    assert [h.get("head") for h in pack.manifest.training["history"]] == ["final"]
    out = TagScorer("probe", base_model=base, pack_dirs=[str(tmp_path)])(pa.table({"smiles": SMILES[:4]}))
    # The probe reads the plain prompt's last token: predictions vary with the molecule.
    predictions = out.column("pred_y").to_pylist()
    assert len(set(predictions)) == 4 and out.column("status").to_pylist() == ["ok"] * 4


# --------------------------------------------------------------------------- checkpoints


class Interrupt(Exception):
    pass


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    pack = load_pack(path)
    return {"tag": pack.tags[pack.name], **{f"head.{k}": v for k, v in pack.head.state_dict().items()}}


@pytest.mark.slow
def test_resume_gives_the_same_result_as_an_uninterrupted_run(base, data: Path, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "packs" / "smiles")
    common = dict(
        pack_dirs=[str(tmp_path / "packs")],
        max_steps=6,
        batch_size=8,
        checkpoint_every=2,
        eval_every=2,
        lr=3e-3,
        head_lr=3e-3,
    )

    straight: list[dict] = []
    train(config(2, data, tmp_path / "a" / "fn", **common), base, straight.append)

    def stop_at_step_5(event: dict) -> None:
        if event["event"] == "step" and event["step"] == 5:
            raise Interrupt  # after step 5's update, before its checkpoint: the last checkpoint is step 4

    with pytest.raises(Interrupt):
        train(config(2, data, tmp_path / "b" / "fn", **common), base, stop_at_step_5)
    assert not (tmp_path / "b" / "fn").exists()
    assert json.loads((tmp_path / "b" / "fn.ckpt" / "state.json").read_text())["step"] == 4

    resumed: list[dict] = []
    train(config(2, data, tmp_path / "b" / "fn", resume=True, **common), base, resumed.append)
    assert {"event": "resume", "step": 4} in resumed
    assert [e["step"] for e in resumed if e["event"] == "step"] == [5, 6]

    # the same per-step losses after the resume point ...
    assert step_losses(resumed) == pytest.approx(step_losses(straight)[4:], rel=1e-5, abs=1e-7)
    # ... the same final (last-step) state in the checkpoints ...
    a, b = (load_file(tmp_path / run / "fn.ckpt" / "state.safetensors") for run in ("a", "b"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5, msg=key)
    # ... and the same pack
    pa_, pb = _tensors(tmp_path / "a" / "fn"), _tensors(tmp_path / "b" / "fn")
    for key in pa_:
        torch.testing.assert_close(pb[key], pa_[key], atol=1e-6, rtol=1e-5, msg=key)
    ma, mb = load_pack(tmp_path / "a" / "fn").manifest, load_pack(tmp_path / "b" / "fn").manifest
    assert mb.training["steps"] == ma.training["steps"] == 6
    assert mb.training["best_step"] == ma.training["best_step"]
    assert [h["step"] for h in mb.training["history"]] == [h["step"] for h in ma.training["history"]]


@pytest.mark.slow
def test_resume_after_a_finished_run_does_not_train_again(base, data: Path, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    first = train(config(2, data, tmp_path / "fn", max_steps=2), base)
    events: list[dict] = []
    second = train(config(2, data, tmp_path / "fn", max_steps=2, resume=True), base, events.append)
    assert step_losses(events) == []
    assert torch.equal(second.tags["fn"], first.tags["fn"])


@pytest.mark.slow
def test_checkpoints_hold_no_pickles(base, data: Path, tmp_path: Path) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    train(config(2, data, tmp_path / "fn", max_steps=2), base)
    ckpt = tmp_path / "fn.ckpt"
    assert sorted(p.name for p in ckpt.iterdir()) == ["features", "state.json", "state.safetensors"]
    cached = [p for p in (ckpt / "features").rglob("*") if p.is_file()]
    assert cached and all(p.suffix == ".safetensors" for p in cached)  # feature blocks: tensors only
    state = load_file(tmp_path / "fn.ckpt" / "state.safetensors")
    assert "current.tag" in state and any(k.startswith("optimizer.") for k in state)


# --------------------------------------------------------------------------- text answers


@pytest.mark.slow
def test_text_function_trains_on_the_answer_and_generates(
    base, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_pack(domain_pack(base, "smiles", seed=3), tmp_path / "smiles")
    recorder = Recorder(monkeypatch)
    train(
        config(2, data, tmp_path / "says", function="says", targets=["label"], task="text", max_answer_tokens=4), base
    )
    # Only the answer tokens (and EOS) carry a loss: the prompt, tags and padding never do.
    batch, targets = recorder.losses[0]
    for row in range(len(targets)):
        labeled = (targets[row] != -100).nonzero().flatten()
        assert len(labeled) > 0 and (batch.slots[row, labeled] == -1).all() and labeled.min() > batch.readout[row]
    loaded = load_pack(tmp_path / "says")
    assert loaded.manifest.head == {"type": "text", "target": "label", "max_new_tokens": 4}
    assert set(loaded.manifest.metrics["val"]) >= {"loss", "exact_match", "char_error_rate"}
    # exact match and character error rate (edits per true character) of decoded answers
    metrics = loaded.head.target_metrics(["C6H6", "CH4", None], {"pred_label": ["C6H6", "CH3 ", "x"]})
    assert metrics == [{"n": 2, "exact_match": 0.5, "char_error_rate": 1 / 7}]
    out = TagScorer("says", base_model=base, pack_dirs=[str(tmp_path)])(pa.table({"smiles": SMILES[:3] + ["C1CC"]}))
    answers = out.column("pred_label").to_pylist()
    assert all(isinstance(a, str) for a in answers[:3]) and answers[3] is None
    assert out.column("status").to_pylist() == ["ok", "ok", "ok", "invalid"]


def test_batched_generation_equals_one_row_at_a_time(base) -> None:
    from helpers import domain_pack as make_domain
    from tagcli.core.prompt import PromptEncoder, PromptTemplate, collate

    model = TaggedModel(
        base.model, {"smiles": make_domain(base, "smiles", seed=1).tags["smiles"], "says": init_tag(base.model, 2)}
    )
    encoder = PromptEncoder(base.tokenizer, model.tag_table)
    rows = encoder.encode(
        PromptTemplate("{tag:smiles}{input:smiles}{tag:says}"), {"smiles": encoder.tokenize_inputs(SMILES[:5])}
    )
    alone = [model.generate(collate([r], encoder.pad_id), 6)[0] for r in rows]
    for side in ("right", "left"):
        assert model.generate(collate(rows, encoder.pad_id, side), 6) == alone


# --------------------------------------------------------------------------- batching


@pytest.mark.parametrize(
    "template",
    [
        "{tag:protein}{input:protein}{tag:smiles}{input:smiles}{tag:fn}",  # tag-llm pairs: proteins shared
        "{tag:fn}{input:protein} {input:smiles}",  # prompt tuning: soft prompt in front
        "{input:protein} {input:smiles}",  # linear probe
        "{tag:smiles}{input:smiles}{tag:fn}",  # one input
    ],
)
def test_training_readouts_equal_the_full_prompt_readout(base, template: str) -> None:
    torch.manual_seed(0)
    parsed = PromptTemplate(template)
    model = TaggedModel(base.model, {name: torch.randn(2, base.hidden_size) for name in parsed.tags})
    encoder = PromptEncoder(base.tokenizer, model.tag_table)
    n = 24
    values = {"protein": [PROTEINS[i % 3] for i in range(n)], "smiles": [SMILES[i % 8] for i in range(n)]}
    inputs = {d: encoder.tokenize_inputs(values[d]) for d in parsed.inputs}
    examples = Examples(encoder.encode(parsed, inputs), [0.0] * n, [0.0] * n, parsed, inputs)
    indices = [7, 0, 23, 5, 12, 3, 18, 9, 1, 14]
    seen = []
    for chunk, hidden in readouts(model, encoder, PAPER, examples, indices, batch_size=4):
        full = model.readout(collate([examples.rows[indices[j]] for j in chunk], encoder.pad_id))
        torch.testing.assert_close(hidden, full, atol=1e-5, rtol=1e-4)
        seen += chunk
    assert sorted(seen) == list(range(len(indices)))


def test_epoch_batches_cover_every_row_once_with_little_padding() -> None:
    lengths = np.random.default_rng(0).integers(5, 1000, size=1000).tolist()
    batches = epoch_batches(lengths, 16, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert sorted(len(b) for b in batches) == [1000 % 16] + [16] * (1000 // 16)
    assert epoch_batches(lengths, 16, seed=3) == batches and epoch_batches(lengths, 16, seed=4) != batches

    def padded(batches: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    plain = [list(range(k, min(k + 16, 1000))) for k in range(0, 1000, 16)]  # random lengths in file order
    assert padded(batches) < 0.6 * padded(plain)
    # Still shuffled: the batch order does not follow length.
    widths = [max(lengths[i] for i in b) for b in batches]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)
