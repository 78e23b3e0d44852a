"""Pyro's ELBOs without a device-to-host read per step.

Pyro 1.9.2 reads the device in every ``differentiable_loss``: ``Trace_ELBO`` builds the loss's *value*
from ``torch_item(site["log_prob_sum"])`` (``pyro/infer/trace_elbo.py``, ``_differentiable_loss_particle``)
and subtracts ``torch_item(surrogate_loss)``; ``TraceMeanField_ELBO`` ends its particle with
``torch_item(elbo_particle)``; both call ``pyro.util.warn_if_nan``, whose ``torch_isnan`` is a
``bool(tensor)``. On a GPU each is a ``cudaStreamSynchronize`` that stalls the queue of kernels (and
makes the step impossible to capture in a CUDA graph). And with validation on (Pyro's default),
every distribution checks its arguments and the observed value against its support
(``constraint.check(value).all()`` -> ``bool``), again per step.

The classes here compute the very same numbers with the value kept on the device:

    loss = -ELBO (detached)  +  (surrogate - surrogate.detach())

(value -ELBO, gradient of the surrogate: exactly Pyro's ``loss + (surrogate - torch_item(surrogate))``
without the float round trip). Only the reparameterised case is written out, the only one a VAE with a
Normal guide needs; a site with a score-function term raises rather than silently dropping it.
:func:`step_without_validation` turns validation off for the steps after a first validated one.
"""

from __future__ import annotations

import contextlib

import pyro
import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence


def _guide_entropy_term(site) -> torch.Tensor:
    """The reparameterised part of a guide site's surrogate; refuses a score-function term (the
    discrete latents these ELBOs would need Rao-Blackwellisation for, which a VAE does not have)."""
    _, score_function_term, entropy_term = site["score_parts"]
    if not is_identically_zero(score_function_term):
        raise NotImplementedError(f"site {site['name']!r} is not reparameterised; use pyro.infer.Trace_ELBO")
    return entropy_term


class SyncFreeTrace_ELBO(Trace_ELBO):
    """``Trace_ELBO.differentiable_loss`` with the value kept on the device (see the module docstring).

    Per particle: ELBO = sum_model log p - sum_guide log q, surrogate = sum_model log p -
    sum_guide entropy_term (``trace_elbo.py``, ``_differentiable_loss_particle``)."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss, surrogate = 0.0, 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo, surrogate_elbo = 0.0, 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    elbo = elbo + site["log_prob_sum"]
                    surrogate_elbo = surrogate_elbo + site["log_prob_sum"]
            for site in guide_trace.nodes.values():
                if site["type"] == "sample":
                    elbo = elbo - site["log_prob_sum"]
                    entropy_term = _guide_entropy_term(site)
                    if not is_identically_zero(entropy_term):
                        surrogate_elbo = surrogate_elbo - entropy_term.sum()
            loss = loss - elbo.detach() / self.num_particles
            surrogate = surrogate - surrogate_elbo / self.num_particles
        return loss + (surrogate - surrogate.detach())


class SyncFreeTraceMeanField_ELBO(TraceMeanField_ELBO):
    """``TraceMeanField_ELBO.differentiable_loss`` with the value kept on the device.

    Per particle (``trace_mean_field_elbo.py``, ``_differentiable_loss_particle``): for an observed
    site log p(x|z); for a latent site -KL(q || p) scaled by the *guide* site's scale where torch
    registers that KL, else log p(z) - entropy_term (the Monte Carlo fallback). Its surrogate is the
    ELBO itself, so the loss is -ELBO."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo = 0.0
            for name, model_site in model_trace.nodes.items():
                if model_site["type"] != "sample":
                    continue
                if model_site["is_observed"]:
                    elbo = elbo + model_site["log_prob_sum"]
                    continue
                guide_site = guide_trace.nodes[name]
                try:
                    kl_qp = kl_divergence(guide_site["fn"], model_site["fn"])
                    elbo = elbo - scale_and_mask(kl_qp, scale=guide_site["scale"], mask=guide_site["mask"]).sum()
                except NotImplementedError:
                    elbo = elbo + model_site["log_prob_sum"] - _guide_entropy_term(guide_site).sum()
            loss = loss - elbo / self.num_particles
        return loss


@contextlib.contextmanager
def step_without_validation(validate: bool):
    """Run a step with Pyro's (and torch.distributions') argument validation on when ``validate``,
    off otherwise. Validation reads the device (support checks), so a training loop validates its
    first step, which catches a model/guide or data mistake, and skips it on the identical later ones."""
    with pyro.validation_enabled(validate):
        yield
