r"""Estimator-agreement checks for *any* Pyro model/guide pair, not only our VAE.

    report = vae_pyro.check_estimators(model, guide, *args, **kwargs)
    print(report)          # check, estimator, value, tolerance, verdict
    assert report.ok

Three of Pyro's ELBO classes estimate the same number for any model and guide:

* ``Trace_ELBO``: log p(x, z) - log q(z) at z ~ q (Monte Carlo everything);
* ``TraceMeanField_ELBO``: the same with KL(q || p) in closed form wherever torch has it;
* ``RenyiELBO(num_particles=1)``: log of the mean of one importance weight, i.e. the same
  single-sample ELBO ("RenyiELBO as ELBO"; for k > 1 it would be IWAE_k, a different bound).

Checks, with ``Trace_ELBO`` the reference:

============  ======================================================================  =========
check         value                                                                   tolerance
============  ======================================================================  =========
same_seed     |RenyiELBO - Trace_ELBO| / (1 + |Trace_ELBO|) at the same seed: both    1e-5
              run guide then model on the same random numbers, so they see the same
              z; the tolerance is float32 rounding (eps 1.2e-7) over ~10^2 terms
monte_carlo   z = (mean_est - mean_ref) / sqrt(se_est^2 + se_ref^2), ``draws`` each    |z| <= 4
gradient      max |z| over parameters and 4 fixed directions of the projected mean    |z| <= 4
              gradient (:func:`vae_pyro.checks.gradient_check`), ``grad_draws`` each
============  ======================================================================  =========

A check that could not run is not a pass: when an estimator raises, its checks have verdict
``error`` with the exception's message, and when the reference raises, every check does; either way
``report.ok`` is false. A check that does not apply is ``skip``, with the reason: ``same_seed`` for an
estimator with no same-seed twin among those given (``TraceMeanField_ELBO`` computes the KL in closed
form, a different number at the same seed), ``gradient`` for a model without parameters.

The checks run in the one engine, :func:`vae_pyro.checks.agreement.run_agreement`, the one ``vae-pyro
compare`` and ``vae-pyro check`` run on the VAE: :class:`PyroProgram` is the model, guide and ELBO
objects as the engine's :class:`~vae_pyro.checks.subject.Subject`. Draw r of every estimator is seeded
by its index from a base drawn from torch's generator (:func:`vae_pyro.distributed.seeded_draws`), so
the estimators' draws are independent of each other and the whole report depends on ``seed`` only.

Gradients are taken with respect to the (unconstrained) parameters in Pyro's param store that the
model and guide use. ``seed``, ``draws``, ``grad_draws``, ``estimators`` and ``progress`` are
keyword arguments of this function; every other argument goes to the model and guide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from ..estimators import ELBO_BOUND, MONTE_CARLO_KL, Validity
from ..estimators.iwae import DifferentiableRenyiELBO
from ..report import fmt, table
from .agreement import Reference, agreement_check, crash_reason, run_agreement
from .result import DRAWS, ERROR, FAIL, GRAD_DRAWS, Z_TOL, CheckResult, skipped, verdict_of
from .stats import pilot_directions
from .subject import Subject

SAME_SEED_TOL = 1e-5
#: the pilot gradient direction is the sum of this many reference gradients (a user's model has no
#: "more particles" knob to make one low-noise draw)
PILOT_DRAWS = 8


@dataclass
class EstimatorReport:
    """The result of :func:`check_estimators`: ``checks`` (a list of
    :class:`~vae_pyro.checks.CheckResult`), ``ok`` (every check ran and none failed: a check whose
    estimator or reference raised has verdict ``error``, with the exception's message, and makes
    ``ok`` false), and a printable table."""

    checks: list[CheckResult] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    means: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.verdict not in (FAIL, ERROR) for c in self.checks)

    def table(self) -> str:
        rows = [[c.name, c.estimator, fmt(c.value, ".3g"), fmt(c.tolerance, ".3g"), c.verdict.upper()]
                for c in self.checks]
        lines = [table(["check", "estimator", "value", "tolerance", "verdict"], rows, align="llrrl")]
        lines.append("loss per estimator (mean ± s.e., -ELBO summed as the model sums it): " + ", ".join(
            f"{name} {m['mean']:.4g} ± {m['se']:.2g}" for name, m in self.means.items()))
        lines.append(f"parameters: {', '.join(self.params) or '(none)'}")
        lines.append(f"overall: {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def default_estimators() -> dict:
    return {
        "Trace_ELBO": Trace_ELBO(),
        "TraceMeanField_ELBO": TraceMeanField_ELBO(),
        "RenyiELBO(k=1)": DifferentiableRenyiELBO(alpha=0.0, num_particles=1),
    }


def same_seed_twin(elbo) -> type | None:
    """The Pyro ELBO class that computes exactly ``elbo``'s number at the same seed, or None.
    RenyiELBO with one particle is log of the mean of one weight, log w = log p(x, z) - log q(z),
    at the z its guide draws, as Trace_ELBO draws it (whatever alpha: with k = 1 the power cancels)."""
    if isinstance(elbo, RenyiELBO) and elbo.num_particles == 1:
        return Trace_ELBO
    return None


@dataclass
class PyroELBO:
    """A Pyro ELBO object (``loss``, ``differentiable_loss``) as one of the engine's estimators."""

    name: str
    elbo: object
    bound = ELBO_BOUND

    @property
    def num_particles(self) -> int:
        return getattr(self.elbo, "num_particles", 1)


