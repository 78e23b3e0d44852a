"""Every way to compute the (negative) ELBO, behind one interface.

=================  =========================================  ==============================
name               what                                       KL term
=================  =========================================  ==============================
``analytic``       hand-written BCE + closed-form KL          analytic (exact)
``trace``          ``pyro.infer.Trace_ELBO``                   Monte Carlo: log q(z|x) - log p(z)
``tmf``            ``pyro.infer.TraceMeanField_ELBO``          analytic where torch has a KL
                                                              registered, else Monte Carlo
``jit_trace``      ``JitTrace_ELBO``, gradient fixed (below)   as ``trace``
``jit_tmf``        ``JitTraceMeanField_ELBO``, compiled once   as ``tmf``
``jit_tmf_pyro``   ``pyro.infer.JitTraceMeanField_ELBO`` as    as ``tmf``; re-traces every step
                   Pyro 1.9.2 ships it (right, but slow)
``jit_trace_pyro`` ``pyro.infer.JitTrace_ELBO`` as shipped:    as ``trace``
                   its ``differentiable_loss`` gradient is 2x
=================  =========================================  ==============================

Each estimator's ``differentiable_loss(vae, x)`` is an unbiased estimate of -sum_i ELBO(x_i) over the
batch (Pyro's convention: summed over the ``data`` plate, averaged over particles) whose gradient is an
unbiased estimate of the gradient; divide by the batch size for nats per example. ``num_particles``
samples are drawn in one vectorised pass. With a KL weight beta (``vae.kl_weight``) every estimator
computes the same beta-ELBO (see :mod:`vae_pyro.model` for how, and why both z sites are scaled).

**Validity.** Which of them stays exact depends on the prior (:func:`validity`): ``analytic`` needs a
closed-form KL and is *invalid* without one (it refuses); ``trace`` and its JIT twins always use a
Monte Carlo KL; ``tmf`` and its twins use torch's registered KL where there is one and silently fall
back to the Monte Carlo KL where there is none, which ``validity`` reports instead of hiding.
"""

from __future__ import annotations

import weakref

import torch
from pyro import poutine
from pyro.infer import (
    JitTrace_ELBO,
    JitTraceMeanField_ELBO,
    Trace_ELBO,
    TraceMeanField_ELBO,
)
from pyro.util import warn_if_nan
from torch.distributions import kl_divergence

from dataclasses import asdict, dataclass

from .analytic import analytic_neg_elbo, closed_form_kl_reason
from .registry import Registry

ESTIMATORS: Registry[type["Estimator"]] = Registry("estimator")
register_estimator = ESTIMATORS.register

ANALYTIC, MONTE_CARLO, NO_KL = "analytic", "monte_carlo", "none"
#: validity kinds: the KL term is exact, is sampled, or the estimator does not apply
EXACT_KL, MONTE_CARLO_KL, INVALID = "exact_kl", "monte_carlo_kl", "invalid"


@dataclass
class Validity:
    """Whether an estimator computes this VAE's (beta-)ELBO, and how it gets the KL term."""

    kind: str      # EXACT_KL, MONTE_CARLO_KL or INVALID
    reason: str

    @property
    def valid(self) -> bool:
        return self.kind != INVALID

    def to_dict(self) -> dict:
        return asdict(self)
#: which bound an estimator's value estimates (issue #3): the ELBO, or the tighter IWAE_k, which the
#: ELBO-agreement checks of ``compare`` must not judge against the ELBO
ELBO_BOUND, IWAE_BOUND = "elbo", "iwae"


class Estimator:
    """Base class. Subclasses set ``description`` and implement ``differentiable_loss``."""

    name = "estimator"
    description = ""
    jit = False
    #: for a compiled estimator, the uncompiled one it must equal when both draw the same noise
    twin: str | None = None
    #: why the exact same-noise check does not apply (None: it does)
    same_noise_skip: str | None = None
    #: ELBO_BOUND or IWAE_BOUND (issue #3)
    bound = ELBO_BOUND

    def __init__(self, num_particles: int = 1):
        if num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        self.num_particles = num_particles

    def differentiable_loss(self, vae, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, vae, x: torch.Tensor) -> float:
        """The estimate's value, without building a graph for gradients."""
        with torch.no_grad():
            return float(self.differentiable_loss(vae, x))

    def kl_kind(self, vae) -> str:
        return MONTE_CARLO

    def validity(self, vae) -> Validity:
        """Override to say when the estimator does not apply. A user's estimator that declares
        nothing is taken to apply everywhere, so the checks run on it (and can fail it)."""
        return Validity(MONTE_CARLO_KL, f"{self.name} declares no validity rule; assumed to apply")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_particles={self.num_particles})"


@register_estimator("analytic")
class AnalyticEstimator(Estimator):
    description = "hand-written log-likelihood (BCE for Bernoulli) + closed-form KL; refuses without one"
    same_noise_skip = "is the reference the others are compared with"

    def differentiable_loss(self, vae, x):
        return analytic_neg_elbo(vae, x, self.num_particles)

    def kl_kind(self, vae):
        return NO_KL if closed_form_kl_reason(vae) else ANALYTIC

    def validity(self, vae):
        why_not = closed_form_kl_reason(vae)
        if why_not:
            return Validity(INVALID, why_not)
        return Validity(EXACT_KL, f"closed-form KL(Normal || {vae.prior.name}) plus the likelihood's "
                                  "hand-written log-density")


