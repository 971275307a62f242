"""TaggedModel: a frozen causal LM whose input embeddings get learned tag vectors spliced in.

    prompt "{tag:smiles}{input:smiles}{tag:qed}"  (see prompt.py)
        → token embeddings, with tag vectors written at the tag positions
        → the LM's base model (no LM head: regression needs hidden states, not logits)
        → final hidden state at the last position of the function tag, per row
        → the function's head (heads.py) → predictions

Only `tags` and `heads` are trainable; the LM's parameters never require grad. Every row carries
its own readout index, so padding (left or right) and rows with different tags can share a batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from tagcli.core.heads import Columns, Head
from tagcli.core.prompt import TaggedBatch, TagTable


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
        """Hidden state at each row's own last prompt position (the function tag's last vector): [n, d]."""
        hidden = self.hidden_states(batch)
        return hidden[torch.arange(len(hidden), device=hidden.device), batch.readout]

    def _extend(
        self, embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: Any = None
    ) -> tuple[torch.Tensor, Any]:
        """Run `embeds` on top of `cache` (None: from scratch); `attention_mask` covers cache + new.

        Returns the new positions' final hidden states and the grown KV cache.
        """
        output = self.lm.base_model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **({self._cache_kw: cache} if cache is not None else {}),  # named .cache or .past_key_values
        )
        return output.last_hidden_state, output[1]

    def readout_after_prefix(self, prefix: TaggedBatch, function: str) -> torch.Tensor:
        """Same as `readout` on prefix + function tag, but the prefix runs without grad.

        In stages 2 and 3 everything before the function tag is frozen, so only the p function-tag
        positions need a graph: run the (left-padded) prefix once under no_grad, keep its KV cache,
        then run the tag vectors on top. The backward pass then touches p positions, not the row.
        """
        with torch.no_grad():
            _, cache = self._extend(self.embed(prefix), prefix.attention_mask, prefix.position_ids)
        n, p = len(prefix.input_ids), len(self.tags[function])
        dtype = self.lm.get_input_embeddings().weight.dtype
        tag = self.tags[function].to(dtype).unsqueeze(0).expand(n, -1, -1)
        mask = torch.cat([prefix.attention_mask, prefix.attention_mask.new_ones(n, p)], dim=1)
        hidden, _ = self._extend(
            tag, mask, prefix.attention_mask.sum(1, keepdim=True) + torch.arange(p, device=tag.device), cache
        )
        return hidden[:, -1]

    @torch.inference_mode()
    def encode_context(self, prefix: TaggedBatch, body: TaggedBatch) -> SharedContext:
        """KV cache of the shared prefix (one row, run once) followed by each row's body.

        `prefix` holds what every row starts with (BOS, text, domain tags); `body` the per-row
        inputs, right-padded. Function suffixes then run on top with `readout_after_context`.
        """
        n, p = len(body.input_ids), prefix.input_ids.shape[1]
        cache = None
        if p:
            _, cache = self._extend(self.embed(prefix), prefix.attention_mask, prefix.position_ids)
            cache.batch_repeat_interleave(n)
        mask = torch.cat([prefix.attention_mask.expand(n, -1), body.attention_mask], dim=1)
        hidden, cache = self._extend(self.embed(body), mask, p + body.position_ids, cache)
        rows = torch.arange(n, device=hidden.device)
        return SharedContext(cache, mask, p + body.attention_mask.sum(1, keepdim=True), hidden[rows, body.readout])

    @torch.inference_mode()
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
        hidden, cache = self._extend(self.embed(rest), mask, start + rest.position_ids, cache)
        rows = torch.arange(len(hidden), device=hidden.device)
        return SharedContext(cache, mask, start + rest.attention_mask.sum(1, keepdim=True), hidden[rows, rest.readout])

    @torch.inference_mode()
    def readout_after_context(
        self, context: SharedContext, suffix: TaggedBatch
    ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Hidden state at the end of context + `suffix` (one shared row, e.g. the function tag).

        Returns it with the extended cache and mask (for generation). The caller crops the cache
        back with `context.rewind()` before the next suffix.
        """
        if suffix.input_ids.shape[1] == 0:  # the prompt ends with the input (linear probe)
            return context.last_hidden, context.cache, context.mask
        n, s = context.mask.shape[0], suffix.input_ids.shape[1]
        mask = torch.cat([context.mask, context.mask.new_ones(n, s)], dim=1)
        positions = context.next_position + torch.arange(s, device=mask.device)
        hidden, cache = self._extend(self.embed(suffix).expand(n, -1, -1), mask, positions, context.cache)
        return hidden[:, -1], cache, mask

    @torch.inference_mode()
    def predict_after_context(self, context: SharedContext, suffix: TaggedBatch, function: str) -> Columns:
        """`predict` for rows whose context is encoded once and shared by several functions."""
        hidden, cache, mask = self.readout_after_context(context, suffix)
        predicted = self.heads[function].predict(BatchReadout(self, hidden, cache, mask, mask.sum(1, keepdim=True)))
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

    def forward(self, batch: TaggedBatch, function: str) -> torch.Tensor:
        """Raw head output for `function` (standardised targets or logits), for training."""
        return self.heads[function](self.readout(batch))

    @torch.inference_mode()
    def predict(self, batch: TaggedBatch, function: str) -> Columns:
        """Raw prediction columns for `function` (the head decides: readout or generation)."""
        return self.heads[function].predict(self.full_readout(batch))

    def full_readout(self, batch: TaggedBatch) -> BatchReadout:
        """The readout of whole prompts, kept with their KV cache so a head may generate from it."""
        hidden, cache = self._extend(self.embed(batch), batch.attention_mask, batch.position_ids)
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
        for step in range(max_new_tokens):
            tokens = self.lm.get_output_embeddings()(hidden).argmax(-1)
            answers.append(tokens)
            done |= tokens == eos
            if done.all() or step == max_new_tokens - 1:
                break
            # New tokens go after every row's padding; the mask hides the padding, positions skip it.
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            embeds = self.lm.get_input_embeddings()(tokens).unsqueeze(1)
            hidden, cache = self._extend(embeds, mask, next_position + step, cache)
            hidden = hidden[:, -1]
        generated = torch.stack(answers, dim=1).tolist()
        return [row[: row.index(eos)] if eos in row else row for row in generated]


@dataclass
class BatchReadout:
    """A batch's readout hidden states, with what generation needs to continue after the prompts."""

    model: TaggedModel
    hidden: torch.Tensor  # [n, d]
    cache: Any
    mask: torch.Tensor  # [n, W] attention mask over the cached positions
    next_position: torch.Tensor  # [n, 1]

    def generate(self, max_new_tokens: int) -> list[list[int]]:
        return self.model.greedy(self.hidden, self.cache, self.mask, self.next_position, max_new_tokens)


@dataclass
class SharedContext:
    """The KV cache of shared prefix + per-row bodies that several function suffixes run on."""

    cache: Any  # the model's KV cache object
    mask: torch.Tensor  # [n, P + W] attention mask over the cached positions
    next_position: torch.Tensor  # [n, 1] position id of each row's next token
    last_hidden: torch.Tensor  # [n, d] hidden state at each row's last body token

    def rewind(self) -> None:
        """Drop what a suffix added to the cache, so the next suffix starts from the context."""
        extra = self.cache.get_seq_length() - self.mask.shape[1]
        if extra > 0:
            self.cache.crop(-extra)  # negative: "remove this many" in every transformers version
