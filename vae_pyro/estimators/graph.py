"""Captured estimators: the loss traced once, then replayed without Python.

==================  ==================================================  ==========================
name                what is captured                                    equals, at the same seed
==================  ==================================================  ==========================
``analytic_graph``  the hand-written BCE + beta KL                      ``analytic``
``trace_graph``     Pyro's ``Trace_ELBO`` on the VAE's model and guide  ``trace``
``tmf_graph``       Pyro's ``TraceMeanField_ELBO``                      ``tmf``
==================  ==================================================  ==========================

A step of this VAE is a few dozen small kernels; Pyro's per-step Python (messengers, traces, site
bookkeeping) costs milliseconds, which on a GPU is many times the arithmetic. Capturing removes it: the
program runs once, as Pyro wrote it, while the capture records the tensor operations it issued; later
steps replay that record. Pyro is therefore still what computed the loss (the same sites, the same
log-densities, the same KL rule), only not re-interpreted every step.

* **CUDA**: ``torch.cuda.make_graphed_callables`` over :class:`LossModule` (an ``nn.Module`` holding
  the VAE whose ``forward(x, beta)`` returns the loss). It captures the forward and the backward as two
  CUDA graphs with static input buffers (one pair per batch shape) and returns an autograd function
  that copies the inputs in and replays them; random draws inside a graph come from the Philox
  generator, whose offset advances at every replay, so each replay draws fresh noise. **Adam runs
  beside the graph** (an ordinary eager ``optimizer.step()``; fused Adam on CUDA, one kernel):
  every estimator then shares the same optimiser code, checkpointing and KL annealing work unchanged,
  and the loss's value and gradient are available to the checks. The whole step in one graph, with
  ``Adam(capturable=True)``, is :class:`vae_pyro.captured_step.CapturedTrainStep` (over the same
  ``loss_fn``), which ``train(capture=True)`` uses: it ties the optimiser into the graph, so it is a
  training step, not an estimator.
* **CPU**: ``torch.jit.trace`` of the same module (TorchScript; Pyro's ``pyro.ops.jit`` and our
  ``jit_*`` estimators use the same tracer), replayed by the TorchScript interpreter.

Constraints of a replayed graph (true of both): the model's structure must not depend on the data
(true of this VAE); beta is a graph input (a 0-d tensor), so annealing reaches it; one graph per input
shape, dtype and device. On CUDA one ``backward`` belongs to the most recent forward (the graphs share
their saved activations), which is how a training step and the checks use it.
"""

from __future__ import annotations

import weakref

import pyro
import torch
from torch import nn

from .analytic import neg_elbo_from_terms, neg_elbo_terms
from .base import Estimator, build_estimator, register_estimator
from .syncfree import SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO


class LossModule(nn.Module):
    """``forward(x, beta)`` = ``loss_fn(vae, x, beta)``: the VAE's parameters as module parameters,
    which both ``torch.jit.trace`` and ``make_graphed_callables`` need to differentiate them."""

    def __init__(self, vae, loss_fn):
        super().__init__()
        self.vae = vae
        self.loss_fn = loss_fn

    def forward(self, x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.vae, x, beta)


def capture(module: LossModule, x: torch.Tensor, beta: torch.Tensor):
    """The captured ``module``: CUDA graphs on a CUDA input, a TorchScript trace otherwise. Pyro's
    validation is off while it runs once (it reads the device, which a capture forbids); gradients are
    on (a first call may come from an evaluation under ``no_grad``, and the capture must include the
    backward)."""
    with pyro.validation_enabled(False), torch.enable_grad():
        if x.is_cuda:
            return torch.cuda.make_graphed_callables(module, (x.clone(), beta.clone()), allow_unused_input=True)
        return torch.jit.trace(module, (x, beta), check_trace=False)


class GraphEstimator(Estimator):
    """Base of the captured estimators: ``loss_fn(vae, x, beta)`` is captured per (VAE, shape, dtype,
    device) at first use and replayed after. Validity, KL kind and meaning are the twin's."""

    jit = True

    def __init__(self, num_particles: int = 1):
        super().__init__(num_particles)
        self._captured: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def loss_fn(self, vae, x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def captured_for(self, vae, x: torch.Tensor, beta: torch.Tensor):
        per_vae = self._captured.setdefault(vae, {})
        key = (tuple(x.shape), x.dtype, str(x.device))
        if key not in per_vae:
            per_vae[key] = capture(LossModule(vae, self.loss_fn), x, beta)
        return per_vae[key]

    def differentiable_loss(self, vae, x):
        # beta by a fill kernel, not torch.tensor (a host-to-device copy, which synchronises)
        beta = torch.full((), vae.kl_weight, dtype=x.dtype, device=x.device)
        # a clone: on CUDA the graph's output is a static buffer that the next replay overwrites
        return self.captured_for(vae, x, beta)(x, beta).clone()

    def _twin(self) -> Estimator:
        return build_estimator(self.twin, self.num_particles)

    def validity(self, vae):
        v = self._twin().validity(vae)
        v.reason = f"as {self.twin}, captured: {v.reason}"
        return v


@register_estimator("analytic_graph")
class AnalyticGraphEstimator(GraphEstimator):
    description = "the hand-written loss, captured (CUDA graphs; TorchScript on the CPU)"
    twin = "analytic"

    def loss_fn(self, vae, x, beta):
        """recon + beta KL, as :func:`vae_pyro.estimators.analytic.neg_elbo` with beta a tensor input."""
        recon, kl, *_ = neg_elbo_terms(vae, x, self.num_particles)
        return neg_elbo_from_terms(recon, kl, beta)


class PyroGraphEstimator(GraphEstimator):
    """A (sync-free) Pyro ELBO on ``vae.model``/``vae.guide``, captured."""

    elbo_class: type = SyncFreeTrace_ELBO

    def loss_fn(self, vae, x, beta):
        elbo = self.elbo_class(
            num_particles=self.num_particles, vectorize_particles=self.num_particles > 1, max_plate_nesting=1
        )
        return elbo.differentiable_loss(vae.model, vae.guide, x, beta)


@register_estimator("trace_graph")
class TraceGraphEstimator(PyroGraphEstimator):
    description = "pyro.infer.Trace_ELBO, captured (CUDA graphs; TorchScript on the CPU)"
    twin = "trace"
    elbo_class = SyncFreeTrace_ELBO


@register_estimator("tmf_graph")
class TraceMeanFieldGraphEstimator(PyroGraphEstimator):
    description = "pyro.infer.TraceMeanField_ELBO, captured (CUDA graphs; TorchScript on the CPU)"
    twin = "tmf"
    elbo_class = SyncFreeTraceMeanField_ELBO
