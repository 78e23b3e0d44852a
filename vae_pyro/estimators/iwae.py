r"""The importance-weighted bound IWAE_k (Burda, Grosse & Salakhutdinov 2015), computed two ways.

For one example x and k independent samples z_1 .. z_k ~ q(z|x), with importance weights
w_j = p(x, z_j) / q(z_j|x),

    IWAE_k(x) = E[ log (1/k) sum_j w_j ]  <=  log E[(1/k) sum_j w_j] = log p(x)        (Jensen)

IWAE_1 is the ELBO; IWAE_k is non-decreasing in k (Burda et al., theorem 1) and tends to log p(x)
as k grows when the weights are bounded. Its reparameterised gradient is

    grad IWAE_k = E[ sum_j w~_j grad log w_j ],   w~_j = w_j / sum_l w_l,

so a sample whose weight dominates takes nearly all the gradient.

========== ==================================================================================
``iwae``   ours: log w for all k samples in one vectorised pass through the encoder, decoder,
           prior and likelihood modules, then ``logsumexp - log k`` per example.
``renyi0`` ``pyro.infer.RenyiELBO(alpha=0, num_particles=k)`` on ``vae.model`` / ``vae.guide``.
========== ==================================================================================

**How RenyiELBO normalises** (read from ``pyro/infer/renyi_elbo.py``, pyro-ppl 1.9.2, not guessed):
per particle it adds ``log p - log q`` over the sample sites, summing over the plates that are *not*
shared by every site (``get_dependent_plate_dims``). Our ``data`` plate is shared by ``z`` and
``x``, so it is kept: the particles have shape (k, B); ``logsumexp`` over particles minus ``log k``
gives one IWAE_k per example, and ``.sum()`` adds them over the batch. So its loss is
-sum_i IWAE_k(x_i), the same convention as every estimator here (sum over the data, one bound per
example), and *not* one importance weight for the whole batch (which would give a looser bound on
log p(x_1, ..., x_B)). With ``num_particles=1`` it is exactly the single-sample ELBO, for any alpha.

**RenyiELBO has no ``differentiable_loss``** in 1.9.2, only ``loss`` (no gradient) and
``loss_and_grads`` (which calls ``backward`` itself). :class:`DifferentiableRenyiELBO` adds one by
building Pyro's own surrogate, line for line, and returning it instead of back-propagating; a test
checks its gradient equals ``loss_and_grads``'s at the same seed.

Both are registered as estimators with ``bound = "iwae"``: their value is a different (tighter)
bound from the ELBO, so ``vae-pyro compare`` does not judge them against the ELBO; ``vae-pyro check``
judges them against each other (same noise, exactly) and against exact log p(x) on the toy models.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer import RenyiELBO
from pyro.infer.util import get_dependent_plate_dims, torch_sum

from .base import INVALID, IWAE_BOUND, MONTE_CARLO_KL, Estimator, Validity, register_estimator
from .pyro_elbos import PyroEstimator
from .same_noise import differences, recorded_noise

#: importance samples per test digit of the test NLL in Burda et al. 2015 (section 5), and how many of
#: them are held in memory at once (100 digits x 500 samples x 784 pixels: 157 MB of decoder output)
BURDA_K, NLL_CHUNK = 5000, 500


def iwae_validity(vae) -> Validity:
    """IWAE_k bounds log p(x) itself: there is no KL term to weight, so it applies at beta = 1 only."""
    if float(vae.kl_weight) != 1.0:
        return Validity(INVALID, f"IWAE_k bounds log p(x) and has no KL weight; beta = {vae.kl_weight:g} != 1")
    return Validity(
        MONTE_CARLO_KL,
        "IWAE_k from k sampled importance weights p(x, z) / q(z|x), for any prior "
        "(a tighter bound than the ELBO: not compared with it)",
    )


def log_weights(
    vae,
    x: torch.Tensor,
    num_particles: int = 1,
    eps: torch.Tensor | None = None,
    stop_q_grad: bool = False,
    proposal=None,
) -> torch.Tensor:
    """log w = log p(x|z) + log p(z) - log q(z|x) at z = mu + sigma * eps (the guide family's
    reparameterised sample, :meth:`vae_pyro.guides.Posterior.rsample`), shape (num_particles, B).

    ``stop_q_grad=True`` evaluates log q with the encoder's outputs detached (z itself still carries
    the gradient): the path-derivative of Roeder et al. 2017, used by :mod:`vae_pyro.estimators.stl`.
    ``proposal``: an encoder to draw z from instead of the VAE's (q is only the importance
    distribution: any q gives a bound on the same log p(x)); the model, p(x|z) p(z), is the VAE's,
    including a VampPrior's use of the VAE's own encoder."""
    q = vae.posterior(x, proposal)
    eps = q.draw_noise(num_particles, eps)
    z = q.rsample(num_particles, eps)
    log_lik = vae.likelihood.log_prob(vae.decoder(z), x)
    log_prior = vae.prior.dist(z.shape[:-1]).log_prob(z)
    log_q = (q.detach() if stop_q_grad else q).log_prob(z)
    return log_lik + log_prior - log_q


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log((1/k) sum_j exp(log_w_j)) along ``dim``, without overflow (logsumexp shifts by the max)."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def iwae_neg_bound(vae, x: torch.Tensor, k: int, eps: torch.Tensor | None = None) -> torch.Tensor:
    """-sum_i IWAE_k(x_i) for one draw of k samples per example (differentiable)."""
    return -log_mean_exp(log_weights(vae, x, k, eps), dim=0).sum()


@register_estimator("iwae")
class IWAEEstimator(Estimator):
    """Ours: k = ``num_particles`` importance samples per example, vectorised."""

    description = "IWAE_k, vectorised log-mean-exp of k = particles importance weights (ours)"
    bound = IWAE_BOUND
    same_noise_skip = "estimates IWAE_k, not the ELBO; checked against renyi0 at shared noise by `vae-pyro check`"

    def differentiable_loss(self, vae, x):
        return iwae_neg_bound(vae, x, self.num_particles)

    def validity(self, vae):
        return iwae_validity(vae)


class DifferentiableRenyiELBO(RenyiELBO):
    """``RenyiELBO`` plus a ``differentiable_loss``: the value is Pyro's ``-elbo`` and the gradient
    that of Pyro's surrogate in ``loss_and_grads`` (the two lines that differ are marked)."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        elbo_particles, surrogate_particles = [], []
        vectorized = self.vectorize_particles and self.num_particles > 1
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo_particle, surrogate_particle = 0.0, 0.0
            sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    log_prob_sum = torch_sum(site["log_prob"], sum_dims)
                    elbo_particle = elbo_particle + log_prob_sum.detach()
                    surrogate_particle = surrogate_particle + log_prob_sum
            for site in guide_trace.nodes.values():
                if site["type"] == "sample":
                    _, score_function_term, entropy_term = site["score_parts"]
                    log_prob_sum = torch_sum(site["log_prob"], sum_dims)
                    elbo_particle = elbo_particle - log_prob_sum.detach()
                    if not is_identically_zero(entropy_term):
                        surrogate_particle = surrogate_particle - log_prob_sum
                        if not is_identically_zero(score_function_term):
                            raise NotImplementedError("RenyiELBO: see pyro-ppl issue #1222")
                    if not is_identically_zero(score_function_term):
                        surrogate_particle = surrogate_particle + (self.alpha / (1.0 - self.alpha)) * log_prob_sum
            elbo_particles.append(elbo_particle)
            surrogate_particles.append(surrogate_particle)
        if vectorized:
            elbo_particles, surrogate_particles = elbo_particles[0], surrogate_particles[0]
        else:
            elbo_particles, surrogate_particles = torch.stack(elbo_particles), torch.stack(surrogate_particles)
        log_weights_ = (1.0 - self.alpha) * elbo_particles
        log_mean_weight = torch.logsumexp(log_weights_, dim=0, keepdim=True) - math.log(self.num_particles)
        elbo = log_mean_weight.sum() / (1.0 - self.alpha)
        normalized_weights = (log_weights_ - log_mean_weight).exp()
        surrogate_loss = -(normalized_weights * surrogate_particles).sum() / self.num_particles
        loss = -elbo  # differs: a tensor, not ``.item()``; and no warn_if_nan (it reads the device)
        # differs: return value + (surrogate - surrogate.detach()) instead of surrogate.backward()
        return loss + (surrogate_loss - surrogate_loss.detach())


