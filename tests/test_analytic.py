"""The hand-derived loss (vae_pyro.estimators.analytic): each piece against an independent reference."""

from __future__ import annotations

import math

import pyro.distributions as pdist
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae_pyro.estimators.analytic import (
    neg_elbo,
    bernoulli_neg_log_lik,
    closed_form_kl,
    gaussian_kl_to_standard_normal,
    log_normal_diag,
    neg_elbo_terms,
    reparameterize,
)
from vae_pyro.model import VAE

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# KL(N(mu, s^2) || N(0, 1))


def test_kl_matches_torch_distributions():
    g = _gen(0)
    mu = torch.randn(7, 5, generator=g, dtype=F64) * 2
    logvar = torch.randn(7, 5, generator=g, dtype=F64) * 1.5
    ours = gaussian_kl_to_standard_normal(mu, logvar)
    ref = kl_divergence(Normal(mu, torch.exp(logvar / 2)), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    assert ours.shape == (7,)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)
    assert bool((ours >= 0).all())


def test_kl_zero_at_prior():
    kl = gaussian_kl_to_standard_normal(torch.zeros(3, 4, dtype=F64), torch.zeros(3, 4, dtype=F64))
    assert kl.tolist() == [0.0, 0.0, 0.0]


def test_kl_known_value():
    # one dimension, mu = 1, s = 1: KL = mu^2 / 2 = 0.5; mu = 0, s^2 = e: KL = (e - 1 - 1) / 2
    mu = torch.tensor([[1.0], [0.0]], dtype=F64)
    logvar = torch.tensor([[0.0], [1.0]], dtype=F64)
    torch.testing.assert_close(
        gaussian_kl_to_standard_normal(mu, logvar),
        torch.tensor([0.5, (math.e - 2) / 2], dtype=F64),
        rtol=0,
        atol=1e-15,
    )


def test_kl_matches_monte_carlo():
    g = _gen(1)
    mu = torch.tensor([0.7, -1.2, 0.1], dtype=F64)
    logvar = torch.tensor([-0.5, 0.3, 1.0], dtype=F64)
    n = 200_000
    eps = torch.randn(n, 3, generator=g, dtype=F64)
    z = mu + eps * torch.exp(logvar / 2)
    q = Normal(mu, torch.exp(logvar / 2))
    p = Normal(torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))
    samples = (q.log_prob(z) - p.log_prob(z)).sum(-1)
    estimate = samples.mean().item()
    stderr = samples.std().item() / math.sqrt(n)
    exact = gaussian_kl_to_standard_normal(mu, logvar).item()
    # The MC mean of n i.i.d. draws is ~Normal(exact, stderr^2) by the CLT (n = 200k, finite variance:
    # log q - log p is a quadratic in z). A 5-sigma band has two-sided false-failure probability ~6e-7,
    # and the seed is fixed anyway; a wrong formula (e.g. a missing 1/2 or sign) is off by >> 5 s.e.
    assert stderr < 0.01
    assert abs(estimate - exact) < 5 * stderr, (estimate, exact, stderr)


# ----------------------------------------------------------------------------------------------
# Bernoulli -log p(x|z)


def _binary(shape, seed):
    return torch.bernoulli(torch.full(shape, 0.4, dtype=F64), generator=_gen(seed))


def test_bernoulli_nll_matches_explicit_formula():
    logits = torch.randn(6, 20, generator=_gen(2), dtype=F64) * 3
    x = _binary((6, 20), 3)
    p = torch.sigmoid(logits)
    ref = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(-1)
    ours = bernoulli_neg_log_lik(logits, x)
    assert ours.shape == (6,)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_bernoulli_nll_matches_pyro():
    logits = torch.randn(6, 20, generator=_gen(4), dtype=F64) * 3
    x = _binary((6, 20), 5)
    ref = -pdist.Bernoulli(logits=logits).to_event(1).log_prob(x)
    torch.testing.assert_close(bernoulli_neg_log_lik(logits, x), ref, rtol=1e-12, atol=1e-12)


