r"""The hand-derived VAE loss, written out the way the classic code writes it:

    BCE = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="sum")
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    loss = BCE + KLD

and why that *is* the negative ELBO.

The ELBO of one example x is (Kingma & Welling 2013, eq. 3)

    ELBO(x) = E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || p(z)).

**Why BCE is -log p(x|z) for one sample z ~ q(z|x).** With binary pixels and the decoder giving a
logit l_j per pixel, p(x|z) = prod_j p_j^{x_j} (1 - p_j)^{1 - x_j} with p_j = sigmoid(l_j). So

    -log p(x|z) = -sum_j [x_j log p_j + (1 - x_j) log(1 - p_j)] = BCE(p, x), summed over pixels.

Drawing z = mu + sigma * eps, eps ~ N(0, I) (the reparameterisation trick) makes BCE(decoder(z), x) a
one-sample, unbiased Monte Carlo estimate of -E_q[log p(x|z)] that is differentiable in mu and sigma.
With N samples we average N such terms.

**Why -0.5 * sum(1 + logvar - mu^2 - exp(logvar)) is KL(q(z|x) || N(0, I)).** Both are diagonal
Gaussians, so the KL is a sum over latent dimensions of one-dimensional KLs (appendix B):

    KL(N(mu, s^2) || N(0, 1)) = E_q[log q(z) - log p(z)]
                              = E_q[-log s - (z - mu)^2 / (2 s^2) + z^2 / 2]      (the log 2pi cancel)
                              = -log s - 1/2 + (mu^2 + s^2) / 2     (E[(z-mu)^2] = s^2, E[z^2] = mu^2 + s^2)
                              = -1/2 * (1 + log s^2 - mu^2 - s^2),

and log s^2 = logvar. This expectation is exact, so only the reconstruction term is random.

**Other priors and likelihoods.** The reconstruction term is the chosen likelihood's hand-written
``log_prob`` (:mod:`vae_pyro.likelihoods`; for Bernoulli it is the BCE above). The KL term is closed
form only for some priors, each of which offers it through ``register_prior_kl`` in
:mod:`vae_pyro.priors` (a dispatch on the prior's type, like torch's ``register_kl``):

* N(0, I): the formula above (kept as it is: it is the one the classic code and the README show);
* N(m, diag(s_p^2)) (``diag_normal``): per dimension, with v = exp(logvar) and v_p = s_p^2,

      KL(N(mu, v) || N(m, v_p)) = 1/2 * (log v_p - log v + (v + (mu - m)^2) / v_p - 1),

  which is the formula above at m = 0, v_p = 1;
* any prior for which torch registers ``kl_divergence(Normal, prior)`` (``laplace``), which we use
  as it is rather than re-deriving it.

For the others (a mixture of Gaussians, the VampPrior, Student-t) E_q[log p(z)] has no closed form.
The analytic loss then *refuses* (:class:`NoClosedFormError`) rather than quietly switching to a
Monte Carlo KL: an "analytic" number that is secretly sampled would make the comparison meaningless.

**Other guides** (:mod:`vae_pyro.guides`). For a full-covariance guide q = N(mu, Sigma), Sigma = L L^T
(``full_normal``) or W W^T + diag(sigma^2) (``lowrank_normal``), against N(m, S), S = diag(s^2), with
d latent dimensions (Rasmussen & Williams 2006, eq. A.23; Kullback 1959):

    E_q[log q(z)] = -d/2 log 2 pi - 1/2 log det Sigma - 1/2 E_q[(z - mu)^T Sigma^{-1} (z - mu)]
                  = -d/2 log 2 pi - 1/2 log det Sigma - d/2          (E[(z-mu)(z-mu)^T] = Sigma, tr I = d)
    E_q[log p(z)] = -d/2 log 2 pi - 1/2 log det S - 1/2 [tr(S^{-1} Sigma) + (mu - m)^T S^{-1} (mu - m)]

    KL(q || p)    = 1/2 [tr(S^{-1} Sigma) + (mu - m)^T S^{-1} (mu - m) - d + log det S - log det Sigma]

and against N(0, I): **KL = 1/2 (tr Sigma + mu^T mu - d - log det Sigma)**; a diagonal Sigma =
diag(exp(logvar)) gives back the classic formula above. tr Sigma is the sum of squares of L's rows
(of W's rows plus sigma^2); log det Sigma = sum logvar for L (its diagonal is sigma), and log det D +
log det(I + W^T D^{-1} W) for the low-rank one (the matrix determinant lemma). The code is
:func:`vae_pyro.guides.gaussian_kl_to_diag_normal`. A normalising flow (``iaf``) has no closed form
at all (log q(z|x) carries the flow's Jacobian at z), so the analytic loss refuses it, as it refuses
priors without one.

**The KL weight.** With beta = ``vae.kl_weight`` the loss is recon + beta KL, the negative of the
beta-ELBO every estimator computes (see :mod:`vae_pyro.model`).

All functions here return *sums over the batch* in nats, like Pyro's ELBO classes; divide by the
batch size for nats per example.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..guides import LOG_2PI, Posterior, log_normal_diag, reparameterize  # noqa: F401  (re-exported)
from ..priors import gaussian_kl_diag, gaussian_kl_to_standard_normal, prior_kl  # noqa: F401  (the KL formulas)
from .base import EXACT_KL, INVALID, Estimator, Validity, register_estimator
from ..errors import NoClosedFormError  # noqa: F401  (re-exported)


def bernoulli_neg_log_lik(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """BCE summed over pixels: -log p(x|z) for Bernoulli(sigmoid(logits)). Shape: logits' batch shape."""
    return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def neg_elbo_terms(
    vae, x: torch.Tensor, num_particles: int = 1, eps: torch.Tensor | None = None, sampled_kl: bool = False
):
    """The two terms of the hand-written -ELBO, per example: ``(recon, kl, z, mu, logvar)`` where
    ``recon`` (shape (num_particles, B)) is -log p(x|z) at each sample z = mu + sigma eps and ``kl`` is
    the closed-form KL (shape (B,)), or with ``sampled_kl`` the Monte Carlo KL log q(z|x) - log p(z)
    at each sample (shape (num_particles, B); any prior). Uses the VAE's own likelihood, prior and
    guide family: z is the family's reparameterised sample (z = mu + sigma eps for the diagonal guide),
    ``eps`` its noise, and ``mu``, ``logvar`` the encoder's outputs."""
    q = vae.posterior(x)
    eps = q.draw_noise(num_particles, eps)
    z = q.rsample(num_particles, eps)
    if sampled_kl:
        recon = -vae.likelihood.log_prob(vae.decoder(z), x)
        return recon, q.log_prob(z) - vae.prior.dist((x.shape[0],)).log_prob(z), z, q.mu, q.logvar
    kl = posterior_kl(vae, q)  # first, so a prior or guide without one refuses before any work
    recon = -vae.likelihood.log_prob(vae.decoder(z), x)
    return recon, kl, z, q.mu, q.logvar


