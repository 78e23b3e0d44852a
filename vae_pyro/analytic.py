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
                              = -log s - 1/2 + (mu^2 + s^2) / 2                   (E[(z-mu)^2] = s^2, E[z^2] = mu^2 + s^2)
                              = -1/2 * (1 + log s^2 - mu^2 - s^2),

and log s^2 = logvar. This expectation is exact, so only the reconstruction term is random.

All functions here return *sums over the batch* in nats, like Pyro's ELBO classes; divide by the
batch size for nats per example.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def bernoulli_neg_log_lik(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """BCE summed over pixels: -log p(x|z) for Bernoulli(sigmoid(logits)). Shape: logits' batch shape."""
    return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def gaussian_kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dimensions (appendix B)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over dimensions, written out by hand."""
    return -0.5 * torch.sum(LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp(), dim=-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, num_particles: int = 1,
                   eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I), shape (num_particles, *mu.shape)."""
    std = torch.exp(0.5 * logvar)
    shape = (num_particles,) + tuple(std.shape)
    if eps is None:
        eps = torch.randn(shape, dtype=std.dtype, device=std.device)
    elif tuple(eps.shape) != shape:
        raise ValueError(f"eps has shape {tuple(eps.shape)}, expected {shape} (num_particles, batch, z_dim)")
    return mu + eps * std


def neg_elbo_terms(vae, x: torch.Tensor, num_particles: int = 1, eps: torch.Tensor | None = None):
    """The two terms of the hand-derived loss, per example: ``(recon, kl, z, mu, logvar)`` where
    ``recon`` (shape (num_particles, B)) is -log p(x|z) at each sample and ``kl`` (shape (B,)) is
    the closed-form KL. Uses the VAE's own likelihood, so other likelihoods plug in."""
    mu, logvar = vae.encoder(x)
    z = reparameterize(mu, logvar, num_particles, eps)
    recon = -vae.likelihood.log_prob(vae.decoder(z), x)
    kl = closed_form_kl(vae, mu, logvar)
    return recon, kl, z, mu, logvar


def closed_form_kl(vae, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The KL term of the analytic loss. For the standard Normal prior this is the formula above;
    a prior without a closed form makes the analytic loss refuse rather than guess."""
    if vae.config.prior == "standard_normal":
        return gaussian_kl_to_standard_normal(mu, logvar)
    raise NotImplementedError(
        f"the analytic loss has no closed-form KL for prior {vae.config.prior!r}; "
        "use a Monte Carlo estimator (trace, tmf)"
    )


def analytic_neg_elbo(vae, x: torch.Tensor, num_particles: int = 1, eps: torch.Tensor | None = None) -> torch.Tensor:
    """BCE + KLD, summed over the batch, the reconstruction term averaged over ``num_particles``
    samples: an unbiased estimate of -sum_i ELBO(x_i) whose only noise is in the reconstruction."""
    recon, kl, *_ = neg_elbo_terms(vae, x, num_particles, eps)
    return (recon.mean(0) + kl).sum()
