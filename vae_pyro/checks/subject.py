"""What the agreement engine (:func:`vae_pyro.checks.agreement.run_agreement`) checks: a *subject*,
a model with estimators of its ELBO. The engine asks it for a handful of things and knows nothing
else about it, so one engine, one list of checks (:data:`~vae_pyro.checks.agreement.AGREEMENT_CHECKS`)
and one set of statistics (:mod:`.stats`) serve every model:

* :class:`~vae_pyro.checks.agreement.AgreementSetup`: the MNIST VAE and our estimator registry
  (``vae-pyro compare``, ``vae-pyro check``);
* :class:`~vae_pyro.checks.any_model.PyroProgram`: any Pyro ``model``/``guide`` and Pyro ELBO objects
  (:func:`vae_pyro.check_estimators`).

Like ``pyro/infer/elbo.py`` this base module imports neither of them.
"""

from __future__ import annotations

from typing import Any

import torch

from .result import DRAWS, GRAD_DRAWS, Z_TOL
from .stats import GradStats, grad_moments


class Subject:
    """The engine's interface. Subclasses set the fields below and implement the methods.

    ``checks``: names in :data:`~vae_pyro.checks.agreement.AGREEMENT_CHECKS`, run in this order per
    estimator. ``draws``/``grad_draws``: independent value and gradient draws per estimator.
    ``report_crashes``: an estimator (or the reference) that raises gets verdict ``error`` on each of
    its checks instead of ending the run (a user's model: the crash is the finding); False where a
    crash is a bug of this package and must surface as a traceback (and, under ``torchrun``, end
    every process rather than leave the others waiting in a collective)."""

    checks: tuple[str, ...] = ()
    draws: int = DRAWS
    grad_draws: int = GRAD_DRAWS
    seed: int = 0
    z_tol: float = Z_TOL
    report_crashes: bool = False
    #: what the reason of a skipped check says about an estimator of another bound than the ELBO
    other_bound_note: str = "it is checked against exact log p(x) and its twin by `vae-pyro check`"

    def reference(self):
        """The :class:`~vae_pyro.checks.agreement.Reference` the estimators are judged against."""
        raise NotImplementedError

    def estimator(self, name: str, num_particles: int | None = None) -> Any:
        """The estimator called ``name``: an object with ``name``, ``num_particles`` and ``bound``."""
        raise NotImplementedError

    def validity(self, est):
        """Its :class:`~vae_pyro.estimators.Validity` here: an invalid one is not run."""
        raise NotImplementedError

    def value(self, est) -> float:
        """One independent draw of the estimator's -ELBO (the reported unit: nats per example for
        the VAE, the model's own sum for a Pyro program)."""
        raise NotImplementedError

    def grad_loss(self, est) -> torch.Tensor:
        """One independent draw of the differentiable -ELBO whose gradients are compared."""
        raise NotImplementedError

    def parameters(self) -> tuple[list[str], list[torch.Tensor]]:
        """Names and tensors of the parameters the gradients are taken with respect to."""
        raise NotImplementedError

    def directions(self, reference_est) -> list[torch.Tensor]:
        """Per parameter tensor, the fixed unit directions the gradient check projects on
        (:func:`~vae_pyro.checks.stats.pilot_directions`)."""
        raise NotImplementedError

    def gradient_draws(self, est, directions: list[torch.Tensor], progress=None) -> GradStats:
        """``grad_draws`` independent gradients of :meth:`grad_loss` (:func:`~.stats.grad_moments`)."""
        names, params = self.parameters()
        return grad_moments(est.name, lambda: self.grad_loss(est), names, params, self.grad_draws, directions, progress)
