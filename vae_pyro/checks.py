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
hand-written recon + log q - log p at reparameterised z, no Pyro code (:mod:`vae_pyro.hand_reference`).
* **devices**: the same numbers on CUDA as on the CPU (skipped, and reported as skipped, without CUDA).

Tolerances and why:

* ``SAME_NOISE_TOL = 1e-8`` nats/example, float64: the two computations differ only by the order of
  float operations on ~10^3 terms of size ~1, so disagreement should be ~1e-13; 1e-8 leaves five
  orders of margin while any real modelling difference (a missing constant, a factor 1/2) is >= 1e-3.
* ``Z_TOL = 4``: |z| > 4 happens with probability 6e-5 under agreement (two-sided normal tail), so a
  suite of ~50 such checks has < 0.5% chance of one false alarm, and seeds are fixed anyway. A bias
  of 4 standard errors (a few hundredths of a nat with the defaults) is flagged.
* The gradient check uses the same ``Z_TOL`` on each of its 4 projections per parameter tensor
  (32 z-scores for the default MLP): false-alarm chance ~32 * 2e-4 < 1% even with the heavier
  tails of a t-statistic from 50 draws. Real mistakes are far beyond it (Pyro 1.9.2's doubled
  JitTrace_ELBO gradient gives |z| in the hundreds along the gradient direction).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from .analytic import closed_form_kl, closed_form_kl_reason, log_normal_diag, recon_terms
from .estimators import ANALYTIC, ESTIMATORS, Estimator, build_estimator, mean_field_kl_kind

SAME_NOISE_TOL = 1e-8
GRAD_REL_TOL = 1e-6
GRAD_DETERMINISTIC_REL = 1e-5
Z_TOL = 4.0
PASS, FAIL, SKIP = "pass", "fail", "skip"
#: a check that could not run (the estimator or its reference raised): never a pass; ``skip`` is kept
#: for deliberate, documented not-applicable cases (an invalid estimator, no CUDA)
ERROR = "error"


@dataclass
class CheckResult:
    """One check of one estimator. ``value`` is compared with ``tolerance`` (``reference`` is what the
    value was measured against, where that is a number)."""

    name: str
    estimator: str
    value: float | None
    tolerance: float | None
    verdict: str
    reference: float | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _verdict(ok: bool) -> str:
    return PASS if ok else FAIL


def _mean_se(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=True) / math.sqrt(len(t)))


@dataclass
class Reference:
    """What the Monte Carlo and gradient checks compare with, and why."""

    estimator: str
    particles: int
    why: str

    def to_dict(self) -> dict:
        return asdict(self)


def reference_for(vae, particles: int = 1, reference_particles: int = 8) -> Reference:
    """``analytic`` (only the reconstruction is sampled) where the prior has a closed-form KL, else
    ``hand_mc`` (:mod:`vae_pyro.hand_reference`: the hand-written log p(x|z) + log p(z) - log q(z|x),
    no Pyro code) with ``reference_particles`` particles per draw (its s.e. shrinks like 1/sqrt(P))."""
    why_not = closed_form_kl_reason(vae)
    if why_not is None:
        return Reference("analytic", particles, "closed-form KL: the hand-derived loss is the reference")
    return Reference("hand_mc", max(reference_particles, particles),
                     f"no closed-form KL for prior {vae.prior.name!r}, so the analytic loss does not apply; "
                     f"reference is hand_mc (hand-written recon + log q - log p at reparameterised z, no Pyro) "
                     f"with {max(reference_particles, particles)} particles")


def hand_neg_elbo(vae, x: torch.Tensor, num_particles: int, eps: torch.Tensor, sampled_kl: bool):
    """The hand-written -ELBO_beta summed over the batch at noise ``eps``: recon + beta KL with the
    closed-form KL, or (``sampled_kl``) recon + beta (log q(z|x) - log p(z)) at z = mu + sigma eps.
    Returns ``(loss, recon, sampled_kl_or_None)``, the last two per particle and example."""
    recon, z, mu, logvar = recon_terms(vae, x, num_particles, eps)
    beta = vae.kl_weight
    if sampled_kl:
        mc_kl = log_normal_diag(z, mu, logvar) - vae.prior.dist((x.shape[0],)).log_prob(z)
        return (recon + beta * mc_kl).mean(0).sum(), recon, mc_kl
    return (recon.mean(0) + beta * closed_form_kl(vae, mu, logvar)).sum(), recon, None


