"""The whole-step capture (``vae_pyro.captured_step``): on the CPU its eager body, which is what CUDA
captures, must equal ``train.train_step`` with the uncaptured twin; on CUDA the replay must equal the
eager step, draw fresh noise, follow beta and make no host sync.

Tolerances: float64 on the CPU, where both sides compute the same sums in the same order up to the
captured loss's own association (``graph.py``'s same-noise agreement is 1e-8 nats/example or better);
Adam's update at lr 1e-2 maps a relative gradient error e to at most ~lr*e per parameter, so 1e-10 on
the parameters after a few steps leaves orders of magnitude of room and still catches any real
difference (one wrong step moves parameters by ~lr)."""

from __future__ import annotations

import subprocess
import sys

import pyro
import pytest
import torch

from vae_pyro.captured_step import CapturedTrainStep, restore_training_state, snapshot_training_state
from vae_pyro.estimators import build_estimator
from vae_pyro.model import VAE
from vae_pyro.train import make_optimizer, seed_all, train, train_step

CAPTURED = {"analytic_graph": "analytic", "trace_graph": "trace", "tmf_graph": "tmf"}
PARAM_TOL = 1e-10


def _vae(dtype=torch.float64, device="cpu"):
    torch.manual_seed(0)
    return VAE(hidden=(16,), z_dim=3).to(dtype=dtype, device=device)


def _data(n=16, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(n)
    return torch.bernoulli(torch.full((n, 784), 0.2), generator=g).to(dtype=dtype, device=device)


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_steps_equal_train_step_with_the_uncaptured_twin(name):
    """N steps, annealed beta, same seed per step: the same parameters and the same losses."""
    x = _data()
    a, b = _vae(), _vae()
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=1e-2), torch.optim.Adam(b.parameters(), lr=1e-2)
    whole = CapturedTrainStep(a, build_estimator(name), opt_a, tuple(x.shape))
    twin = build_estimator(CAPTURED[name])
    for step, beta in enumerate((0.25, 0.5, 0.75, 1.0)):
        torch.manual_seed(100 + step)
        la = whole.step(x, beta)
        b.kl_weight = beta
        torch.manual_seed(100 + step)
        lb = train_step(b, twin, opt_b, x)
        assert abs(float(la - lb)) <= PARAM_TOL * max(1.0, abs(float(lb)))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=PARAM_TOL)


def test_an_uncaptured_estimator_steps_through_its_captured_twins_loss_and_others_are_refused():
    vae = _vae()
    opt = torch.optim.Adam(vae.parameters())
    assert CapturedTrainStep(vae, build_estimator("trace"), opt, (8, 784)).loss_fn.__self__.name == "trace_graph"
    with pytest.raises(ValueError, match="'iwae' has no captured loss; allowed: analytic, analytic_graph"):
        CapturedTrainStep(vae, build_estimator("iwae"), opt, (8, 784))
    with pytest.raises(ValueError, match=r"does not fit this step; allowed: shape \(8, 784\)"):
        CapturedTrainStep(vae, build_estimator("analytic"), opt, (8, 784)).step(_data(4), 1.0)


def test_a_nan_step_leaves_the_parameters_where_they_were():
    """Unfused Adam on a fresh state: the NaN step's gradient is zeroed, and Adam's moments are 0, so
    the update is exactly 0 (with fused Adam the step is skipped: ``test_nosync``)."""
    vae = _vae()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    whole = CapturedTrainStep(vae, build_estimator("trace_graph"), opt, (16, 784))
    before = [p.detach().clone() for p in vae.parameters()]
    x = _data()
    x[0, 0] = float("nan")
    with pyro.validation_enabled(False):  # as train() runs every step after the first
        assert torch.isnan(whole.step(x, 1.0))
    assert all(torch.equal(p, q) for p, q in zip(before, vae.parameters()))
    assert torch.isfinite(whole.step(_data(), 1.0)) and not all(
        torch.equal(p, q) for p, q in zip(before, vae.parameters())
    )


def test_snapshot_restore_gives_back_a_fresh_adam():
    """What the CUDA capture does around its warm-up: after restoring a state-less snapshot, a step
    equals the first step of a fresh optimiser (Adam's initial state is step 0, zero moments)."""
    x = _data()
    a, b = _vae(), _vae()
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=1e-2), torch.optim.Adam(b.parameters(), lr=1e-2)
    est = build_estimator("analytic")
    saved = snapshot_training_state(a, opt_a)
    tensors = [v for s in opt_a.state.values() for v in s.values()]
    for _ in range(3):
        train_step(a, est, opt_a, x)
    state_tensors = {id(v) for s in opt_a.state.values() for v in s.values()}
    restore_training_state(saved, a, opt_a)
    assert not tensors and state_tensors == {id(v) for s in opt_a.state.values() for v in s.values()}  # in place
    for _ in range(2):
        torch.manual_seed(3)
        train_step(a, est, opt_a, x)
        torch.manual_seed(3)
        train_step(b, est, opt_b, x)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=PARAM_TOL)


def test_train_with_capture_equals_train_without(binary_test):
    """``train(capture=True)``: same history and parameters as the ordinary loop (KL annealing on).
    The estimator is ``tmf``, whose step goes through ``tmf_graph``'s loss (``tmf_graph`` itself would
    not do as the reference: its TorchScript trace draws noise once more at its first call)."""
    x = binary_test[:96].double()
    runs = []
    for capture in (False, True):
        vae = _vae()
        history = train(
            vae,
            build_estimator("tmf"),
            x,
            epochs=2,
            batch_size=32,
            lr=1e-2,
            generator=seed_all(1),
            progress=False,
            kl_anneal_epochs=1,
            capture=capture,
        )
        runs.append((vae, history))
    (a, ha), (b, hb) = runs
    for ea, eb in zip(ha, hb):
        assert ea.kl_weight == eb.kl_weight
        assert ea.train_neg_elbo == pytest.approx(eb.train_neg_elbo, rel=1e-12)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=PARAM_TOL)


