r"""The path-derivative ("sticking the landing") ELBO gradient of Roeder, Wu & Duvenaud (2017).

With z = mu_phi + sigma_phi * eps, the total derivative of one sample of the ELBO splits into

    d/dphi [log p(x, z) - log q_phi(z|x)]
        = (d/dz [log p(x, z) - log q_phi(z|x)]) dz/dphi      (path term)
        - (partial/partial phi) log q_phi(z|x) |_{z fixed}    (score term).

The score term has expectation zero (E_q[grad_phi log q_phi] = 0), so dropping it leaves an unbiased
gradient. Dropping it is done by evaluating log q with the encoder's outputs detached while z keeps
its dependence on phi. The value is the same single-sample ELBO as ``trace``.

Why it matters: when q(z|x) = p(z|x) exactly, log p(x, z) - log q(z|x) = log p(x) for *every* z, so
the path term is zero draw by draw: the encoder's gradient has zero variance at the optimum, while
the full (``trace``/``analytic``) gradient still carries the score term's noise. ``vae-pyro check
--toy linear_gaussian`` shows it at the closed-form posterior.
"""

from __future__ import annotations

from .base import INVALID, MONTE_CARLO_KL, Estimator, Validity, register_estimator
from .iwae import log_weights


@register_estimator("stl")
class STLEstimator(Estimator):
    description = "path-derivative ELBO, score term dropped (Roeder et al. 2017)"
    same_noise_skip = (
        "drops the score term, so its gradient differs from the others draw by draw "
        "(equal in expectation); checked statistically"
    )

    def differentiable_loss(self, vae, x):
        return -log_weights(vae, x, self.num_particles, stop_q_grad=True).mean(0).sum()

    def validity(self, vae):
        if float(vae.kl_weight) != 1.0:
            return Validity(
                INVALID, f"the path-derivative estimator here is of the plain ELBO; beta = {vae.kl_weight:g} != 1"
            )
        if vae.guide_family.no_path_derivative:
            return Validity(INVALID, f"guide {vae.guide_family.name!r}: {vae.guide_family.no_path_derivative}")
        return Validity(
            MONTE_CARLO_KL, "log p(x, z) - log q(z|x) at the sampled z with the score term dropped, for any prior"
        )