def posterior_kl(vae, q: Posterior) -> torch.Tensor:
    """The KL term of the analytic loss, KL(q(z|x) || p(z)) summed over latent dimensions, shape
    ``q.mu.shape[:-1]``: for the diagonal guide the prior's own closed form
    (:func:`~vae_pyro.priors.prior_kl`, dispatched on the prior *object's* type, so a swapped-in prior
    is honoured), for the full-covariance and low-rank ones the formula above against a Normal prior.
    A pair without one raises :class:`NoClosedFormError` rather than being replaced by a sampled KL."""
    try:
        return q.closed_form_kl(vae.prior)
    except NotImplementedError as err:
        what, why = err.args
        refusal = NoClosedFormError(
            f"the analytic loss has no closed-form KL for {what} ({why}); "
            "use a Monte Carlo estimator: trace, tmf (falls back to Monte Carlo) or their jit_ variants"
        )
        refusal.subject = what  # "prior 'mog'", "guide 'iaf'": for the reports that name it
        raise refusal from None


def closed_form_kl(vae, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """:func:`posterior_kl` of the VAE's guide at the encoder's outputs ``mu``, ``logvar``."""
    return posterior_kl(vae, vae.guide_family.from_encoding(mu, logvar))


def closed_form_kl_subject(vae) -> str | None:
    """What lacks the closed-form KL here ("prior 'mog'", "guide 'iaf'"); None when there is one."""
    mu = torch.zeros(1, vae.config.z_dim, dtype=vae.dtype, device=vae.device)
    try:
        with torch.no_grad():
            closed_form_kl(vae, mu, torch.zeros_like(mu))
    except NoClosedFormError as err:
        return err.subject
    return None


def closed_form_kl_reason(vae) -> str | None:
    """None when the analytic loss has a closed-form KL for this VAE's prior and guide; else why not.
    Asked the same way the loss asks (on a tiny batch), so the answer cannot drift from the behaviour."""
    mu = torch.zeros(1, vae.config.z_dim, dtype=vae.dtype, device=vae.device)
    try:
        with torch.no_grad():
            closed_form_kl(vae, mu, torch.zeros_like(mu))
    except NoClosedFormError as err:
        return str(err)
    return None


def neg_elbo(
    vae, x: torch.Tensor, num_particles: int = 1, eps: torch.Tensor | None = None, sampled_kl: bool = False
) -> torch.Tensor:
    """The hand-written -ELBO_beta summed over the batch (beta = ``vae.kl_weight``, 1 for the ELBO):
    BCE + beta KLD with the closed-form KL, the reconstruction averaged over ``num_particles``
    samples, an unbiased estimate of -sum_i ELBO_beta(x_i) whose only noise is in the
    reconstruction; or (``sampled_kl``) recon + beta (log q(z|x) - log p(z)) averaged over samples."""
    recon, kl, *_ = neg_elbo_terms(vae, x, num_particles, eps, sampled_kl)
    return neg_elbo_from_terms(recon, kl, vae.kl_weight, sampled_kl)


def neg_elbo_from_terms(recon: torch.Tensor, kl: torch.Tensor, kl_weight, sampled_kl: bool = False) -> torch.Tensor:
    """:func:`neg_elbo` from the terms of :func:`neg_elbo_terms`: mean over particles, sum over the batch."""
    if sampled_kl:
        return (recon + kl_weight * kl).mean(0).sum()
    return (recon.mean(0) + kl_weight * kl).sum()


@register_estimator("analytic")
class AnalyticEstimator(Estimator):
    description = "hand-written log-likelihood (BCE for Bernoulli) + closed-form KL; refuses without one"
    same_noise_skip = "is the reference the others are compared with"

    def differentiable_loss(self, vae, x):
        return neg_elbo(vae, x, self.num_particles)

    def same_noise_skip_reason(self, vae):
        why_not = closed_form_kl_reason(vae)
        return f"is invalid here: {why_not}" if why_not else self.same_noise_skip

    def validity(self, vae):
        why_not = closed_form_kl_reason(vae)
        if why_not:
            return Validity(INVALID, why_not)
        return Validity(
            EXACT_KL,
            f"closed-form KL({_q_name(vae)} || {vae.prior.name}) plus the likelihood's hand-written log-density",
        )


def _q_name(vae) -> str:
    """How the validity reasons name q: ``Normal`` for today's diagonal guide, else the family."""
    return vae.guide_family.label