@register_estimator("renyi0")
class RenyiEstimator(PyroEstimator):
    """``pyro.infer.RenyiELBO(alpha=0, num_particles=k)``: Pyro's IWAE_k."""

    description = "pyro.infer.RenyiELBO(alpha=0): IWAE_k with k = particles"
    elbo_class = DifferentiableRenyiELBO
    bound = IWAE_BOUND
    same_noise_skip = "estimates IWAE_k, not the ELBO; checked against iwae at shared noise by `vae-pyro check`"

    def validity(self, vae):
        return iwae_validity(vae)


# ----------------------------------------------------------------------------------------------
# Same noise: ours against Pyro's


def iwae_same_noise(vae, x: torch.Tensor, k: int, repeats: int = 3) -> dict:
    """Run Pyro's ``RenyiELBO(alpha=0)`` while recording the z its guide drew, recover
    eps = (z - mu) / sigma, and evaluate our IWAE_k at that very eps, in float64. Returns the largest
    |difference| of the values (nats/example) and of any gradient entry (relative) over ``repeats``
    fresh draws: both pure float rounding when the two agree."""
    vae64, x64 = vae.clone(dtype=torch.float64), x.to(torch.float64)
    params = [p for p in vae64.parameters() if p.requires_grad]
    elbo = DifferentiableRenyiELBO(alpha=0.0, num_particles=k, vectorize_particles=k > 1, max_plate_nesting=1)
    worst_value, worst_grad = 0.0, 0.0
    for _ in range(repeats):
        pyro_loss, eps = recorded_noise(vae64, x64, elbo, k)
        value, grad = differences(pyro_loss, iwae_neg_bound(vae64, x64, k, eps), params, x.shape[0])
        worst_value, worst_grad = max(worst_value, value), max(worst_grad, grad)
    return {"value_max_abs_diff": worst_value, "grad_max_rel_diff": worst_grad, "repeats": repeats, "k": k}