def test_bernoulli_nll_broadcasts_over_particles():
    logits = torch.randn(3, 6, 20, generator=_gen(6), dtype=F64)
    x = _binary((6, 20), 7)
    ours = bernoulli_neg_log_lik(logits, x)
    assert ours.shape == (3, 6)
    for k in range(3):
        torch.testing.assert_close(ours[k], bernoulli_neg_log_lik(logits[k], x), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_bernoulli_nll_stable_for_extreme_logits(dtype):
    logits = torch.tensor([[100.0, -100.0, 100.0, -100.0]], dtype=dtype)
    right = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=dtype)
    wrong = 1 - right
    nll_right = bernoulli_neg_log_lik(logits, right)
    nll_wrong = bernoulli_neg_log_lik(logits, wrong)
    assert bool(torch.isfinite(nll_right).all()) and bool(torch.isfinite(nll_wrong).all())
    # -log sigmoid(100) = log(1 + e^-100) ~ e^-100; -log sigmoid(-100) = 100 + log(1 + e^-100) ~ 100
    assert 0.0 <= nll_right.item() < 1e-30
    assert nll_wrong.item() == pytest.approx(400.0, rel=1e-6)


# ----------------------------------------------------------------------------------------------
# log N(z; mu, diag(exp(logvar)))


def test_log_normal_diag_matches_torch():
    g = _gen(8)
    z = torch.randn(4, 9, 5, generator=g, dtype=F64) * 2
    mu = torch.randn(9, 5, generator=g, dtype=F64)
    logvar = torch.randn(9, 5, generator=g, dtype=F64)
    ref = Normal(mu, torch.exp(logvar / 2)).log_prob(z).sum(-1)
    ours = log_normal_diag(z, mu, logvar)
    assert ours.shape == (4, 9)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# z = mu + sigma * eps


def test_reparameterize_with_given_eps():
    g = _gen(9)
    mu = torch.randn(3, 4, generator=g, dtype=F64)
    logvar = torch.randn(3, 4, generator=g, dtype=F64)
    eps = torch.randn(5, 3, 4, generator=g, dtype=F64)
    z = reparameterize(mu, logvar, 5, eps)
    assert z.shape == (5, 3, 4)
    assert torch.equal(z, mu + eps * torch.exp(0.5 * logvar))


def test_reparameterize_is_differentiable():
    mu = torch.tensor([0.5], dtype=F64, requires_grad=True)
    logvar = torch.tensor([0.2], dtype=F64, requires_grad=True)
    eps = torch.tensor([[1.5]], dtype=F64)
    reparameterize(mu, logvar, 1, eps).sum().backward()
    assert mu.grad.item() == pytest.approx(1.0)
    # dz/dlogvar = eps * exp(logvar / 2) / 2
    assert logvar.grad.item() == pytest.approx(1.5 * math.exp(0.1) / 2, rel=1e-12)


def test_reparameterize_sample_moments():
    torch.manual_seed(10)
    mu = torch.tensor([[0.0, 2.0, -3.0]], dtype=F64)
    logvar = torch.tensor([[0.0, -2.0, 1.5]], dtype=F64)
    sigma = torch.exp(logvar / 2)
    n = 100_000
    z = reparameterize(mu, logvar, n)
    assert z.shape == (n, 1, 3)
    assert z.dtype == F64
    mean, std = z.mean(0), z.std(0)
    # For Normal samples: s.e.(mean) = sigma / sqrt(n), s.e.(std) ~ sigma / sqrt(2 n). Both estimators
    # are ~Normal at n = 100k, so |error| < 5 s.e. fails by chance with probability < 1e-6 per entry;
    # a wrong scale (sigma^2 or sigma/2 instead of sigma) is off by hundreds of s.e.
    assert bool(((mean - mu).abs() < 5 * sigma / math.sqrt(n)).all()), (mean, mu)
    assert bool(((std - sigma).abs() < 5 * sigma / math.sqrt(2 * n)).all()), (std, sigma)
    # fresh draws each call
    assert not torch.equal(reparameterize(mu, logvar, 2), reparameterize(mu, logvar, 2))


