"""The agreement checks: they pass for correct estimators with the stated tolerances, and they fail
for a deliberately wrong one, so they can fail."""

from __future__ import annotations

import math

import pytest
import torch

from vae_pyro import checks
from vae_pyro.estimators.analytic import neg_elbo_terms
from vae_pyro.estimators import Estimator, build_estimator


class FlippedKL(Estimator):
    """A classic bug: BCE - KLD instead of BCE + KLD."""

    name = "flipped_kl"

    def differentiable_loss(self, vae, x):
        recon, kl, *_ = neg_elbo_terms(vae, x, self.num_particles)
        return (recon.mean(0) - kl).sum()


class HalfKL(Estimator):
    """A subtler bug: the 0.5 applied twice."""

    name = "half_kl"

    def differentiable_loss(self, vae, x):
        recon, kl, *_ = neg_elbo_terms(vae, x, self.num_particles)
        return (recon.mean(0) + 0.5 * kl).sum()


# --- same noise ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tmf", "trace"])
@pytest.mark.parametrize("particles", [1, 3])
def test_same_noise_identity_holds_to_float64_precision(name, particles, small_vae, binary_test):
    r = checks.same_noise_check(small_vae, binary_test[:200], name, particles)
    assert r.verdict == "pass"
    assert r.value < 1e-10  # nats/example; the differences are pure float64 rounding
    assert r.details["grad_max_rel_diff"] < 1e-10
    # the value difference is the only value statistic: a "recon term" difference would be the same
    # number rearranged (hand = recon + beta mc_kl), not separate evidence
    assert not any(key.startswith("recon") for key in r.details), r.details


@pytest.mark.parametrize("name, twin", [("jit_trace", "trace"), ("jit_tmf", "tmf")])
def test_compiled_estimators_equal_their_twin_at_the_same_seed(name, twin, small_vae, binary_test):
    r = checks.same_noise_check(small_vae, binary_test[:100], name)
    assert r.verdict == "pass" and r.value < 1e-10 and r.details["grad_max_rel_diff"] < 1e-10
    assert r.details["against"] == f"{twin} at the same seed"


def test_same_noise_catches_pyros_doubled_jit_gradient(small_vae, binary_test):
    r = checks.same_noise_check(small_vae, binary_test[:100], "jit_trace_pyro")
    assert r.verdict == "fail"
    assert r.value < 1e-10  # the value is right ...
    assert r.details["grad_max_rel_diff"] == pytest.approx(1.0, abs=1e-9)  # ... the gradient is 2x


def test_same_noise_skips_with_a_reason_where_it_does_not_apply(small_vae, binary_test):
    for name in ("analytic", "jit_tmf_pyro"):
        r = checks.same_noise_check(small_vae, binary_test[:10], name)
        assert r.verdict == "skip" and r.value is None and r.details["reason"].startswith(name)


# --- Monte Carlo -----------------------------------------------------------------------------


def test_z_score_arithmetic():
    a = checks.MCStats.of("a", [1.0, 2.0, 3.0, 4.0], 1)
    b = checks.MCStats.of("b", [2.0, 2.0, 2.0, 2.0], 1)
    assert a.mean == 2.5 and a.se == pytest.approx(math.sqrt(5 / 3) / 2)
    assert checks.z_score(a, b) == pytest.approx(0.5 / (math.sqrt(5 / 3) / 2))


@pytest.fixture(scope="module")
def reference_stats(small_vae, binary_test):
    torch.manual_seed(123)
    values = checks.loss_draws(build_estimator("analytic"), small_vae, binary_test[:500], 40)
    return checks.MCStats.of("analytic", values, 1)


@pytest.mark.parametrize("name", ["analytic", "trace", "tmf", "jit_trace", "jit_tmf"])
def test_monte_carlo_means_agree_with_the_analytic_elbo(name, small_vae, binary_test, reference_stats):
    """40 draws each on 500 digits, seed fixed; |z| <= 4 (two-sided p = 6e-5 under agreement)."""
    torch.manual_seed(456)
    stats = checks.MCStats.of(name, checks.loss_draws(build_estimator(name), small_vae, binary_test[:500], 40), 1)
    r = checks.monte_carlo_check(stats, reference_stats)
    assert r.verdict == "pass", r
    assert abs(r.value) <= checks.Z_TOL
    assert stats.se < 0.1  # nats/example: the check has power (the two bugs below are > 1 nat)


@pytest.mark.parametrize("wrong", [FlippedKL, HalfKL])
def test_monte_carlo_check_fails_for_a_wrong_kl(wrong, small_vae, binary_test, reference_stats):
    torch.manual_seed(456)
    stats = checks.MCStats.of(wrong.name, checks.loss_draws(wrong(), small_vae, binary_test[:500], 40), 1)
    r = checks.monte_carlo_check(stats, reference_stats)
    assert r.verdict == "fail"
    # The KL is ~10 nats/example for this small model; the draws' s.e. is ~0.1 nat: bias >= 5 nats
    # is dozens of standard errors.
    assert abs(r.value) > 20


