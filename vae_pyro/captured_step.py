"""The whole training step captured in one CUDA graph: loss, backward and Adam together.

:mod:`vae_pyro.estimators.graph` captures the *loss* (forward and backward) and leaves Adam and ``zero_grad`` eager
beside it; at batch 128 on an H100 those eager launches are most of a ~1 ms step. Here the whole step,

    g = d/dtheta [ loss_fn(vae, x, beta) / B ],   theta <- Adam(theta, g)   (skipped if loss is not finite)

is recorded once and replayed, following PyTorch's "whole network capture" recipe (CUDA semantics,
"CUDA Graphs"): warm-up steps on a side stream (lazy state, cuBLAS workspaces), ``zero_grad(set_to_none=
True)`` before the capture so that the captured ``backward`` allocates the gradients from the graph's
private pool (every replay overwrites them in place: gradients never leave static buffers), and
``Adam(capturable=True)`` (its step counter lives on the device, so the captured update reads and
advances it). The inputs are static buffers: ``x`` (the batch is copied in), ``beta`` (a 0-d tensor
filled before each replay, so KL annealing reaches the graph) and the output ``loss``.

The warm-up steps would otherwise train the model on a dummy batch, so the parameters, Adam's state and
the CUDA generator's state are put back afterwards: the first replay is the first step.

A non-finite loss is neutralised on the device, inside the graph, by the rule
:func:`vae_pyro.nonfinite.neutralise_nonfinite` applies to every step (fused Adam: ``found_inf``, the update
is skipped; otherwise the gradient is zeroed), never read on the host.

On the CPU (and any non-CUDA device) the same class runs the same ``_body`` eagerly, so its code path
and tests run anywhere; ``N`` of its steps equal ``N`` steps of :func:`vae_pyro.train.train_step` with
the captured estimator's uncaptured twin at the same seeds.
"""

from __future__ import annotations

import warnings

import pyro
import torch

from vae_pyro.errors import SpecError
from vae_pyro.estimators import ESTIMATORS, Estimator, build_estimator
from vae_pyro.nonfinite import neutralise_nonfinite

#: warm-up steps on a side stream before the capture (PyTorch's recipe uses 3; the first ones
#: allocate Adam's state and the autograd / cuBLAS workspaces)
WARMUP = 3


def captured_loss_fn(estimator: Estimator):
    """``loss_fn(vae, x, beta)`` of a captured estimator (``analytic_graph``, ``trace_graph``,
    ``tmf_graph``), or of the captured twin of an uncaptured one (``analytic`` -> ``analytic_graph``)."""
    if hasattr(estimator, "loss_fn"):
        return estimator.loss_fn
    captured = {name: ESTIMATORS[name] for name in ESTIMATORS.names() if hasattr(ESTIMATORS[name], "loss_fn")}
    for name, cls in captured.items():
        if cls.twin == estimator.name:
            return build_estimator(name, estimator.num_particles).loss_fn
    allowed = sorted({*captured, *(cls.twin for cls in captured.values())})
    raise SpecError(f"estimator {estimator.name!r} has no captured loss; allowed: {', '.join(allowed)}")


class WholeStep:
    """The interface of a whole training step (loss, backward, Adam) for batches of one shape, which
    ``vae_pyro.train.train`` runs on every full-size batch: ``fits(x)``, ``step(x, beta)`` (the
    loss/example as a device tensor, never read). ``optimizer`` must be the one that trains ``vae``;
    its state is shared, so eager steps (e.g. of another batch size) may be interleaved."""

    def __init__(
        self,
        vae,
        estimator: Estimator,
        optimizer: torch.optim.Optimizer,
        batch_shape: tuple[int, ...],
        dtype: torch.dtype | None = None,
    ):
        self.vae, self.optimizer = vae, optimizer
        self.loss_fn = captured_loss_fn(estimator)
        self.shape = tuple(batch_shape)
        self.dtype, self.device = dtype or next(vae.parameters()).dtype, vae.device

    def fits(self, x: torch.Tensor) -> bool:
        """Whether ``x`` can go through this step (its shape, dtype and device)."""
        return tuple(x.shape) == self.shape and x.dtype == self.dtype and x.device == self.device

    def check_fits(self, x: torch.Tensor) -> None:
        if not self.fits(x):
            raise ValueError(
                f"batch of shape {tuple(x.shape)}, {x.dtype} on {x.device} does not fit this step; "
                f"allowed: shape {self.shape}, {self.dtype} on {self.device}"
            )


