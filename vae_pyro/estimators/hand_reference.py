r"""``hand_mc``: a hand-written Monte Carlo -ELBO, the checks' reference for priors without a closed-form KL.

Where the prior has a closed-form KL the checks compare every estimator with the analytic loss. Where
it has none (a mixture, the VampPrior, Student-t), the reference must still be independent of the Pyro
code it judges (a Pyro ELBO against a Pyro ELBO proves little). This estimator uses no Pyro trace, no
``poutine`` and no Pyro ELBO class: with z = mu + sigma eps, eps ~ N(0, I) (the reparameterisation,
Kingma & Welling 2014, eq. 10),

    -ELBO_beta(x) ~= (1/P) sum_p [ -log p(x|z_p) + beta (log q(z_p|x) - log p(z_p)) ]

with log p(x|z) the likelihood's hand-written ``log_prob``, log p(z) the registered prior's density
(``prior.dist(...).log_prob``), and log q(z|x) written out in the noise itself,

    log q(z|x) = sum_j [ -1/2 log(2 pi) - 1/2 logvar_j - 1/2 eps_j^2 ]     ((z - mu)^2 / sigma^2 = eps^2)

(:func:`vae_pyro.guides.log_normal_noise`).

beta is the VAE's ``kl_weight``, weighting log q and log p alike (as in :mod:`vae_pyro.model`). The
gradient is the full reparameterised one (score term included): unbiased for the ELBO's gradient.
Valid for every prior; its KL term is always sampled. Another guide family (:mod:`vae_pyro.guides`)
draws z from its own noise and scores it with its own hand-written log q (a triangular factor's
determinant, the matrix determinant lemma, a flow's log-Jacobians).
"""

from __future__ import annotations

import torch

from .base import MONTE_CARLO_KL, Estimator, Validity, register_estimator

HAND_MC = "hand_mc"


@register_estimator(HAND_MC)
class HandMonteCarloEstimator(Estimator):
    description = "hand-written -log p(x|z) + beta (log q(z|x) - log p(z)) at reparameterised z; no Pyro"
    same_noise_skip = (
        "draws its own noise outside Pyro and is the reference where there is no closed-form "
        "KL; the same-noise check ties trace and tmf to these same hand-written terms"
    )

    def differentiable_loss(self, vae, x: torch.Tensor) -> torch.Tensor:
        q = vae.posterior(x)  # mu, logvar: (B, d)
        eps = torch.randn(
            (self.num_particles,) + tuple(q.mu.shape[:-1]) + (q.noise_dim,), dtype=q.mu.dtype, device=q.mu.device
        )
        z = q.rsample(self.num_particles, eps)  # (P, B, d)
        log_lik = vae.likelihood.log_prob(vae.decoder(z), x)  # (P, B)
        log_prior = vae.prior.dist(z.shape[:-1]).log_prob(z)  # (P, B)
        log_q = q.log_prob_noise(eps, z)  # (P, B)
        return (-log_lik + vae.kl_weight * (log_q - log_prior)).mean(0).sum()

    def validity(self, vae):
        return Validity(MONTE_CARLO_KL, "hand-written log q(z|x) - log p(z) at the sampled z, for any prior and guide")
