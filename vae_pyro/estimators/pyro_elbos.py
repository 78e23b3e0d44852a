"""Pyro's ELBO classes as estimators (``trace``, ``tmf`` and their JIT twins), and vae_pyro's fixes of
two Pyro 1.9.2 defects (:class:`CachedJitTraceMeanField_ELBO`, :class:`DetachedJitTrace_ELBO`).

**Validity.** ``trace`` and its JIT twins always use a Monte Carlo KL; ``tmf`` and its twins use
torch's registered KL where there is one and silently fall back to the Monte Carlo KL where there is
none, which :meth:`PyroEstimator.validity` reports instead of hiding. The guide axis
(:mod:`vae_pyro.guides`) goes through the same rule, asked on the real sites: torch registers no KL
from ``MultivariateNormal``, ``LowRankMultivariateNormal`` or a flow's ``TransformedDistribution`` to
the priors' ``Independent(Normal)``, so ``tmf`` with those guides is the Monte Carlo fallback
(``trace_mean_field_elbo.py``: ``except NotImplementedError: ... log_prob_sum - entropy_term``), and
says so; for a flow no closed form exists at all, so the fallback is the only answer there is. With a KL weight beta
(``vae.kl_weight``) every estimator computes the same beta-ELBO (see :mod:`vae_pyro.model`).
"""

from __future__ import annotations

import weakref

import torch
from pyro import poutine
from pyro.infer import (
    JitTrace_ELBO,
    JitTraceMeanField_ELBO,
    Trace_ELBO,
)
from torch.distributions import kl_divergence

from .base import EXACT_KL, MONTE_CARLO_KL, Estimator, Validity, register_estimator
from .syncfree import SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO


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
        return MONTE_CARLO_KL
    return EXACT_KL


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
        # no warn_if_nan: it reads the device every step (a NaN is caught by the training loop)
        return loss.detach() + (surrogate_loss - surrogate_loss.detach())


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

    def same_noise_elbo(self, vae):
        """Uncompiled Pyro ELBOs run the guide once per call, so the z it drew can be recorded:
        ``trace`` (and ``tmf`` where it falls back to sampling) equals recon + beta (log q - log p) at
        that z, ``tmf`` with a registered KL equals recon + beta closed-form KL."""
        if self.jit or self.same_noise_skip:
            return None
        return self.make_elbo(), not self.mean_field or mean_field_kl_kind(vae) != EXACT_KL

    def validity(self, vae):
        v = self._validity(vae)
        if self.caveat:
            v.reason += f" ({self.caveat})"
        return v

    def _validity(self, vae):
        if not self.mean_field:
            return Validity(
                MONTE_CARLO_KL, "Trace_ELBO estimates the KL by log q(z|x) - log p(z) at the sampled z, for any prior"
            )
        p_name = _dist_name(vae.prior.dist((1,)))
        q_name = vae.guide_family.label
        if mean_field_kl_kind(vae) == EXACT_KL:
            return Validity(EXACT_KL, f"torch registers KL({q_name} || {p_name}); TraceMeanField_ELBO uses it")
        return Validity(
            MONTE_CARLO_KL,
            f"torch registers no KL({q_name} || {p_name}): TraceMeanField_ELBO "
            "silently falls back to log q(z|x) - log p(z) at the sampled z",
        )


@register_estimator("trace")
class TraceEstimator(PyroEstimator):
    description = "pyro.infer.Trace_ELBO (Monte Carlo KL), value kept on the device"
    elbo_class = SyncFreeTrace_ELBO


@register_estimator("tmf")
class TraceMeanFieldEstimator(PyroEstimator):
    description = "pyro.infer.TraceMeanField_ELBO (analytic KL where registered), value kept on the device"
    elbo_class = SyncFreeTraceMeanField_ELBO
    mean_field = True


@register_estimator("jit_trace")
class JitTraceEstimator(PyroEstimator):
    twin = "trace"
    description = "JitTrace_ELBO with its gradient fixed (vae_pyro's fix of pyro 1.9.2)"
    elbo_class = DetachedJitTrace_ELBO
    jit = True
    # Seen on an H100 (torch 2.11): under tracing, torch.distributions' _standard_normal draws eps as
    # torch.normal(zeros, ones) (its "JIT workaround"), and the CUDA kernel of normal(Tensor, Tensor)
    # checks std >= 0 with a host read. The *_graph estimators replay without it.
    cuda_host_sync = (
        "TorchScript records torch.normal(zeros, ones) for the guide's noise, whose CUDA kernel "
        "checks std >= 0 on the host; trace_graph / tmf_graph are the sync-free compiled route"
    )


@register_estimator("jit_tmf")
class JitTraceMeanFieldEstimator(PyroEstimator):
    twin = "tmf"
    description = "JitTraceMeanField_ELBO compiled once (vae_pyro's fix of pyro 1.9.2)"
    elbo_class = CachedJitTraceMeanField_ELBO
    mean_field = True
    jit = True
    # Seen on an H100 (torch 2.11): under tracing, torch.distributions' _standard_normal draws eps as
    # torch.normal(zeros, ones) (its "JIT workaround"), and the CUDA kernel of normal(Tensor, Tensor)
    # checks std >= 0 with a host read. The *_graph estimators replay without it.
    cuda_host_sync = (
        "TorchScript records torch.normal(zeros, ones) for the guide's noise, whose CUDA kernel "
        "checks std >= 0 on the host; trace_graph / tmf_graph are the sync-free compiled route"
    )


@register_estimator("jit_tmf_pyro")
class PyroJitTraceMeanFieldEstimator(PyroEstimator):
    checked = False
    same_noise_skip = (
        "re-traces on every call, and each trace draws extra random numbers, so no seed "
        "gives it the same noise as another estimator; checked statistically"
    )
    description = "pyro.infer.JitTraceMeanField_ELBO as shipped (re-traces every call)"
    elbo_class = JitTraceMeanField_ELBO
    mean_field = True
    jit = True
    host_sync = "Pyro's class as shipped: re-tracing reads loss values with torch_item every step"


@register_estimator("jit_trace_pyro")
class PyroJitTraceEstimator(PyroEstimator):
    checked = False
    twin = "trace"
    description = "pyro.infer.JitTrace_ELBO as shipped (differentiable_loss doubles the gradient)"
    caveat = "but pyro 1.9.2's differentiable_loss doubles its gradient: the gradient check fails"
    elbo_class = JitTrace_ELBO
    jit = True
    host_sync = "Pyro's class as shipped: its differentiable_loss calls warn_if_nan (bool of a tensor)"
