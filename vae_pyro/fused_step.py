r"""The whole training step traced out of Pyro and compiled by inductor: loss, backward and Adam fused.

:mod:`vae_pyro.captured_step` replays the step as a CUDA graph: Pyro's Python is gone, but each of the
~100 small kernels still runs on its own. Here the step is first *traced* into one FX graph of ATen
operations, with Pyro's Python executed once and only its tensor operations recorded
(``torch.fx.experimental.proxy_tensor.make_fx``, the tracer under AOTAutograd), then compiled by
inductor (``torch._inductor.compile``: the graph is already ATen operations, so Dynamo, which would
only re-trace it and guard every call, is skipped), which fuses the pointwise work around the matrix
products into a few kernels (C++/OpenMP on the CPU, Triton on CUDA). ``torch.compile`` cannot do this
on Pyro directly:
Dynamo breaks its graph on Pyro's messenger stack, and with graph breaks the Python stays.

The traced function, for parameters theta, Adam's moments (m, v) and step count t:

    loss = loss_fn(vae, x, beta) / B,        g = d loss / d theta    (zeroed if loss is not finite)
    t <- t + 1,   m <- m + (1 - b1)(g - m),   v <- b2 v + (1 - b2) g^2
    theta <- theta - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

which is ``torch.optim.Adam``'s single-tensor update (Kingma & Ba 2015, Algorithm 1, with PyTorch's
placement of eps), written out so that it can be traced (``Adam.step`` on the CPU reads its step count
on the host, which a trace would freeze). Its state *is* the optimiser's (``optimizer.state[p]``'s
``step``, ``exp_avg``, ``exp_avg_sq``, updated in place), so checkpoints, a resume and eager steps of
another batch size interleave with fused ones. The non-finite rule is :mod:`vae_pyro.nonfinite`'s for a
non-fused Adam: the gradient is zeroed.

**Noise.** Random draws stay random ops in the graph and, with inductor's ``fallback_random``, come
from torch's own generator in the eager order: a fused step draws exactly what the eager step of the
twin estimator draws at the same seed, so N fused steps equal N :func:`vae_pyro.train.train_step` steps
to float rounding (tests/test_fused_step.py), and every call draws fresh noise.

**CUDA.** The compiled step is then captured as one CUDA graph (warm-up on a side stream, the training
state and the generator put back, as :mod:`vae_pyro.captured_step` does) and replayed over static
buffers: fused kernels *and* no launch overhead. Adam's step count lives on the device there (a CPU
count would be read once at capture and frozen). Written to PyTorch's documented recipes but, as of
this version, measured on the CPU only: ``scripts/gpu_check.sh`` runs its CUDA test and benchmark rows.

Constraints, as for every replayed graph: the model's structure must not depend on the data (true of
this VAE); one trace per batch shape, dtype and device; lr and beta are graph inputs (0-d tensors),
so schedules and KL annealing reach it; Adam without weight decay, amsgrad or maximize.
"""

from __future__ import annotations

import time

import pyro
import torch
import torch._inductor
from torch._inductor import config as inductor_config
from torch._inductor import metrics as inductor_metrics
from torch.fx.experimental.proxy_tensor import make_fx
from torch.func import functional_call
from torch.utils._pytree import tree_flatten

from vae_pyro.captured_step import WholeStep, restore_training_state, snapshot_training_state
from vae_pyro.errors import SpecError
from vae_pyro.estimators.graph import LossModule


def _adam_settings(optimizer: torch.optim.Optimizer) -> dict:
    """The one Adam group's hyper-parameters; refuses what the traced update does not implement."""
    if not isinstance(optimizer, torch.optim.Adam) or len(optimizer.param_groups) != 1:
        raise SpecError("a fused step needs one torch.optim.Adam parameter group (vae_pyro.train.make_optimizer)")
    group = optimizer.param_groups[0]
    unsupported = [k for k in ("weight_decay", "amsgrad", "maximize", "fused", "capturable") if group.get(k)]
    if unsupported:
        raise SpecError(f"a fused step implements plain Adam; this optimiser sets {', '.join(unsupported)}")
    return {"betas": group["betas"], "eps": group["eps"]}


