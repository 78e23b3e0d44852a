r"""Estimator-agreement checks for *any* Pyro model/guide pair, not only our VAE.

    report = vae_pyro.check_estimators(model, guide, *args, **kwargs)
    print(report)          # check, estimator, value, tolerance, verdict
    assert report.ok

Three of Pyro's ELBO classes estimate the same number for any model and guide:

* ``Trace_ELBO``: log p(x, z) - log q(z) at z ~ q (Monte Carlo everything);
* ``TraceMeanField_ELBO``: the same with KL(q || p) in closed form wherever torch has it;
* ``RenyiELBO(num_particles=1)``: log of the mean of one importance weight, i.e. the same
  single-sample ELBO ("RenyiELBO as ELBO"; for k > 1 it would be IWAE_k, a different bound).

Those are the defaults; any ``pyro.infer`` ELBO, or a user's subclass, can be given. Values come from
``loss``, gradients from ``loss_and_grads`` (read from the param store's ``.grad``,
:func:`accumulated_grads`) or ``differentiable_loss`` (:func:`gradient_interface`). One that Pyro
refuses for the model (``NotImplementedError``) is ``skip`` with Pyro's reason (:meth:`PyroProgram.validity`);
one that estimates another bound (:func:`bound_of`) is ``skip`` too; a crash is ``error``.
``TraceMeanField_ELBO`` failing on a guide with ``Delta`` sites gets the cause (:func:`delta_cause`).

Checks, with the first estimator (by default ``Trace_ELBO``) the reference:

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

import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO, TraceTMC_ELBO

from ..estimators import ELBO_BOUND, INVALID, IWAE_BOUND, MONTE_CARLO_KL, RENYI_BOUND, TMC_BOUND, Validity
from ..estimators.delta_kl import DeltaAwareTraceMeanField_ELBO, delta_log_density, delta_of
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
    #: the known cause of a failure, where one is recognised (:func:`delta_cause`)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.verdict not in (FAIL, ERROR) for c in self.checks)

    def table(self) -> str:
        rows = [
            [c.name, c.estimator, fmt(c.value, ".3g"), fmt(c.tolerance, ".3g"), c.verdict.upper()] for c in self.checks
        ]
        lines = [table(["check", "estimator", "value", "tolerance", "verdict"], rows, align="llrrl")]
        lines.append(
            "loss per estimator (mean ± s.e., -ELBO summed as the model sums it): "
            + ", ".join(f"{name} {m['mean']:.4g} ± {m['se']:.2g}" for name, m in self.means.items())
        )
        lines.append(f"parameters: {', '.join(self.params) or '(none)'}")
        lines += [f"cause: {note}" for note in self.notes]
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


def gradient_interface(elbo) -> str:
    """Which of ``elbo``'s methods its gradient is read from: ``"loss_and_grads"`` (what
    ``pyro.infer.SVI.step`` calls; every Pyro ELBO has it) unless the class overrides
    ``differentiable_loss`` more recently than ``loss_and_grads`` (in a class nearer in its MRO), as a
    user's subclass that rewrites ``differentiable_loss`` only does, or has no ``loss_and_grads`` at all
    (a duck-typed object). On a tie (both defined by one class, as in every ``pyro.infer`` class that
    has both) ``loss_and_grads`` wins: it is the gradient SVI trains with (pyro 1.9.2's
    ``JitTrace_ELBO.differentiable_loss`` doubles its gradient, its ``loss_and_grads`` does not)."""
    mro = type(elbo).__mro__
    owner = {
        attr: next((i for i, c in enumerate(mro) if attr in vars(c)), None)
        for attr in ("differentiable_loss", "loss_and_grads")
    }
    if owner["loss_and_grads"] is None and not callable(getattr(elbo, "loss_and_grads", None)):
        return "differentiable_loss"
    d = owner["differentiable_loss"]
    if d is not None and (owner["loss_and_grads"] is None or d < owner["loss_and_grads"]):
        return "differentiable_loss"
    return "loss_and_grads"


def refusal_reason(err: NotImplementedError) -> str:
    """Pyro's one line when an ELBO does not apply to a model: it raises ``NotImplementedError``
    (``TraceMeanField_ELBO``'s "All distributions in the guide must be fully reparameterized",
    ``RenyiELBO``'s bare raise for a partly reparameterised site, pyro #1222), with where it was raised."""
    where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    at = f" (raised at {'/'.join(Path(where.filename).parts[-3:])}:{where.lineno})" if where else ""
    return f"Pyro refuses it for this model: NotImplementedError: {(str(err).splitlines() or ['(no message)'])[0]}{at}"


def bound_of(elbo, enumerated: bool) -> str:
    """What ``elbo``'s value estimates on a model and guide (``enumerated``: some site is configured for
    enumeration): ``RenyiELBO`` with k > 1 particles the Renyi bound (IWAE_k at alpha = 0);
    ``TraceTMC_ELBO`` with enumerated sites a tensor Monte Carlo estimate of log p(x) (it sums the
    importance weights over the enumerated values, a tighter bound); every other ELBO, the ELBO."""
    if isinstance(elbo, RenyiELBO) and elbo.num_particles > 1:
        return IWAE_BOUND if elbo.alpha == 0 else RENYI_BOUND
    if isinstance(elbo, TraceTMC_ELBO) and enumerated:
        return TMC_BOUND
    return ELBO_BOUND


@dataclass
class PyroELBO:
    """A Pyro ELBO object as one of the engine's estimators: values from its ``loss``, gradients from
    the method :func:`gradient_interface` names."""

    name: str
    elbo: object
    bound: str = ELBO_BOUND

    @property
    def num_particles(self) -> int:
        return getattr(self.elbo, "num_particles", 1)

    @property
    def gradient_via(self) -> str:
        return gradient_interface(self.elbo)


class PyroProgram(Subject):
    """Any Pyro ``model``/``guide`` with its arguments and named ELBO objects (the first is the
    reference), as the engine's :class:`~vae_pyro.checks.subject.Subject`. Values are the loss as the
    model sums it; gradients are taken with respect to the unconstrained param-store entries the model
    and guide read (found by tracing both once)."""

    checks = ("same_seed", "monte_carlo", "gradient")
    report_crashes = True
    other_bound_note = "so it is not judged against the ELBO's value or gradient here"

    def __init__(
        self,
        model,
        guide,
        args: tuple,
        kwargs: dict,
        elbos: dict,
        *,
        draws: int,
        grad_draws: int,
        seed: int,
        z_tol: float = Z_TOL,
    ):
        self.model, self.guide, self.args, self.kwargs, self.elbos = model, guide, args, kwargs, elbos
        self.draws, self.grad_draws, self.seed, self.z_tol = draws, grad_draws, seed, z_tol
        self._params = _used_params(model, guide, args, kwargs)
        self._enumerated = _has_enumerated_sites(model, guide, args, kwargs)

    def reference(self) -> Reference:
        name = next(iter(self.elbos))
        return Reference(name, self.estimator(name).num_particles, "the first of the estimators given", trainer=name)

    def estimator(self, name: str, num_particles: int | None = None) -> PyroELBO:
        return PyroELBO(name, self.elbos[name], bound_of(self.elbos[name], self._enumerated))

    def validity(self, est) -> Validity:
        """Applies unless Pyro refuses it: one value and one gradient are tried first, with the random
        stream forked (the draws that are judged are untouched); a ``NotImplementedError`` is Pyro's way
        of saying the ELBO does not apply to the model (the check is then ``skip`` with that reason).
        Any other exception is left to the engine, which reports it as ``error`` when the draws raise it."""
        cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda):
            try:
                self.value(est)
                if self._params[1]:
                    self.grad_loss(est)
            except NotImplementedError as err:
                return Validity(INVALID, refusal_reason(err))
            except Exception:  # noqa: BLE001  (reported by the engine, from the draws themselves)
                pass
        return Validity(MONTE_CARLO_KL, "any Pyro ELBO estimates the ELBO of any model and guide")

    def value(self, est) -> float:
        return float(est.elbo.loss(self.model, self.guide, *self.args, **self.kwargs))

    def grad_loss(self, est) -> torch.Tensor:
        """A tensor whose gradient with respect to the parameters is one draw of ``est``'s gradient:
        its ``differentiable_loss``, or, where the gradient comes from ``loss_and_grads``
        (:func:`gradient_interface`), sum_i <p_i, g_i> with g_i the gradients it accumulated (constants)."""
        if est.gradient_via == "differentiable_loss":
            return est.elbo.differentiable_loss(self.model, self.guide, *self.args, **self.kwargs)
        _, params = self._params
        if not params:  # nothing to differentiate: the value, as a constant
            return torch.as_tensor(self.value(est))
        grads = accumulated_grads(est.elbo, self.model, self.guide, self.args, self.kwargs, params)
        return sum(((p * g.detach()).sum() for p, g in zip(params, grads) if g is not None), params[0].sum() * 0)

    def parameters(self):
        return self._params

    def directions(self, reference: Reference) -> list[torch.Tensor]:
        _, params = self._params
        if not params:
            return []
        ref = self.estimator(reference.estimator)
        return pilot_directions(lambda: self.grad_loss(ref), params, self.seed + 7, pilot_draws=PILOT_DRAWS)


