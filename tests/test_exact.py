"""Ground truth on the toys: exact log p(x) by closed form and by quadrature, each against an
independent computation, and the checks of `vae-pyro check` passing for correct estimators and
failing for a wrong one."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from vae_pyro.checks import exact
from vae_pyro.estimators.analytic import neg_elbo_terms
from vae_pyro.estimators import Estimator, build_estimator
from vae_pyro.checks.toys import build_toy, pooled_digits
from vae_pyro.checks import torch_threads
from vae_pyro.checks.ground_truth import checks_of, toy_checks
from vae_pyro.spec import load_spec

F64 = torch.float64


class FlippedKL(Estimator):
    """The classic sign bug, BCE - KLD: its 'ELBO' lies above log p(x)."""

    name = "flipped_kl"

    def differentiable_loss(self, vae, x):
        recon, kl, *_ = neg_elbo_terms(vae, x, self.num_particles)
        return (recon.mean(0) - kl).sum()


@pytest.fixture(scope="module")
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def linear(one_thread):
    x_train, x_test = pooled_digits(binary=False)
    return build_toy("linear_gaussian", x_train, progress=False), x_test[::50].double()


@pytest.fixture(scope="module")
def bern2(one_thread):
    x_train, x_test = pooled_digits(binary=True)
    return build_toy("bernoulli_2d", x_train, epochs=8, progress=False), x_test[::50].double()


@pytest.fixture(scope="module")
def bern1(one_thread):
    x_train, x_test = pooled_digits(binary=True)
    return build_toy("bernoulli_1d", x_train, epochs=8, progress=False), x_test[::50].double()


# --- linear-Gaussian: closed forms against independent computations ----------------------------


def test_linear_log_px_matches_torch_multivariate_normal(linear):
    toy, x = linear
    w, b = toy.decoder.weight.double(), toy.decoder.bias.double()
    s2 = float(toy.likelihood.scale) ** 2
    ref = MultivariateNormal(b, covariance_matrix=w @ w.T + s2 * torch.eye(len(b), dtype=F64)).log_prob(x)
    torch.testing.assert_close(exact.linear_gaussian_log_px(toy, x), ref.detach(), rtol=0, atol=1e-9)


def test_linear_posterior_is_bayes_rule(linear):
    """log p(x, z) - log N(z; m, S) must be the same number, log p(x), at every z (1e-9 nats)."""
    toy, x = linear
    toy64 = toy.clone(dtype=F64)
    mean, cov = exact.linear_gaussian_posterior(toy64, x)
    z = torch.randn(len(x), 6, toy.config.z_dim, generator=torch.Generator().manual_seed(0), dtype=F64) * 2
    with torch.no_grad():
        lj = exact.log_joint(toy64, x, z)
    lq = MultivariateNormal(mean[:, None, :], covariance_matrix=cov).log_prob(z)
    torch.testing.assert_close(lj - lq, exact.linear_gaussian_log_px(toy, x)[:, None].expand(-1, 6), rtol=0, atol=1e-9)


def test_linear_identity_and_tightness_at_the_posterior(linear):
    toy, x = linear
    toy64 = toy.clone(dtype=F64)
    log_px = exact.linear_gaussian_log_px(toy64, x)
    elbo, kl = exact.linear_gaussian_elbo(toy64, x), exact.linear_gaussian_kl_to_posterior(toy64, x)
    assert float((elbo - (log_px - kl)).abs().max()) < 1e-9
    assert float(kl.min()) > 0.01  # the briefly fitted encoder is not the posterior ...
    exact.diagonalize_linear_decoder(toy64)
    exact.set_optimal_linear_encoder(toy64)
    torch.testing.assert_close(exact.linear_gaussian_log_px(toy64, x), log_px, rtol=0, atol=1e-9)  # rotation-invariant
    assert float(exact.linear_gaussian_kl_to_posterior(toy64, x).abs().max()) < 1e-9  # ... this one is
    assert float((exact.linear_gaussian_elbo(toy64, x) - log_px).abs().max()) < 1e-9


# --- nonlinear toys: quadrature ----------------------------------------------------------------


def test_quadrature_converges_at_n_and_2n(bern2):
    toy, x = bern2
    q = exact.quadrature_log_px(toy, x, n=48)
    assert q["max_abs_diff"] < 1e-6  # QUAD_TOL; measured ~1e-7
    assert q["boundary_rel"] < -20  # the box truncates nothing measurable


def _bernoulli_log_lik_on_grid(toy, x: torch.Tensor, z: torch.Tensor, chunk: int = 20_000) -> torch.Tensor:
    """log p(x|z) = sum_j x_j log sigmoid(l_j) + (1 - x_j) log sigmoid(-l_j), l = decoder(z), written
    out here (not via the product's rearranged x . l - softplus(l) nor its likelihood classes), for
    x (B, D) at every z of a 1-d grid (G,) -> (B, G); the grid in chunks to bound memory."""
    out = []
    for zc in z.split(chunk):
        logits = toy.decoder(zc[:, None])  # (g, D)
        log_on, log_off = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
        out.append(x @ log_on.T + (1 - x) @ log_off.T)
    return torch.cat(out, dim=1)


def test_1d_quadrature_matches_a_brute_force_grid(bern1):
    """The box-and-midpoint rule against the plainest possible rule: 200,001 trapezoid points on
    [-8, 8] for every digit (spacing 8e-5, far below the posterior s.d.); 1e-6 nats."""
    toy, x = bern1
    toy64 = toy.clone(dtype=F64)
    q = exact.quadrature_log_px(toy, x, n=128)
    z = torch.linspace(-8, 8, 200_001, dtype=F64)
    with torch.no_grad():
        lj = _bernoulli_log_lik_on_grid(toy64, x, z) + (-0.5 * z**2 - 0.5 * math.log(2 * math.pi))
    log_w = torch.full_like(z, math.log(float(z[1] - z[0])))
    log_w[[0, -1]] -= math.log(2)
    brute = torch.logsumexp(lj + log_w, dim=1)
    assert float((q["log_px"] - brute).abs().max()) < 1e-6


def test_gauss_hermite_elbo_matches_the_monte_carlo_elbo(bern2):
    """The exact ELBO by Gauss-Hermite vs the analytic estimator with 2,000 particles per digit:
    z-score of the mean difference over 20 digits' independent estimates, |z| <= 4."""
    toy, x = bern2
    toy64 = toy.clone(dtype=F64)
    gh = exact.gauss_hermite_elbo(toy, x, 40)
    torch.manual_seed(0)
    with torch.no_grad():
        recon, kl, *_ = neg_elbo_terms(toy64, x, 2000)
    per_draw = -(recon + kl)  # (2000, B)
    mc, se = per_draw.mean(0), per_draw.std(0) / math.sqrt(2000)
    z = (mc - gh) / se
    assert float(z.abs().max()) < 4.5  # 20 digits: max of 20 |z| under the null exceeds 4.5 with p ~ 1e-4


# --- the checks of `vae-pyro check` ------------------------------------------------------------


def _by(results, name, estimator=None):
    return [r for r in results if r.name == name and (estimator is None or r.estimator == estimator)]


@pytest.fixture(scope="module")
def bern2_report(bern2):
    toy, x = bern2
    cfg = checks_of(load_spec(overrides=["checks.draws=20", "checks.grad_draws=10"]), toy="bernoulli_2d")
    torch.manual_seed(0)
    ests = {n: build_estimator(n) for n in ("analytic", "trace", "tmf", "stl")}
    ests["flipped_kl"] = FlippedKL()
    with torch_threads(1):
        return toy_checks(toy, x, cfg, ests)


def test_correct_estimators_pass_every_ground_truth_check(bern2_report):
    for r in bern2_report["checks"]:
        if r.estimator != "flipped_kl":
            assert r.verdict in ("pass", "skip"), r
    # ELBO <= IWAE_5000 <= log p(x), and IWAE_5000 within 0.05 nats
    log_px = bern2_report["exact_log_px"]
    assert bern2_report["exact_elbo"] < bern2_report["bounds"]["iwae_k5000"]["mean"] + 1e-3
    assert 0 <= log_px - bern2_report["bounds"]["iwae_k5000"]["mean"] < 0.05
    assert bern2_report["kl_to_posterior"] > 0


def test_a_flipped_kl_fails_the_ground_truth_checks(bern2_report):
    """BCE - KLD overshoots log p(x) by ~2 KL(q || p(z)) (several nats): both checks fail by far."""
    (match,) = _by(bern2_report["checks"], "elbo_matches_exact", "flipped_kl")
    (below,) = _by(bern2_report["checks"], "bound_below_log_px", "flipped_kl")
    assert match.verdict == "fail" and match.value > 20
    assert below.verdict == "fail" and below.value > 20 and below.details["gap"] < -1


def test_linear_gaussian_report_is_tight_at_the_posterior_and_stl_has_no_encoder_noise(linear):
    toy, x = linear
    cfg = checks_of(load_spec(overrides=["checks.draws=20", "checks.grad_draws=10"]), toy="linear_gaussian")
    torch.manual_seed(0)
    with torch_threads(1):
        rep = toy_checks(toy, x, cfg, {n: build_estimator(n) for n in ("trace", "tmf")})
    assert all(r.verdict == "pass" for r in rep["checks"]), [r for r in rep["checks"] if r.verdict != "pass"]
    (tight,) = _by(rep["checks"], "tight_at_posterior")
    assert tight.value < 1e-9  # float64 rounding of ~200-term sums; measured ~1e-13
    (stl,) = _by(rep["checks"], "stl_zero_variance")
    assert stl.value < 1e-12 and stl.details["trace_encoder_var"] > 1e-3
    q = {row["estimator"]: row for row in rep["gradient_quality"]}
    # Rainforth et al. 2018: more importance samples, better decoder SNR, worse encoder SNR
    assert q["iwae[k=100]"]["decoder_snr"] > q["iwae[k=1]"]["decoder_snr"]
    assert q["iwae[k=100]"]["encoder_snr"] < q["iwae[k=1]"]["encoder_snr"]
