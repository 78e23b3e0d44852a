"""Every way to compute the (negative) ELBO, behind one interface.

=================  =========================================  ==============================
name               what                                       KL term
=================  =========================================  ==============================
``analytic``       hand-written BCE + closed-form KL          exact
``trace``          ``pyro.infer.Trace_ELBO``                   Monte Carlo: log q(z|x) - log p(z)
``tmf``            ``pyro.infer.TraceMeanField_ELBO``          exact where torch has a KL
                                                              registered, else Monte Carlo
``jit_trace``      ``JitTrace_ELBO``, gradient fixed           as ``trace``
``jit_tmf``        ``JitTraceMeanField_ELBO``, compiled once   as ``tmf``
``jit_tmf_pyro``   Pyro's ``JitTraceMeanField_ELBO`` as        as ``tmf``; re-traces every step
                   shipped (right, but slow)
``jit_trace_pyro`` Pyro's ``JitTrace_ELBO`` as shipped: its    as ``trace``
                   ``differentiable_loss`` gradient is 2x
``iwae``/``renyi0`` IWAE_k, ours and ``RenyiELBO(alpha=0)``    Monte Carlo (a different bound)
``stl``            path-derivative ELBO (Roeder et al. 2017)  Monte Carlo
``*_graph``        ``analytic``, ``trace``, ``tmf`` captured:     as the twin
                   CUDA graphs (TorchScript on the CPU)
``hand_mc``        hand-written log p(x|z) + log p(z) - log q,  Monte Carlo (any prior)
                   no Pyro: the checks' reference where
                   there is no closed-form KL
=================  =========================================  ==============================

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
    "DEFAULT_ESTIMATORS", "ELBO_BOUND", "ESTIMATORS", "EXACT_KL", "INVALID", "IWAE_BOUND", "MONTE_CARLO_KL",
    "RENYI_BOUND", "TMC_BOUND",
    "Estimator", "PyroEstimator", "Validity", "AnalyticEstimator", "IWAEEstimator", "RenyiEstimator",
    "STLEstimator", "GraphEstimator", "HandMonteCarloEstimator", "NoClosedFormError", "build_estimator",
    "estimator_names", "mean_field_kl_kind",
    "register_estimator", "checked_estimator_names", "validity", "validity_rows",
]
