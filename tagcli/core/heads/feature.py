"""The shared body of the regression and classification heads.

    readout features ─standardise─▶ members (K linear layers or small MLPs) ─mean─▶ raw output
                                            └─ spread across members ─▶ uncertainty (regression)
                     ─applicability domain (PCA of the training features)─▶ domain_score, in_domain

Members are an ensemble (bootstrap samples, different seeds); one linear member is the paper's
head. The trust add-ons (the applicability domain here; recalibration, error model and spread in
regression) are components of `tagcli.core.heads.trust`, each fitted and applied on its own.

The head spec carries the layout `version` of the tensors in `heads.safetensors`; a spec without
one was written before it existed and its tensors are upgraded by what they hold (`upgrade_state`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from tagcli.core.extra_features import ExtraFeatures, input_features
from tagcli.core.heads.base import Head, Readout
from tagcli.core.heads.feature_options import (
    JOINT,
    MAX_COMPONENTS,
    MAX_HIDDEN_UNITS,
    MAX_MEMBERS,
    FeatureOptions,
    views_problem,
)
from tagcli.core.heads.trust import MAX_WEIGHT, ApplicabilityDomain, TrustComponent
from tagcli.core.readout import PAPER, ReadoutSpec
from tagcli.errors import PackError

# The layout of a feature head's tensors that its spec's `version` names: every tensor present, trust
# components' tensors under their pack names. Specs without a version are upgraded (`upgrade_state`).
SPEC_VERSION = 2


class FeatureHead(Head):
    Options = FeatureOptions

    def __init__(
        self,
        hidden_size: int,
        n_outputs: int,
        readout: ReadoutSpec = PAPER,
        members: int = 1,
        hidden_units: int = 0,
        domain_components: int = 0,  # axes of the applicability domain (named as its spec key and flag)
        extra_features: Sequence[ExtraFeatures] = (),
        views: Sequence[str] = (JOINT,),
    ) -> None:
        super().__init__()
        self.readout = readout
        self.hidden_units = hidden_units
        self.extra_features = tuple(extra_features)
        self.views = tuple(views)
        readout_width = readout.width(hidden_size)
        width = readout_width + sum(e.width for e in self.extra_features)
        spans = {JOINT: (0, width), "readout": (0, readout_width), "extra": (readout_width, width)}
        # Member k reads the columns [a, b) of its view, views taken in turn.
        self.spans = [spans[self.views[k % len(self.views)]] for k in range(members)]
        self.members = nn.ModuleList(self._member(b - a, n_outputs) for a, b in self.spans)
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_std", torch.ones(width))
        self.applicability = ApplicabilityDomain(domain_components, width)
        self.register_state_dict_post_hook(_to_pack_names)
        self.register_load_state_dict_pre_hook(_from_pack_names)

    def _member(self, width: int, n_outputs: int) -> nn.Module:
        if not self.hidden_units:
            return nn.Linear(width, n_outputs)
        return nn.Sequential(nn.Linear(width, self.hidden_units), nn.GELU(), nn.Linear(self.hidden_units, n_outputs))

    # -- inputs ------------------------------------------------------------------------------
    def input_features(self, texts: Mapping[str, Sequence[str]]) -> tuple[torch.Tensor | None, list[str | None]]:
        return input_features(self.extra_features, texts)

    def features(self, readout: Readout) -> torch.Tensor:
        """What the members read: the readout, then the extra features of the same rows."""
        if not self.extra_features:
            return readout.hidden.float()
        return torch.cat([readout.hidden.float(), readout.extra.to(readout.hidden.device)], dim=1)

    # -- outputs -----------------------------------------------------------------------------
    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Raw head output (standardised targets or logits): the members' mean, in float32."""
        return self.ensemble_mean(self.member_outputs(hidden))

    def member_outputs(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.members_on(self.standardise(hidden))

    def members_on(self, standardised: torch.Tensor) -> torch.Tensor:
        """Every member's output [members, n, outputs] on (its view of) standardised features."""
        return torch.stack([member(standardised[:, a:b]) for member, (a, b) in zip(self.members, self.spans)])

    def ensemble_mean(self, outputs: torch.Tensor) -> torch.Tensor:
        """The members' mean [n, outputs]; with several views the mean of each view's mean, so every
        view weighs the same whatever its number of members."""
        kinds = [self.views[k % len(self.views)] for k in range(len(self.members))]
        if len(set(kinds)) == 1:
            return outputs.mean(0)
        means = [outputs[[k for k, v in enumerate(kinds) if v == view]].mean(0) for view in dict.fromkeys(kinds)]
        return torch.stack(means).mean(0)

    def standardise(self, hidden: torch.Tensor) -> torch.Tensor:
        return (hidden.float() - self.feature_mean) / self.feature_std

    def trust_components(self) -> dict[str, TrustComponent]:
        """The head's trust add-ons by attribute name."""
        return {name: child for name, child in self.named_children() if isinstance(child, TrustComponent)}

    def pack_names(self) -> dict[str, str]:
        """Name in this head's `state_dict` → name in a pack, for the trust components' tensors."""
        return {
            f"{name}.{buffer}": saved
            for name, component in self.trust_components().items()
            for buffer, saved in component.SAVED_NAMES.items()
        }

    # -- training ------------------------------------------------------------------------------
    def fit(self, hidden: torch.Tensor, labels: list, all_labels: list) -> None:
        self.set_feature_stats(hidden)

    def set_feature_stats(self, hidden: torch.Tensor) -> None:
        """Standardise inputs with statistics of a sample of hidden states (and extra features). A column
        constant on those rows (a fingerprint bit none of them sets) keeps its scale: dividing by its
        zero spread would turn the first row that has it into an outlier of thousands of stds."""
        hidden = hidden.float()
        std = hidden.std(0)
        self.feature_mean.copy_(hidden.mean(0))
        self.feature_std.copy_(torch.where(std < 1e-4, torch.ones_like(std), std))

    def fit_members(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        validation: tuple[torch.Tensor, torch.Tensor],
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        seed: int,
        closed_form: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """Fit every member on its own bootstrap sample of standardised features `x` (a single
        member sees all rows): linear members in closed form when `closed_form` gives weights,
        otherwise by AdamW with early stopping on the validation loss. Returns each member's rows."""
        generator = torch.Generator().manual_seed(seed)
        n = len(x)
        samples = []
        for k, (member, (a, b)) in enumerate(zip(self.members, self.spans)):
            rows = torch.randint(n, (n,), generator=generator) if len(self.members) > 1 else torch.arange(n)
            samples.append(rows)
            seen = x[rows][:, a:b]
            if closed_form is not None and isinstance(member, nn.Linear):
                with torch.no_grad():
                    member.weight.copy_(closed_form(seen, y[rows]).T)
                    member.bias.zero_()
            else:
                torch.manual_seed(seed * 1009 + k)
                for layer in member.modules():  # initial weights from the seed, not from what ran before
                    if isinstance(layer, nn.Linear):
                        layer.reset_parameters()
                _train_member(member, seen, y[rows], (validation[0][:, a:b], validation[1]), loss)
        return samples

    @torch.no_grad()
    def check_state(self) -> str | None:
        layers = [m for member in self.members for m in member.modules() if isinstance(m, nn.Linear)]
        largest = max(float(max(m.weight.abs().max(), m.bias.abs().max())) for m in layers)
        if largest > MAX_WEIGHT:
            return (
                f"its linear weights reach {largest:.3g}; "
                f"training on standardised features gives far less (at most {MAX_WEIGHT:g})"
            )
        if not bool((self.feature_std > 0).all()):
            return "feature_std must be positive"
        return next(filter(None, (c.check() for c in self.trust_components().values())), None)

    # -- the pack format -----------------------------------------------------------------------
    def feature_spec(self) -> dict[str, Any]:
        extras = {"extra_features": [e.to_spec() for e in self.extra_features]} if self.extra_features else {}
        extras |= {"member_views": list(self.views)} if self.views != (JOINT,) else {}
        return {
            "readout": self.readout.to_spec(),
            "members": len(self.members),
            "hidden_units": self.hidden_units,
            "domain_components": self.applicability.components,
            "version": SPEC_VERSION,
        } | extras

    # Tensors (pack names) added after ensemble packs were first shipped, with the values that reproduce
    # their scores: what a spec without a version lacks of them is filled in (`upgrade_state`).
    LATER_TENSORS = {
        "domain_residual": 0.0,
        "spread_power": 1.0,
        "domain_power": 0.0,
        "error_weights": 0.0,
        "error_bias": 0.0,
        "error_power": 0.0,
        "calibration_slope": 1.0,
        "calibration_offset": 0.0,
    }

    def upgrade_state(self, spec: Mapping[str, Any], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A spec with a `version` (checked by `from_spec`) names a layout whose tensors are all there.
        One without was written before versions, and its layout is read from what it holds: packs from
        before ensembles (no 'members' in the spec) hold one Linear layer named `linear` and no applicability
        or spread tensors: rename it and add the neutral defaults. Ensemble packs from before the residual
        term, the fitted exponents, the error model or the recalibration get those tensors' neutral values."""
        if "version" in spec:
            return state
        shapes = {k: v.shape for k, v in self.state_dict().items() if not k.startswith(("members.", "feature_"))}
        if "members" in spec:
            shapes = {k: shape for k, shape in shapes.items() if k in self.LATER_TENSORS}
        else:
            state = {
                k.replace("linear.", "members.0.", 1) if k.startswith("linear.") else k: v for k, v in state.items()
            }
        neutral = {
            k: torch.full(shape, self.LATER_TENSORS.get(k, 1.0 if "scale" in k else 0.0)) for k, shape in shapes.items()
        }
        return neutral | state

    @classmethod
    def card_reads(cls, spec: Mapping[str, Any], readout: str) -> str:
        """What the head reads: the readout, and any extra features beside it."""
        extras = spec.get("extra_features") if isinstance(spec.get("extra_features"), list) else []
        described = []
        for entry in extras:
            try:
                described.append(ExtraFeatures.from_spec(entry).describe())
            except ValueError as exc:
                described.append(str(exc))
        return readout + "".join(f", with {d}" for d in described)

    @classmethod
    def card_unlike(cls, spec: Mapping[str, Any]) -> str:
        if spec.get("domain_components"):
            return "`in_domain` is false (and `domain_score` high) for inputs unlike them"
        return super().card_unlike(spec)

    @classmethod
    def card_head(cls, spec: Mapping[str, Any]) -> str:
        """The head itself in words: "an ensemble of 5 MLPs (32 hidden units)", "a linear layer head"."""
        members, units = spec.get("members", 1), spec.get("hidden_units", 0)
        kind, detail = ("MLP", f" ({units} hidden units)") if units else ("linear layer", "")
        views = spec.get("member_views") if isinstance(spec.get("member_views"), list) else [JOINT]
        if isinstance(members, int) and members > 1 and views != [JOINT]:
            reads = {JOINT: "both", "readout": "the readout alone", "extra": "the extra features alone"}
            each = ", ".join(
                f"{sum(views[k % len(views)] == v for k in range(members))} on {reads.get(v, v)}"
                for v in dict.fromkeys(views)
            )
            return f"an ensemble of {members} {kind}s{detail}: {each}, each view weighing the same"
        if isinstance(members, int) and members > 1:
            return f"an ensemble of {members} {kind}s{detail}"
        return f"{'an' if kind == 'MLP' else 'a'} {kind}{detail} head"

    @staticmethod
    def feature_options(spec: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor options from a head spec (absent keys: the paper's single linear head)."""
        try:
            readout = ReadoutSpec.from_spec(spec.get("readout"))
        except ValueError as exc:
            raise PackError(f"head spec: {exc}") from None
        version = spec.get("version", SPEC_VERSION)
        if type(version) is not int or version != SPEC_VERSION:
            newer = type(version) is int and version > SPEC_VERSION
            raise PackError(
                f"head spec: version must be {SPEC_VERSION}, not {version!r}",
                hint="a newer tagcli wrote this pack: upgrade tagcli" if newer else None,
            )
        options = {"readout": readout}
        for key, low, high in (
            ("members", 1, MAX_MEMBERS),
            ("hidden_units", 0, MAX_HIDDEN_UNITS),
            ("domain_components", 0, MAX_COMPONENTS),
        ):
            value = spec.get(key, low)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise PackError(f"head spec: {key} must be an integer from {low} to {high}, not {value!r}")
            options[key] = value
        try:
            options["extra_features"] = [ExtraFeatures.from_spec(e) for e in spec.get("extra_features") or []]
        except ValueError as exc:
            raise PackError(f"head spec: {exc}", hint="install the tagcli and RDKit versions the pack names") from None
        views = spec.get("member_views", [JOINT])
        problem = (
            views_problem(views, bool(options["extra_features"]), options["members"])
            if isinstance(views, list)
            else "not a list"
        )
        if problem:
            raise PackError(f"head spec: member_views {views!r}: {problem}")
        return options | {"views": tuple(views)}


def _train_member(
    member: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    validation: tuple[torch.Tensor, torch.Tensor],
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    max_epochs: int = 40,
    patience: int = 5,
    batch_size: int = 256,
) -> None:
    """Minibatch AdamW on cached features; keeps the epoch with the lowest validation loss."""
    optimizer = torch.optim.AdamW(member.parameters(), lr=1e-3, weight_decay=1e-2)
    best, best_state, bad = math.inf, None, 0
    for _ in range(max_epochs):
        member.train()
        for batch in torch.randperm(len(x)).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss(member(x[batch]), y[batch]).backward()
            optimizer.step()
        member.eval()
        with torch.no_grad():
            current = float(loss(member(validation[0]), validation[1]))
        if current < best - 1e-6:
            best, best_state, bad = current, {k: v.clone() for k, v in member.state_dict().items()}, 0
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        member.load_state_dict(best_state)


def ridge(
    features: torch.Tensor, targets: torch.Tensor, alphas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
) -> torch.Tensor:
    """Ridge weights [d, k] (no intercept: inputs are standardised), penalty picked on a 20% holdout.

    Solved through the smaller Gram matrix (rows × rows when there are fewer rows than features):
    the Gram product in float32, its Cholesky factorisation in float64.
    """
    x, y = features.float(), targets.float()

    def solve(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
        dual = len(x) < x.shape[1]
        gram = (x @ x.T if dual else x.T @ x).double()
        gram.diagonal().add_(alpha * len(x))
        factor = torch.linalg.cholesky(gram)
        if dual:
            return x.T @ torch.cholesky_solve(y.double(), factor).float()
        return torch.cholesky_solve((x.T @ y).double(), factor).float()

    cut = max(1, int(len(x) * 0.8))
    if cut < len(x):
        alpha = min(alphas, key=lambda a: float(((x[cut:] @ solve(x[:cut], y[:cut], a) - y[cut:]) ** 2).mean()))
    else:
        alpha = max(alphas)
    return solve(x, y, alpha)


def _to_pack_names(head: FeatureHead, state: dict[str, torch.Tensor], prefix: str, _metadata: Any) -> None:
    """`state_dict` hook: the trust components' tensors under their pack names, in place and in order."""
    names = {prefix + name: prefix + saved for name, saved in head.pack_names().items()}
    entries = list(state.items())
    state.clear()
    state.update((names.get(key, key), value) for key, value in entries)


def _from_pack_names(head: FeatureHead, state: dict[str, torch.Tensor], prefix: str, *_: Any) -> None:
    """`load_state_dict` hook: tensors under their pack names back to the trust components' names."""
    for name, saved in head.pack_names().items():
        if prefix + saved in state:
            state[prefix + name] = state.pop(prefix + saved)