class PyroProgram(Subject):
    """Any Pyro ``model``/``guide`` with its arguments and named ELBO objects (the first is the
    reference), as the engine's :class:`~vae_pyro.checks.subject.Subject`. Values are the loss as the
    model sums it; gradients are taken with respect to the unconstrained param-store entries the model
    and guide read (found by tracing both once)."""

    checks = ("same_seed", "monte_carlo", "gradient")
    report_crashes = True

    def __init__(self, model, guide, args: tuple, kwargs: dict, elbos: dict, *, draws: int, grad_draws: int,
                 seed: int, z_tol: float = Z_TOL):
        self.model, self.guide, self.args, self.kwargs, self.elbos = model, guide, args, kwargs, elbos
        self.draws, self.grad_draws, self.seed, self.z_tol = draws, grad_draws, seed, z_tol
        self._params = _used_params(model, guide, args, kwargs)

    def reference(self) -> Reference:
        name = next(iter(self.elbos))
        return Reference(name, self.estimator(name).num_particles, "the first of the estimators given", trainer=name)

    def estimator(self, name: str, num_particles: int | None = None) -> PyroELBO:
        return PyroELBO(name, self.elbos[name])

    def validity(self, est) -> Validity:
        return Validity(MONTE_CARLO_KL, "any Pyro ELBO estimates the ELBO of any model and guide")

    def value(self, est) -> float:
        return float(est.elbo.loss(self.model, self.guide, *self.args, **self.kwargs))

    def grad_loss(self, est) -> torch.Tensor:
        return est.elbo.differentiable_loss(self.model, self.guide, *self.args, **self.kwargs)

    def parameters(self):
        return self._params

    def directions(self, reference: Reference) -> list[torch.Tensor]:
        _, params = self._params
        if not params:
            return []
        ref = self.estimator(reference.estimator)
        return pilot_directions(lambda: self.grad_loss(ref), params, self.seed + 7, pilot_draws=PILOT_DRAWS)


def _used_params(model, guide, args, kwargs) -> tuple[list[str], list[torch.Tensor]]:
    """Names and unconstrained tensors of the param-store entries the model and guide read."""
    with poutine.block():
        guide_trace = poutine.trace(guide, param_only=True).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace),
                                    param_only=True).get_trace(*args, **kwargs)
    names = [n for t in (guide_trace, model_trace) for n, s in t.nodes.items() if s["type"] == "param"]
    names = list(dict.fromkeys(names))
    store = pyro.get_param_store()
    return names, [store.get_param(n).unconstrained() for n in names]


@agreement_check("same_seed")
def same_seed_check(ctx, est, mc) -> CheckResult:
    """``est`` and its same-seed twin (:func:`same_seed_twin`) at one seed: the same z, so the same
    value, |a - b| / (1 + |b|) <= ``SAME_SEED_TOL`` (float32 rounding, eps 1.2e-7, over ~10^2 terms)."""
    program: PyroProgram = ctx["setup"]
    twin_type = same_seed_twin(est.elbo)
    twin = next((n for n, e in program.elbos.items() if twin_type is not None and type(e) is twin_type), None)
    if twin is None:
        return skipped("same_seed", est.name, "no estimator given computes its number at the same seed",
                       SAME_SEED_TOL)
    values = []
    cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    for name in (twin, est.name):
        with torch.random.fork_rng(devices=cuda):  # the engine's own stream is left where it was
            pyro.set_rng_seed(program.seed + 1)
            try:
                values.append(program.value(program.estimator(name)))
            except Exception as err:  # noqa: BLE001  (any crash is reported, never hidden)
                return CheckResult("same_seed", est.name, None, SAME_SEED_TOL, ERROR,
                                   details={"reason": crash_reason(name, err), "against": twin})
    rel = abs(values[1] - values[0]) / (1 + abs(values[0]))
    return CheckResult("same_seed", est.name, rel, SAME_SEED_TOL, verdict_of(rel <= SAME_SEED_TOL), values[0],
                       {"against": twin, "values": values})


def check_estimators(model, guide, *args, seed: int = 0, draws: int = DRAWS, grad_draws: int = GRAD_DRAWS,
                     estimators: dict | None = None, progress: bool = False, **kwargs) -> EstimatorReport:
    """Check that Pyro's ELBO estimators agree on ``model``/``guide`` (see the module docstring).

    ``estimators``: name -> ELBO object with ``loss`` and ``differentiable_loss``; the first is the
    reference (default: Trace_ELBO, TraceMeanField_ELBO, RenyiELBO with one particle). Add your own
    to test it against Pyro's."""
    if draws < 2 or grad_draws < 2:
        raise ValueError(f"draws and grad_draws must be >= 2, got {draws} and {grad_draws}")
    estimators = estimators or default_estimators()
    pyro.set_rng_seed(seed)
    program = PyroProgram(model, guide, args, kwargs, estimators, draws=draws, grad_draws=grad_draws, seed=seed)
    ref_name = program.reference().estimator
    agreement = run_agreement(program, [n for n in estimators if n != ref_name], progress, "check_estimators")
    report = EstimatorReport(params=program.parameters()[0])
    if agreement.reference_mc is not None:
        report.means[ref_name] = {"mean": agreement.reference_mc.mean, "se": agreement.reference_mc.se}
    for name, (_, _, mc, results) in agreement.estimators.items():
        if mc is not None:
            report.means[name] = {"mean": mc.mean, "se": mc.se}
        report.checks.extend(results)
    return report


__all__ = ["check_estimators", "EstimatorReport", "PyroProgram", "Z_TOL"]
