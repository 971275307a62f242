"""Readouts: which hidden states a head reads, declared by the head and recorded in the pack.

    pools   tag-last     the last position after the inputs (the function tag's last vector: the paper)
            tag-mean     the mean over the function tag's positions (all positions after the inputs)
            input-mean   the mean over each row's own tokens (its inputs, and any tags/text between them)
    layers  ()           the final, normed hidden state (the paper)
            (3, 6, 9)    outputs of those decoder blocks (1-based), concatenated

A head's input is the concatenation, layer by layer, of each pool: width = d × pools × layers.
The input states do not depend on the function tag (it follows them), so `input-mean` is computed
once per row whatever the function; when every layer read lies below the top, the model only has
to run up to the deepest of them (`depth`), which is what scoring and training then do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tagcli.registry import Registry

FINAL = -1  # the key of the final, normed hidden state among layer keys
# Names a `--readout` may use instead of pools and layers.
PAPER_NAME = "paper"  # the paper's readout: the final layer at the last function-tag position
AUTO = "auto"  # the shipped packs' readout for this base model and these inputs (`default_readout`)


@dataclass(frozen=True)
class Pool:
    """One way of pooling a row's hidden states: how, in words (the model card), and whether it reads
    the function tag's positions (a pool that does not cannot be changed by training the tag)."""

    # (context states, suffix states or None, tag positions in the suffix, layer key) → [n, d]
    read: Callable[..., torch.Tensor]
    words: str
    reads_function_tag: bool


POOLS: Registry[Pool] = Registry("readout pool")


def _pool(name: str, words: str, reads_function_tag: bool) -> Callable[[Callable[..., torch.Tensor]], Pool]:
    """Register the decorated function as the pool `name`."""
    return lambda read: POOLS.register(name)(Pool(read, words, reads_function_tag))


@_pool("tag-last", "the last function-tag position", reads_function_tag=True)
def _tag_last(context: LayerStates, suffix: Mapping[int, torch.Tensor] | None, tags: Sequence[int], key: int):
    return context.last[key] if suffix is None else suffix[key][:, -1].float()


@_pool("tag-mean", "the mean over the function tag", reads_function_tag=True)
def _tag_mean(context: LayerStates, suffix: Mapping[int, torch.Tensor] | None, tags: Sequence[int], key: int):
    return context.last[key] if suffix is None else suffix[key][:, list(tags)].float().mean(1)


@_pool("input-mean", "the mean over the input tokens", reads_function_tag=False)
def _input_mean(context: LayerStates, suffix: Mapping[int, torch.Tensor] | None, tags: Sequence[int], key: int):
    return context.input_sum[key] / context.input_count.clamp(min=1)


@dataclass(frozen=True)
class ReadoutSpec:
    pools: tuple[str, ...] = ("tag-last",)
    layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.pools or any(p not in POOLS for p in self.pools) or len(set(self.pools)) != len(self.pools):
            raise ValueError(f"readout pools must be distinct names from {', '.join(POOLS)}, got {list(self.pools)}")
        if any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in self.layers):
            raise ValueError(f"readout layers are decoder block numbers from 1, got {list(self.layers)}")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"readout layers must be distinct, got {list(self.layers)}")

    @property
    def reads_function_tag(self) -> bool:
        """Whether the function tag can change this readout: `input-mean` alone cannot (the tag follows the
        inputs in a causal model), so training such a tag is wasted work."""
        return any(POOLS[pool].reads_function_tag for pool in self.pools)

    @property
    def layer_keys(self) -> tuple[int, ...]:
        return self.layers or (FINAL,)

    @property
    def depth(self) -> int | None:
        """Decoder blocks the model must run for this readout (None: all, the final state is read)."""
        return max(self.layers) if self.layers else None

    def width(self, hidden_size: int) -> int:
        return hidden_size * len(self.pools) * len(self.layer_keys)

    def check_model(self, n_layers: int) -> str | None:
        """Why this readout cannot be read from a model with `n_layers` decoder blocks (None: it can)."""
        deepest = self.depth
        if deepest is not None and deepest > n_layers:
            return f"the readout reads layer {deepest}, but the base model has {n_layers}"
        return None

    def describe(self) -> str:
        layers = "final layer" if not self.layers else "layers " + ",".join(map(str, self.layers))
        return f"{'+'.join(self.pools)} @ {layers}"

    def text(self) -> str:
        """The CLI form `parse` reads back, e.g. 'input-mean+tag-mean@2,4,6'."""
        return "+".join(self.pools) + ("@" + ",".join(map(str, self.layers)) if self.layers else "")

    def to_spec(self) -> dict[str, Any]:
        return {"pools": list(self.pools), "layers": list(self.layers)}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> ReadoutSpec:
        """The readout of a head spec; packs from before readouts existed read the paper's."""
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping) or not isinstance(spec.get("pools"), list):
            raise ValueError("readout must be an object with a 'pools' list")
        return cls(tuple(spec["pools"]), tuple(spec.get("layers") or ()))

    @classmethod
    def parse(cls, text: str) -> ReadoutSpec:
        """From the CLI form 'POOL[+POOL]@L,L,L' (e.g. 'input-mean+tag-mean@4,8,12'); '@' part optional;
        'paper' is the paper's readout."""
        if text.strip() == PAPER_NAME:
            return cls()
        pools, _, layers = text.partition("@")
        return cls(
            tuple(p.strip() for p in pools.split("+") if p.strip()),
            tuple(int(k) for k in layers.split(",") if k.strip()) if layers.strip() else (),
        )


