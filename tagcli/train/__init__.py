"""Training: Tag-LLM's three stages over a frozen base model, each ending in a tag pack.

    stage 1  domain tag   next-token loss on the domain's own tokens, "{tag:D}{input:D}"
    stage 2  function tag + head on labeled rows of one domain, domain tag frozen
    stage 3  function tag + head on rows with several domains (e.g. protein + SMILES pairs)

    config.py    TrainConfig (the run's settings; the head's and method's typed options inside)
    methods/     how a function is conditioned: tag-llm, prompt-tuning, linear-probe (registered)
    data.py      reading, splitting, cleaning and encoding rows; labels parsed by the head
    checks.py    what is refused before the model loads, and what is warned about once rows are read
    features.py  readout features (the scorer's own batching) and the head's closed-form fit
    loop.py      the training loop: steps, validation, early stopping, checkpoints
    pack.py      the finished run as a tag pack

Training imports the model core (`tagcli.core`), never the scorer.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pyarrow as pa
import torch

from tagcli.basemodel.load import BaseModel, load_base_model, select_device, select_dtype
from tagcli.core.domains import INPUT_KINDS, DomainInput
from tagcli.core.heads import Head
from tagcli.core.model import TaggedModel
from tagcli.core.prompt import PromptEncoder
from tagcli.errors import UsageError
from tagcli.packs.format import TagPack, save_pack
from tagcli.packs.store import PackStore
from tagcli.train.checks import check_destination, check_examples, check_labels, check_leakage
from tagcli.train.config import STAGES, TrainConfig
from tagcli.train.data import check_slots, encode_examples, split_tables
from tagcli.train.loop import Progress, Trainer, checkpoint_dir
from tagcli.train.methods import METHODS, method_for, register_method
from tagcli.train.pack import make_pack

__all__ = ["METHODS", "STAGES", "TrainConfig", "init_tag", "register_method", "train"]


def init_tag(lm: torch.nn.Module, length: int) -> torch.Tensor:
    """The paper's initialisation: the mean token embedding, rescaled to the mean embedding norm."""
    table = lm.get_input_embeddings().weight.detach().float()
    mean = table.mean(0)
    return (mean / mean.norm() * table.norm(dim=1).mean()).expand(length, -1).clone()


def train(config: TrainConfig, base: BaseModel | None = None, on_progress: Progress | None = None) -> TagPack:
    """Run one stage end to end and write its pack to `config.out`.

    Everything that can be checked without the model is checked first (options, paths, tables,
    target columns, domain packs), so a mistake costs seconds, not a training run.
    """
    started = time.perf_counter()
    report = on_progress or (lambda event: None)
    torch.manual_seed(config.seed)
    method = method_for(config)
    template = method.template()
    check_slots(config, template)
    # A resumed run may rewrite the pack its own checkpoint finished; any other pack needs --force.
    resuming = config.resume and (checkpoint_dir(config.out) / "state.json").is_file()
    check_destination(config.out, config.force or resuming)
    train_table, val_table = split_tables(config)
    domain_packs = _domain_packs(config)
    if base is None:
        select_dtype(config.dtype, select_device(config.device))  # a bad --device/--dtype before loading
        report({"event": "phase", "phase": "loading the base model"})
        base = load_base_model(config.base_model, device=config.device, dtype=config.dtype)
    for pack in domain_packs.values():
        pack.check_base_model(base.id, base.fingerprint)
    specs = {
        d: domain_packs[d].manifest.domain_input() if d in domain_packs else _stage1_input(config)
        for d in config.domains
    }
    slot_kinds = {slot: specs[domain].kind for slot, domain in template.slots.items()}
    resolved = config.head_options.resolve(base.n_layers, slot_kinds)
    config = dataclasses.replace(config, head_options=resolved)  # `auto` made concrete, as the pack records it
    head = _new_head(config, base.hidden_size, train_table, final=False) if config.trains_function else None
    # A readout head is refitted at the end on features of every training row (the final head); it
    # exists from the start because rows whose extra features fail are dropped before any step.
    final = (
        _new_head(config, base.hidden_size, train_table, final=True) if head and head.objective == "readout" else None
    )
    tags = {name: pack.tags[name] for name, pack in domain_packs.items()}
    if method.tag_length:
        tags[config.tag_name] = init_tag(base.model, method.tag_length)
    model = TaggedModel(base.model, tags, {config.tag_name: head} if head else {}).to(base.device)
    for name in domain_packs:
        model.tags[name].requires_grad_(False)
    assert not any(p.requires_grad for p in model.lm.parameters()), "the base model must stay frozen"

    encoder = PromptEncoder(base.tokenizer, model.tag_table)
    report({"event": "phase", "phase": "encoding rows"})
    train_set = encode_examples(config, encoder, template, specs, train_table, head, config.data, final)
    val_source = config.val or f"the validation share of {config.data}"
    val_set = encode_examples(config, encoder, template, specs, val_table, head, val_source, final)
    check_examples(config, train_set, val_set, report)
    if head is not None:
        check_labels(config, head, train_set)
    check_leakage(config, train_set, val_set, report)

    # A method that trains no tag (the linear probe) has nothing to do before the final head, nor has a
    # readout the function tag cannot reach (input-mean alone: the tag follows the inputs).
    trainer = Trainer(config, method, model, encoder, train_set, val_set, report)
    if final is not None and trainer.total_steps and not final.readout.reads_function_tag:
        report({"event": "warning", "message": TAG_UNREAD.format(readout=final.readout.text())})
    if final is None or (trainer.total_steps and final.readout.reads_function_tag):
        trainer.run()
    if final is not None:
        trainer.fit_final_head(final)
    pack = make_pack(config, base, trainer, template, specs, domain_packs, time.perf_counter() - started)
    save_pack(pack, config.out)
    return pack


TAG_UNREAD = (
    "--readout {readout} reads no position of the function tag (it follows the inputs): the tag steps are "
    "skipped and the head is fitted on the frozen model's features (add tag-mean or tag-last to train the tag)"
)


def _new_head(config: TrainConfig, hidden_size: int, train_table: pa.Table, final: bool) -> Head:
    """The head the tag trains with, or the final one fitted on cached features (the options decide
    how they differ: `for_tag_training`)."""
    cells = {c: train_table.column(c).to_pylist() for c in config.targets}
    options = config.head_options if final else config.head_options.for_tag_training()
    return config.head_kind.for_training(hidden_size, config.targets, cells, options)


def _stage1_input(config: TrainConfig) -> DomainInput:
    kind = config.input_kind or (config.domains[0] if config.domains[0] in INPUT_KINDS else "text")
    if kind not in INPUT_KINDS:
        raise UsageError(f"unknown input kind {kind!r}; choose from {', '.join(INPUT_KINDS)}")
    return DomainInput(kind=kind, max_tokens=config.max_tokens)


def _domain_packs(config: TrainConfig) -> dict[str, TagPack]:
    if not config.trains_function:
        return {}
    store = PackStore([*config.pack_dirs, Path(config.out).resolve().parent])
    packs = {}
    for name in config.domains:
        pack = store.load(name)
        if pack.manifest.kind != "domain":
            raise UsageError(f"'{name}' is a {pack.manifest.kind} pack, not a domain")
        packs[name] = pack
    return packs
