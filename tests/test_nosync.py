"""No estimator's training step reads the device (no host synchronisation per step).

**The method, on the CPU.** Every device-to-host read in PyTorch ends in one of a few ATen operators:
``t.item()``, ``float(t)``, ``int(t)`` and ``bool(t)`` (hence ``if t:``, ``warn_if_nan``, Pyro's
``torch_item`` and a distribution's ``constraint.check(v).all()``) dispatch to
``aten._local_scalar_dense`` (through ``aten.item`` / ``aten.is_nonzero``); ``aten.nonzero`` and
``aten.equal`` return host values that depend on device data. A ``TorchDispatchMode`` sees every
operator that reaches the dispatcher, whether called from Python or replayed by the TorchScript
interpreter, on any device; :class:`HostReads` raises on those. Running a step under it on the CPU
therefore proves the *code path* has no read: on a GPU the very same calls would be the syncs. The
first steps are excluded: Pyro's validation runs on the first (by design, see ``vae_pyro.train``) and
TorchScript optimises its graph during the first calls (its constant pooling compares tensors).

**The optimiser.** The steps use fused Adam, the optimiser ``vae_pyro.train`` uses on CUDA
(``make_optimizer``); it makes no read on any device. (The default, unfused Adam keeps its step
counter on the host, PyTorch's choice so that reading it is *not* a device sync, and reads it with
``.item()``: on the CPU that read could not be told apart from a device read.) The ``cuda`` test runs
the step with ``make_optimizer``'s Adam under ``torch.cuda.set_sync_debug_mode("error")``, which fails
on any synchronising CUDA call.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vae_pyro.estimators import ESTIMATORS, build_estimator, estimator_names
from vae_pyro.model import VAE
from vae_pyro.estimators.syncfree import step_without_validation
from vae_pyro.train import make_optimizer, train_step

aten = torch.ops.aten
HOST_READ_OPS = {aten._local_scalar_dense, aten.item, aten.is_nonzero, aten.nonzero, aten.equal}
WARMUP_STEPS = 3


class HostReads(TorchDispatchMode):
    """Raises on any operator that returns device data to the host (see the module docstring)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in HOST_READ_OPS:
            raise AssertionError(f"host read: {func}")
        return func(*args, **(kwargs or {}))


def _particles(name: str) -> int:
    return 2 if ESTIMATORS[name].bound != "elbo" else 1  # the IWAE bounds need k > 1 to be themselves


def _steps(vae, est, opt, x, n: int, first: int = 0):
    for i in range(first, first + n):
        with step_without_validation(i == 0):
            train_step(vae, est, opt, x)


def test_the_detector_catches_every_kind_of_read():
    t = torch.ones(3)
    for read in (
        lambda: t.sum().item(),
        lambda: float(t.sum()),
        lambda: bool(t.any()),
        lambda: t.nonzero(),
        lambda: torch.equal(t, t),
    ):
        with pytest.raises(AssertionError, match="host read"), HostReads():
            read()
    traced = torch.jit.trace(lambda a: (a * 2).sum(), (t,))
    with HostReads():  # replayed TorchScript goes through the dispatcher too (and makes no read)
        assert traced(t).shape == ()


SYNC_FREE = [n for n in estimator_names() if ESTIMATORS[n].host_sync is None]


@pytest.mark.parametrize("name", SYNC_FREE)
def test_a_training_step_makes_no_host_read(name):
    torch.manual_seed(0)
    vae = VAE(hidden=(16,), z_dim=3)
    x = torch.bernoulli(torch.full((16, 784), 0.2))
    est = build_estimator(name, _particles(name))
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3, fused=True)
    _steps(vae, est, opt, x, WARMUP_STEPS)
    before = [p.detach().clone() for p in vae.parameters()]
    with HostReads():
        _steps(vae, est, opt, x, 2, first=WARMUP_STEPS)
    assert any(not torch.equal(a, p) for a, p in zip(before, vae.parameters())), "the step did not train"


def test_the_exempt_estimators_are_pyros_classes_as_shipped_and_do_read():
    exempt = [n for n in estimator_names() if ESTIMATORS[n].host_sync is not None]
    assert set(exempt) == {"jit_trace_pyro", "jit_tmf_pyro"}
    torch.manual_seed(0)
    vae, x = VAE(hidden=(16,), z_dim=3), torch.bernoulli(torch.full((8, 784), 0.2))
    for name in exempt:
        est = build_estimator(name)
        opt = torch.optim.Adam(vae.parameters(), lr=1e-3, fused=True)
        _steps(vae, est, opt, x, WARMUP_STEPS)
        with pytest.raises(AssertionError, match="host read"), HostReads():
            _steps(vae, est, opt, x, 1, first=WARMUP_STEPS)


SYNC_FREE_ON_CUDA = [n for n in SYNC_FREE if ESTIMATORS[n].cuda_host_sync is None]