def _adam_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``[steps, exp_avgs, exp_avg_sqs]``, created as ``Adam`` creates them where it has none yet."""
    for p in params:
        state = optimizer.state[p]
        if not state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
        # on CUDA the count must live on the device, or a captured graph would freeze its value
        # (as Adam(capturable=True) keeps it; the eager Adam reads it either way)
        if state["step"].device != p.device:
            state["step"] = state["step"].to(p.device)
    return [[optimizer.state[p][k] for p in params] for k in ("step", "exp_avg", "exp_avg_sq")]


class FusedTrainStep(WholeStep):
    """One Adam step on ``loss_fn(vae, x, beta) / batch`` for batches of one shape, traced once (on
    copies of the parameters and Adam's state, with the random generator put back, so the trace trains
    nothing) and compiled by inductor at the first call. Same interface as
    :class:`vae_pyro.captured_step.CapturedTrainStep`. After the first call: ``compile_s``, the seconds
    the trace and that (compiling) call took; ``kernels``, what fusion did, as ``{"aten_ops": ...,
    "gemms": ..., "fused_kernels": ...}`` (the traced graph's ATen operations, each a kernel when run
    eagerly; its matrix products, which stay library GEMM calls; the kernels inductor generated for
    the rest)."""

    def __init__(self, vae, estimator, optimizer, batch_shape, dtype=None):
        super().__init__(vae, estimator, optimizer, batch_shape, dtype)
        self.adam = _adam_settings(optimizer)
        self.module = LossModule(vae, self.loss_fn)  # forward(x, beta): what functional_call runs
        self.names = [n for n, _ in self.module.named_parameters()]
        self.params = [p for _, p in self.module.named_parameters()]
        self.compiled = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.compile_s: float | None = None
        self.kernels: dict | None = None

    def _step_fn(self, params, steps, exp_avgs, exp_avg_sqs, x, beta, lr):
        """The traced step (module docstring): updates ``params`` and the state in place, returns the loss."""
        b1, b2 = self.adam["betas"]
        loss = (
            functional_call(self.module, dict(zip(self.names, params)), (x, beta), strict=False, tie_weights=False)
            / x.shape[0]
        )
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        ok = torch.isfinite(loss)
        with torch.no_grad():
            for p, g, t, m, v in zip(params, grads, steps, exp_avgs, exp_avg_sqs):
                g = torch.zeros_like(p) if g is None else torch.where(ok, g, torch.zeros_like(g))
                t.add_(1)
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                t64 = t.double()  # Adam reads its float32 count into a Python float: bias corrections in double
                step_size = lr / (1 - torch.pow(b1, t64))
                denom = (v.sqrt() / torch.sqrt(1 - torch.pow(b2, t64))).add_(self.adam["eps"])
                p.sub_(step_size * m / denom)
        return loss.detach()

    def _trace(self, x, beta, lr):
        """``make_fx`` of :meth:`_step_fn` on copies (it runs the step once for real while recording)."""
        params = [p.detach().clone().requires_grad_(True) for p in self.params]
        state = [[t.clone() for t in kind] for kind in _adam_state(self.optimizer, self.params)]
        rng = _rng_state(self.device)
        try:
            with pyro.validation_enabled(False), torch.enable_grad():
                graph = make_fx(lambda *args: self._step_fn(*args))(params, *state, x, beta, lr)
        finally:
            _set_rng_state(self.device, rng)
        return graph

    def _args(self, x: torch.Tensor, beta: torch.Tensor, lr: torch.Tensor) -> tuple:
        return ([p.detach() for p in self.params], *_adam_state(self.optimizer, self.params), x, beta, lr)

    def _first_step(self, x: torch.Tensor, beta: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """Trace, compile and on CUDA capture, then the step;
        counts the kernels and the seconds it all took."""
        start, generated = time.perf_counter(), inductor_metrics.generated_kernel_count
        graph = self._trace(x, beta, lr)
        # fallback_random: random ops draw from torch's generator in the eager order (module docstring)
        with inductor_config.patch(fallback_random=True):
            self.compiled = torch._inductor.compile(graph, tree_flatten(list(self._args(x, beta, lr)))[0])
            if self.device.type == "cuda":
                self._capture(x, beta, lr)
            loss = self._replay(x, beta, lr)
        self.compile_s = time.perf_counter() - start
        self.kernels = _kernel_counts(graph, inductor_metrics.generated_kernel_count - generated)
        return loss

    def _replay(self, x: torch.Tensor, beta: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        if self.graph is not None:
            for buffer, value in zip(self.static, (x, beta, lr)):
                buffer.copy_(value)
            self.graph.replay()
            return self.loss.clone()  # a copy: the static output is overwritten by the next replay
        with torch.no_grad():
            return self.compiled(*self._args(x, beta, lr))

    def _capture(self, x: torch.Tensor, beta: torch.Tensor, lr: torch.Tensor) -> None:
        """On CUDA the compiled step is replayed as one CUDA graph over static buffers (the recipe of
        :mod:`vae_pyro.captured_step`: warm-up on a side stream, then the training state and the
        generator put back, so the first replay is the first step)."""
        self.static = (x.clone(), beta.clone(), lr.clone())
        saved, rng = snapshot_training_state(self.vae, self.optimizer), _rng_state(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad():
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.compiled(*self._args(*self.static))
            torch.cuda.current_stream(self.device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self.compiled(*self._args(*self.static))
        restore_training_state(saved, self.vae, self.optimizer)
        _set_rng_state(self.device, rng)

    def step(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        """Run the step; the loss/example as a tensor, never read here."""
        self.check_fits(x)
        # 0-d device tensors by fill kernels: graph inputs, so annealing and schedules reach the graph
        beta_t = torch.full((), beta, dtype=self.dtype, device=self.device)
        lr = torch.full((), self.optimizer.param_groups[0]["lr"], dtype=torch.float64, device=self.device)
        if self.compiled is None:
            return self._first_step(x, beta_t, lr)
        return self._replay(x, beta_t, lr)


def _rng_state(device: torch.device) -> torch.Tensor:
    """The state of the generator the step draws from (the CUDA one on CUDA: host-side, no sync)."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


#: ATen matrix products: inductor calls a GEMM library for them rather than generating a kernel
GEMMS = {"mm", "addmm", "bmm", "baddbmm", "matmul"}
#: ATen operations that only re-describe memory (views) or make constants: they launch no kernel
NO_KERNEL = {
    "view",
    "_unsafe_view",
    "t",
    "expand",
    "permute",
    "transpose",
    "detach",
    "alias",
    "lift_fresh",
    "squeeze",
    "unsqueeze",
    "select",
    "slice",
    "split",
    "as_strided",
    "reshape",
    "_to_copy_meta",
}


def _kernel_counts(graph: torch.fx.GraphModule, fused_kernels: int) -> dict:
    """What fusion did to one step (see :class:`FusedTrainStep`'s ``kernels``)."""
    names = [
        n.target._schema.name.split("::")[-1]
        for n in graph.graph.nodes
        if n.op == "call_function" and hasattr(n.target, "_schema")
    ]
    computing = [name for name in names if name not in NO_KERNEL]
    return {
        "aten_ops": len(computing),
        "gemms": sum(name in GEMMS for name in computing),
        "fused_kernels": fused_kernels,
    }