# ----------------------------------------------------------------------------------------------
# Same noise: exact identities


def recorded_pyro_loss(vae, x, elbo, differentiable: bool = False):
    """Run a Pyro ELBO on (vae.model, vae.guide) at beta = ``vae.kl_weight`` and return
    ``(loss, z)``, the z its guide drew."""
    traced_guide = poutine.trace(vae.guide)
    if differentiable:
        loss = elbo.differentiable_loss(vae.model, traced_guide, x, vae.kl_weight)
    else:
        loss = elbo.loss(vae.model, traced_guide, x, vae.kl_weight)
    z = traced_guide.msngr.trace.nodes["z"]["value"]
    return loss, z


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, params, allow_unused=True))


def _max_rel_grad_diff(ga, gb) -> float:
    worst = 0.0
    for a, b in zip(ga, gb):
        if a is None or b is None:
            continue
        worst = max(worst, float((a - b).abs().max() / (b.abs().max() + 1e-30)))
    return worst


def same_noise_check(vae, x: torch.Tensor, estimator: str, num_particles: int = 1,
                     repeats: int = 3, tol: float = SAME_NOISE_TOL) -> CheckResult:
    """Exact agreement at shared noise, in float64 (see the module docstring).

    ``value`` is the largest |difference| in nats/example over ``repeats`` fresh noise draws;
    ``details['grad_max_rel_diff']`` the largest relative difference of any gradient entry (must be
    <= 1e-6). ``tmf`` and ``trace`` are compared with the hand-written loss at their recorded noise;
    a compiled estimator, whose noise cannot be recorded, with its uncompiled twin at the same seed
    (both draw the same numbers from torch's generator), which closes the chain to the hand-written
    loss. Runs at beta = ``vae.kl_weight``."""
    est_cls = ESTIMATORS[estimator]
    if estimator == "analytic" and closed_form_kl_reason(vae):
        return CheckResult("same_noise", estimator, None, tol, SKIP,
                           details={"reason": f"analytic is invalid here: {closed_form_kl_reason(vae)}"})
    if est_cls.same_noise_skip or (est_cls.twin is None and estimator not in ("tmf", "trace")):
        reason = est_cls.same_noise_skip or "has no same-noise identity"
        return CheckResult("same_noise", estimator, None, tol, SKIP, details={"reason": f"{estimator} {reason}"})
    if est_cls.twin is not None:
        return _same_seed_twin_check(vae, x, estimator, est_cls.twin, num_particles, repeats, tol)
    vae64 = vae.clone(dtype=torch.float64)
    x64 = x.to(torch.float64)
    batch = x.shape[0]
    # tmf's KL is exact where torch registers one, else it samples exactly like trace.
    sampled_kl = estimator == "trace" or mean_field_kl_kind(vae64) != ANALYTIC
    elbo_cls = TraceMeanField_ELBO if estimator == "tmf" else Trace_ELBO
    elbo = elbo_cls(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1)
    params = list(vae64.parameters())
    worst_value, worst_grad = 0.0, 0.0
    for _ in range(repeats):
        pyro_loss, z = recorded_pyro_loss(vae64, x64, elbo, differentiable=True)
        z = z.detach().reshape(num_particles, batch, -1)
        mu, logvar = vae64.encoder(x64)
        eps = ((z - mu) / torch.exp(0.5 * logvar)).detach()
        # (A separate "reconstruction term" difference, pyro - beta mc_kl - recon, would be this same
        # difference rearranged: hand = recon + beta mc_kl. It is not reported as extra evidence.)
        hand = hand_neg_elbo(vae64, x64, num_particles, eps, sampled_kl)[0]
        worst_value = max(worst_value, abs((pyro_loss - hand).item()) / batch)
        worst_grad = max(worst_grad, _max_rel_grad_diff(_grads(pyro_loss, params), _grads(hand, params)))
    against = ("hand-written recon + beta (log q - log p) at the recorded z" if sampled_kl
               else "analytic loss (recon + beta closed-form KL) at the recorded noise")
    details = {"grad_max_rel_diff": worst_grad, "repeats": repeats, "dtype": "float64",
               "against": against, "kl_weight": vae.kl_weight}
    ok = worst_value <= tol and worst_grad <= GRAD_REL_TOL
    return CheckResult("same_noise", estimator, worst_value, tol, _verdict(ok), reference=0.0, details=details)


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
        worst_value = max(worst_value, abs((a - b).item()) / x.shape[0])
        worst_grad = max(worst_grad, _max_rel_grad_diff(_grads(a, params), _grads(b, params)))
    ok = worst_value <= tol and worst_grad <= GRAD_REL_TOL
    return CheckResult("same_noise", estimator, worst_value, tol, _verdict(ok), reference=0.0,
                       details={"grad_max_rel_diff": worst_grad, "repeats": repeats, "dtype": "float64",
                                "against": f"{twin} at the same seed"})


