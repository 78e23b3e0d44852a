"""Each likelihood: its hand-written log-density against torch's/Pyro's to float64 precision, the data
it takes (and the one-line error for data it does not), and the data pipeline that produces it.

Tolerance for the density comparisons: rtol = atol = 1e-10 in float64. Both sides compute the same
closed form in a different order (a few lgamma/log/softplus per pixel, summed over 784 pixels, sums of
size ~1e3), so they agree to ~1e-12; 1e-10 leaves margin while a dropped constant (the Continuous
Bernoulli normaliser, log C(n, x), a log 2pi) is >= 1e-3 per pixel."""

from __future__ import annotations

import math

import pyro.distributions as pdist
import pytest
import torch

from vae_pyro.data import DataError, open_unit_eps, prepare, resolve_data
from vae_pyro.likelihoods import LIKELIHOODS, build_likelihood, continuous_bernoulli_log_norm
from vae_pyro.model import VAE

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)
#: MNIST's largest grey level (its pixels are 0..255): the Binomial's trials on MNIST
MNIST_MAX = 255


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _data_for(name, shape, seed):
    g = _gen(seed)
    kind = LIKELIHOODS[name].data_kind
    if kind == "binary":
        return torch.bernoulli(torch.full(shape, 0.3, dtype=F64), generator=g)
    if kind == "counts":
        return torch.randint(0, MNIST_MAX + 1, shape, generator=g).to(F64)
    u = torch.rand(shape, generator=g, dtype=F64)
    if kind == "unit_interval":
        u[..., :3] = torch.tensor([0.0, 1.0, 0.5], dtype=F64)  # the closed interval's ends are allowed
    return u


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_hand_written_log_prob_matches_the_distribution(name):
    lik = build_likelihood(name, x_dim=20, max_value=MNIST_MAX).to(F64)
    if name == "normal_learned":
        with torch.no_grad():  # per-pixel scales that differ, so a broadcast mistake would show
            lik.log_scale.copy_(torch.linspace(-3, 0.5, 20, dtype=F64))
    out = (
        torch.randn(
            (3, 6, lik.out_per_pixel * 20) if lik.out_per_pixel == 1 else (3, 6, 2, 20), generator=_gen(1), dtype=F64
        )
        * 3
    )
    x = _data_for(name, (6, 20), 2)
    ours = lik.log_prob(out, x)
    ref = lik.dist(out).log_prob(x)
    if name == "continuous_bernoulli":
        # our Pyro distribution uses our normaliser (see the next test); compare with torch's own
        # where torch's is accurate, |l| < ~16 in float64 (these logits are below 12)
        assert out.abs().max() < 12
        ref = pdist.ContinuousBernoulli(logits=out).to_event(1).log_prob(x)
    assert ours.shape == ref.shape == (3, 6)
    torch.testing.assert_close(ours, ref, **TOL)