@pytest.mark.cuda
@pytest.mark.parametrize("name", SYNC_FREE_ON_CUDA)
def test_a_cuda_training_step_makes_no_synchronising_call(name):
    torch.manual_seed(0)
    vae = VAE(hidden=(64,), z_dim=8).cuda()
    x = torch.bernoulli(torch.full((128, 784), 0.2, device="cuda"))
    est = build_estimator(name, _particles(name))
    opt = make_optimizer(vae)
    _steps(vae, est, opt, x, WARMUP_STEPS)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _steps(vae, est, opt, x, 3, first=WARMUP_STEPS)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert all(torch.isfinite(p).all() for p in vae.parameters())


@pytest.mark.cuda
def test_the_cuda_exempt_estimators_are_the_torchscript_ones_and_do_synchronise():
    """The dispatch-mode detector above sees the ops a step calls, not the host reads *inside* a CUDA
    kernel (torch.normal(Tensor, Tensor) checks std >= 0 on the host); CUDA's sync debug mode does."""
    exempt = [n for n in SYNC_FREE if ESTIMATORS[n].cuda_host_sync is not None]
    assert set(exempt) == {"jit_trace", "jit_tmf"}
    torch.manual_seed(0)
    vae = VAE(hidden=(64,), z_dim=8).cuda()
    x = torch.bernoulli(torch.full((128, 784), 0.2, device="cuda"))
    for name in exempt:
        est, opt = build_estimator(name), make_optimizer(vae)
        _steps(vae, est, opt, x, WARMUP_STEPS)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with pytest.raises(RuntimeError, match="synchroniz"):
                _steps(vae, est, opt, x, 1, first=WARMUP_STEPS)
        finally:
            torch.cuda.set_sync_debug_mode("default")


class CountHostReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.overloadpacket in HOST_READ_OPS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["analytic", "trace", "tmf_graph"])
def test_train_reads_the_device_a_fixed_number_of_times_per_epoch_not_per_step(name):
    """``train`` itself: one epoch of 10 steps and one of 20 (both under ``READ_EVERY``) make the same
    number of host reads (the first step's validation, the end-of-epoch read), so none is per step."""
    from vae_pyro.train import READ_EVERY, train

    counts = []
    for steps in (10, 20):
        assert steps < READ_EVERY
        torch.manual_seed(0)
        vae = VAE(hidden=(16,), z_dim=3)
        x = torch.bernoulli(torch.full((8 * steps, 784), 0.2))
        est = build_estimator(name)
        est.differentiable_loss(vae, x[:8])  # a captured estimator captures here (TorchScript's tracer
        with CountHostReads() as mode:  # and a dispatch mode do not nest)
            train(
                vae,
                est,
                x,
                epochs=1,
                batch_size=8,
                progress=False,
                generator=torch.Generator().manual_seed(0),
                optimizer=torch.optim.Adam(vae.parameters(), lr=1e-3, fused=True),
            )  # see the module docstring
        counts.append(mode.count)
    assert counts[0] == counts[1] > 0


@pytest.mark.parametrize("name", ["analytic", "trace", "jit_tmf", "trace_graph"])
def test_evaluation_reads_the_device_once_however_many_batches(name):
    from vae_pyro.train import evaluate

    torch.manual_seed(0)
    vae = VAE(hidden=(16,), z_dim=3)
    est = build_estimator(name)
    for _ in range(WARMUP_STEPS):  # compile / capture and TorchScript's optimisation, outside the mode
        est.differentiable_loss(vae, torch.zeros(10, 784))
        with torch.no_grad():  # evaluation's graph: grad mode is part of a jit_* graph's key
            est.differentiable_loss(vae, torch.zeros(10, 784))
    counts = []
    for n in (20, 40):  # 2 and 4 batches of 10
        with CountHostReads() as mode:
            value = evaluate(vae, est, torch.bernoulli(torch.full((n, 784), 0.2)), batch_size=10)
        counts.append(mode.count)
        assert value == value  # a number (not NaN)
    assert counts == [1, 1]


class NaNLoss:
    """Any estimator's loss times NaN: a step that blew up."""

    name = "nan"

    def __init__(self, est):
        self.est = est

    def differentiable_loss(self, vae, x):
        return self.est.differentiable_loss(vae, x) * float("nan")


@pytest.mark.parametrize("fused", [True, False])
def test_a_nan_step_is_neutralised_on_the_device(fused):
    """Fused Adam (``make_optimizer`` on CUDA) skips the step entirely: parameters and Adam's state
    are exactly as before. Unfused Adam gets a zero gradient: parameters stay finite."""
    torch.manual_seed(0)
    vae = VAE(hidden=(16,), z_dim=3)
    x = torch.bernoulli(torch.full((16, 784), 0.2))
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2, fused=fused)
    est = build_estimator("trace")
    _steps(vae, est, opt, x, 2)
    before = [p.detach().clone() for p in vae.parameters()]
    loss = train_step(vae, NaNLoss(est), opt, x)
    assert torch.isnan(loss)
    after = list(vae.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    if fused:
        assert all(torch.equal(a, p) for a, p in zip(before, after))
        assert all(float(s["step"]) == 2 for s in opt.state.values())
    train_step(vae, est, opt, x)  # and training goes on
    assert all(torch.isfinite(p).all() for p in vae.parameters())