def accumulated_grads(elbo, model, guide, args, kwargs, params) -> list[torch.Tensor | None]:
    """The gradients ``elbo.loss_and_grads`` accumulates into ``params``' ``.grad`` (Pyro's ELBOs call
    ``backward`` themselves: ``surrogate_loss.backward()``, in ``trace_elbo.py``, ``tracegraph_elbo.py``,
    ``renyi_elbo.py``, ...). Every param-store tensor's ``.grad`` is set to None first and put back
    after, so nothing the caller accumulated is lost or polluted; entries the ELBO creates on the way
    (``TraceGraph_ELBO``'s decaying-average baselines) are left without a ``.grad``."""
    store = pyro.get_param_store()
    before = list({id(t): t for t in [*params, *(store.get_param(n).unconstrained() for n in store.keys())]}.values())
    saved = [t.grad for t in before]
    for t in before:
        t.grad = None
    try:
        elbo.loss_and_grads(model, guide, *args, **kwargs)
        return [None if p.grad is None else p.grad.clone() for p in params]
    finally:
        for t, g in zip(before, saved):
            t.grad = g
        for name in store.keys():
            t = store.get_param(name).unconstrained()
            if all(t is not b for b in before):
                t.grad = None


def _has_enumerated_sites(model, guide, args, kwargs) -> bool:
    """Whether a sample site of the guide or the model is configured for enumeration (``infer``'s
    ``enumerate``, as ``config_enumerate`` sets it). One run of each, on a forked random stream."""
    cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return any(
        s["type"] == "sample" and s["infer"].get("enumerate")
        for t in (guide_trace, model_trace)
        for s in t.nodes.values()
    )


