"""IWAE_k two ways (ours and Pyro's RenyiELBO), the path-derivative estimator, and how compare treats
estimators of a bound other than the ELBO."""

from __future__ import annotations

import pytest
import torch

from vae_pyro import checks
from vae_pyro.estimators import ESTIMATORS, build_estimator
from vae_pyro.estimators.analytic import log_normal_diag
from vae_pyro.estimators.iwae import DifferentiableRenyiELBO, iwae_same_noise, log_weights
from vae_pyro.evaluation import iwae_log_likelihood


def test_iwae_estimators_declare_their_bound(small_vae, binary_test):
    assert ESTIMATORS["iwae"].bound == ESTIMATORS["renyi0"].bound == "iwae"
    assert all(ESTIMATORS[n].bound == "elbo" for n in ("analytic", "trace", "tmf", "stl"))
    setup = checks.AgreementSetup(
        small_vae, binary_test[:50], binary_test[:20], binary_test[:20], draws=2, grad_draws=2
    )
    agreement = checks.run_agreement(setup, ["iwae"], progress=False)
    skipped = agreement.estimators["iwae"][-1]
    assert {r.verdict for r in skipped} == {"skip"} and "not the ELBO" in skipped[0].details["reason"]


@pytest.mark.parametrize("k", [1, 7])
def test_ours_equals_pyros_renyi_elbo_at_shared_noise(k, small_vae, binary_test):
    """float64, the z Pyro's guide drew fed to our log-mean-exp: values and gradients equal to
    rounding (tolerance 1e-10 nats/example, 1e-10 relative; rounding is ~1e-13)."""
    r = iwae_same_noise(small_vae, binary_test[:64], k)
    assert r["value_max_abs_diff"] < 1e-10 and r["grad_max_rel_diff"] < 1e-10


def test_differentiable_renyi_gradient_equals_pyros_loss_and_grads(small_vae, binary_test):
    vae, x = small_vae.clone(dtype=torch.float64), binary_test[:32].double()
    params = list(vae.parameters())
    elbo = DifferentiableRenyiELBO(alpha=0.0, num_particles=5, vectorize_particles=True, max_plate_nesting=1)
    torch.manual_seed(3)
    loss = elbo.differentiable_loss(vae.model, vae.guide, x)
    ours = torch.autograd.grad(loss, params)
    for p in params:
        p.grad = None
    torch.manual_seed(3)
    pyro_loss = elbo.loss_and_grads(vae.model, vae.guide, x)  # Pyro's own code path, backward inside
    assert abs(loss.item() - pyro_loss) < 1e-9
    for g, p in zip(ours, params):
        torch.testing.assert_close(g, p.grad, rtol=1e-10, atol=1e-12)


def test_renyi_with_one_particle_is_the_elbo(small_vae, binary_test):
    """IWAE_1 = ELBO: at the same seed RenyiELBO(num_particles=1) gives Trace_ELBO's value."""
    vae, x = small_vae.clone(dtype=torch.float64), binary_test[:50].double()
    values = []
    for name in ("renyi0", "trace", "iwae", "stl"):
        torch.manual_seed(11)
        values.append(build_estimator(name, 1).loss(vae, x))
    assert max(values) - min(values) < 1e-9


def test_iwae_is_at_least_the_elbo_and_grows_with_k(small_vae, binary_test):
    """Paired per digit (same digits, independent draws): mean(IWAE_k2 - IWAE_k1) / s.e. > 4 for
    k = 1 -> 10 -> 100 on a briefly trained VAE, where the gaps are several nats."""
    x = binary_test[:200]
    torch.manual_seed(0)
    iw = {k: iwae_log_likelihood(small_vae, x, k=k, chunk=50, progress=False) for k in (1, 10, 100)}
    for a, b in ((1, 10), (10, 100)):
        d = (iw[b] - iw[a]).double()
        z = d.mean() / (d.std() / len(d) ** 0.5)
        assert z > 4, (a, b, float(d.mean()))


def test_iwae_log_likelihood_batches_and_chunks_give_one_value_per_digit(small_vae, binary_test):
    x = binary_test[:7]
    torch.manual_seed(0)
    a = iwae_log_likelihood(small_vae, x, k=30, chunk=7, batch_size=3, progress=False)
    assert a.shape == (7,) and bool(torch.isfinite(a).all())
    # the docstring's claim: at one seed the chunking does not change the result (same noise, one
    # logsumexp); only float rounding of differently shaped decoder calls differs (float32, ~1e-6 rel)
    for chunk in (1, 30, 8):
        torch.manual_seed(0)
        b = iwae_log_likelihood(small_vae, x, k=30, chunk=chunk, batch_size=3, progress=False)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="k, chunk and batch_size must be >= 1, got 0"):
        iwae_log_likelihood(small_vae, x, k=0)


def test_log_weights_shape_and_stop_gradient(small_vae, binary_test):
    x = binary_test[:5]
    lw = log_weights(small_vae, x, 3)
    assert lw.shape == (3, 5)
    # The stop-gradient changes the gradient, never the value.
    torch.manual_seed(1)
    a = log_weights(small_vae, x, 3)
    torch.manual_seed(1)
    b = log_weights(small_vae, x, 3, stop_q_grad=True)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_stop_gradient_removes_exactly_the_score_term(small_vae, binary_test):
    """The gradient claim of ``stop_q_grad``: at one noise draw, grad(full) = grad(stopped) - grad of
    log q(z; mu, logvar) in mu and logvar with z held fixed (the score term, Roeder et al. 2017), an
    exact identity of the chain rule (float32 tolerance); the decoder's gradient is unchanged; and the
    score term is not zero, so the test can tell the two apart."""
    x = binary_test[:5]
    params = [p for p in small_vae.parameters() if p.requires_grad]
    eps = torch.randn(3, 5, small_vae.config.z_dim, generator=torch.Generator().manual_seed(2))
    grad = lambda out: torch.autograd.grad(out.sum(), params, allow_unused=True)  # noqa: E731
    full = grad(log_weights(small_vae, x, 3, eps))
    stopped = grad(log_weights(small_vae, x, 3, eps, stop_q_grad=True))
    mu, logvar = small_vae.encoder(x)
    z = (mu + eps * torch.exp(0.5 * logvar)).detach()
    score = grad(log_normal_diag(z, mu, logvar))
    nonzero = 0
    for p, f, st, sc in zip(params, full, stopped, score):
        sc = torch.zeros_like(p) if sc is None else sc  # the decoder's: log q does not use it
        torch.testing.assert_close(f, st - sc, rtol=1e-4, atol=1e-4)
        nonzero += int(sc.abs().max() > 1e-2)
    assert nonzero >= 2  # the encoder's mean and log-variance heads at least


def test_stl_gradient_agrees_with_the_analytic_gradient_in_expectation(small_vae, binary_test):
    """STL drops a zero-mean term: its mean gradient matches the analytic one (projection z-scores,
    |z| <= 4, 20 draws each on 64 digits)."""
    x = binary_test[:64]
    directions = checks.gradient_directions(small_vae, x, seed=0)
    torch.manual_seed(9)
    ref = checks.gradient_draws(build_estimator("analytic"), small_vae, x, 20, directions)
    torch.manual_seed(10)
    r = checks.gradient_check(checks.gradient_draws(build_estimator("stl"), small_vae, x, 20, directions), ref)
    assert r.verdict == "pass", r.value
