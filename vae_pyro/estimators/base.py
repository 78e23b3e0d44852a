"""The estimator interface, its validity verdict and the registry. Imports no estimator: each family
module (:mod:`.analytic`, :mod:`.pyro_elbos`, :mod:`.iwae`, :mod:`.stl`) subclasses
:class:`Estimator` and registers itself, and :mod:`vae_pyro.estimators` imports every family, the
way ``pyro/infer/__init__.py`` imports each ELBO module while ``pyro/infer/elbo.py`` imports none.

Each estimator's ``differentiable_loss(vae, x)`` is an unbiased estimate of -sum_i ELBO(x_i) over the
batch (Pyro's convention: summed over the ``data`` plate, averaged over particles) whose gradient is an
unbiased estimate of the gradient; divide by the batch size for nats per example.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..registry import Registry

ESTIMATORS: Registry[type["Estimator"]] = Registry("estimator")
register_estimator = ESTIMATORS.register

#: the one vocabulary for how an estimator gets the KL term: exactly (closed form), by sampling
#: (log q(z|x) - log p(z) at the sampled z), or not at all (the estimator does not apply)
EXACT_KL, MONTE_CARLO_KL, INVALID = "exact_kl", "monte_carlo_kl", "invalid"
#: which bound an estimator's value estimates: the ELBO, or a tighter one the ELBO-agreement checks must
#: not judge against the ELBO: IWAE_k, the Renyi bound L_alpha,k of Li & Turner 2016 (alpha in (0, 1):
#: between the ELBO and IWAE_k), or a tensor Monte Carlo estimate of log p(x) (Aitchison 2019)
ELBO_BOUND, IWAE_BOUND, RENYI_BOUND, TMC_BOUND = "elbo", "iwae", "renyi", "tmc"

#: What ``vae-pyro compare`` runs by default: every estimator that computes the ELBO correctly. The
#: ``*_pyro`` entries are Pyro's JIT classes as shipped, kept to show what our fixes change.
DEFAULT_ESTIMATORS = ("analytic", "trace", "tmf", "jit_trace", "jit_tmf", "jit_tmf_pyro")


@dataclass
class Validity:
    """Whether an estimator computes this VAE's (beta-)ELBO, and how it gets the KL term."""

    kind: str  # EXACT_KL, MONTE_CARLO_KL or INVALID
    reason: str

    @property
    def valid(self) -> bool:
        return self.kind != INVALID

    def to_dict(self) -> dict:
        return asdict(self)


class Estimator:
    """Base class. Subclasses set ``description`` and implement ``differentiable_loss``."""

    name = "estimator"
    description = ""
    jit = False
    #: for a compiled estimator, the uncompiled one it must equal when both draw the same noise
    twin: str | None = None
    #: why the exact same-noise check does not apply (None: it does, through :meth:`Estimator.same_noise_elbo`)
    same_noise_skip: str | None = None
    #: ELBO_BOUND or IWAE_BOUND
    bound = ELBO_BOUND
    #: False for Pyro's classes as shipped (kept to show what our fixes change): ``vae-pyro check``
    #: leaves them out of the estimators it derives from the registry
    checked = True
    #: why a training step reads the device (None: it does not, and tests/test_nosync.py proves it)
    host_sync: str | None = None
    #: why a training step reads the device on CUDA only (None: it does not; a cuda test proves it)
    cuda_host_sync: str | None = None

    def __init__(self, num_particles: int = 1):
        if num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        self.num_particles = num_particles

    def differentiable_loss(self, vae, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, vae, x: torch.Tensor) -> float:
        """The estimate's value, without building a graph for gradients."""
        with torch.no_grad():
            return float(self.differentiable_loss(vae, x))

    def validity(self, vae) -> Validity:
        """Override to say when the estimator does not apply. A user's estimator that declares
        nothing is taken to apply everywhere, so the checks run on it (and can fail it)."""
        return Validity(MONTE_CARLO_KL, f"{self.name} declares no validity rule; assumed to apply")

    def same_noise_skip_reason(self, vae) -> str | None:
        """Why the exact same-noise check does not apply to this VAE (None: it does)."""
        return self.same_noise_skip

    def same_noise_elbo(self, vae):
        """The hook of the exact same-noise check: ``(elbo, sampled_kl)``, a Pyro ELBO object whose
        guide's z can be recorded and that equals the hand-written :func:`~.analytic.neg_elbo` at
        that noise (with the Monte Carlo KL when ``sampled_kl``, else the closed-form one). None: no
        such identity here (the check then uses :attr:`twin` at the same seed, or is skipped with
        :attr:`same_noise_skip`)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_particles={self.num_particles})"


def build_estimator(name: str, num_particles: int = 1) -> Estimator:
    return ESTIMATORS[name](num_particles=num_particles)


def validity(name: str, vae) -> Validity:
    """:class:`Validity` of estimator ``name`` for this VAE (its prior and likelihood)."""
    return ESTIMATORS[name]().validity(vae)


def validity_rows(vae, names=None) -> dict[str, Validity]:
    """Each estimator's :class:`Validity` for this VAE, by name (the data; the rendered text is
    :func:`vae_pyro.report.validity_table`)."""
    return {name: validity(name, vae) for name in (names or estimator_names())}


def estimator_names() -> list[str]:
    return ESTIMATORS.names()


def checked_estimator_names(vae, bound: str = ELBO_BOUND) -> list[str]:
    """The registered estimators of ``bound`` that apply to this VAE and are ``checked``, in registry
    order: what ``vae-pyro check`` runs, derived from the registry rather than typed by hand."""
    return [
        name
        for name, cls in ((n, ESTIMATORS[n]) for n in estimator_names())
        if cls.bound == bound and cls.checked and cls().validity(vae).valid
    ]