# --- CUDA ---------------------------------------------------------------------------------------
# A failed capture leaves the process's CUDA generator unusable, so capture is first tried in a
# subprocess: if it fails there, the CUDA tests fail with its error instead of poisoning the session.
PROBE = """
import torch
from vae_pyro.captured_step import CapturedTrainStep
from vae_pyro.estimators import build_estimator
from vae_pyro.model import VAE
from vae_pyro.train import make_optimizer
for name in {names!r}:
    vae = VAE(hidden=(16,), z_dim=3).cuda()
    step = CapturedTrainStep(vae, build_estimator(name), make_optimizer(vae, capturable=True), (32, 784))
    step.step(torch.bernoulli(torch.full((32, 784), 0.2, device="cuda")), 1.0)
torch.cuda.synchronize()
"""


@pytest.fixture(scope="module")
def capture_works():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(names=sorted(CAPTURED))], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"whole-step capture failed in a subprocess: {proc.stderr[-3000:]}"


def _cuda_pair(name, lr=1e-3):
    vae = _vae(torch.float32, "cuda")
    opt = make_optimizer(vae, lr, capturable=True)
    return vae, opt, CapturedTrainStep(vae, build_estimator(name), opt, (32, 784), dtype=torch.float32)


@pytest.mark.cuda
def test_cuda_needs_a_capturable_adam():
    vae = _vae(torch.float32, "cuda")
    with pytest.raises(ValueError, match="capturable=True"):
        CapturedTrainStep(vae, build_estimator("analytic_graph"), make_optimizer(vae), (32, 784))


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_cuda_replay_equals_the_eager_step(name, capture_works):
    """Same start, same seed: a replay draws the noise an eager step draws (a replay reads the
    generator's seed and offset as they are at replay time and its kernels use the offsets the
    eager kernels use), so after three steps the parameters agree to float32 rounding."""
    x = _data(32, torch.float32, "cuda")
    a, _, whole = _cuda_pair(name)
    b = _vae(torch.float32, "cuda")
    opt_b = make_optimizer(b, 1e-3, capturable=True)
    twin = build_estimator(CAPTURED[name])
    assert whole.graph is not None
    for step in range(3):
        torch.manual_seed(10 + step)
        la = whole.step(x, 0.5)
        b.kl_weight = 0.5
        torch.manual_seed(10 + step)
        lb = train_step(b, twin, opt_b, x)
        torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-4)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_cuda_replays_draw_fresh_noise_and_follow_beta(name, capture_works):
    """lr = 0 keeps the parameters still, so only the noise and beta change the loss: two replays
    differ (fresh noise), the same seed repeats a loss exactly, and at one seed the loss is linear in
    beta (recon + beta * KL-part, both for the hand-written loss and for Pyro's scaled z site)."""
    x = _data(32, torch.float32, "cuda")
    _, _, whole = _cuda_pair(name, lr=0.0)
    assert float(whole.step(x, 1.0)) != float(whole.step(x, 1.0))
    losses = {}
    for beta in (0.2, 0.6, 1.0):
        torch.manual_seed(4)
        losses[beta] = float(whole.step(x, beta))
    torch.manual_seed(4)
    assert float(whole.step(x, 1.0)) == losses[1.0]
    assert losses[0.6] == pytest.approx((losses[0.2] + losses[1.0]) / 2, rel=1e-5)
    assert abs(losses[1.0] - losses[0.2]) > 1e-3


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_cuda_a_replay_makes_no_synchronising_call(name, capture_works):
    x = _data(32, torch.float32, "cuda")
    _, _, whole = _cuda_pair(name)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for beta in (0.5, 1.0):
            whole.step(x, beta)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.cuda
def test_cuda_a_nan_replay_is_skipped_on_the_device(capture_works):
    """Fused capturable Adam: ``found_inf`` computed inside the graph skips the whole update."""
    x = _data(32, torch.float32, "cuda")
    vae, opt, whole = _cuda_pair("trace_graph")
    whole.step(x, 1.0)
    before = [p.detach().clone() for p in vae.parameters()]
    bad = x.clone()
    bad[0, 0] = float("nan")
    assert torch.isnan(whole.step(bad, 1.0))
    assert all(torch.equal(p, q) for p, q in zip(before, vae.parameters()))
    assert all(float(s["step"]) == 1 for s in opt.state.values())
    whole.step(x, 1.0)
    assert all(torch.isfinite(p).all() for p in vae.parameters())


def test_cli_train_capture_step(tmp_path, capsys):
    """``vae-pyro train --capture-step``: trains; an estimator without a captured loss is refused
    with one line and exit 2 before any work."""
    import json

    from vae_pyro.cli import main

    out = tmp_path / "train.json"
    assert (
        main(
            [
                "train",
                "--estimator",
                "trace",
                "--capture-step",
                "--epochs",
                "1",
                "--hidden",
                "16",
                "--z-dim",
                "3",
                "--no-progress",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["history"][0]["train_neg_elbo"] < 540  # it learnt (untrained: > 540)
    capsys.readouterr()
    assert main(["train", "--estimator", "iwae", "--capture-step", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'iwae' has no captured loss; allowed: analytic, analytic_graph" in err[0]