def _used_params(model, guide, args, kwargs) -> tuple[list[str], list[torch.Tensor]]:
    """Names and unconstrained tensors of the param-store entries the model and guide read."""
    with poutine.block():
        guide_trace = poutine.trace(guide, param_only=True).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace), param_only=True).get_trace(
            *args, **kwargs
        )
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
        return skipped("same_seed", est.name, "no estimator given computes its number at the same seed", SAME_SEED_TOL)
    values = []
    cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    for name in (twin, est.name):
        with torch.random.fork_rng(devices=cuda):  # the engine's own stream is left where it was
            pyro.set_rng_seed(program.seed + 1)
            try:
                values.append(program.value(program.estimator(name)))
            except Exception as err:  # noqa: BLE001  (any crash is reported, never hidden)
                return CheckResult(
                    "same_seed",
                    est.name,
                    None,
                    SAME_SEED_TOL,
                    ERROR,
                    details={"reason": crash_reason(name, err), "against": twin},
                )
    rel = abs(values[1] - values[0]) / (1 + abs(values[0]))
    return CheckResult(
        "same_seed",
        est.name,
        rel,
        SAME_SEED_TOL,
        verdict_of(rel <= SAME_SEED_TOL),
        values[0],
        {"against": twin, "values": values},
    )


def delta_cause(program: PyroProgram, name: str) -> str | None:
    """Why ``TraceMeanField_ELBO`` fails on a guide with ``Delta`` sites that carry a ``log_density``
    (an autoguide's constrained latents; :mod:`vae_pyro.estimators.delta_kl`), or None when the guide
    has none. One guide draw, on a forked random stream, gives the size of the missing term."""
    cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda), poutine.block(), torch.no_grad():
        guide_trace = poutine.trace(program.guide).get_trace(*program.args, **program.kwargs)
        model_trace = poutine.trace(poutine.replay(program.model, trace=guide_trace)).get_trace(
            *program.args, **program.kwargs
        )
    sites = [
        n
        for n, s in guide_trace.nodes.items()
        if s["type"] == "sample"
        and n in model_trace.nodes
        and delta_of(s["fn"]) is not None
        and bool((delta_of(s["fn"]).log_density != 0).any())
    ]
    if not sites:
        return None
    missing = float(delta_log_density(model_trace, guide_trace))
    return (
        f"{name}: the guide's Delta sites {', '.join(sites)} carry a log_density (an autoguide's "
        f"log|Jacobian| of a constrained latent), which pyro 1.9.2's kl_divergence(Delta, .) ignores, so "
        f"its ELBO is off by E[log_density] (one guide draw: {missing:.4g}); "
        "vae_pyro.estimators.delta_kl.DeltaAwareTraceMeanField_ELBO includes it"
    )


def check_estimators(
    model,
    guide,
    *args,
    seed: int = 0,
    draws: int = DRAWS,
    grad_draws: int = GRAD_DRAWS,
    estimators: dict | None = None,
    progress: bool = False,
    **kwargs,
) -> EstimatorReport:
    """Check that Pyro's ELBO estimators agree on ``model``/``guide`` (see the module docstring).

    ``estimators``: name -> ELBO object with ``loss`` and ``loss_and_grads`` or ``differentiable_loss``
    (any ``pyro.infer`` ELBO, or a subclass of one); the first is the reference (default: Trace_ELBO,
    TraceMeanField_ELBO, RenyiELBO with one particle). Add your own to test it against Pyro's."""
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
    for name, (est, _, mc, results) in agreement.estimators.items():
        if mc is not None:
            report.means[name] = {"mean": mc.mean, "se": mc.se}
        for c in results:
            if c.name == "gradient" and c.verdict != "skip":
                c.details["gradient_via"] = est.gradient_via
        report.checks.extend(results)
        failed = [c for c in results if c.verdict == FAIL]
        if (
            failed
            and isinstance(est.elbo, TraceMeanField_ELBO)
            and not isinstance(est.elbo, DeltaAwareTraceMeanField_ELBO)
        ):
            cause = delta_cause(program, name)
            if cause:
                report.notes.append(cause)
                for c in failed:
                    c.details["cause"] = cause
    return report


__all__ = ["check_estimators", "EstimatorReport", "PyroProgram", "Z_TOL"]