PAPER = ReadoutSpec()


def default_readout(n_layers: int, input_kinds: Sequence[str]) -> ReadoutSpec:
    """The shipped packs' readout, scaled to a model of `n_layers` blocks: the mean over the input and
    over the function tag at every second block up to 40% of the depth for molecules alone (blocks 2 to
    12 of SmolLM2's 30: validation favoured them for QED), up to 53% otherwise (2 to 16 of 30: proteins
    and pairs). Only the blocks up to the deepest one read then run."""
    share = 0.4 if set(input_kinds) == {"smiles"} else 16 / 30
    top = max(1, round(n_layers * share))
    return ReadoutSpec(("input-mean", "tag-mean"), tuple(range(2, top + 1, 2)) or (top,))


@dataclass
class LayerStates:
    """Pooled hidden states of a batch per layer key: what the context (inputs) and suffix (tag) give."""

    input_sum: dict[int, torch.Tensor]  # key → [n, d] sum over each row's own positions
    input_count: torch.Tensor  # [n, 1]
    last: dict[int, torch.Tensor]  # key → [n, d] at each row's last position

    def select(self, rows: torch.Tensor) -> LayerStates:
        return LayerStates(
            {k: v[rows] for k, v in self.input_sum.items()},
            self.input_count[rows],
            {k: v[rows] for k, v in self.last.items()},
        )


def pool_states(states: Mapping[int, torch.Tensor], mask: torch.Tensor, last: torch.Tensor) -> LayerStates:
    """Sums over `mask` and the states at index `last` per row, for each layer's [n, L, d] states."""
    weights = mask.unsqueeze(-1).to(next(iter(states.values())).dtype)
    rows = torch.arange(len(mask), device=mask.device)
    return LayerStates(
        {k: (h * weights).float().sum(1) for k, h in states.items()},
        mask.sum(1, keepdim=True).float(),
        {k: h[rows, last].float() for k, h in states.items()},
    )


def combine(lead: LayerStates, rest: LayerStates) -> LayerStates:
    """The states of rows whose own tokens are a lead followed by a rest (sums add; `last` is the rest's)."""
    return LayerStates(
        {k: lead.input_sum[k] + rest.input_sum[k] for k in rest.input_sum},
        lead.input_count + rest.input_count,
        rest.last,
    )


def assemble(
    spec: ReadoutSpec,
    context: LayerStates,
    suffix: Mapping[int, torch.Tensor] | None,
    tag_positions: Sequence[int],
) -> torch.Tensor:
    """The head input [n, width] from a row's context states and the states of the shared suffix.

    `suffix` maps layer keys to [n, s, d] states of the positions after the inputs (None when the
    prompt ends with its input: tag pools then read the last input position).
    """
    parts = [POOLS[pool].read(context, suffix, tag_positions, key) for key in spec.layer_keys for pool in spec.pools]
    return torch.cat(parts, dim=-1)
