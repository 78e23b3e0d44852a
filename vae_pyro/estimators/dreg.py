r"""The doubly-reparameterised gradient of IWAE_k (DReG; Tucker, Lawson, Gu & Maddison 2018).

With z_j = z(eps_j, phi) (mu_phi + sigma_phi * eps_j for the diagonal guide; any guide family's
reparameterised sample), log w_j = log p(x, z_j) - log q_phi(z_j|x) and
normalised weights w~_j = w_j / sum_l w_l, the IWAE_k gradient (:mod:`.iwae`) for the encoder is

    grad_phi IWAE_k = E[ sum_j w~_j ( d log w_j/dz_j  dz_j/dphi  -  partial_phi log q_phi(z_j|x) ) ].

Its score part (the partial derivative at fixed z) is what makes the encoder's SNR fall like
1/sqrt(k) (Rainforth et al. 2018). Applying the reparameterisation trick a second time, to
E[w~_j partial_phi log q] (Tucker et al., eq. 5-7), turns it into a path term and gives

    grad_phi IWAE_k = E[ sum_j w~_j^2  d log w_j/dz_j  dz_j/dphi ],

where the total derivative d log w_j / dz_j is taken with q's parameters held fixed (stop-gradient on
mu_phi, sigma_phi inside log q). The decoder's gradient is IWAE's, sum_j w~_j grad_theta log w_j.

**How the surrogate gives both with one backward pass.** log w_j is computed with log q's parameters
detached (so phi reaches it only through z_j) and the surrogate is S = sum_j w~_j log w_j with w~
detached. Then grad_theta S is IWAE's decoder gradient. A hook on z multiplies d S/d z_j by w~_j once
more, so the gradient reaching phi through z_j is w~_j^2 d log w_j/dz_j dz_j/dphi: DReG. (A prior that
itself depends on the encoder, the VampPrior, keeps its IWAE weight w~_j for that dependence, which is
the model's, not q's.) The value is IWAE_k's, -sum_i log (1/k) sum_j w_ij: ``bound = "iwae"``.

Checked (tests/test_new_estimators.py): at shared noise the value and the decoder gradient equal
``iwae``'s to float64 rounding; over independent draws the encoder's mean gradient agrees with
``iwae``'s (z-scores) and its variance is lower (measured).
"""

from __future__ import annotations

import torch

from .base import INVALID, IWAE_BOUND, Estimator, Validity, register_estimator
from .iwae import iwae_validity, log_mean_exp


def dreg_neg_bound(vae, x: torch.Tensor, k: int, eps: torch.Tensor | None = None) -> torch.Tensor:
    """-sum_i IWAE_k(x_i) whose gradient is DReG's (encoder) and IWAE's (decoder, prior, likelihood)."""
    q = vae.posterior(x)  # the guide family's q(z|x); log q below with its parameters stopped
    z = q.rsample(k, q.draw_noise(k, eps))
    log_w = (
        vae.likelihood.log_prob(vae.decoder(z), x) + vae.prior.dist(z.shape[:-1]).log_prob(z) - q.detach().log_prob(z)
    )
    w_tilde = torch.softmax(log_w.detach(), dim=0)  # (k, B), sums to 1 over k
    if z.requires_grad:
        z.register_hook(lambda grad: grad * w_tilde.unsqueeze(-1))  # w~ once more on the path: w~^2
    surrogate = (w_tilde * log_w).sum(0)
    value = log_mean_exp(log_w.detach(), dim=0)
    return -(value + surrogate - surrogate.detach()).sum()


@register_estimator("dreg")
class DReGEstimator(Estimator):
    """IWAE_k with k = ``num_particles`` and the doubly-reparameterised encoder gradient."""

    description = "IWAE_k, doubly-reparameterised encoder gradient (Tucker et al. 2018)"
    bound = IWAE_BOUND
    same_noise_skip = (
        "estimates IWAE_k; its value and decoder gradient equal iwae's at shared noise, its "
        "encoder gradient in expectation (tests/test_new_estimators.py)"
    )

    def differentiable_loss(self, vae, x):
        return dreg_neg_bound(vae, x, self.num_particles)

    def validity(self, vae):
        if vae.guide_family.no_path_derivative:  # DReG's log q needs q's parameters stopped, as stl's
            return Validity(INVALID, f"guide {vae.guide_family.name!r}: {vae.guide_family.no_path_derivative}")
        return iwae_validity(vae)
