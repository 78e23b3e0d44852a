"""Training and evaluation, the same loop for every estimator.

Every estimator exposes ``differentiable_loss``, so one ``torch.optim.Adam`` over ``vae.parameters()``
trains them all: the only thing that changes between runs is the estimator.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from . import distributed
from .captured_step import CapturedTrainStep
from .fused_step import FusedTrainStep
from .checkpoint import load_checkpoint, restore, save_checkpoint
from .data import Batches
from .devices import DEVICES, resolve_device  # noqa: F401  (re-exported)
from .errors import TrainingError  # noqa: F401  (re-exported)
from .estimators import Estimator
from .estimators.syncfree import step_without_validation
from .nonfinite import neutralise_nonfinite
from .steps import choose_step

#: training steps between two reads of the loss from the device (progress bar and NaN check)
READ_EVERY = 50


def seed_all(seed: int) -> torch.Generator:
    """Seed Python, NumPy, torch and Pyro; return a generator for shuffling (on the CPU, so the data
    order is the same on every device)."""
    random.seed(seed)
    np.random.seed(seed)
    pyro.set_rng_seed(seed)  # seeds torch (CPU and CUDA) too
    return torch.Generator().manual_seed(seed)


@dataclass
class EpochLog:
    epoch: int
    train_neg_elbo: float  # nats/example, mean over the epoch's steps (as trained, i.e. noisy)
    test_neg_elbo: float | None
    seconds: float
    kl_weight: float = 1.0  # beta at the epoch's last step


def kl_weight_at(step: int, target: float, warmup_steps: int) -> float:
    """Linear KL annealing (Bowman et al. 2016): beta rises from target/warmup_steps at step 1 to
    ``target`` at ``warmup_steps`` and stays there. Never exactly 0 (poutine.scale needs > 0, and a
    0 weight would make the first steps a plain autoencoder's)."""
    if warmup_steps <= 0:
        return target
    return target * min(1.0, step / warmup_steps)


def evaluate(vae, estimator: Estimator, x: torch.Tensor, batch_size: int = 1000) -> float:
    """-ELBO in nats/example over all of ``x`` (one draw of the estimator per batch)."""
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    with torch.no_grad(), step_without_validation(False):
        for i in range(0, len(x), batch_size):  # summed on the device: one read at the end
            total += estimator.differentiable_loss(vae, x[i : i + batch_size]).detach()
    return float(total) / len(x)


def train(
    vae,
    estimator: Estimator,
    x_train: torch.Tensor,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    dynamic: bool = False,
    x_test: torch.Tensor | None = None,
    eval_estimator: Estimator | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    kl_anneal_epochs: int = 0,
    checkpoint: str | None = None,
    resume: bool = False,
    capture: bool = False,
    step: str = "eager",
) -> list[EpochLog]:
    """Adam on ``estimator.differentiable_loss / batch``. ``dynamic=True``: ``x_train`` holds grey
    levels and every batch is a fresh Bernoulli draw. Raises :class:`TrainingError` on a NaN loss.

    **No host synchronisation per step** (:func:`train_step`): each step's loss stays on the device in
    an epoch buffer, read every ``READ_EVERY`` steps and at the epoch's end (progress bar, NaN check).
    A NaN is therefore found up to ``READ_EVERY - 1`` steps after it happened; meanwhile each
    non-finite step was neutralised on the device: with fused Adam (the default on CUDA) the update
    is skipped, so the parameters are exactly the last finite step's; otherwise its gradient is
    zeroed, so they stay finite (Adam's momentum still moved them). The error names the first bad
    step. The checkpoint is written only after the epoch's losses were read and found finite, so a
    NaN never overwrites the last good epoch's checkpoint. Pyro's argument validation (which reads
    the device) runs on the first step only.

    ``checkpoint``: a path written (atomically) after every epoch; a NaN therefore leaves the last good
    epoch's checkpoint intact. ``resume=True`` continues from it up to ``epochs`` (the returned history
    includes the resumed epochs). The options of the resuming call apply from there on (``lr``, batch
    size, estimator, annealing); the model must match the checkpoint's; the data order and random
    draws continue from the checkpoint's saved generator states, not from a new seed.

    ``kl_anneal_epochs`` > 0 anneals beta linearly (:func:`kl_weight_at`) from ~0 to the model's
    ``config.kl_weight`` over that many epochs, by setting ``vae.kl_weight`` before each step: every
    estimator reads it there (the JIT ones as a graph input), so all of them optimise the same
    annealed objective. Afterwards ``vae.kl_weight`` is the target again, so evaluation and the
    checks see the objective the spec names.

    ``step`` (:data:`~vae_pyro.devices.STEPS`, chosen by :func:`vae_pyro.steps.choose_step`): how full-size
    batches run; other batches always go through :func:`train_step`. ``captured`` (or ``capture=True``):
    one :class:`vae_pyro.captured_step.CapturedTrainStep` (on CUDA the whole step, Adam included, is one
    CUDA-graph replay; the optimiser must then be ``Adam(capturable=True)``, which the default one is).
    ``fused``: one :class:`vae_pyro.fused_step.FusedTrainStep` (traced out of Pyro, compiled by inductor;
    the default optimiser is then plain Adam)."""
    route, _ = choose_step("captured" if capture else step, vae.device, estimator, len(x_train) // batch_size * epochs)
    own_optimizer = optimizer is None
    optimizer = optimizer or make_optimizer(
        vae, lr, capturable=route == "captured", fused=False if route == "fused" else None
    )
    target = float(vae.config.kl_weight)
    batches = Batches(x_train, batch_size, dynamic=dynamic, generator=generator)
    if not dynamic:
        vae.check_data(x_train)
    history, first_epoch = (
        _resume(checkpoint, vae, optimizer, generator, lr if own_optimizer else None) if resume else ([], 1)
    )
    whole_step = _whole_step(route, vae, estimator, optimizer, x_train, batch_size)
    remaining = max(epochs - first_epoch + 1, 0)
    bar = tqdm(
        total=remaining * len(batches), desc=f"train[{estimator.name}]", disable=not progress, unit="step", leave=False
    )
    anneal = (target, kl_anneal_epochs * len(batches))
    shared_rng = distributed.shared_rng_state()  # several processes: each draws its own noise, then back
    try:
        for epoch in range(first_epoch, epochs + 1):
            start = time.perf_counter()
            distributed.seed_epoch(generator, epoch)
            losses = _epoch_steps(vae, estimator, optimizer, batches, whole_step, epoch, anneal, bar)
            seconds = time.perf_counter() - start
            beta, vae.kl_weight = vae.kl_weight, target  # the test -ELBO is always of the target objective
            test = evaluate(vae, eval_estimator or estimator, x_test) if x_test is not None else None
            history.append(EpochLog(epoch, float(losses.sum()) / max(len(batches), 1), test, seconds, beta))
            if checkpoint is not None and distributed.is_main():
                _save_epoch(checkpoint, vae, optimizer, estimator, history, generator)
    finally:
        vae.kl_weight = target
        distributed.restore_rng_state(shared_rng)
        bar.close()
    return history


def _save_epoch(checkpoint, vae, optimizer, estimator, history: list[EpochLog], generator) -> None:
    """The checkpoint after an epoch whose losses were read and found finite (see :func:`train`)."""
    save_checkpoint(
        checkpoint,
        vae=vae,
        optimizer=optimizer,
        epoch=history[-1].epoch,
        estimator=estimator.name,
        history=[asdict(h) for h in history],
        extra={"generator": generator.get_state()} if generator is not None else None,
    )


def _resume(checkpoint, vae, optimizer, generator, lr: float | None) -> tuple[list[EpochLog], int]:
    """Load ``checkpoint`` into the model and optimiser (and the random states); returns the saved
    history and the first epoch still to run. ``lr``: the rate of the resuming call, which replaces
    the saved one (None: a caller's own optimiser keeps its state as loaded)."""
    if checkpoint is None:
        raise ValueError("resume needs a checkpoint path")
    payload = load_checkpoint(checkpoint)
    restore(payload, vae, optimizer, checkpoint)
    for group in optimizer.param_groups if lr is not None else ():
        group["lr"] = lr  # the saved state brings back the saved rate; this call's applies
    torch.set_rng_state(payload["torch_rng"])
    if generator is not None and "generator" in payload["extra"]:
        generator.set_state(payload["extra"]["generator"])
    return [EpochLog(**h) for h in payload["history"]], payload["epoch"] + 1


def _epoch_steps(vae, estimator, optimizer, batches, whole_step, epoch: int, anneal, bar) -> torch.Tensor:
    """One epoch of steps; returns each step's loss, kept on the device (read every ``READ_EVERY``
    steps and at the end by :func:`_read_losses`). ``anneal``: (target beta, warm-up steps)."""
    target, warmup_steps = anneal
    losses = torch.zeros(len(batches), dtype=torch.float64, device=vae.device)
    global_step = (epoch - 1) * len(batches)
    for step, x in enumerate(batches, 1):
        global_step += 1
        vae.kl_weight = kl_weight_at(global_step, target, warmup_steps)
        with step_without_validation(global_step == 1):
            if whole_step is not None and whole_step.fits(x):
                losses[step - 1] = whole_step.step(x, vae.kl_weight)
            else:
                losses[step - 1] = train_step(vae, estimator, optimizer, x)
        bar.update(1)
        if step % READ_EVERY == 0 or step == len(batches):
            _read_losses(losses, step, epoch, estimator, bar)
    return losses


#: the whole-step class of each route of :func:`vae_pyro.steps.choose_step` (``eager``: none)
WHOLE_STEPS = {"captured": CapturedTrainStep, "fused": FusedTrainStep}


def _whole_step(route: str, vae, estimator, optimizer, x_train, batch_size: int):
    """The whole step of ``route`` for full-size batches (None: eager), built after any resume (it
    holds the optimiser's state tensors, which loading a checkpoint would replace)."""
    cls = WHOLE_STEPS.get(route)
    return cls and cls(vae, estimator, optimizer, (batch_size, *x_train.shape[1:]), dtype=x_train.dtype)


def train_step(vae, estimator: Estimator, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    """One step of Adam on -ELBO/example; returns the loss as a detached device tensor, never read
    here (a read would wait for the GPU to finish the step). Several processes: each computes its
    shard of the global batch, divided by the global batch size, and the gradients and losses are
    summed across them (:mod:`vae_pyro.distributed`), so the step is the one-process step."""
    optimizer.zero_grad()
    x, total = distributed.shard_batch(x)
    loss = estimator.differentiable_loss(vae, x) / total
    loss.backward()
    loss = distributed.reduce_gradients(vae.parameters(), loss.detach())
    neutralise_nonfinite(vae, optimizer, loss)
    optimizer.step()
    return loss


def make_optimizer(
    vae, lr: float = 1e-3, capturable: bool = False, eps: float = 1e-8, fused: bool | None = None
) -> torch.optim.Optimizer:
    """Adam over the VAE's parameters; fused on CUDA (one kernel for all parameters instead of a
    dozen multi-tensor launches, and a NaN step is skipped on the device: :func:`train_step`).
    ``capturable``: on CUDA, an Adam whose step can be recorded in a CUDA graph (``captured_step``).
    ``eps``: torch's default; Burda et al. 2015 use 1e-4. ``fused=False``: plain Adam on every device,
    which :mod:`vae_pyro.fused_step` traces (None: fused on CUDA)."""
    cuda = vae.device.type == "cuda"
    fused = cuda if fused is None else fused
    return torch.optim.Adam(vae.parameters(), lr=lr, eps=eps, fused=fused, capturable=capturable and cuda)


def _read_losses(losses: torch.Tensor, step: int, epoch: int, estimator: Estimator, bar) -> None:
    """The periodic read: raise on a non-finite loss (naming the first bad step), else show the last."""
    seen = losses[:step]
    bad = (~torch.isfinite(seen)).nonzero()
    if len(bad):
        first = int(bad[0])
        raise TrainingError(
            f"loss became {float(seen[first])} at epoch {epoch}, step {first + 1} with estimator "
            f"{estimator.name!r} (found at step {step}: the loss is read every {READ_EVERY} steps; the bad steps' "
            "gradients were zeroed, and the last checkpoint is intact); try a smaller --lr"
        )
    bar.set_postfix(epoch=epoch, neg_elbo=f"{float(seen[-1]):.2f}")


def time_steps(
    vae, estimator: Estimator, x: torch.Tensor, steps: int = 20, warmup: int = 3, validate_every_step: bool = False
) -> float:
    """Milliseconds per training step (loss, backward, Adam) at this batch, after ``warmup`` steps
    that absorb JIT compilation. Runs on a copy so the caller's model is not changed."""
    vae = vae.clone()
    optimizer = make_optimizer(vae)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            start = time.perf_counter()
        with step_without_validation(i == 0 or validate_every_step):  # as train() does, by default
            train_step(vae, estimator, optimizer, x)
    sync()
    return (time.perf_counter() - start) / steps * 1e3
