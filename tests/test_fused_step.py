"""The fused whole step (``vae_pyro.fused_step``): traced out of Pyro by ``make_fx``, compiled by
inductor, it must equal the eager ``train.train_step`` of the same estimator at the same seed, draw fresh
noise at every call, share its Adam state with eager steps, and be chosen by ``--step auto`` only where
it pays (``vae_pyro.steps``).

Tolerances: float64, where the traced step computes the same sums as the eager one up to inductor's
re-association of fused reductions (~1e-15 relative per operation); Adam at lr 1e-2 maps a relative
gradient error e to ~lr*e per parameter, so 1e-10 on the parameters after a few steps leaves orders of
magnitude of room and still catches any real difference (one wrong step moves parameters by ~lr; a
wrong bias correction, float32 step count, moved them by ~1e-8 here). Compiling costs ~10-60 s per
estimator on the CPU, so the equality tests are in the slow set."""

from __future__ import annotations

import pytest
import torch

from vae_pyro.cli import main
from vae_pyro.errors import SpecError
from vae_pyro.estimators import build_estimator
from vae_pyro.fused_step import FusedTrainStep
from vae_pyro.model import VAE
from vae_pyro.steps import FUSE_MIN_STEPS, choose_step
from vae_pyro.train import make_optimizer, seed_all, train, train_step

PARAM_TOL = 1e-10


def _vae():
    torch.manual_seed(0)
    return VAE(hidden=(16,), z_dim=3).to(torch.float64)


def _data(n=40):
    g = torch.Generator().manual_seed(n)
    return torch.bernoulli(torch.full((n, 784), 0.2), generator=g).to(torch.float64)


def _max_rel(a, b) -> float:
    with torch.no_grad():
        return max(float((p - q).abs().max() / q.abs().max()) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.slow
def test_fused_steps_equal_eager_steps_and_draw_fresh_noise():
    """Three fused steps of ``trace`` (a Pyro ELBO, z sampled inside the graph) equal three eager ones at
    the same seed, loss and parameters; two calls on the same batch draw different z (fresh noise)."""
    eager, fused = _vae(), _vae()
    est = build_estimator("trace")
    opt_e, opt_f = make_optimizer(eager, 1e-2), make_optimizer(fused, 1e-2, fused=False)
    x = _data(16)
    step = FusedTrainStep(fused, est, opt_f, tuple(x.shape))
    torch.manual_seed(1)
    losses_e = [float(train_step(eager, est, opt_e, x)) for _ in range(3)]
    torch.manual_seed(1)
    losses_f = [float(step.step(x, 1.0)) for _ in range(3)]
    assert losses_f == pytest.approx(losses_e, rel=1e-12)
    assert _max_rel(fused, eager) < PARAM_TOL
    assert step.compile_s is not None and step.compile_s > 0
    assert len(set(losses_f)) == 3  # each call drew its own z (the parameters moved too; see below)
    with torch.no_grad():
        again = [float(est.differentiable_loss(fused, x)) for _ in range(2)]
    assert again[0] != again[1]


@pytest.mark.slow
def test_train_with_the_fused_step_equals_eager_training():
    """``train(step="fused")`` on 40 examples at batch 16 (two fused steps and one eager partial batch per
    epoch, sharing Adam's state) equals ``train(step="eager")`` over two epochs, and checkpoints the
    same optimiser state keys."""
    x = _data(40)
    runs = {}
    for route in ("eager", "fused"):
        vae = _vae()
        seed_all(3)
        history = train(
            vae,
            build_estimator("analytic"),
            x,
            epochs=2,
            batch_size=16,
            lr=1e-2,
            progress=False,
            step=route,
            generator=torch.Generator().manual_seed(5),
        )
        runs[route] = (vae, [h.train_neg_elbo for h in history])
    assert runs["fused"][1] == pytest.approx(runs["eager"][1], rel=1e-12)
    assert _max_rel(runs["fused"][0], runs["eager"][0]) < PARAM_TOL


def test_auto_fuses_only_long_cpu_runs_and_captures_on_cuda():
    trace, iwae = build_estimator("trace"), build_estimator("iwae")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_step("auto", cpu, trace, FUSE_MIN_STEPS - 1)[0] == "eager"
    assert choose_step("auto", cpu, trace, FUSE_MIN_STEPS)[0] == "fused"
    assert choose_step("auto", cuda, trace, 1)[0] == "captured"
    route, why = choose_step("auto", cuda, iwae, 10**6)
    assert route == "eager" and "iwae" in why
    assert choose_step("fused", cpu, trace, 1) == ("fused", "asked for")


def test_a_step_that_cannot_apply_is_refused():
    with pytest.raises(SpecError, match="iwae"):
        choose_step("fused", torch.device("cpu"), build_estimator("iwae"), 1)
    with pytest.raises(SpecError, match="allowed: auto, eager, captured, fused"):
        choose_step("jit", torch.device("cpu"), build_estimator("trace"), 1)


def test_the_fused_step_refuses_an_optimiser_it_does_not_implement():
    vae = _vae()
    for optimizer in (torch.optim.SGD(vae.parameters(), lr=0.1), torch.optim.Adam(vae.parameters(), weight_decay=1e-4)):
        with pytest.raises(SpecError, match="Adam"):
            FusedTrainStep(vae, build_estimator("analytic"), optimizer, (4, 784))


def test_cli_refuses_an_explicit_fused_step_before_work(capsys):
    assert main(["train", "--estimator", "iwae", "--step", "fused", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "iwae" in err and len(err.strip().splitlines()) == 1


def _cuda_data(n=32):
    return torch.bernoulli(torch.full((n, 784), 0.2, device="cuda"), generator=None)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["trace"])  # one compile: the GPU check's test step has ~70 s
def test_cuda_fused_replay_equals_the_eager_step_without_a_sync(name):
    """On CUDA the compiled step is captured as one CUDA graph: at the same seeds three replays equal
    three eager steps to float32 rounding (as tests/test_captured_step.py's capture), and a replay
    makes no synchronising call."""
    torch.manual_seed(0)
    a = VAE(hidden=(16,), z_dim=3).cuda()
    b = a.clone()
    est = build_estimator(name)
    opt_a, opt_b = make_optimizer(a, 1e-3, fused=False), make_optimizer(b, 1e-3, fused=False)
    x = _cuda_data()
    step = FusedTrainStep(a, est, opt_a, tuple(x.shape))
    for i in range(3):
        torch.manual_seed(10 + i)
        la = step.step(x, 0.5)
        b.kl_weight = 0.5
        torch.manual_seed(10 + i)
        lb = train_step(b, est, opt_b, x)
        torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-4)
    assert step.graph is not None
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step.step(x, 1.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