# ----------------------------------------------------------------------------------------------
# Monte Carlo agreement of values


def loss_draws(est: Estimator, vae, x: torch.Tensor, draws: int, progress=None) -> list[float]:
    """``draws`` independent values of the estimate, in nats/example."""
    out = []
    for _ in range(draws):
        out.append(est.loss(vae, x) / x.shape[0])
        if progress is not None:
            progress.update(1)
    return out


@dataclass
class MCStats:
    estimator: str
    mean: float
    se: float
    sd: float
    draws: int
    num_particles: int

    @classmethod
    def of(cls, name: str, values: list[float], num_particles: int) -> "MCStats":
        mean, se = _mean_se(values)
        return cls(name, mean, se, se * math.sqrt(len(values)), len(values), num_particles)


def z_score(a: MCStats, b: MCStats) -> float:
    return (a.mean - b.mean) / math.sqrt(a.se ** 2 + b.se ** 2 + 1e-300)


def monte_carlo_check(stats: MCStats, reference: MCStats, tol: float = Z_TOL) -> CheckResult:
    z = z_score(stats, reference)
    return CheckResult(
        "monte_carlo", stats.estimator, z, tol, _verdict(abs(z) <= tol), reference=reference.mean,
        details={"mean": stats.mean, "se": stats.se, "sd_per_draw": stats.sd, "draws": stats.draws,
                 "num_particles": stats.num_particles, "reference_se": reference.se},
    )


# ----------------------------------------------------------------------------------------------
# Gradients


@dataclass
class GradStats:
    """Per parameter tensor: the mean and variance over ``draws`` independent gradient estimates, and
    each draw's projections onto the tensor's fixed test directions (shape (draws, tensors, K))."""

    estimator: str
    names: list[str]
    mean: list[torch.Tensor]
    var: list[torch.Tensor]
    proj: torch.Tensor
    draws: int


def _params(vae) -> tuple[list[str], list[torch.Tensor]]:
    named = [(n, p) for n, p in vae.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def gradient_directions(vae, x: torch.Tensor, num_random: int = 3, pilot_particles: int = 32,
                        seed: int = 0, reference: str = "analytic") -> list[torch.Tensor]:
    """Per parameter tensor, K = 1 + ``num_random`` fixed unit directions to test gradients along:
    the direction of a pilot gradient of the ``reference`` estimator (``pilot_particles`` samples,
    drawn independently of the draws that are tested, so the direction does not favour them) and
    ``num_random`` Gaussian directions from a seeded generator. Returns one (K, numel) float64
    tensor per parameter. Every draw is seeded by ``seed``: the pilot's noise comes from a seed drawn
    from ``torch.Generator().manual_seed(seed)``, inside ``fork_rng``, so the directions depend on
    ``seed`` only (not on what ran before) and the caller's random stream is left as it was."""
    names, params = _params(vae)
    est = build_estimator(reference, pilot_particles)
    gen = torch.Generator().manual_seed(seed)
    pilot_seed = int(torch.randint(2 ** 62, (1,), generator=gen))
    cuda = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(pilot_seed)
        pilot = torch.autograd.grad(est.differentiable_loss(vae, x) / x.shape[0], params, allow_unused=True)
    out = []
    for p, g in zip(params, pilot):
        rand = torch.randn(num_random, p.numel(), generator=gen, dtype=torch.float64).to(p.device)
        first = (g if g is not None else torch.zeros_like(p)).detach().double().flatten()[None]
        dirs = torch.cat([first, rand])
        out.append(dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-300))
    return out


