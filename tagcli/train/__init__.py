"""Training: Tag-LLM's three stages over a frozen base model, each ending in a tag pack.

    stage 1  domain tag   next-token loss on the domain's own tokens, "{tag:D}{input:D}"
    stage 2  function tag + head on labeled rows of one domain, domain tag frozen
    stage 3  function tag + head on rows with several domains (e.g. protein + SMILES pairs)

    config.py    TrainConfig (CLI options, TOML keys) and the stages as data
    methods/     how a function is conditioned: tag-llm, prompt-tuning, linear-probe (registered)
    data.py      reading, splitting, cleaning and encoding rows; labels parsed by the head
    features.py  readout features (the scorer's own batching) and the head's closed-form fit
    loop.py      the training loop: steps, validation, early stopping, checkpoints
    pack.py      the finished run as a tag pack

Training imports the model core (`tagcli.core`), never the scorer.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from tagcli.basemodel.load import BaseModel, load_base_model
from tagcli.core.domains import INPUT_KINDS, DomainInput
from tagcli.core.heads import HEADS, Head
from tagcli.core.model import TaggedModel
from tagcli.core.prompt import PromptEncoder
from tagcli.errors import UsageError
from tagcli.packs.format import TagPack, save_pack
from tagcli.packs.store import PackStore
from tagcli.train.config import STAGES, TrainConfig
from tagcli.train.data import check_targets, encode_examples, split_tables
from tagcli.train.features import fit_head
from tagcli.train.loop import Progress, Trainer
from tagcli.train.methods import METHODS, method_for, register_method
from tagcli.train.pack import make_pack

__all__ = ["METHODS", "STAGES", "TrainConfig", "init_tag", "register_method", "train"]


def init_tag(lm: torch.nn.Module, length: int) -> torch.Tensor:
    """The paper's initialisation: the mean token embedding, rescaled to the mean embedding norm."""
    table = lm.get_input_embeddings().weight.detach().float()
    mean = table.mean(0)
    return (mean / mean.norm() * table.norm(dim=1).mean()).expand(length, -1).clone()


def train(config: TrainConfig, base: BaseModel | None = None, on_progress: Progress | None = None) -> TagPack:
    """Run one stage end to end and write its pack to `config.out`."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    method = method_for(config)
    template = method.template()
    if config.trains_function and config.task not in HEADS:
        raise UsageError(f"unknown task {config.task!r}; choose from {', '.join(HEADS)}")
    base = base or load_base_model(config.base_model, device=config.device, dtype=config.dtype)
    domain_packs = _domain_packs(config, base)
    train_table, val_table = split_tables(config)
    head = _new_head(config, base.hidden_size, train_table, val_table, final=False) if config.trains_function else None
    tags = {name: pack.tags[name] for name, pack in domain_packs.items()}
    if method.tag_length:
        tags[config.tag_name] = init_tag(base.model, method.tag_length)
    model = TaggedModel(base.model, tags, {config.tag_name: head} if head else {}).to(base.device)
    for name in domain_packs:
        model.tags[name].requires_grad_(False)
    assert not any(p.requires_grad for p in model.lm.parameters()), "the base model must stay frozen"

    encoder = PromptEncoder(base.tokenizer, model.tag_table)
    specs = {
        d: domain_packs[d].manifest.domain_input() if d in domain_packs else _stage1_input(config)
        for d in config.domains
    }
    train_set = encode_examples(config, encoder, template, specs, train_table, head)
    val_set = encode_examples(config, encoder, template, specs, val_table, head)
    if not train_set.rows or not val_set.rows:
        raise UsageError(f"no usable rows left (train {len(train_set.rows)}, validation {len(val_set.rows)})")

    # A readout head is refitted at the end on features of every training row; a method that trains
    # no tag (the linear probe) has nothing to do before that.
    final_head = head is not None and head.objective == "readout"
    trainer = Trainer(config, method, model, encoder, train_set, val_set, on_progress)
    if not (final_head and trainer.total_steps == 0):
        if head is not None:
            fit_head(model, encoder, head, train_set, config.init_samples, config.seed)
        trainer.run()
    if final_head:
        trainer.fit_final_head(_new_head(config, base.hidden_size, train_table, val_table, final=True))
    pack = make_pack(config, base, trainer, template, specs, domain_packs, time.perf_counter() - started)
    save_pack(pack, config.out)
    return pack


def _new_head(config: TrainConfig, hidden_size: int, train_table, val_table, final: bool) -> Head:
    """The head the tag trains with (one linear member), or the final one fitted on cached features."""
    check_targets(config, train_table, config.data)
    check_targets(config, val_table, config.val or config.data)
    cells = {c: train_table.column(c).to_pylist() for c in config.targets}
    features = {"readout": config.readout_spec()}
    if final:
        features |= {k: getattr(config, k) for k in ("members", "hidden_units", "domain_components")}
    options = {
        "max_answer_tokens": config.max_answer_tokens,
        "ranges": config.ranges(),
        "features": features,
        "calibrate": final and config.calibrate,  # the tag trains with an uncalibrated head
    }
    return HEADS[config.task].for_training(hidden_size, config.targets, cells, **options)


def _stage1_input(config: TrainConfig) -> DomainInput:
    kind = config.input_kind or (config.domains[0] if config.domains[0] in INPUT_KINDS else "text")
    if kind not in INPUT_KINDS:
        raise UsageError(f"unknown input kind {kind!r}; choose from {', '.join(INPUT_KINDS)}")
    return DomainInput(kind=kind, max_tokens=config.max_tokens)


def _domain_packs(config: TrainConfig, base: BaseModel) -> dict[str, TagPack]:
    if not config.trains_function:
        return {}
    store = PackStore([*config.pack_dirs, Path(config.out).resolve().parent])
    packs = {}
    for name in config.domains:
        pack = store.load(name)
        if pack.manifest.kind != "domain":
            raise UsageError(f"'{name}' is a {pack.manifest.kind} pack, not a domain")
        pack.check_base_model(base.id, base.fingerprint)
        packs[name] = pack
    return packs