# ----------------------------------------------------------------------------------------------
# The whole loss


@pytest.fixture
def vae_and_x():
    torch.manual_seed(11)
    vae = VAE(hidden=(32,), z_dim=4).to(F64)
    x = torch.bernoulli(torch.full((5, 784), 0.3, dtype=F64), generator=_gen(12))
    return vae, x


def _by_hand(vae, x, eps):
    """(mean over particles of BCE(decoder(z), x) + KLD), summed over the batch, from scratch."""
    mu, logvar = vae.encoder(x)
    z = mu + eps * torch.exp(0.5 * logvar)
    logits = vae.decoder(z)
    p = torch.sigmoid(logits)
    recon = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(-1)  # (P, B)
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)  # (B,)
    return (recon.mean(0) + kld).sum()


def test_neg_elbo_matches_hand_computation(vae_and_x):
    vae, x = vae_and_x
    eps = torch.randn(1, 5, 4, generator=_gen(13), dtype=F64)
    ours = neg_elbo(vae, x, 1, eps)
    assert ours.dtype == F64 and ours.dim() == 0
    torch.testing.assert_close(ours, _by_hand(vae, x, eps), rtol=1e-12, atol=1e-9)
    # sanity: a neg-ELBO on 5 images of 784 random pixels is large and positive
    assert ours.item() > 5 * 784 * 0.5


def test_neg_elbo_multi_particle_is_average(vae_and_x):
    vae, x = vae_and_x
    P = 4
    eps = torch.randn(P, 5, 4, generator=_gen(14), dtype=F64)
    multi = neg_elbo(vae, x, P, eps)
    singles = torch.stack([neg_elbo(vae, x, 1, eps[k : k + 1]) for k in range(P)])
    torch.testing.assert_close(multi, singles.mean(), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(multi, _by_hand(vae, x, eps), rtol=1e-12, atol=1e-9)
    # the particles really differ, so the average is not trivially equal to each single value
    assert singles.std().item() > 1e-3


def test_neg_elbo_terms_shapes(vae_and_x):
    vae, x = vae_and_x
    eps = torch.randn(3, 5, 4, generator=_gen(15), dtype=F64)
    recon, kl, z, mu, logvar = neg_elbo_terms(vae, x, 3, eps)
    assert recon.shape == (3, 5) and kl.shape == (5,) and z.shape == (3, 5, 4)
    assert mu.shape == logvar.shape == (5, 4)
    torch.testing.assert_close(kl, gaussian_kl_to_standard_normal(mu, logvar), rtol=0, atol=0)


def test_neg_elbo_gradients_flow(vae_and_x):
    vae, x = vae_and_x
    eps = torch.randn(1, 5, 4, generator=_gen(16), dtype=F64)
    neg_elbo(vae, x, 1, eps).backward()
    for name, param in vae.named_parameters():
        if name.startswith(("encoder", "decoder")):
            assert param.grad is not None and bool(torch.isfinite(param.grad).all()), name
            assert param.grad.abs().sum().item() > 0, name


def test_closed_form_kl_refuses_other_priors(vae_and_x):
    """Dispatch is on the prior *object*: a prior swapped in (here a mixture) is refused, by name."""
    from vae_pyro.priors import build_prior

    vae, x = vae_and_x
    mu, logvar = vae.encoder(x)
    torch.testing.assert_close(closed_form_kl(vae, mu, logvar), gaussian_kl_to_standard_normal(mu, logvar))
    vae.prior = build_prior("mog", vae.config.z_dim, components=3).to(F64)
    with pytest.raises(NotImplementedError, match="no closed-form KL for prior 'mog'"):
        closed_form_kl(vae, mu, logvar)
    with pytest.raises(NotImplementedError, match="closed-form KL"):
        neg_elbo(vae, x)
