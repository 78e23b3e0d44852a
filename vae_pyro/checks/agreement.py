"""Proofs that the estimators compute the same ELBO: each check returns numbers and a verdict.

* **same noise** (exact): run a Pyro estimator while recording the z its guide drew, recover the
  noise eps = (z - mu) / sigma, and evaluate the hand-written loss at that very eps. In float64:
  ``tmf`` with an exact KL equals the analytic loss recon + beta KL (value and gradient) to float
  precision; ``trace``, and ``tmf`` where it falls back to sampling, equal the hand-written
  reconstruction term plus beta (log q(z|x) - log p(z)) at that z (the Monte Carlo KL). recon is
  always the likelihood's hand-written ``log_prob``; log p(z) is the prior's own density.
* **Monte Carlo** (statistical): the mean of R independent draws of each estimator agrees with the
  mean of R independent draws of the *reference*; judged by the two-sample z-score
  z = (m_est - m_ref) / sqrt(se_est^2 + se_ref^2).
* **gradients** (statistical): per parameter tensor, the mean gradient over R draws agrees with the
  reference's mean gradient; judged by two-sample z-scores of projections onto fixed directions
  (see :func:`gradient_check`).

The reference (:func:`reference_for`) is the analytic loss where the prior has a closed-form KL. Where
it has none the analytic loss refuses, and the reference is ``hand_mc`` with many particles: the
hand-written recon + log q - log p at reparameterised z, no Pyro code (:mod:`vae_pyro.estimators.hand_reference`).

* **devices**: the same numbers on CUDA as on the CPU (skipped, and reported as skipped, without CUDA).

**The engine.** :func:`run_agreement` runs the checks named in :data:`AGREEMENT_CHECKS` (one function
each) for a list of estimators against the reference and returns their :class:`CheckResult` objects;
``vae-pyro compare`` and ``vae-pyro check`` call it on the MNIST VAE (:class:`AgreementSetup`), and
:func:`~vae_pyro.checks.any_model.check_estimators` on any Pyro model and guide
(:class:`~vae_pyro.checks.any_model.PyroProgram`): both are a :class:`~vae_pyro.checks.subject.Subject`,
the few things the engine asks of a model. A new agreement check is one function
``(ctx, est, mc) -> CheckResult`` and one entry in that dict (:func:`agreement_check`).

Tolerances: the constants and why each is what it is are written once, in :mod:`vae_pyro.checks.result`;
their Student-t form at the number of draws in :mod:`vae_pyro.checks.tolerances`. The gradient check
applies the t-tolerance to each of its 4 projections per parameter tensor (32 for the default MLP):
false-alarm chance <= 32 * 6.3e-5 = 0.2% (Bonferroni). Real mistakes are far beyond it (Pyro 1.9.2's
doubled JitTrace_ELBO gradient gives |z| in the hundreds along the gradient direction).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from .. import distributed
from ..estimators import ELBO_BOUND, build_estimator
from ..estimators.analytic import (
    closed_form_kl_reason,
    closed_form_kl_subject,
    neg_elbo,
    neg_elbo_from_terms,
    neg_elbo_terms,
)
from ..estimators.same_noise import differences, recorded_noise
from .result import DRAWS, ERROR, GRAD_DETERMINISTIC_REL, GRAD_DRAWS, GRAD_REL_TOL, REFERENCE_PARTICLES, SAME_NOISE_TOL
from .result import Z_TOL, CheckResult, skipped, verdict_of
from .stats import GradStats, MCStats, gradient_directions, loss_draws, trainable, value_draws, z_score
from .subject import Subject
from .tolerances import t_tolerance, welch_df


@dataclass
class Reference:
    """What the Monte Carlo and gradient checks compare with, and why; and ``trainer``, what a
    command trains with when the requested estimator does not apply (:func:`vae_pyro.runs.training_estimator`)."""

    estimator: str
    particles: int
    why: str
    trainer: str

    def to_dict(self) -> dict:
        return asdict(self)


def reference_for(vae, particles: int = 1, reference_particles: int = REFERENCE_PARTICLES) -> Reference:
    """The one rule, decided by whether the prior has a closed-form KL. With one: ``analytic`` (only
    the reconstruction is sampled) is both the reference and the trainer. Without: the reference is
    ``hand_mc`` (:mod:`vae_pyro.estimators.hand_reference`: the hand-written log p(x|z) + log p(z)
    - log q(z|x), no Pyro code, so a Pyro estimator is never judged by Pyro) with
    ``reference_particles`` particles per draw (its s.e. shrinks like 1/sqrt(P)); the trainer is
    ``tmf``, the Pyro estimator a user would train such a model with (Monte Carlo KL there)."""
    why_not = closed_form_kl_reason(vae)
    if why_not is None:
        return Reference(
            "analytic", particles, "closed-form KL: the hand-derived loss is the reference", trainer="analytic"
        )
    return Reference(
        "hand_mc",
        max(reference_particles, particles),
        f"no closed-form KL for {closed_form_kl_subject(vae)}, so the analytic loss does not apply; "
        f"reference is hand_mc (hand-written recon + log q - log p at reparameterised z, no Pyro) "
        f"with {max(reference_particles, particles)} particles",
        trainer="tmf",
    )


# ----------------------------------------------------------------------------------------------
# Same noise: exact identities


def same_noise_check(
    vae, x: torch.Tensor, estimator: str, num_particles: int = 1, repeats: int = 3, tol: float = SAME_NOISE_TOL
) -> CheckResult:
    """Exact agreement at shared noise, in float64 (see the module docstring).

    ``value`` is the largest |difference| in nats/example over ``repeats`` fresh noise draws;
    ``details['grad_max_rel_diff']`` the largest relative difference of any gradient entry (must be
    <= 1e-6). ``tmf`` and ``trace`` are compared with the hand-written loss at their recorded noise;
    a compiled estimator, whose noise cannot be recorded, with its uncompiled twin at the same seed
    (both draw the same numbers from torch's generator), which closes the chain to the hand-written
    loss. Runs at beta = ``vae.kl_weight``."""
    est = build_estimator(estimator, num_particles)
    why_not = est.same_noise_skip_reason(vae)
    if why_not:
        return skipped("same_noise", estimator, f"{estimator} {why_not}", tol)
    if est.twin is not None:
        return _same_seed_twin_check(vae, x, estimator, est.twin, num_particles, repeats, tol)
    vae64 = vae.clone(dtype=torch.float64)
    identity = est.same_noise_elbo(vae64)
    if identity is None:
        return skipped("same_noise", estimator, f"{estimator} has no same-noise identity", tol)
    elbo, sampled_kl = identity
    x64 = x.to(torch.float64)
    batch = x.shape[0]
    params = list(vae64.parameters())
    worst_value, worst_grad = 0.0, 0.0
    for _ in range(repeats):
        pyro_loss, eps = recorded_noise(vae64, x64, elbo, num_particles, vae64.kl_weight)
        # (A separate "reconstruction term" difference, pyro - beta mc_kl - recon, would be this same
        # difference rearranged: hand = recon + beta mc_kl. It is not reported as extra evidence.)
        recon, kl, *_ = neg_elbo_terms(vae64, x64, num_particles, eps, sampled_kl)
        hand = neg_elbo_from_terms(recon, kl, vae64.kl_weight, sampled_kl)
        value, grad = differences(pyro_loss, hand, params, batch)
        worst_value, worst_grad = max(worst_value, value), max(worst_grad, grad)
    against = (
        "hand-written recon + beta (log q - log p) at the recorded z"
        if sampled_kl
        else "analytic loss (recon + beta closed-form KL) at the recorded noise"
    )
    details = {
        "grad_max_rel_diff": worst_grad,
        "repeats": repeats,
        "dtype": "float64",
        "against": against,
        "kl_weight": vae.kl_weight,
    }
    ok = worst_value <= tol and worst_grad <= GRAD_REL_TOL
    return CheckResult("same_noise", estimator, worst_value, tol, verdict_of(ok), reference=0.0, details=details)


def _same_seed_twin_check(vae, x, estimator, twin, num_particles, repeats, tol) -> CheckResult:
    vae64 = vae.clone(dtype=torch.float64)
    x64 = x.to(torch.float64)
    params = list(vae64.parameters())
    est, ref = build_estimator(estimator, num_particles), build_estimator(twin, num_particles)
    est.differentiable_loss(vae64, x64)  # compile first: tracing consumes random numbers
    worst_value, worst_grad = 0.0, 0.0
    for r in range(repeats):
        seed = 1000 + r
        torch.manual_seed(seed)
        a = est.differentiable_loss(vae64, x64)
        torch.manual_seed(seed)
        b = ref.differentiable_loss(vae64, x64)
        value, grad = differences(a, b, params, x.shape[0])
        worst_value, worst_grad = max(worst_value, value), max(worst_grad, grad)
    ok = worst_value <= tol and worst_grad <= GRAD_REL_TOL
    return CheckResult(
        "same_noise",
        estimator,
        worst_value,
        tol,
        verdict_of(ok),
        reference=0.0,
        details={
            "grad_max_rel_diff": worst_grad,
            "repeats": repeats,
            "dtype": "float64",
            "against": f"{twin} at the same seed",
        },
    )


# ----------------------------------------------------------------------------------------------
# Monte Carlo agreement of values


def monte_carlo_check(stats: MCStats, reference: MCStats, tol: float = Z_TOL) -> CheckResult:
    """|z| against ``tol`` read as a normal tolerance, converted to the t-tolerance of the same
    false-alarm rate at the draws' degrees of freedom (:func:`vae_pyro.checks.tolerances.t_tolerance`);
    a reference without Monte Carlo noise (se 0) adds no degrees of freedom."""
    z = z_score(stats, reference)
    tol = t_tolerance(tol, welch_df(stats.draws if stats.se > 0 else 0, reference.draws if reference.se > 0 else 0))
    return CheckResult(
        "monte_carlo",
        stats.estimator,
        z,
        tol,
        verdict_of(abs(z) <= tol),
        reference=reference.mean,
        details={
            "mean": stats.mean,
            "se": stats.se,
            "sd_per_draw": stats.sd,
            "draws": stats.draws,
            "num_particles": stats.num_particles,
            "reference_se": reference.se,
        },
    )


# ----------------------------------------------------------------------------------------------
# Gradients


def gradient_check(stats: GradStats, reference: GradStats, tol: float = Z_TOL) -> CheckResult:
    """Two-sample z-scores of the gradient's projections: for each tensor and each fixed direction u,
    z = (mean(u.g_est) - mean(u.g_ref)) / sqrt(var(u.g_est)/R + var(u.g_ref)/R_ref).

    Why projections: the elements of one gradient tensor are strongly correlated (they share the few
    noise draws), so per-element z-scores are not independent and statistics pooled over elements
    are not calibrated. Each projection is one scalar, so its z-score is an honest univariate test
    whatever the correlation. The verdict compares the largest |z| over tensors and directions with
    ``tol`` (a normal tolerance, converted to Student's t at min(draws) - 1 degrees of freedom with
    the same per-test false-alarm rate; :mod:`vae_pyro.checks.tolerances`). Also reported:
    ||mean - ref|| / ||ref|| per tensor (``rel_err``, informational: it
    includes the Monte Carlo noise of both means)."""
    per_tensor = {}
    var_a = stats.proj.var(dim=0, unbiased=True) / stats.draws
    var_b = reference.proj.var(dim=0, unbiased=True) / reference.draws
    diff = stats.proj.mean(dim=0) - reference.proj.mean(dim=0)
    # A gradient that is deterministic in both (a learnt prior's parameters under a closed-form KL)
    # has zero variance; its two computations still differ by float rounding, so the s.e. gets a
    # floor of GRAD_DETERMINISTIC_REL (1e-5, ~100 float32 epsilons of accumulated rounding) times the
    # projection's size. Any real disagreement of a deterministic gradient is far above it.
    floor = GRAD_DETERMINISTIC_REL * reference.proj.mean(dim=0).abs()
    se = (var_a + var_b + floor**2).sqrt()
    z = torch.where(se > 0, diff / se.clamp_min(1e-300), torch.where(diff.abs() > 0, torch.inf, 0.0))
    tol = t_tolerance(tol, welch_df(stats.draws, reference.draws))  # same false-alarm rate at any draws
    for i, name in enumerate(stats.names):
        m, rm = stats.mean[i], reference.mean[i]
        per_tensor[name] = {"z": [float(v) for v in z[i]], "rel_err": float((m - rm).norm() / (rm.norm() + 1e-30))}
    value = float(z.abs().max())
    return CheckResult(
        "gradient",
        stats.estimator,
        value,
        tol,
        verdict_of(value <= tol),
        reference=0.0,
        details={
            "per_tensor": per_tensor,
            "draws": stats.draws,
            "directions": int(z.shape[1]),
            "max_rel_err": max(d["rel_err"] for d in per_tensor.values()),
        },
    )


# ----------------------------------------------------------------------------------------------
# Devices


def device_check(
    vae, x: torch.Tensor, estimator: str, draws: int, num_particles: int = 1, tol: float = Z_TOL
) -> CheckResult:
    """On CUDA: (1) the hand-written loss (closed-form KL, or sampled KL where there is none) at one
    fixed noise draw (made on the CPU) equals the CPU's
    to 1e-4 relative (float32 kernels differ in summation order); (2) the estimator's Monte Carlo
    mean on CUDA agrees with its Monte Carlo mean on the CPU, |z| <= tol (the two devices have
    different random streams, so only statistical agreement is possible). Skipped, and reported as
    such, without CUDA."""
    if not torch.cuda.is_available():
        return skipped("device", estimator, "CUDA is not available", tol)
    cpu_vae, cuda_vae = vae.clone(device="cpu"), vae.clone(device="cuda")
    x_cpu, x_cuda = x.to("cpu"), x.to("cuda")
    with torch.no_grad():
        mu, _ = cpu_vae.encoder(x_cpu)
        eps = torch.randn((num_particles,) + tuple(mu.shape), generator=torch.Generator().manual_seed(0))
        fixed = []
        sampled = closed_form_kl_reason(cpu_vae) is not None
        for model, xs, e in ((cpu_vae, x_cpu, eps), (cuda_vae, x_cuda, eps.cuda())):
            fixed.append(float(neg_elbo(model, xs, num_particles, e, sampled)))
    rel = abs(fixed[0] - fixed[1]) / abs(fixed[0])
    est = build_estimator(estimator, num_particles)
    cpu = MCStats.of(estimator, loss_draws(est, cpu_vae, x_cpu, draws), num_particles)
    gpu = MCStats.of(estimator, loss_draws(est, cuda_vae, x_cuda, draws), num_particles)
    z = z_score(gpu, cpu)
    tol = t_tolerance(tol, welch_df(draws, draws))  # both standard errors estimated: Student t
    details = {
        "fixed_noise_rel_diff": rel,
        "cuda_mean": gpu.mean,
        "cuda_se": gpu.se,
        "cpu_mean": cpu.mean,
        "cpu_se": cpu.se,
        "device_name": torch.cuda.get_device_name(),
    }
    return CheckResult(
        "device", estimator, z, tol, verdict_of(rel <= 1e-4 and abs(z) <= tol), reference=cpu.mean, details=details
    )


# ----------------------------------------------------------------------------------------------
# The VAE as the engine's subject


@dataclass
class AgreementSetup(Subject):
    """The MNIST VAE as the engine's :class:`~vae_pyro.checks.subject.Subject`: the VAE, the data
    (``x`` for values, ``x_grad`` for gradients, ``x_same_noise`` for the float64 identities), the
    draws and tolerances, and which checks of :data:`AGREEMENT_CHECKS` to run. Values are nats per
    example; the reference is :func:`reference_for`'s; estimators come from the registry."""

    vae: object
    x: torch.Tensor
    x_grad: torch.Tensor
    x_same_noise: torch.Tensor
    particles: int = 1
    draws: int = DRAWS
    grad_draws: int = GRAD_DRAWS
    reference_particles: int = REFERENCE_PARTICLES
    seed: int = 0
    z_tol: float = Z_TOL
    same_noise_tol: float = SAME_NOISE_TOL
    checks: tuple[str, ...] = ("monte_carlo", "same_noise", "gradient", "device")

    def reference(self) -> Reference:
        return reference_for(self.vae, self.particles, self.reference_particles)

    def estimator(self, name: str, num_particles: int | None = None):
        return build_estimator(name, num_particles or self.particles)

    def validity(self, est):
        return est.validity(self.vae)

    def value(self, est) -> float:
        return est.loss(self.vae, self.x) / self.x.shape[0]

    def grad_loss(self, est) -> torch.Tensor:
        return est.differentiable_loss(self.vae, self.x_grad) / self.x_grad.shape[0]

    def parameters(self):
        return trainable(self.vae)

    def directions(self, reference: Reference) -> list[torch.Tensor]:
        # the pilot is the reference's own estimator with 32 particles (gradient_directions)
        return gradient_directions(self.vae, self.x_grad, seed=self.seed, reference=reference.estimator)


# ----------------------------------------------------------------------------------------------
# The engine: every agreement check, for a list of estimators, against one reference


@dataclass
class Agreement:
    """The engine's result: the reference and its Monte Carlo statistics (None when the reference
    raised and the subject reports crashes), and per estimator ``(est, validity, mc, results)``:
    its validity, Monte Carlo statistics (None when invalid or crashed) and check results."""

    reference: Reference
    reference_mc: MCStats | None
    estimators: dict


def _context(subject: Subject, ref: Reference, bar) -> dict:
    ref_est = subject.estimator(ref.estimator, ref.particles)
    ref_mc = MCStats.of(ref.estimator, value_draws(lambda: subject.value(ref_est), subject.draws, bar), ref.particles)
    directions = distributed.broadcast_tensors(subject.directions(ref))  # every process projects on the same ones
    ref_grad = subject.gradient_draws(ref_est, directions, bar)
    return {
        "setup": subject,
        "reference": ref,
        "ref_mc": ref_mc,
        "directions": directions,
        "ref_grad": ref_grad,
        "bar": bar,
    }


def _monte_carlo(ctx, est, mc) -> CheckResult:
    return monte_carlo_check(mc, ctx["ref_mc"], ctx["setup"].z_tol)


def _same_noise(ctx, est, mc) -> CheckResult:
    s = ctx["setup"]
    return same_noise_check(s.vae, s.x_same_noise, est.name, s.particles, tol=s.same_noise_tol)


def _gradient(ctx, est, mc) -> CheckResult:
    s = ctx["setup"]
    if not ctx["directions"]:
        return skipped("gradient", est.name, "no parameters to differentiate", s.z_tol)
    stats = s.gradient_draws(est, ctx["directions"], ctx["bar"])
    return gradient_check(stats, ctx["ref_grad"], s.z_tol)


def _device(ctx, est, mc) -> CheckResult:
    s = ctx["setup"]
    return device_check(s.vae, s.x, est.name, max(s.draws // 2, 2), s.particles, s.z_tol)


#: The engine's list: check name -> function ``(ctx, est, mc) -> CheckResult``. A subject names the
#: ones it runs (``Subject.checks``); :func:`agreement_check` adds one.
AGREEMENT_CHECKS = {"monte_carlo": _monte_carlo, "same_noise": _same_noise, "gradient": _gradient, "device": _device}


def agreement_check(name: str):
    """Register ``fn(ctx, est, mc) -> CheckResult`` as the agreement check ``name`` (a decorator)."""

    def register(fn):
        AGREEMENT_CHECKS[name] = fn
        return fn

    return register


def _all_skipped(checks, name: str, reason: str) -> list[CheckResult]:
    return [skipped(check, name, reason) for check in checks]


def crash_reason(name: str, err: Exception) -> str:
    """The one line an ``error`` verdict carries: who raised, the exception and its first line."""
    return f"{name} could not run on this model: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


def _errors(checks, name: str, reason: str) -> list[CheckResult]:
    return [CheckResult(check, name, None, None, ERROR, details={"reason": reason}) for check in checks]


def _check_one(ctx, name: str, est, valid, subject: Subject) -> tuple:
    """One estimator: its value draws, then its checks (or the reason they are skipped)."""
    bar, per_estimator = ctx["bar"], subject.draws + subject.grad_draws
    if not valid.valid:
        bar.update(per_estimator)
        return est, valid, None, _all_skipped(subject.checks, name, f"{name} is invalid here: {valid.reason}")
    mc = MCStats.of(name, value_draws(lambda: subject.value(est), subject.draws, bar), est.num_particles)
    if est.bound != ELBO_BOUND:
        bar.update(subject.grad_draws)
        reason = f"{name} estimates the {est.bound.upper()}_k bound, not the ELBO; {subject.other_bound_note}"
        return est, valid, mc, _all_skipped(subject.checks, name, reason)
    return est, valid, mc, [AGREEMENT_CHECKS[check](ctx, est, mc) for check in subject.checks]


def _guarded(subject: Subject, name: str, fn, *args):
    """``fn(*args)``, or, when the subject reports crashes and it raises, the crash's one line."""
    if not subject.report_crashes:
        return fn(*args), None
    try:
        return fn(*args), None
    except Exception as err:  # noqa: BLE001  (a crash of a user's model is a verdict, never hidden)
        return None, crash_reason(name, err)


def run_agreement(
    subject: Subject,
    names,
    progress: bool = True,
    desc: str = "checks",
    validities: dict | None = None,
    on_estimator=None,
) -> Agreement:
    """Every check of ``subject.checks`` for each estimator in ``names`` against the subject's
    reference (for the VAE, :func:`reference_for`). An estimator invalid here is not run (its checks
    are skipped with the reason); one of another bound than the ELBO (IWAE_k) has its value drawn but
    is not judged against the ELBO. Where the subject reports crashes, an estimator that raises gets
    verdict ``error`` on every check, and every estimator does when the reference raises.
    ``validities``: the estimators' :class:`Validity`, where the caller has already asked (asking
    ``tmf`` traces the guide once, which draws random numbers). ``on_estimator(name, est, validity,
    mc, results)`` is called after each estimator's checks, before the next one's (e.g. to time it)."""
    per_estimator = subject.draws + subject.grad_draws
    bar = tqdm(total=per_estimator * (len(names) + 1), desc=desc, unit="draw", disable=not progress, leave=False)
    ref = subject.reference()
    ctx, ref_crash = _guarded(subject, ref.estimator, _context, subject, ref, bar)
    out = {}
    for name in names:
        bar.set_postfix(estimator=name)
        est = subject.estimator(name)
        if ref_crash:
            out[name] = (
                est,
                None,
                None,
                _errors(subject.checks, name, f"the reference {ref.estimator} could not run: {ref_crash}"),
            )
        else:
            valid = validities[name] if validities else subject.validity(est)
            entry, crash = _guarded(subject, name, _check_one, ctx, name, est, valid, subject)
            out[name] = entry or (est, valid, None, _errors(subject.checks, name, crash))
        if on_estimator is not None:
            on_estimator(name, *out[name])
    bar.close()
    return Agreement(ref, ctx["ref_mc"] if ctx else None, out)
