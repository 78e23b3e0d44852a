"""The captured estimators (``vae_pyro.estimators.graph``) and the sync-free Pyro ELBOs they capture.

Exactness: at the same seed a captured estimator draws the same noise as its uncaptured twin, so
value and gradient must agree to float64 rounding; ``checks.SAME_NOISE_TOL`` (1e-8 nats/example) and
``GRAD_REL_TOL`` (1e-6) are the project's tolerances for that (see ``vae_pyro.checks``)."""

from __future__ import annotations

import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from vae_pyro import checks
from vae_pyro.estimators import ESTIMATORS, build_estimator, estimator_names
from vae_pyro.model import VAE
from vae_pyro.estimators.syncfree import SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO

CAPTURED = {"analytic_graph": "analytic", "trace_graph": "trace", "tmf_graph": "tmf"}


def test_captured_estimators_are_registered_with_their_twins():
    for name, twin in CAPTURED.items():
        assert name in estimator_names() and ESTIMATORS[name].twin == twin
        assert ESTIMATORS[name].same_noise_skip is None


@pytest.mark.parametrize("name", sorted(CAPTURED))
@pytest.mark.parametrize("particles", [1, 3])
def test_captured_equals_uncaptured_at_the_same_noise(name, particles, small_vae, binary_test):
    r = checks.same_noise_check(small_vae, binary_test[:100], name, particles)
    assert r.verdict == checks.PASS, r
    assert r.details["against"] == f"{CAPTURED[name]} at the same seed"
    assert r.value <= checks.SAME_NOISE_TOL and r.details["grad_max_rel_diff"] <= checks.GRAD_REL_TOL


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_beta_is_a_graph_input_not_a_frozen_constant(name, small_vae, binary_test):
    """Captured at beta = 1, then asked at beta = 0.3: it must follow (KL annealing), equal to the twin."""
    vae = small_vae.clone(dtype=torch.float64)
    x = binary_test[:50].double()
    est, twin = build_estimator(name), build_estimator(CAPTURED[name])
    est.differentiable_loss(vae, x)  # captured at beta = 1
    vae.kl_weight = 0.3
    torch.manual_seed(5)
    a = est.differentiable_loss(vae, x)
    torch.manual_seed(5)
    b = twin.differentiable_loss(vae, x)
    assert abs(float(a - b)) / len(x) <= checks.SAME_NOISE_TOL
    vae.kl_weight = 1.0
    torch.manual_seed(5)
    assert abs(float(est.differentiable_loss(vae, x) - a)) > 1e-3  # and beta made a difference


def test_the_capture_is_replayed_and_sees_parameter_updates(small_vae, binary_test):
    """One capture per input shape, reused; an optimiser step on the VAE's own parameters reaches it
    (the captured module shares them), so after the step it still equals the uncaptured twin."""
    vae = small_vae.clone(dtype=torch.float64)
    x = binary_test[:64].double()
    est, twin = build_estimator("trace_graph"), build_estimator("trace")
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        est.differentiable_loss(vae, x).backward()
        opt.step()
    captured = est._captured[vae]
    assert len(captured) == 1 and isinstance(next(iter(captured.values())), torch.jit.ScriptModule)
    torch.manual_seed(9)
    a = est.differentiable_loss(vae, x)
    torch.manual_seed(9)
    b = twin.differentiable_loss(vae, x)
    assert abs(float(a - b)) / len(x) <= checks.SAME_NOISE_TOL
    est.differentiable_loss(vae, x[:32])
    assert len(captured) == 2  # a new shape, a new capture


def test_a_capture_made_under_no_grad_still_differentiates(small_vae, binary_test):
    """Evaluation (``no_grad``) may be the first call; the capture must still carry the gradient."""
    vae = small_vae.clone(dtype=torch.float64)
    x = binary_test[:32].double()
    est, twin = build_estimator("tmf_graph"), build_estimator("tmf")
    with torch.no_grad():
        assert not est.differentiable_loss(vae, x).requires_grad
    params = list(vae.parameters())
    torch.manual_seed(2)
    ga = torch.autograd.grad(est.differentiable_loss(vae, x), params)
    torch.manual_seed(2)
    gb = torch.autograd.grad(twin.differentiable_loss(vae, x), params)
    assert max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(ga, gb)) <= checks.GRAD_REL_TOL


def test_validity_follows_the_twin():
    vae = VAE(hidden=(8,), z_dim=2, prior="mog")
    assert not build_estimator("analytic_graph").validity(vae).valid
    assert build_estimator("tmf_graph").validity(vae).kind == build_estimator("tmf").validity(vae).kind
    assert build_estimator("tmf_graph").validity(vae).reason.endswith(build_estimator("tmf").validity(vae).reason)


@pytest.mark.parametrize(
    "ours, pyros", [(SyncFreeTrace_ELBO, Trace_ELBO), (SyncFreeTraceMeanField_ELBO, TraceMeanField_ELBO)]
)
@pytest.mark.parametrize("prior", ["standard_normal", "mog"])  # mog: tmf's Monte Carlo fallback
@pytest.mark.parametrize("particles", [1, 2])
def test_sync_free_elbos_equal_pyros_own(ours, pyros, prior, particles, binary_test):
    torch.manual_seed(0)
    vae = VAE(hidden=(16,), z_dim=3, prior=prior).double()
    x = binary_test[:40].double()
    params = list(vae.parameters())
    kw = dict(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    out = []
    for cls in (ours, pyros):
        torch.manual_seed(3)
        loss = cls(**kw).differentiable_loss(vae.model, vae.guide, x, 0.7)
        out.append((float(loss), torch.autograd.grad(loss, params, allow_unused=True)))
    assert abs(out[0][0] - out[1][0]) / len(x) <= checks.SAME_NOISE_TOL
    for a, b in zip(out[0][1], out[1][1]):
        if b is not None:
            assert float((a - b).abs().max()) <= checks.GRAD_REL_TOL * float(b.abs().max())


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_cuda_graphs_equal_the_eager_twin_and_draw_fresh_noise(name, small_vae, binary_test):
    vae = small_vae.clone(device="cuda")
    r = checks.same_noise_check(vae, binary_test[:200].cuda(), name)
    assert r.verdict == checks.PASS, r
    est = build_estimator(name)
    x = binary_test[:128].cuda()
    a, b = est.differentiable_loss(vae, x), est.differentiable_loss(vae, x)
    assert float(a) != float(b)  # each replay draws new noise (Philox offset advances)
    graphed = est._captured[vae]
    assert len(graphed) == 1 and not isinstance(next(iter(graphed.values())), torch.jit.ScriptModule)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["trace", "tmf", "jit_trace", "jit_tmf", *sorted(CAPTURED)])
def test_consecutive_calls_on_cuda_draw_fresh_noise(name, small_vae, binary_test):
    """A compiled or captured graph must not freeze its random draws: three consecutive values differ
    (and so do three gradients of the encoder's first layer), for the eager ones too."""
    vae = small_vae.clone(device="cuda")
    x = binary_test[:128].cuda()
    est = build_estimator(name)
    est.differentiable_loss(vae, x)  # compile / capture
    values, grads = [], []
    for _ in range(3):
        loss = est.differentiable_loss(vae, x)
        values.append(float(loss))
        grads.append(torch.autograd.grad(loss, [next(vae.parameters())])[0].clone())
    assert len(set(values)) == 3, values
    assert not torch.equal(grads[0], grads[1]) and not torch.equal(grads[1], grads[2])
