"""Every way to compute the (negative) ELBO, behind one interface.

The table of every registered estimator (its name, its ``description``, which bound it estimates, whether
``vae-pyro compare`` runs it by default) is generated from the registry into docs/validity.md by
scripts/validity_matrix.py, beside which estimators stay valid for which prior and likelihood;
``vae-pyro estimators`` prints it.

Laid out like ``pyro/infer``: :mod:`.base` (the interface, :class:`Validity`, the registry; imports
no estimator) and one module per family, each registering its estimators when imported. Importing
this package imports every family, so the registry is complete. A new estimator is one file: a
subclass of :class:`Estimator` decorated with :func:`register_estimator` (docs/extending.md).
"""

from .base import (
    DEFAULT_ESTIMATORS,
    ELBO_BOUND,
    ESTIMATORS,
    EXACT_KL,
    INVALID,
    IWAE_BOUND,
    MONTE_CARLO_KL,
    RENYI_BOUND,
    TMC_BOUND,
    Estimator,
    Validity,
    build_estimator,
    estimator_names,
    register_estimator,
    checked_estimator_names,
    validity,
    validity_rows,
)
from .analytic import AnalyticEstimator, NoClosedFormError  # noqa: E402  (registers analytic)
from .pyro_elbos import PyroEstimator, mean_field_kl_kind  # noqa: E402  (trace, tmf, jit_*)
from .iwae import IWAEEstimator, RenyiEstimator  # noqa: E402  (iwae, renyi0)
from .stl import STLEstimator  # noqa: E402  (stl)
from .graph import GraphEstimator  # noqa: E402  (analytic_graph, trace_graph, tmf_graph)
from .hand_reference import HandMonteCarloEstimator  # noqa: E402  (hand_mc, the reference without a closed-form KL)
from .score_function import ScoreFunctionEstimator  # noqa: E402,F401  (score_function, tracegraph, tracegraph_baseline)
from .dreg import DReGEstimator  # noqa: E402,F401  (dreg)
from .renyi import RenyiHalfEstimator  # noqa: E402,F401  (renyi, alpha = 1/2)

__all__ = [
    "DEFAULT_ESTIMATORS",
    "ELBO_BOUND",
    "ESTIMATORS",
    "EXACT_KL",
    "INVALID",
    "IWAE_BOUND",
    "MONTE_CARLO_KL",
    "RENYI_BOUND",
    "TMC_BOUND",
    "Estimator",
    "PyroEstimator",
    "Validity",
    "AnalyticEstimator",
    "IWAEEstimator",
    "RenyiEstimator",
    "STLEstimator",
    "GraphEstimator",
    "HandMonteCarloEstimator",
    "NoClosedFormError",
    "build_estimator",
    "estimator_names",
    "mean_field_kl_kind",
    "register_estimator",
    "checked_estimator_names",
    "validity",
    "validity_rows",
]