def gradient_draws(est: Estimator, vae, x: torch.Tensor, draws: int, directions: list[torch.Tensor],
                   progress=None) -> GradStats:
    """``draws`` independent gradients of -ELBO/example: float64 running sums for mean and variance
    (memory stays at two copies of the parameters however many draws) and their projections onto
    ``directions``."""
    names, params = _params(vae)
    s1 = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    s2 = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    proj = torch.zeros(draws, len(params), directions[0].shape[0], dtype=torch.float64)
    for r in range(draws):
        loss = est.differentiable_loss(vae, x) / x.shape[0]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for i, g in enumerate(grads):
            g = torch.zeros_like(params[i]) if g is None else g
            g = g.detach().double()
            s1[i] += g
            s2[i] += g * g
            proj[r, i] = (directions[i] @ g.flatten()).cpu()
        if progress is not None:
            progress.update(1)
    mean = [a / draws for a in s1]
    var = [((b - draws * m * m) / (draws - 1)).clamp_min(0) for b, m in zip(s2, mean)]
    return GradStats(est.name, names, mean, var, proj, draws)


def gradient_check(stats: GradStats, reference: GradStats, tol: float = Z_TOL) -> CheckResult:
    """Two-sample z-scores of the gradient's projections: for each tensor and each fixed direction u,
    z = (mean(u.g_est) - mean(u.g_ref)) / sqrt(var(u.g_est)/R + var(u.g_ref)/R_ref).

    Why projections: the elements of one gradient tensor are strongly correlated (they share the few
    noise draws), so per-element z-scores are not independent and statistics pooled over elements
    are not calibrated. Each projection is one scalar, so its z-score is an honest univariate test
    whatever the correlation. The verdict compares the largest |z| over tensors and directions with
    ``tol``. Also reported: ||mean - ref|| / ||ref|| per tensor (``rel_err``, informational: it
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
    se = (var_a + var_b + floor ** 2).sqrt()
    z = torch.where(se > 0, diff / se.clamp_min(1e-300), torch.where(diff.abs() > 0, torch.inf, 0.0))
    for i, name in enumerate(stats.names):
        m, rm = stats.mean[i], reference.mean[i]
        per_tensor[name] = {"z": [float(v) for v in z[i]],
                            "rel_err": float((m - rm).norm() / (rm.norm() + 1e-30))}
    value = float(z.abs().max())
    return CheckResult("gradient", stats.estimator, value, tol, _verdict(value <= tol), reference=0.0,
                       details={"per_tensor": per_tensor, "draws": stats.draws, "directions": int(z.shape[1]),
                                "max_rel_err": max(d["rel_err"] for d in per_tensor.values())})


# ----------------------------------------------------------------------------------------------
# Devices


def device_check(vae, x: torch.Tensor, estimator: str, draws: int, num_particles: int = 1,
                 tol: float = Z_TOL) -> CheckResult:
    """On CUDA: (1) the hand-written loss (closed-form KL, or sampled KL where there is none) at one
    fixed noise draw (made on the CPU) equals the CPU's
    to 1e-4 relative (float32 kernels differ in summation order); (2) the estimator's Monte Carlo
    mean on CUDA agrees with its Monte Carlo mean on the CPU, |z| <= tol (the two devices have
    different random streams, so only statistical agreement is possible). Skipped, and reported as
    such, without CUDA."""
    if not torch.cuda.is_available():
        return CheckResult("device", estimator, None, tol, SKIP, details={"reason": "CUDA is not available"})
    cpu_vae, cuda_vae = vae.clone(device="cpu"), vae.clone(device="cuda")
    x_cpu, x_cuda = x.to("cpu"), x.to("cuda")
    with torch.no_grad():
        mu, _ = cpu_vae.encoder(x_cpu)
        eps = torch.randn((num_particles,) + tuple(mu.shape), generator=torch.Generator().manual_seed(0))
        fixed = []
        sampled = closed_form_kl_reason(cpu_vae) is not None
        for model, xs, e in ((cpu_vae, x_cpu, eps), (cuda_vae, x_cuda, eps.cuda())):
            fixed.append(float(hand_neg_elbo(model, xs, num_particles, e, sampled)[0]))
    rel = abs(fixed[0] - fixed[1]) / abs(fixed[0])
    est = build_estimator(estimator, num_particles)
    cpu = MCStats.of(estimator, loss_draws(est, cpu_vae, x_cpu, draws), num_particles)
    gpu = MCStats.of(estimator, loss_draws(est, cuda_vae, x_cuda, draws), num_particles)
    z = z_score(gpu, cpu)
    details = {"fixed_noise_rel_diff": rel, "cuda_mean": gpu.mean, "cuda_se": gpu.se,
               "cpu_mean": cpu.mean, "cpu_se": cpu.se, "device_name": torch.cuda.get_device_name()}
    return CheckResult("device", estimator, z, tol, _verdict(rel <= 1e-4 and abs(z) <= tol),
                       reference=cpu.mean, details=details)
