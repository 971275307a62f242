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
from typing import Mapping

import torch
from torch import nn
from transformers import PreTrainedModel

from tagcli.heads import Head, TextHead
from tagcli.prompt import TagTable, TaggedBatch


class TaggedModel(nn.Module):
    def __init__(self, lm: PreTrainedModel, tags: Mapping[str, torch.Tensor], heads: Mapping[str, Head] | None = None) -> None:
        super().__init__()
        self.lm = lm.requires_grad_(False)
        # Tags live in float32 whatever the LM's dtype: they are what training updates.
        self.tags = nn.ParameterDict({name: nn.Parameter(t.detach().float().clone()) for name, t in tags.items()})
        self.heads = nn.ModuleDict(dict(heads or {}))
        # transformers 5.x renamed `past_key_values` to `cache`; speak whichever this model takes.
        self._cache_kw = "cache" if "cache" in inspect.signature(self.lm.base_model.forward).parameters else "past_key_values"

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

    def readout_after_prefix(self, prefix: TaggedBatch, function: str) -> torch.Tensor:
        """Same as `readout` on prefix + function tag, but the prefix runs without grad.

        In stages 2 and 3 everything before the function tag is frozen, so only the p function-tag
        positions need a graph: run the (left-padded) prefix once under no_grad, keep its KV cache,
        then run the tag vectors on top. The backward pass then touches p positions, not the row.
        """
        with torch.no_grad():
            output = self.lm.base_model(
                inputs_embeds=self.embed(prefix),
                attention_mask=prefix.attention_mask,
                position_ids=prefix.position_ids,
                use_cache=True,
            )
        n, p = len(prefix.input_ids), len(self.tags[function])
        dtype = self.lm.get_input_embeddings().weight.dtype
        tag = self.tags[function].to(dtype).unsqueeze(0).expand(n, -1, -1)
        steps = torch.arange(p, device=tag.device)
        output = self.lm.base_model(
            inputs_embeds=tag,
            attention_mask=torch.cat([prefix.attention_mask, torch.ones_like(prefix.attention_mask[:, :p].expand(n, p))], dim=1),
            position_ids=prefix.attention_mask.sum(1, keepdim=True) + steps,
            use_cache=True,
            **{self._cache_kw: output[1]},  # the prefix's KV cache (named .cache or .past_key_values)
        )
        return output.last_hidden_state[:, -1]

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
    def predict(self, batch: TaggedBatch, function: str) -> dict[str, torch.Tensor | list[str]]:
        """User-facing prediction columns for `function` (text heads: generated token ids)."""
        head = self.heads[function]
        if isinstance(head, TextHead):
            return {head.output_columns()[0]: self.generate(batch, head.max_new_tokens)}
        return head.predict(self.readout(batch))

    @torch.inference_mode()
    def generate(self, batch: TaggedBatch, max_new_tokens: int) -> list[list[int]]:
        """Greedy answers after each row's prompt, all rows at once with a KV cache; stops at EOS."""
        eos = self.lm.config.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        rows = torch.arange(len(batch.input_ids), device=batch.input_ids.device)
        output = self.lm.base_model(inputs_embeds=self.embed(batch), attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=True)
        hidden, cache = output.last_hidden_state[rows, batch.readout], output[1]
        mask, next_position = batch.attention_mask, batch.attention_mask.sum(1, keepdim=True)
        answers: list[torch.Tensor] = []
        done = torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
        for step in range(max_new_tokens):
            tokens = self.lm.get_output_embeddings()(hidden).argmax(-1)
            answers.append(tokens)
            done |= tokens == eos
            if done.all() or step == max_new_tokens - 1:
                break
            # New tokens go after every row's padding; the mask hides the padding, positions skip it.
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            output = self.lm.base_model(
                inputs_embeds=self.lm.get_input_embeddings()(tokens).unsqueeze(1), attention_mask=mask,
                position_ids=next_position + step, use_cache=True, **{self._cache_kw: cache},
            )
            hidden, cache = output.last_hidden_state[:, -1], output[1]
        generated = torch.stack(answers, dim=1).tolist()
        return [row[: row.index(eos)] if eos in row else row for row in generated]