def mean_field_kl_kind(vae) -> str:
    """What ``TraceMeanField_ELBO`` will really do for this VAE: it uses ``kl_divergence(q, p)`` when
    torch has one registered for the guide's and prior's distribution types and *silently* falls
    back to the Monte Carlo term otherwise. We ask the same question it asks, on the real sites."""
    x = torch.zeros(2, vae.config.x_dim, device=vae.device, dtype=vae.dtype)
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(vae.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    try:
        kl_divergence(guide_trace.nodes["z"]["fn"], model_trace.nodes["z"]["fn"])
    except NotImplementedError:
        return MONTE_CARLO
    return ANALYTIC


def _dist_name(d) -> str:
    """``Independent(Normal)`` -> ``Normal``: the name of the family torch dispatches KL on."""
    while hasattr(d, "base_dist"):
        d = d.base_dist
    return type(d).__name__


class CachedJitTraceMeanField_ELBO(JitTraceMeanField_ELBO):
    """``JitTraceMeanField_ELBO`` that compiles once.

    In pyro-ppl 1.9.2 ``JitTraceMeanField_ELBO.differentiable_loss`` tests
    ``getattr(self, "_loss_and_surrogate_loss", None)`` (the attribute ``JitTrace_ELBO`` uses) but
    stores the compiled function as ``self._differentiable_loss``. The test never succeeds, so every
    call builds a fresh ``pyro.ops.jit.trace`` closure and traces the model again: a JIT that is
    slower than no JIT. Here the compiled function is kept and reused.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        compiled = getattr(self, "_differentiable_loss", None)
        if compiled is None:
            return super().differentiable_loss(model, guide, *args, **kwargs)
        kwargs["_pyro_model_id"] = id(model)
        kwargs["_pyro_guide_id"] = id(guide)
        return compiled(*args, **kwargs)


class DetachedJitTrace_ELBO(JitTrace_ELBO):
    """``JitTrace_ELBO`` whose ``differentiable_loss`` has the right gradient.

    In pyro-ppl 1.9.2 the compiled ``loss_and_surrogate_loss`` of ``JitTrace_ELBO`` builds ``loss``
    from the sites' ``log_prob_sum`` tensors *without* detaching them (``Trace_ELBO`` uses
    ``torch_item``), and ``differentiable_loss`` returns ``loss + (surrogate - surrogate.detach())``.
    Its gradient is therefore grad(loss) + grad(surrogate): twice the ELBO gradient for a
    reparameterised guide. (``loss_and_grads`` back-propagates the surrogate only and is right; Adam
    is invariant to the factor 2, so training with it hides the bug; SGD would not.) The gradient
    check of ``vae-pyro compare --estimators jit_trace_pyro`` shows it.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss, surrogate_loss = self.loss_and_surrogate_loss(model, guide, *args, **kwargs)
        loss = loss.detach()
        warn_if_nan(loss, "loss")
        return loss + (surrogate_loss - surrogate_loss.detach())


