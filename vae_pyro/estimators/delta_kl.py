r"""``TraceMeanField_ELBO`` that respects a ``Delta`` guide site's ``log_density`` (an autoguide's
constrained latents), and the test of whether a guide has such sites.

Pyro's autoguides (``AutoNormal``, ``AutoDiagonalNormal``, ...) draw an unconstrained u from an
auxiliary Gaussian site and put ``Delta(z = T(u), log_density = log|du/dz|)`` at the model's
constrained latent z (``autoguide/guides.py``), so the guide's density of z is
q(z) = q(u) |du/dz| and log q(z) = log q(u) + log_density. ``Trace_ELBO`` uses it that way (the Delta's
``log_prob`` is ``0 + log_density`` at its own value). ``TraceMeanField_ELBO`` instead asks
``kl_divergence(Delta, p)``, which pyro 1.9.2 registers as (``pyro/distributions/kl.py``)

    _kl_delta(p, q) = -q.log_prob(p.v)                           (also Independent(Delta) vs MVN)

while the KL of a Delta with a density is E_p[log p - log q] = log_density - q.log_prob(v). So its ELBO
is too high by E_q[log_density] = E_q[log|du/dz|], in value and in gradient -- zero only where
log|J| = 0 (an unconstrained latent, or z = 1 under the exp transform). NumPyro fixed the same KL in
2023 (numpyro PR #1625). :class:`DeltaAwareTraceMeanField_ELBO` subtracts the missing term per site,
scaled and masked like the KL itself.
"""

from __future__ import annotations

import torch
from pyro.distributions import Delta
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceMeanField_ELBO


def delta_of(fn) -> Delta | None:
    """The ``Delta`` a site's distribution is (possibly inside ``Independent``), or None."""
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    return fn if isinstance(fn, Delta) else None


def delta_log_density(model_trace, guide_trace):
    """Sum over the model's latent sites whose guide site is a Delta of its scaled, masked
    ``log_density`` (0 when there is none): the term ``kl_divergence(Delta, .)`` leaves out."""
    total = 0.0
    for name, model_site in model_trace.nodes.items():
        if model_site["type"] != "sample" or model_site["is_observed"] or name not in guide_trace.nodes:
            continue
        guide_site = guide_trace.nodes[name]
        delta = delta_of(guide_site["fn"])
        if delta is not None:
            total = total + scale_and_mask(delta.log_density, guide_site["scale"], guide_site["mask"]).sum()
    return total


class DeltaAwareTraceMeanField_ELBO(TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` with KL(Delta(v, log_density) || p) = log_density - log p(v) (see the
    module docstring): per particle, the loss and its surrogate gain the missing sum of log_density."""

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate_loss = super()._differentiable_loss_particle(model_trace, guide_trace)
        missing = delta_log_density(model_trace, guide_trace)
        if not torch.is_tensor(missing):
            return loss, surrogate_loss
        return (
            loss + (missing.detach() if torch._C._get_tracing_state() else float(missing.detach())),
            surrogate_loss + missing,
        )
