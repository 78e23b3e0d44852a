"""Training and evaluation, the same loop for every estimator.

Every estimator exposes ``differentiable_loss``, so one ``torch.optim.Adam`` over ``vae.parameters()``
trains them all: the only thing that changes between runs is the estimator.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, restore, save_checkpoint
from .data import Batches
from .estimators import Estimator

DEVICES = ("auto", "cpu", "cuda")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says where and what to try."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU. Asking for ``cuda`` without it is an error, not a
    silent fallback, so a benchmark never reports CPU numbers as GPU numbers."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; allowed: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available; allowed here: auto, cpu")
    return torch.device(name)


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
    total = 0.0
    for i in range(0, len(x), batch_size):
        total += estimator.loss(vae, x[i:i + batch_size])
    return total / len(x)


def train(vae, estimator: Estimator, x_train: torch.Tensor, *, epochs: int = 10, batch_size: int = 128,
          lr: float = 1e-3, dynamic: bool = False, x_test: torch.Tensor | None = None,
          eval_estimator: Estimator | None = None, generator: torch.Generator | None = None,
          progress: bool = True, optimizer: torch.optim.Optimizer | None = None,
          kl_anneal_epochs: int = 0, checkpoint: str | None = None, resume: bool = False) -> list[EpochLog]:
    """Adam on ``estimator.differentiable_loss / batch``. ``dynamic=True``: ``x_train`` holds grey
    levels and every batch is a fresh Bernoulli draw. Raises :class:`TrainingError` on a NaN loss,
    before the optimiser applies the bad step.

    ``checkpoint``: a path written (atomically) after every epoch; a NaN therefore leaves the last good
    epoch's checkpoint intact. ``resume=True`` continues from it up to ``epochs`` (the returned history
    includes the resumed epochs). The options of the resuming call apply from there on (``lr``, batch
    size, estimator, annealing); the model must match the checkpoint's; the data order and random
    draws continue from the checkpoint's saved generator states, not from a new seed.

    ``kl_anneal_epochs`` > 0 anneals beta linearly (:func:`kl_weight_at`) from ~0 to the model's
    ``config.kl_weight`` over that many epochs, by setting ``vae.kl_weight`` before each step: every
    estimator reads it there (the JIT ones as a graph input), so all of them optimise the same
    annealed objective. Afterwards ``vae.kl_weight`` is the target again, so evaluation and the
    checks see the objective the spec names."""
    own_optimizer = optimizer is None
    optimizer = optimizer or torch.optim.Adam(vae.parameters(), lr=lr)
    target = float(vae.config.kl_weight)
    batches = Batches(x_train, batch_size, dynamic=dynamic, generator=generator)
    if not dynamic:
        vae.check_data(x_train)
    history: list[EpochLog] = []
    first_epoch = 1
    if resume:
        if checkpoint is None:
            raise ValueError("resume needs a checkpoint path")
        payload = load_checkpoint(checkpoint)
        restore(payload, vae, optimizer, checkpoint)
        for group in optimizer.param_groups if own_optimizer else ():
            group["lr"] = lr  # the saved state brings back the saved rate; this call's applies
        history = [EpochLog(**h) for h in payload["history"]]
        first_epoch = payload["epoch"] + 1
        torch.set_rng_state(payload["torch_rng"])
        if generator is not None and "generator" in payload["extra"]:
            generator.set_state(payload["extra"]["generator"])
    remaining = max(epochs - first_epoch + 1, 0)
    bar = tqdm(total=remaining * len(batches), desc=f"train[{estimator.name}]", disable=not progress,
               unit="step", leave=False)
    warmup_steps, global_step = kl_anneal_epochs * len(batches), (first_epoch - 1) * len(batches)
    try:
        for epoch in range(first_epoch, epochs + 1):
            start, running = time.perf_counter(), 0.0
            for step, x in enumerate(batches, 1):
                global_step += 1
                vae.kl_weight = kl_weight_at(global_step, target, warmup_steps)
                optimizer.zero_grad()
                loss = estimator.differentiable_loss(vae, x) / x.shape[0]
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingError(
                        f"loss became {value} at epoch {epoch}, step {step} with estimator "
                        f"{estimator.name!r}; parameters are left at the last finite step; "
                        "try a smaller --lr"
                    )
                loss.backward()
                optimizer.step()
                running += value
                bar.update(1)
                bar.set_postfix(epoch=epoch, neg_elbo=f"{value:.2f}")
            seconds = time.perf_counter() - start
            beta, vae.kl_weight = vae.kl_weight, target  # the test -ELBO is always of the target objective
            test = None
            if x_test is not None:
                test = evaluate(vae, eval_estimator or estimator, x_test)
            history.append(EpochLog(epoch, running / len(batches), test, seconds, beta))
            if checkpoint is not None:
                save_checkpoint(checkpoint, vae=vae, optimizer=optimizer, epoch=epoch, estimator=estimator.name,
                                history=[asdict(h) for h in history],
                                extra={"generator": generator.get_state()} if generator is not None else None)
    finally:
        vae.kl_weight = target
        bar.close()
    return history


def time_steps(vae, estimator: Estimator, x: torch.Tensor, steps: int = 20, warmup: int = 3) -> float:
    """Milliseconds per training step (loss, backward, Adam) at this batch, after ``warmup`` steps
    that absorb JIT compilation. Runs on a copy so the caller's model is not changed."""
    vae = vae.clone()
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            start = time.perf_counter()
        optimizer.zero_grad()
        (estimator.differentiable_loss(vae, x) / x.shape[0]).backward()
        optimizer.step()
    sync()
    return (time.perf_counter() - start) / steps * 1e3