def _log_norm_by_integration(logits: torch.Tensor) -> torch.Tensor:
    """-log int_0^1 exp(x log sigmoid(l) + (1 - x) log sigmoid(-l)) dx by Simpson's rule on 400,001
    points, in float64. The integrand is exp(l x) up to a factor; at the largest |l| (200) its scale
    is 1/200, spanned by 2,000 points; Simpson's relative error h^4 l^4 / 180 = (2.5e-6 * 200)^4 / 180
    < 1e-13, far under the 1e-9 the test asks."""
    n = 400_001
    x = torch.linspace(0, 1, n, dtype=F64)
    w = torch.ones(n, dtype=F64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    log_w = torch.log(w / (3 * (n - 1)))
    lg = logits[:, None]
    log_f = x * torch.nn.functional.logsigmoid(lg) + (1 - x) * torch.nn.functional.logsigmoid(-lg)
    return -torch.logsumexp(log_f + log_w, dim=1)


def test_continuous_bernoulli_normaliser_is_smooth_at_zero_and_stable_far_away():
    # l / tanh(l / 2): 2 at 0, even. The reference is the definition, C(l) = 1 / int_0^1 lambda^x
    # (1 - lambda)^(1 - x) dx with lambda = sigmoid(l), integrated numerically, so it shares no code
    # or algebra with the closed form (nor with the likelihood's log_prob, which uses the closed form).
    logits = torch.tensor([0.0, 1e-8, -1e-4, 9.99e-4, 1.001e-3, 0.5, -3.0, 40.0, -200.0], dtype=F64)
    ours = continuous_bernoulli_log_norm(logits)
    torch.testing.assert_close(ours, _log_norm_by_integration(logits), rtol=0, atol=1e-9)
    # where torch's own probs-based formula still works, it agrees
    mid = torch.tensor([-5.0, -0.3, 0.01, 2.0, 7.0], dtype=F64)
    ref = pdist.ContinuousBernoulli(logits=mid)._cont_bern_log_norm()
    torch.testing.assert_close(continuous_bernoulli_log_norm(mid), ref, **TOL)
    # float32 does not blow up at large logits (lambda = sigmoid(l) rounds to 1 there)
    assert bool(torch.isfinite(continuous_bernoulli_log_norm(torch.tensor([60.0, -60.0]))).all())


def test_torch_continuous_bernoulli_normaliser_saturates_and_ours_does_not():
    """Why ``ExactContinuousBernoulli`` exists: torch's log C stops growing once sigmoid(l) rounds to 1."""
    l32 = torch.tensor([20.0, 40.0, 100.0])
    torch_norm = pdist.ContinuousBernoulli(logits=l32)._cont_bern_log_norm()
    # float32 clamps probs to [eps, 1 - eps], eps = 2^-23 (torch's clamp_probs), so l saturates at
    # logit(1 - 2^-23) ~ 23 ln 2 = 15.942385, where l / tanh(l / 2) ~ l: log C saturates at log(23 ln 2)
    assert torch.allclose(torch_norm, torch.full((3,), math.log(23 * math.log(2))), atol=1e-3)  # saturated
    torch.testing.assert_close(continuous_bernoulli_log_norm(l32), torch.log(l32), rtol=1e-6, atol=1e-6)
    lik = build_likelihood("continuous_bernoulli", x_dim=3, max_value=MNIST_MAX)
    x = torch.tensor([[0.2, 0.9, 1.0]])
    torch.testing.assert_close(lik.dist(l32[None]).log_prob(x), lik.log_prob(l32[None], x))


def test_continuous_bernoulli_integrates_to_one():
    """The normaliser is right: the density integrates to 1 over [0, 1] (trapezoid rule on 200,001
    points; error ~ h^2 * max|f''| / 12 < 1e-7 even at l = 40, where the density is ~40 e^{40 (x - 1)}),
    including at the large logits where torch's saturates."""
    lik = build_likelihood("continuous_bernoulli", x_dim=1, max_value=MNIST_MAX).to(F64)
    xs = torch.linspace(0, 1, 200_001, dtype=F64)
    for logit in (-40.0, -4.0, 0.0, 0.7, 6.0, 40.0):
        density = lik.log_prob(torch.full((len(xs), 1), logit, dtype=F64), xs[:, None]).exp()
        assert torch.trapezoid(density, xs).item() == pytest.approx(1.0, abs=1e-6)


def test_binomial_log_prob_known_value():
    # n = 255, x = 0, p = 1/2: log p(x) = 255 log(1/2)
    lik = build_likelihood("binomial", x_dim=1, max_value=MNIST_MAX).to(F64)
    val = lik.log_prob(torch.zeros(1, 1, dtype=F64), torch.zeros(1, 1, dtype=F64))
    assert val.item() == pytest.approx(255 * math.log(0.5), rel=1e-14)


def test_binomial_trials_are_the_datas_max_value():
    """digits8x8's pixels are 0..16: a Binomial(16, p) count model, 16 trials, data entering the encoder as x/16."""
    lik = build_likelihood("binomial", x_dim=2, max_value=16).to(F64)
    assert lik.total_count == 16 and lik.input_scale == 1 / 16
    val = lik.log_prob(torch.zeros(1, 2, dtype=F64), torch.tensor([[0.0, 16.0]], dtype=F64))
    assert val.item() == pytest.approx(32 * math.log(0.5), rel=1e-14)
    x = torch.tensor([[0.0, 16.0]], dtype=F64)
    torch.testing.assert_close(val, lik.dist(torch.zeros(1, 2, dtype=F64)).log_prob(x))
    with pytest.raises(DataError, match="integer counts 0..16 \\(found value 17\\)"):
        lik.check_data(torch.tensor([[0.0, 17.0]]))
    with pytest.raises(ValueError, match="needs its number of trials"):
        build_likelihood("binomial", x_dim=2)


def test_normal_fixed_scale_is_a_scaled_squared_error():
    lik = build_likelihood("normal", x_dim=4, max_value=MNIST_MAX, scale=0.2).to(F64)
    out = torch.tensor([[0.0, 1.0, -1.0, 2.0]], dtype=F64)
    x = torch.tensor([[0.5, 0.1, 0.9, 0.3]], dtype=F64)
    mean = torch.sigmoid(out)
    expected = -((x - mean) ** 2).sum() / (2 * 0.04) - 4 * (math.log(0.2) + 0.5 * math.log(2 * math.pi))
    assert lik.log_prob(out, x).item() == pytest.approx(expected.item(), rel=1e-13)


@pytest.mark.parametrize(
    "name, bad, needle",
    [
        ("bernoulli", 0.5, "not binary (found value 0.5)"),
        ("continuous_bernoulli", 1.5, "must lie in [0, 1] (found value 1.5)"),
        ("normal", -0.1, "must lie in [0, 1] (found value -0.1)"),
        ("beta", 0.0, "must lie strictly inside (0, 1) (found value 0)"),
        ("binomial", 0.5, "must be integer counts 0..255 (found value 0.5)"),
        ("binomial", 256.0, "must be integer counts 0..255 (found value 256)"),
    ],
)
def test_mismatched_data_is_one_clear_error(name, bad, needle):
    lik = build_likelihood(name, x_dim=3, max_value=MNIST_MAX)
    x = torch.tensor([[bad, bad, bad]])
    with pytest.raises(DataError) as err:
        lik.check_data(x)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_the_data_pipeline_produces_what_each_likelihood_takes(name, digits):
    lik = build_likelihood(name, 784, MNIST_MAX)
    binarization, transform = resolve_data("auto", "auto", lik.data_kind)
    x = prepare(digits.test_x[:50], binarization, transform)
    lik.check_data(x)  # raises if not
    if lik.data_kind == "counts":
        assert x.max().item() == 255 and torch.equal(x, digits.test_x[:50].float())
    if lik.data_kind == "open_unit_interval":
        eps = open_unit_eps(MNIST_MAX)
        assert x.min().item() == pytest.approx(eps) and x.max().item() == pytest.approx(1 - eps)
    if lik.data_kind == "unit_interval":
        assert bool(((x > 0) & (x < 1)).any())  # real grey levels, not a binarization


def test_binary_data_is_refused_by_the_binomial_pipeline():
    with pytest.raises(
        DataError,
        match="transform 'counts' takes the raw intensities, so binarization must be 'none' or 'auto', got 'static'",
    ):
        resolve_data("static", "auto", "counts")


def test_encoder_sees_counts_on_the_unit_scale(digits):
    """Binomial data enter the encoder as x/255: the same encoding as grey levels (else KL ~ 1e29)."""
    torch.manual_seed(0)
    vae = VAE(hidden=(16,), z_dim=3, likelihood="binomial")
    counts = prepare(digits.test_x[:8], "none", "counts")
    mu, logvar = vae.encoder(counts)
    mu_u, logvar_u = vae.encoder.encode_scaled(counts / 255)
    torch.testing.assert_close(mu, mu_u)
    torch.testing.assert_close(logvar, logvar_u)


def test_learned_scale_is_a_trained_parameter():
    vae = VAE(hidden=(8,), z_dim=2, likelihood="normal_learned")
    names = {n for n, _ in vae.named_parameters()}
    assert "likelihood.log_scale" in names
