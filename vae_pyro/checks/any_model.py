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
              z; the tolerance is float32 rounding (eps 1.2e-7) summed over ~10^2 terms
monte_carlo   z = (mean_est - mean_ref) / sqrt(se_est^2 + se_ref^2), ``draws`` each    |z| <= 4
gradient      max |z| over parameters and 4 fixed directions of the projected mean    |z| <= 4
              gradient (:func:`vae_pyro.checks.gradient_check`), ``grad_draws`` each
============  ======================================================================  =========

A check that could not run is not a pass: when an estimator raises, its checks have verdict
``error`` with the exception's message, and when the reference raises, every check does; either way
``report.ok`` is false. (There is no deliberate "not applicable" case here, so no ``skip``.)

Gradients are taken with respect to the (unconstrained) parameters in Pyro's param store that the
model and guide use. ``seed``, ``draws``, ``grad_draws``, ``estimators`` and ``progress`` are
keyword arguments of this function; every other argument goes to the model and guide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from tqdm.auto import tqdm

from ..estimators.iwae import DifferentiableRenyiELBO
from .agreement import gradient_check, monte_carlo_check
from .result import ERROR, FAIL, PASS, Z_TOL, CheckResult
from .stats import GradStats, MCStats, grad_moments, unit_directions

SAME_SEED_TOL = 1e-5


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
        from ..report import fmt, table

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


def _used_params(model, guide, args, kwargs) -> tuple[list[str], list[torch.Tensor]]:
    """Names and unconstrained tensors of the param-store entries the model and guide read."""
    with poutine.block():
        guide_trace = poutine.trace(guide, param_only=True).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace), param_only=True).get_trace(*args, **kwargs)
    names = [n for t in (guide_trace, model_trace) for n, s in t.nodes.items() if s["type"] == "param"]
    names = list(dict.fromkeys(names))
    store = pyro.get_param_store()
    return names, [store.get_param(n).unconstrained() for n in names]


def check_estimators(model, guide, *args, seed: int = 0, draws: int = 100, grad_draws: int = 50,
                     estimators: dict | None = None, progress: bool = False, **kwargs) -> EstimatorReport:
    """Check that Pyro's ELBO estimators agree on ``model``/``guide`` (see the module docstring).

    ``estimators``: name -> ELBO object with ``loss`` and ``differentiable_loss``; the first is the
    reference (default: Trace_ELBO, TraceMeanField_ELBO, RenyiELBO with one particle). Add your own
    to test it against Pyro's."""
    if draws < 2 or grad_draws < 2:
        raise ValueError(f"draws and grad_draws must be >= 2, got {draws} and {grad_draws}")
    estimators = estimators or default_estimators()
    pyro.set_rng_seed(seed)
    names, params = _used_params(model, guide, args, kwargs)
    report = EstimatorReport(params=names)
    ref_name = next(iter(estimators))
    bar = tqdm(total=len(estimators) * (draws + grad_draws), desc="check_estimators", unit="draw",
               disable=not progress, leave=False)

    # --- same seed: Trace_ELBO and RenyiELBO(k=1) see the same z ----------------------------------
    if "RenyiELBO(k=1)" in estimators and ref_name == "Trace_ELBO":
        report.checks.append(_same_seed_check(estimators, ref_name, model, guide, args, kwargs, seed))

    # --- Monte Carlo values and gradients -------------------------------------------------------
    mc, grads, errors = {}, {}, {}
    try:
        directions = _directions(estimators[ref_name], model, guide, args, kwargs, params, seed)
    except Exception as err:  # noqa: BLE001  (any crash is reported, never hidden)
        errors[ref_name] = _crash(ref_name, err)
    for i, (name, elbo) in enumerate(estimators.items()):
        pyro.set_rng_seed(seed + 100 + i)
        if name in errors:
            continue
        try:
            values = []
            for _ in range(draws):
                values.append(float(elbo.loss(model, guide, *args, **kwargs)))
                bar.update(1)
            mc[name] = MCStats.of(name, values, getattr(elbo, "num_particles", 1))
            grads[name] = _grad_draws(name, elbo, model, guide, args, kwargs, params, names, directions,
                                      grad_draws, bar)
        except Exception as err:  # noqa: BLE001  (any crash is reported, never hidden)
            errors[name] = _crash(name, err)
    bar.close()
    _judge(report, list(estimators), ref_name, mc, grads, errors, bool(params))
    return report


def _judge(report, names, ref_name, mc, grads, errors, has_params: bool) -> None:
    """Each estimator against the reference; an estimator that raised, or every one when the
    reference raised, gets verdict ERROR with the exception's message (never a pass, never a skip)."""
    for name in names:
        if name in mc:
            report.means[name] = {"mean": mc[name].mean, "se": mc[name].se}
        if name in errors or (name != ref_name and ref_name in errors):
            why = errors.get(name) or f"the reference {ref_name} could not run: {errors[ref_name]}"
            report.checks.extend(CheckResult(check, name, None, None, ERROR, details={"reason": why})
                                 for check in ("monte_carlo", "gradient"))
            continue
        if name == ref_name:
            continue
        report.checks.append(monte_carlo_check(mc[name], mc[ref_name]))
        if has_params:
            report.checks.append(gradient_check(grads[name], grads[ref_name]))


def _crash(name: str, err: Exception) -> str:
    return f"{name} could not run on this model: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


def _same_seed_check(estimators, ref_name, model, guide, args, kwargs, seed) -> CheckResult:
    """RenyiELBO(k=1) and Trace_ELBO at one seed: the same z, so the same value (module docstring)."""
    values = []
    for name in (ref_name, "RenyiELBO(k=1)"):
        pyro.set_rng_seed(seed + 1)
        try:
            values.append(float(estimators[name].loss(model, guide, *args, **kwargs)))
        except Exception as err:  # noqa: BLE001  (any crash is reported, never hidden)
            return CheckResult("same_seed", "RenyiELBO(k=1)", None, SAME_SEED_TOL, ERROR,
                               details={"reason": _crash(name, err), "against": ref_name})
    rel = abs(values[1] - values[0]) / (1 + abs(values[0]))
    return CheckResult("same_seed", "RenyiELBO(k=1)", rel, SAME_SEED_TOL, PASS if rel <= SAME_SEED_TOL else FAIL,
                       values[0], {"against": ref_name, "values": values})


def _directions(elbo, model, guide, args, kwargs, params, seed, pilot: int = 8, num_random: int = 3):
    """Per parameter, a pilot gradient direction (the sum of ``pilot`` reference draws, made apart
    from the tested ones) and ``num_random`` seeded Gaussian directions, as unit vectors."""
    if not params:
        return []
    pyro.set_rng_seed(seed + 7)
    total = [torch.zeros_like(p) for p in params]
    for _ in range(pilot):
        for t, g in zip(total, torch.autograd.grad(elbo.differentiable_loss(model, guide, *args, **kwargs), params,
                                                  allow_unused=True)):
            if g is not None:
                t += g
    return unit_directions(total, params, num_random, seed)


def _grad_draws(name, elbo, model, guide, args, kwargs, params, names, directions, draws, bar) -> GradStats:
    return grad_moments(name, lambda: elbo.differentiable_loss(model, guide, *args, **kwargs), names, params,
                        draws, directions, bar)


__all__ = ["check_estimators", "EstimatorReport", "Z_TOL"]
