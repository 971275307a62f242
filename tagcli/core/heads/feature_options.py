"""The training options of the heads that read features (regression and classification), and the
bounds a pack's head spec is checked against."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tagcli.core.extra_features import EXTRA_FEATURES, ExtraFeatures
from tagcli.core.readout import AUTO, ReadoutSpec, default_readout
from tagcli.errors import UsageError
from tagcli.options import Options, check_bounds, option

MAX_MEMBERS, MAX_HIDDEN_UNITS, MAX_COMPONENTS = 64, 4096, 256
# What an ensemble member reads: the readout and the extra features (joint), or one of them.
JOINT = "joint"
VIEWS = (JOINT, "readout", "extra")


@dataclass(frozen=True)
class FeatureOptions(Options):
    """Training options of the heads that read features (regression and classification). The
    defaults are the shipped packs' head: the tag trains with one linear member on the readout, then
    the final head, an ensemble of small MLPs, is fitted on the readout features of every training row."""

    readout: str = option(
        AUTO,
        "hidden states the head reads: POOL[+POOL][@LAYERS] with pools tag-last, tag-mean, input-mean and "
        "decoder blocks from 1, e.g. input-mean+tag-mean@4,8,12; 'paper': the final layer at the last "
        "function-tag position; 'auto': the shipped packs' (input-mean+tag-mean at every second block up "
        "to 40% of the depth for molecules, 53% otherwise)",
    )
    members: int = option(
        5, "heads in the ensemble (bootstrap samples); >1 adds pred_*_std", minimum=1, maximum=MAX_MEMBERS
    )
    hidden_units: int = option(32, "hidden units of each member's MLP (0: linear)", minimum=0, maximum=MAX_HIDDEN_UNITS)
    domain_components: int = option(
        16, "principal axes of the applicability-domain summary (0: none)", minimum=0, maximum=MAX_COMPONENTS
    )
    extra_features: list[str] = option(
        [],
        "classic features the final head reads beside the tags, computed from the input: "
        + "; ".join(
            f"{s.name} ({s.input_kind}): {s.help}"
            + ("" if s.standardize == "none" else f" of its {s.standardize.replace('-', ' ')}")
            for s in EXTRA_FEATURES.values()
        ),
        flag="--extra-features",
        form="NAME or SLOT=NAME, or several joined by commas",
    )

    member_views: list[str] = option(
        [JOINT],
        "what each ensemble member reads, taken in turn: joint (the readout and the extra features), readout, "
        "extra; e.g. readout,extra makes the ensemble the average of a tags-only and a features-only model",
        flag="--member-views",
        form="VIEW[,VIEW...]",
    )

    def __post_init__(self) -> None:
        check_bounds(self)  # a bad number is named before any check that combines numbers
        if self.readout != AUTO:
            self.readout_spec()
        # Comma-joined items are split: frozen, so the normalised lists are set through object.__setattr__.
        object.__setattr__(self, "extra_features", _items(self.extra_features))
        for item in self.extra_features:
            EXTRA_FEATURES.choose(item.partition("=")[2] or item)
        object.__setattr__(self, "member_views", _items(self.member_views))
        problem = views_problem(self.member_views, bool(self.extra_features), self.members)
        if problem:
            raise UsageError(f"--member-views {','.join(self.member_views)}: {problem}")

    def readout_spec(self) -> ReadoutSpec:
        try:
            return ReadoutSpec.parse(self.readout)
        except ValueError as exc:
            raise UsageError(f"--readout {self.readout!r}: {exc}") from None

    def for_tag_training(self) -> FeatureOptions:
        """The tag trains with one linear member on the readout alone (no summary, no extra features):
        quick to refit at every step, and the tag learns what the readout can carry."""
        return dataclasses.replace(
            self, members=1, hidden_units=0, domain_components=0, extra_features=[], member_views=[JOINT]
        )

    def resolve(self, n_layers: int, slots: Mapping[str, str]) -> FeatureOptions:
        """`auto` made concrete for this base model and these input slots (slot → input kind), each
        extra-feature set bound to its slot ("rdkit2d" → "smiles=rdkit2d"); what cannot be read refused."""
        spec = default_readout(n_layers, list(slots.values())) if self.readout == AUTO else self.readout_spec()
        problem = spec.check_model(n_layers)
        if problem:
            raise UsageError(f"--readout {self.readout}: {problem}")
        return dataclasses.replace(
            self, readout=spec.text(), extra_features=[_bind(item, slots) for item in self.extra_features]
        )

    def head_arguments(self) -> dict[str, Any]:
        """`FeatureHead` constructor arguments of resolved options."""
        bound = [item.split("=", 1) for item in self.extra_features]
        return {
            "readout": self.readout_spec(),
            "members": self.members,
            "hidden_units": self.hidden_units,
            "domain_components": self.domain_components,
            "extra_features": [ExtraFeatures.bind(name, slot) for slot, name in bound],
            "views": tuple(self.member_views),
        }


def _items(values: Sequence[str]) -> list[str]:
    """Items of repeatable values that may each join several with commas: ["a,b", "c"] → ["a", "b", "c"]."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def views_problem(views: Sequence[str], has_extra: bool, members: int) -> str | None:
    """Why members cannot read these views (None: they can)."""
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        return f"views are {', '.join(VIEWS)}, not {', '.join(unknown) or 'nothing'}"
    if not has_extra and set(views) != {JOINT}:
        return "readout and extra views split the readout from the extra features: give --extra-features too"
    if len(set(views)) > members:
        return f"{len(set(views))} views need at least as many members, not {members}"
    return None


def _bind(item: str, slots: Mapping[str, str]) -> str:
    """ "NAME" or "SLOT=NAME" → "SLOT=NAME", the slot being the one input of the set's kind."""
    slot, _, name = item.rpartition("=")
    kind = EXTRA_FEATURES.choose(name).input_kind
    if slot:
        if slots.get(slot) != kind:
            raise UsageError(f"--extra-features {item}: {name} reads a {kind} input; slot {slot!r} is not one")
        return item
    fitting = [s for s, k in slots.items() if k == kind]
    if len(fitting) != 1:
        where = f"the slots {', '.join(fitting)}" if fitting else "no slot"
        raise UsageError(
            f"--extra-features {name} reads a {kind} input and the prompt has {where}", hint="name it: SLOT=NAME"
        )
    return f"{fitting[0]}={name}"
