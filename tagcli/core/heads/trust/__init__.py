"""The trust add-ons of the feature heads, one component per module, each with its own tensors,
`fit` (after the members are trained) and `apply` (when rows are scored); the heads compose them.

    applicability.py   the applicability domain: principal-axes summary → domain_score, in_domain
    recalibration.py   a + b·prediction per target, fitted on validation (`--calibrate`)
    error_model.py     out-of-bag model of log |error| → the error level
    spread.py          the ensemble spread, shaped by the domain score and error level → pred_<target>_std
    base.py            what the components share: `TrustComponent`, tensor bounds

Packs keep the tensor names these had before they were components (`TrustComponent.SAVED_NAMES`).
"""

from __future__ import annotations

from tagcli.core.heads.trust.applicability import ApplicabilityDomain
from tagcli.core.heads.trust.base import MAX_WEIGHT, TrustComponent
from tagcli.core.heads.trust.error_model import ErrorModel, out_of_bag
from tagcli.core.heads.trust.recalibration import Recalibration
from tagcli.core.heads.trust.spread import EnsembleSpread

__all__ = [
    "MAX_WEIGHT",
    "ApplicabilityDomain",
    "EnsembleSpread",
    "ErrorModel",
    "Recalibration",
    "TrustComponent",
    "out_of_bag",
]
