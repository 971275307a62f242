"""TaggedModel: a frozen causal LM whose input embeddings get learned tag vectors spliced in.

    prompt "{tag:smiles}{input:smiles}{tag:qed}"  (see prompt.py)
        → token embeddings, with tag vectors written at the tag positions
        → the LM's base model (no LM head: regression needs hidden states, not logits)
        → the head's readout (readout.py): by default the final hidden state at the function tag's
          last position (the paper); or pooled states of chosen layers, then only the layers up to
          the deepest one read are run (`depth`)
        → the function's head (heads/) → predictions

Only `tags` and `heads` are trainable; the LM's parameters never require grad. Every row carries
its own readout index, so padding (left or right) and rows with different tags can share a batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from tagcli.core.heads import Columns, Head
from tagcli.core.prompt import TaggedBatch, TagTable
from tagcli.core.readout import FINAL, PAPER, LayerStates, ReadoutSpec, assemble, combine, pool_states


class TaggedModel(nn.Module):
    def __init__(
        self, lm: PreTrainedModel, tags: Mapping[str, torch.Tensor], heads: Mapping[str, Head] | None = None
    ) -> None:
        super().__init__()
        self.lm = lm.requires_grad_(False)
        # Tags live in float32 whatever the LM's dtype: they are what training updates.
        self.tags = nn.ParameterDict({name: nn.Parameter(t.detach().float().clone()) for name, t in tags.items()})
        self.heads = nn.ModuleDict(dict(heads or {}))
        # transformers 5.x renamed `past_key_values` to `cache`; speak whichever this model takes.
        self._cache_kw = (
            "cache" if "cache" in inspect.signature(self.lm.base_model.forward).parameters else "past_key_values"
        )

    @property
    def hidden_size(self) -> int:
        return self.lm.get_input_embeddings().embedding_dim

    @property
    def tag_table(self) -> TagTable:
        """Slot layout of all tags; `PromptEncoder` writes these slots, `embed` reads them."""
        return TagTable({name: len(vectors) for name, vectors in self.tags.items()})

    @property
    def depth(self) -> int | None:
        """Decoder blocks every head's readout needs (None: all of them)."""
        depths = [head.readout.depth for head in self.heads.values()]
        return None if not depths or None in depths else max(d for d in depths if d is not None)

    def _layer_keys(self) -> list[int]:
        return sorted({k for head in self.heads.values() for k in head.readout.layer_keys if k != FINAL})

    def decoder_blocks(self) -> nn.ModuleList:
        blocks = getattr(self.lm.base_model, "layers", None)
        if not isinstance(blocks, nn.ModuleList):
            raise ValueError(
                f"{type(self.lm.base_model).__name__} keeps no decoder blocks in .layers: use the final readout"
            )
        return blocks

    @contextmanager
    def _tapped(self) -> Iterator[dict[int, torch.Tensor]]:
        """Run the base model only up to `depth`, recording the outputs of the blocks readouts read."""
        keys = self._layer_keys()
        if not keys:
            yield {}
            return
        blocks, depth, base = self.decoder_blocks(), self.depth, self.lm.base_model
        states: dict[int, torch.Tensor] = {}

        def recorder(key: int):
            def record(module: nn.Module, args: Any, output: Any) -> None:
                states[key] = output[0] if isinstance(output, tuple) else output

            return record

        hooks = [blocks[k - 1].register_forward_hook(recorder(k)) for k in keys]
        if depth is not None:
            base.layers = blocks[:depth]  # later blocks would only compute states nobody reads
        try:
            yield states
        finally:
            base.layers = blocks
            for hook in hooks:
                hook.remove()

    def embed(self, batch: TaggedBatch) -> torch.Tensor:
        """Token embeddings with tag vectors written at tag slots: [n, L, d]."""
        token_embeddings = self.lm.get_input_embeddings()(batch.input_ids)
        if not self.tags:  # a linear probe: the plain prompt
            return token_embeddings
        all_tags = torch.cat(list(self.tags.values())).to(token_embeddings.dtype)
        tag_vectors = all_tags[batch.slots.clamp(min=0)]
        return torch.where((batch.slots >= 0).unsqueeze(-1), tag_vectors, token_embeddings)

    def hidden_states(self, batch: TaggedBatch) -> torch.Tensor:
        """Final (normed) hidden states of the LM's base model: [n, L, d]."""
        output = self.lm.base_model(
            inputs_embeds=self.embed(batch),
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        )
        return output.last_hidden_state

    def readout(self, batch: TaggedBatch) -> torch.Tensor:
        """The paper's readout of whole prompts in one forward: the final hidden state at each row's
        last position [n, d]. A reference for the shared-context path the scorer and training use."""
        hidden = self.hidden_states(batch)
        return hidden[torch.arange(len(hidden), device=hidden.device), batch.readout]

    def forward(self, batch: TaggedBatch, function: str) -> torch.Tensor:
        """Raw head output for `function` from `readout` (heads with the paper's readout)."""
        return self.heads[function](self.readout(batch))

    def _extend(
        self, embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: Any = None
    ) -> tuple[torch.Tensor, Any, dict[int, torch.Tensor]]:
        """Run `embeds` on top of `cache` (None: from scratch); `attention_mask` covers cache + new.

        Returns the new positions' final hidden states, the grown KV cache, and the new positions'
        states per layer key the heads read ([n, L, d] each, FINAL included).
        """
        with self._tapped() as states:
            output = self.lm.base_model(
                inputs_embeds=embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=True,
                **({self._cache_kw: cache} if cache is not None else {}),  # named .cache or .past_key_values
            )
        return output.last_hidden_state, output[1], {**states, FINAL: output.last_hidden_state}

    def encode_context(self, prefix: TaggedBatch, body: TaggedBatch) -> SharedContext:
        """KV cache of the shared prefix (one row, run once) followed by each row's body.

        `prefix` holds what every row starts with (BOS, text, domain tags); `body` the per-row
        inputs, right-padded. Function suffixes then run on top with `readout_after_context`.
        The caller picks the grad mode: scoring runs without; prompt tuning (its tag is in the
        prefix) with grad; Tag-LLM training computes contexts once without grad and reuses them.
        """
        n, p = len(body.input_ids), prefix.input_ids.shape[1]
        cache = None
        if p:
            _, cache, _ = self._extend(self.embed(prefix), prefix.attention_mask, prefix.position_ids)
            cache.batch_repeat_interleave(n)
        mask = torch.cat([prefix.attention_mask.expand(n, -1), body.attention_mask], dim=1)
        _, cache, states = self._extend(self.embed(body), mask, p + body.position_ids, cache)
        pooled = pool_states(states, body.attention_mask, body.readout)
        return SharedContext(cache, mask, p + body.attention_mask.sum(1, keepdim=True), pooled)

    def encode_shared_leads(
        self, prefix: TaggedBatch, leads: TaggedBatch, lead_of_row: torch.Tensor, rest: TaggedBatch
    ) -> SharedContext:
        """`encode_context` for rows whose bodies start with one of a few shared *leads* (one
        protein scored against many ligands): each distinct lead runs once, its KV cache is copied
        to the rows that use it (`lead_of_row`), and only each row's rest (e.g. its SMILES) runs."""
        lead_context = self.encode_context(prefix, leads)
        cache = lead_context.cache
        cache.batch_select_indices(lead_of_row)
        mask = torch.cat([lead_context.mask[lead_of_row], rest.attention_mask], dim=1)
        start = lead_context.next_position[lead_of_row]
        _, cache, states = self._extend(self.embed(rest), mask, start + rest.position_ids, cache)
        pooled = combine(
            lead_context.states.select(lead_of_row), pool_states(states, rest.attention_mask, rest.readout)
        )
        return SharedContext(cache, mask, start + rest.attention_mask.sum(1, keepdim=True), pooled)

    def readout_after_context(
        self, context: SharedContext, suffix: TaggedBatch, readout: ReadoutSpec = PAPER
    ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """The `readout` features [n, width] of context + `suffix` (one shared row, e.g. the function tag).

        Returns them with the extended cache and mask (for generation). The caller crops the cache
        back with `context.rewind()` before the next suffix.
        """
        if suffix.input_ids.shape[1] == 0:  # the prompt ends with the input (linear probe)
            return assemble(readout, context.states, None, ()), context.cache, context.mask
        n, s = context.mask.shape[0], suffix.input_ids.shape[1]
        mask = torch.cat([context.mask, context.mask.new_ones(n, s)], dim=1)
        positions = context.next_position + torch.arange(s, device=mask.device)
        _, cache, states = self._extend(self.embed(suffix).expand(n, -1, -1), mask, positions, context.cache)
        tags = (suffix.slots[0] >= 0).nonzero().flatten().tolist() or list(range(s))
        return assemble(readout, context.states, states, tags), cache, mask

    @torch.inference_mode()
    def predict_after_context(
        self, context: SharedContext, suffix: TaggedBatch, function: str, extra: torch.Tensor | None = None
    ) -> Columns:
        """`predict` for rows whose context is encoded once and shared by several functions; `extra`:
        the rows' extra features for the head (`Head.input_features`)."""
        head = self.heads[function]
        features, cache, mask = self.readout_after_context(context, suffix, head.readout)
        predicted = head.predict(BatchReadout(self, features, cache, mask, mask.sum(1, keepdim=True), extra))
        context.rewind()
        return predicted

    def next_token_loss(self, batch: TaggedBatch, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of predicting `targets[:, t + 1]` at position t (-100 = no loss).

        Used by stage 1: targets hold the domain's own tokens and -100 on tags, text and padding.
        Logits are computed only where there is a target, which keeps the 49k-vocabulary matmul small.
        """
        hidden = self.hidden_states(batch)[:, :-1]
        next_tokens = targets[:, 1:]
        keep = next_tokens != -100
        logits = self.lm.get_output_embeddings()(hidden[keep])
        return torch.nn.functional.cross_entropy(logits.float(), next_tokens[keep])

    @torch.inference_mode()
    def predict(self, batch: TaggedBatch, function: str) -> Columns:
        """Raw prediction columns for `function` (the head decides: readout or generation)."""
        return self.heads[function].predict(self.full_readout(batch))

    def full_readout(self, batch: TaggedBatch) -> BatchReadout:
        """The final hidden state after whole prompts, kept with their KV cache so a head may generate."""
        hidden, cache, _ = self._extend(self.embed(batch), batch.attention_mask, batch.position_ids)
        rows = torch.arange(len(hidden), device=hidden.device)
        return BatchReadout(
            self, hidden[rows, batch.readout], cache, batch.attention_mask, batch.attention_mask.sum(1, keepdim=True)
        )

    @torch.inference_mode()
    def generate(self, batch: TaggedBatch, max_new_tokens: int) -> list[list[int]]:
        """Greedy answers after each row's prompt, all rows at once with a KV cache; stops at EOS."""
        return self.full_readout(batch).generate(max_new_tokens)

    def greedy(
        self, hidden: torch.Tensor, cache: Any, mask: torch.Tensor, next_position: torch.Tensor, max_new_tokens: int
    ) -> list[list[int]]:
        """Greedy decoding from each row's last hidden state; new tokens go after the cache."""
        eos = self.lm.config.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        answers: list[torch.Tensor] = []
        done = torch.zeros(len(hidden), dtype=torch.bool, device=hidden.device)
        lm_head = self.lm.get_output_embeddings()
        for step in range(max_new_tokens):
            tokens = lm_head(hidden.to(lm_head.weight.dtype)).argmax(-1)
            answers.append(tokens)
            done |= tokens == eos
            if done.all() or step == max_new_tokens - 1:
                break
            # New tokens go after every row's padding; the mask hides the padding, positions skip it.
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            embeds = self.lm.get_input_embeddings()(tokens).unsqueeze(1)
            hidden, cache, _ = self._extend(embeds, mask, next_position + step, cache)
            hidden = hidden[:, -1]
        generated = torch.stack(answers, dim=1).tolist()
        return [row[: row.index(eos)] if eos in row else row for row in generated]


@dataclass
class BatchReadout:
    """A batch's readout hidden states, with what generation needs to continue after the prompts."""

    model: TaggedModel
    hidden: torch.Tensor  # [n, width] the head's readout features (the final hidden state for the paper's)
    cache: Any
    mask: torch.Tensor  # [n, W] attention mask over the cached positions
    next_position: torch.Tensor  # [n, 1]
    extra: torch.Tensor | None = None  # [n, k] the head's extra features of the rows, if it reads any

    def generate(self, max_new_tokens: int) -> list[list[int]]:
        return self.model.greedy(self.hidden, self.cache, self.mask, self.next_position, max_new_tokens)


@dataclass
class SharedContext:
    """The KV cache of shared prefix + per-row bodies that several function suffixes run on."""

    cache: Any  # the model's KV cache object
    mask: torch.Tensor  # [n, P + W] attention mask over the cached positions
    next_position: torch.Tensor  # [n, 1] position id of each row's next token
    states: LayerStates  # pooled states of each row's own tokens, per layer key

    def rewind(self) -> None:
        """Drop what a suffix added to the cache, so the next suffix starts from the context.

        Kept tensors are detached: a suffix run with grad (training) must not tie the next step's
        graph to this one's.
        """
        extra = self.cache.get_seq_length() - self.mask.shape[1]
        if extra > 0:
            self.cache.crop(-extra)  # negative: "remove this many" in every transformers version
        for layer in getattr(self.cache, "layers", ()):
            if getattr(layer, "keys", None) is not None and layer.keys.requires_grad:
                layer.keys, layer.values = layer.keys.detach(), layer.values.detach()
