"""Write the result of a training run as a tag pack (see `tagcli.packs.format`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields

from tagcli.basemodel.load import BaseModel
from tagcli.core.domains import DomainInput
from tagcli.core.prompt import PromptTemplate
from tagcli.packs.format import TagPack, tag_digest
from tagcli.packs.manifest import Manifest
from tagcli.train.config import TrainConfig
from tagcli.train.loop import Trainer


def make_pack(
    config: TrainConfig,
    base: BaseModel,
    trainer: Trainer,
    template: PromptTemplate,
    specs: Mapping[str, DomainInput],
    domain_packs: Mapping[str, TagPack],
    seconds: float,
) -> TagPack:
    """The trained tag (and head) as a pack, with everything needed to reproduce and trust it."""
    model, train_set, val_set = trainer.model, trainer.train_set, trainer.val_set
    name = config.tag_name
    manifest = Manifest(
        name=name,
        kind=config.stage_info.trains,
        version=config.version,
        tag_length=trainer.method.tag_length,
        hidden_size=base.hidden_size,
        base_model={"id": base.id, "fingerprint": base.fingerprint},
        description=config.description,
        domains=list(config.domains) if config.trains_function else [],
        input=None if config.trains_function else asdict(specs[name]),
        template=template.text if config.trains_function else None,
        requires={
            d: {"version": p.manifest.version, "sha256": tag_digest(p.tags[d])}
            for d, p in domain_packs.items()
            if d in template.tags
        },
        method=config.method,
        symmetric=config.symmetric,
        training={
            "stage": config.stage,
            "data": {
                "train": config.data,
                "val": config.val or f"{config.val_fraction:.0%} of train",
                "train_rows": len(train_set.rows),
                "val_rows": len(val_set.rows),
                "dropped_rows": sum(train_set.dropped.values()) + sum(val_set.dropped.values()),
                "dropped": {"train": dict(train_set.dropped), "val": dict(val_set.dropped)},
                "targets": config.targets,
            },
            # The run's settings that shape the result, then the head's and the method's own options.
            "hyperparameters": {f.name: getattr(config, f.name) for f in fields(config) if f.metadata.get("recorded")}
            | asdict(config.head_options)
            | asdict(config.method_options),
            "seed": config.seed,
            "steps": trainer.step,
            "best_step": trainer.best["step"],
            "seconds": round(seconds, 1),
            "device": str(base.device),
            "dtype": str(base.dtype).removeprefix("torch."),
            "history": trainer.history,
        },
        metrics={"val": trainer.best["metrics"] or {}},
    )
    head = trainer.head
    tags = {name: model.tags[name].detach().float().cpu()} if trainer.method.tag_length else {}
    return TagPack(manifest, tags, head.cpu() if head else None)