# --- gradients -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grad_setup(small_vae, binary_test):
    x = binary_test[:128]
    directions = checks.gradient_directions(small_vae, x, seed=0)
    torch.manual_seed(9)
    ref = checks.gradient_draws(build_estimator("analytic"), small_vae, x, 30, directions)
    return x, directions, ref


@pytest.mark.parametrize("name", ["trace", "tmf", "jit_trace", "jit_tmf"])
def test_gradients_agree_with_the_analytic_gradient(name, small_vae, grad_setup):
    x, directions, ref = grad_setup
    torch.manual_seed(10)
    r = checks.gradient_check(checks.gradient_draws(build_estimator(name), small_vae, x, 30, directions), ref)
    assert r.verdict == "pass", r.value
    assert r.details["directions"] == 4
    assert set(r.details["per_tensor"]) == {n for n, _ in small_vae.named_parameters()}


@pytest.mark.parametrize("wrong", [FlippedKL(), HalfKL(), build_estimator("jit_trace_pyro")])
def test_gradient_check_fails_for_wrong_gradients(wrong, small_vae, grad_setup):
    x, directions, ref = grad_setup
    torch.manual_seed(10)
    r = checks.gradient_check(checks.gradient_draws(wrong, small_vae, x, 30, directions), ref)
    assert r.verdict == "fail"
    # far beyond the tolerance, not at its edge: measured 9.1 (half KL, the subtlest) at these seeds
    assert r.value > 2 * checks.Z_TOL


def test_gradient_directions_depend_on_the_seed_only(small_vae, binary_test):
    """The pilot gradient is drawn from a stream seeded by ``seed``, not from whatever the global
    stream holds (which made results depend on test order), and the global stream is left alone."""
    x = binary_test[:32]
    torch.manual_seed(1)
    a = checks.gradient_directions(small_vae, x, num_random=1, seed=5)
    after_a = torch.rand(3)
    torch.manual_seed(2)
    b = checks.gradient_directions(small_vae, x, num_random=1, seed=5)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(3), after_a)  # directions consumed nothing from the caller's stream
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    c = checks.gradient_directions(small_vae, x, num_random=1, seed=6)
    assert not torch.equal(a[0][0], c[0][0])  # the pilot (row 0) does follow the seed


def test_gradient_draws_mean_is_the_mean_of_the_draws(small_vae, binary_test):
    """The running sums give the same mean as averaging stored gradients (a plain identity), draw r
    made at its own seed (vae_pyro.distributed.seeded_draws)."""
    x = binary_test[:32]
    est = build_estimator("trace")
    params = list(small_vae.parameters())
    directions = checks.gradient_directions(small_vae, x, num_random=1)
    torch.manual_seed(3)
    stats = checks.gradient_draws(est, small_vae, x, 4, directions)
    torch.manual_seed(3)  # draw r is seeded by base + r, base drawn from torch's generator
    base = int(torch.randint(0, 2**62, (1,), dtype=torch.int64))
    stored = []
    for r in range(4):
        torch.manual_seed(base + r)
        stored.append(torch.autograd.grad(est.differentiable_loss(small_vae, x) / 32, params))
    for i, _ in enumerate(params):
        expected = torch.stack([g[i] for g in stored]).double().mean(0)
        torch.testing.assert_close(stats.mean[i], expected, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(
            stats.proj[:, i, 0],
            torch.stack([directions[i][0] @ g[i].double().flatten() for g in stored]),
            rtol=1e-6,
            atol=1e-9,
        )


# --- devices ---------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA; see the cuda test")
def test_device_check_is_skipped_and_says_why_without_cuda(small_vae, binary_test):
    r = checks.device_check(small_vae, binary_test[:50], "tmf", draws=5)
    assert r.verdict == "skip" and r.details["reason"] == "CUDA is not available"


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["analytic", "trace", "tmf", "jit_tmf"])
def test_device_check_on_cuda_matches_the_cpu(name, small_vae, binary_test):
    r = checks.device_check(small_vae, binary_test[:500], name, draws=40)
    assert r.verdict == "pass", r
    assert r.details["fixed_noise_rel_diff"] < 1e-4


@pytest.mark.cuda
def test_same_noise_identity_holds_on_cuda(small_vae, binary_test):
    vae = small_vae.clone(device="cuda")
    for name in ("tmf", "trace", "jit_trace"):
        r = checks.same_noise_check(vae, binary_test[:200].cuda(), name)
        assert r.verdict == "pass" and r.value < 1e-10