class CapturedTrainStep(WholeStep):
    """One Adam step on ``loss_fn(vae, x, beta) / batch`` for batches of one shape: a CUDA-graph replay
    on CUDA, the same body run eagerly elsewhere (on CUDA ``optimizer`` must be an
    ``Adam(capturable=True)``: ``vae_pyro.train.make_optimizer(vae, lr, capturable=True)``)."""

    def __init__(self, vae, estimator, optimizer, batch_shape, dtype=None):
        super().__init__(vae, estimator, optimizer, batch_shape, dtype)
        self.x = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        self.beta = torch.full((), float(vae.kl_weight), dtype=self.dtype, device=self.device)
        self.loss = torch.zeros((), dtype=self.dtype, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        if self.device.type == "cuda":
            self._capture()

    def step(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        """Copy ``x`` and ``beta`` in, run the step; the loss/example as a device tensor (a copy: the
        static output is overwritten by the next step), never read here."""
        self.check_fits(x)
        self.x.copy_(x)
        self.beta.fill_(beta)  # a fill kernel: no host-to-device copy, no sync
        if self.graph is None:
            self._body()
        else:
            self.graph.replay()
        return self.loss.clone()

    def _body(self) -> None:
        """What is captured: train_step's arithmetic on the static buffers."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.vae, self.x, self.beta) / self.x.shape[0]
        loss.backward()
        neutralise_nonfinite(self.vae, self.optimizer, loss)
        self.optimizer.step()
        self.loss.copy_(loss.detach())

    def _capture(self) -> None:
        """Warm up on a side stream, capture ``_body`` in one graph, then put back the parameters,
        Adam's state and the CUDA generator as they were before the warm-up."""
        if not all(group.get("capturable") for group in self.optimizer.param_groups):
            raise ValueError(
                "a captured step on CUDA needs Adam(capturable=True); "
                "use vae_pyro.train.make_optimizer(vae, lr, capturable=True)"
            )
        device = self.x.device
        saved = snapshot_training_state(self.vae, self.optimizer)
        rng = torch.cuda.get_rng_state(device)  # the generator's host-side seed/offset: no sync
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        # validation reads the device (forbidden in a capture); capturable Adam warns when run eagerly
        with pyro.validation_enabled(False), torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            with torch.cuda.stream(side):
                for _ in range(WARMUP):
                    self._body()
            torch.cuda.current_stream(device).wait_stream(side)
            self.optimizer.zero_grad(set_to_none=True)  # backward allocates .grad from the graph's pool
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._body()
        restore_training_state(saved, self.vae, self.optimizer)
        torch.cuda.set_rng_state(rng, device)
        self.graph = graph


def snapshot_training_state(vae, optimizer: torch.optim.Optimizer) -> dict:
    """Copies of the parameters and of the optimiser's per-parameter tensors (``None`` where the
    optimiser has no state yet)."""
    return {
        p: (
            p.detach().clone(),
            {k: v.clone() for k, v in optimizer.state[p].items() if torch.is_tensor(v)}
            if p in optimizer.state
            else None,
        )
        for p in vae.parameters()
    }


def restore_training_state(saved: dict, vae, optimizer: torch.optim.Optimizer) -> None:
    """Put back a :func:`snapshot_training_state` *in place* (a capture holds these very tensors). State
    created since a state-less snapshot is zeroed, which is Adam's initial state (step 0, zero moments)."""
    with torch.no_grad():
        for p in vae.parameters():
            value, state = saved[p]
            p.copy_(value)
            for k, v in optimizer.state.get(p, {}).items():
                if torch.is_tensor(v):
                    v.copy_(state[k]) if state is not None else v.zero_()