class PyroEstimator(Estimator):
    """A Pyro ELBO class run on ``vae.model`` / ``vae.guide``."""

    elbo_class: type = Trace_ELBO
    mean_field = False
    #: a known defect that the checks expose, appended to the validity reason
    caveat: str | None = None

    def __init__(self, num_particles: int = 1):
        super().__init__(num_particles)
        # JIT-compiled graphs are specialised to one model and one input shape (pyro.ops.jit keys its
        # cache on the number of args, not their shapes), so keep one ELBO object per (VAE, shape).
        self._elbos: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def make_elbo(self):
        return self.elbo_class(
            num_particles=self.num_particles,
            vectorize_particles=self.num_particles > 1,
            max_plate_nesting=1,  # the "data" plate; stating it skips Pyro's guessing pass
            **({"ignore_jit_warnings": True} if self.jit else {}),
        )

    def elbo_for(self, vae, x: torch.Tensor):
        """``(elbo, model, guide)`` for this VAE and input shape. The bound methods are kept too:
        ``vae.model`` is a new object at every attribute access, and Pyro's JIT keys its compiled
        graphs on ``id(model)``, so passing ``vae.model`` afresh would recompile on every step."""
        per_vae = self._elbos.setdefault(vae, {})
        # grad mode is part of a compiled graph's key: a graph traced under no_grad (for ``loss``)
        # is not the one to differentiate through
        key = (tuple(x.shape), x.dtype, str(x.device), torch.is_grad_enabled()) if self.jit else None
        if key not in per_vae:
            per_vae[key] = (self.make_elbo(), vae.model, vae.guide)
        return per_vae[key]

    def differentiable_loss(self, vae, x):
        elbo, model, guide = self.elbo_for(vae, x)
        # beta as a tensor for a compiled model (a graph input, so annealing reaches it), as a float
        # otherwise (a float 1.0 lets Pyro skip the multiplication: bit-identical to no scale at all).
        beta = vae.kl_weight_arg(x) if self.jit else vae.kl_weight
        return elbo.differentiable_loss(model, guide, x, beta)

    def loss(self, vae, x):
        # A compiled estimator's value must come from its compiled code: in pyro 1.9.2
        # ``JitTrace_ELBO.loss is Trace_ELBO.loss`` (likewise the mean-field pair), so Pyro's ``loss``
        # would report the uncompiled twin's number. Uncompiled ones use Pyro's ``loss``.
        if self.jit:
            return super().loss(vae, x)
        elbo, model, guide = self.elbo_for(vae, x)
        with torch.no_grad():
            return float(elbo.loss(model, guide, x, vae.kl_weight))

    def kl_kind(self, vae):
        return mean_field_kl_kind(vae) if self.mean_field else MONTE_CARLO

    def validity(self, vae):
        v = self._validity(vae)
        if self.caveat:
            v.reason += f" ({self.caveat})"
        return v

    def _validity(self, vae):
        if not self.mean_field:
            return Validity(MONTE_CARLO_KL, "Trace_ELBO estimates the KL by log q(z|x) - log p(z) at the "
                                            "sampled z, for any prior")
        p_name = _dist_name(vae.prior.dist((1,)))
        if mean_field_kl_kind(vae) == ANALYTIC:
            return Validity(EXACT_KL, f"torch registers KL(Normal || {p_name}); TraceMeanField_ELBO uses it")
        return Validity(MONTE_CARLO_KL, f"torch registers no KL(Normal || {p_name}): TraceMeanField_ELBO "
                                        "silently falls back to log q(z|x) - log p(z) at the sampled z")


@register_estimator("trace")
class TraceEstimator(PyroEstimator):
    description = "pyro.infer.Trace_ELBO (Monte Carlo KL)"
    elbo_class = Trace_ELBO


@register_estimator("tmf")
class TraceMeanFieldEstimator(PyroEstimator):
    description = "pyro.infer.TraceMeanField_ELBO (analytic KL where registered)"
    elbo_class = TraceMeanField_ELBO
    mean_field = True


@register_estimator("jit_trace")
class JitTraceEstimator(PyroEstimator):
    twin = "trace"
    description = "JitTrace_ELBO with its gradient fixed (vae_pyro's fix of pyro 1.9.2)"
    elbo_class = DetachedJitTrace_ELBO
    jit = True


@register_estimator("jit_tmf")
class JitTraceMeanFieldEstimator(PyroEstimator):
    twin = "tmf"
    description = "JitTraceMeanField_ELBO compiled once (vae_pyro's fix of pyro 1.9.2)"
    elbo_class = CachedJitTraceMeanField_ELBO
    mean_field = True
    jit = True


@register_estimator("jit_tmf_pyro")
class PyroJitTraceMeanFieldEstimator(PyroEstimator):
    same_noise_skip = ("re-traces on every call, and each trace draws extra random numbers, so no seed "
                       "gives it the same noise as another estimator; checked statistically")
    description = "pyro.infer.JitTraceMeanField_ELBO as shipped (re-traces every call)"
    elbo_class = JitTraceMeanField_ELBO
    mean_field = True
    jit = True


@register_estimator("jit_trace_pyro")
class PyroJitTraceEstimator(PyroEstimator):
    twin = "trace"
    description = "pyro.infer.JitTrace_ELBO as shipped (differentiable_loss doubles the gradient)"
    caveat = "but pyro 1.9.2's differentiable_loss doubles its gradient: the gradient check fails"
    elbo_class = JitTrace_ELBO
    jit = True


#: What ``vae-pyro compare`` runs by default: every estimator that computes the ELBO correctly. The
#: ``*_pyro`` entries are Pyro's JIT classes as shipped, kept to show what our fixes change.
DEFAULT_ESTIMATORS = ("analytic", "trace", "tmf", "jit_trace", "jit_tmf", "jit_tmf_pyro")


def build_estimator(name: str, num_particles: int = 1) -> Estimator:
    return ESTIMATORS[name](num_particles=num_particles)


def validity(name: str, vae) -> Validity:
    """:class:`Validity` of estimator ``name`` for this VAE (its prior and likelihood)."""
    return ESTIMATORS[name]().validity(vae)


def validity_table(vae, names=None) -> dict[str, Validity]:
    return {name: validity(name, vae) for name in (names or estimator_names())}


def estimator_names() -> list[str]:
    return ESTIMATORS.names()


# --- issue #3: estimators in their own modules (one estimator per file, as in pyro/infer) ---------
# Imported last: they subclass the classes above and register themselves in ESTIMATORS.
from . import iwae as _iwae  # noqa: E402,F401  (iwae, renyi0)
from . import stl as _stl  # noqa: E402,F401  (stl)
from . import hand_reference as _hand  # noqa: E402,F401  (hand_mc, the checks' reference without a closed-form KL)
