r"""``vae-pyro check``: ground truth for the bounds. Agreement between estimators shows they estimate
the same number; these checks show it is the right one.

On a toy with exact log p(x) (:mod:`vae_pyro.toys`, :mod:`vae_pyro.exact`), per example and then
averaged over ``examples`` test digits, in float64:

===========================  ==================================================================  ============
check                        value                                                               tolerance
===========================  ==================================================================  ============
``exact_identity`` (linear)  max |closed-form ELBO - (log p(x) - KL(q || p(z|x)))|                1e-9 nats
``quadrature_converged``     max |log p(x) at n - at 2n points per dimension|                    1e-6 nats
``gauss_hermite_converged``  max |exact ELBO by Gauss-Hermite at n_gh - at 2 n_gh nodes|         1e-6 nats
``kl_nonnegative``           min over examples of KL(q || p(z|x)) by quadrature                  >= -1e-9
``elbo_matches_exact``       z = (MC mean of the estimator - (log p(x) - KL)) / s.e.              |z| <= 4
``bound_below_log_px``       (mean bound - log p(x)) / s.e. (ELBO estimators and IWAE_k)          z <= 4
``iwae_same_noise``          max |iwae - renyi0| at shared noise, k = 10                          1e-8 nats
``iwae_nondecreasing``       min over consecutive k of z = mean(IWAE_k2 - IWAE_k1) / s.e.        z >= -4
``iwae_close_to_log_px``     log p(x) - IWAE_kmax (k = 5,000)                                     <= 0.05 nats
``tight_at_posterior``       max |ELBO - log p(x)| at the closed-form posterior (linear only),    1e-9 nats
                             closed form and every single draw of trace, stl and iwae
``stl_zero_variance``        encoder gradient variance, stl / trace, at the posterior (linear)    <= 1e-12
===========================  ==================================================================  ============

Why these tolerances: 1e-9 and 1e-8 nats are float64 rounding with five orders of margin (values are
~10^2 nats, sums of ~10^2 terms: rounding ~1e-13); 1e-6 for quadrature is what the issue asks, and
the rules used converge spectrally (n = 48 vs 96 agree to ~1e-7 on the 2-d toy, n = 96 vs 192 to
1e-14); |z| <= 4 is the library's Z_TOL (two-sided p = 6e-5 per check under the null, fixed seeds);
0.05 nats is the issue's target for k = 5,000 (measured gaps are 0.0001-0.006 nats); the STL ratio is
zero in exact arithmetic and ~1e-25 in float64.

On the MNIST VAE (no ``--toy``): the agreement checks of :mod:`vae_pyro.checks` (Monte Carlo z-score,
same noise, gradients) for trace, tmf, jit_trace, jit_tmf and stl against the analytic loss, iwae
against renyi0 at shared noise, and IWAE_50 >= ELBO per example (paired z-score).

Both also report each estimator's gradient signal-to-noise ratio (:mod:`vae_pyro.gradquality`).
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from dataclasses import dataclass

import pyro
import torch
from tqdm.auto import tqdm

from . import checks, exact
from .checks import FAIL, PASS, SKIP, Z_TOL, CheckResult
from .estimators import Estimator, build_estimator
from .gradquality import gradient_quality
from .iwae import iwae_log_likelihood, iwae_same_noise, log_weights
from .tolerances import t_tolerance
from .toys import TOYS, build_toy, pooled_digits

EXACT_TOL = 1e-9
QUAD_TOL = 1e-6
SAME_NOISE_TOL = 1e-8
IWAE_GAP_TOL = 0.05
STL_RATIO_TOL = 1e-12
BOUNDARY_TOL = -20.0   # log-density on the quadrature box's edge relative to the peak
ELBO_ESTIMATORS = ("analytic", "trace", "tmf", "jit_trace", "jit_tmf", "stl")
IWAE_KS = (1, 5, 50, 500, 5000)
QUAD_POINTS = {1: 128, 2: 48}


@dataclass
class CheckConfig:
    toy: str | None = None
    device: str = "auto"
    seed: int = 0
    particles: int = 1
    draws: int = 40
    grad_draws: int = 40
    epochs: int | None = None
    examples: int = 100
    progress: bool = True
    #: the MNIST VAE's spec (prior, likelihood, data, networks; :mod:`vae_pyro.spec`); None = defaults
    spec: object = None

    def validate(self) -> None:
        if self.toy is not None and self.toy not in TOYS:
            raise ValueError(f"unknown toy {self.toy!r}; allowed: {', '.join(TOYS)}")
        if self.toy is not None and self.device not in ("auto", "cpu"):
            raise ValueError(f"--toy models run on the CPU (tiny, float64 quadrature); got device {self.device!r}; "
                             "allowed with --toy: auto, cpu")
        for key, low in (("particles", 1), ("draws", 2), ("grad_draws", 2), ("examples", 2)):
            if getattr(self, key) < low:
                raise ValueError(f"{key} must be >= {low}, got {getattr(self, key)}")
        if self.epochs is not None and self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")


@contextlib.contextmanager
def torch_threads(n: int):
    """Run tiny models on ``n`` threads: their ops are too small for OpenMP to pay off, and on a
    busy machine idle-spinning worker threads make them 10-50x slower (measured on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _result(name, estimator, value, tolerance, ok, reference=None, **details) -> CheckResult:
    return CheckResult(name, estimator, value, tolerance, PASS if ok else FAIL, reference, details)


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std(unbiased=True) / math.sqrt(len(values)))


def _elbo_draws(est: Estimator, vae, x: torch.Tensor, draws: int, bar) -> torch.Tensor:
    """``draws`` independent estimates of the bound, averaged over the examples (nats/example)."""
    return -torch.tensor(checks.loss_draws(est, vae, x, draws, bar), dtype=torch.float64)


def overall(results: list[CheckResult]) -> str:
    verdicts = {r.verdict for r in results}
    return FAIL if FAIL in verdicts else (PASS if PASS in verdicts else SKIP)


# ----------------------------------------------------------------------------------------------
# Toys


def toy_checks(toy, x: torch.Tensor, cfg: CheckConfig, estimators: dict[str, Estimator] | None = None) -> dict:
    """Every check of the module docstring on a fitted toy; ``estimators`` (name -> instance) are
    the ELBO estimators judged (default: :data:`ELBO_ESTIMATORS` at ``cfg.particles``)."""
    toy = toy.clone(dtype=torch.float64)
    x = x.double()
    linear = toy.config.toy == "linear_gaussian"
    estimators = estimators or {n: build_estimator(n, cfg.particles) for n in ELBO_ESTIMATORS}
    results: list[CheckResult] = []
    b = len(x)

    # --- exact log p(x) and the exact ELBO of the fitted encoder ---------------------------------
    if linear:
        log_px = exact.linear_gaussian_log_px(toy, x)
        kl = exact.linear_gaussian_kl_to_posterior(toy, x)
        elbo_exact = exact.linear_gaussian_elbo(toy, x)
        diff = float((elbo_exact - (log_px - kl)).abs().max())
        results.append(_result("exact_identity", "-", diff, EXACT_TOL, diff <= EXACT_TOL, 0.0,
                               what="closed-form ELBO vs closed-form log p(x) - KL(q || p(z|x))"))
        quad = {"method": "closed form (Cholesky of W W^T + s^2 I)"}
    else:
        n = QUAD_POINTS[toy.config.z_dim]
        q = exact.quadrature_log_px(toy, x, n=n, progress=cfg.progress)
        log_px = q["log_px"]
        ok = q["max_abs_diff"] <= QUAD_TOL and q["boundary_rel"] <= BOUNDARY_TOL
        results.append(_result("quadrature_converged", "-", q["max_abs_diff"], QUAD_TOL, ok, 0.0,
                               points_per_dim=[n, 2 * n], boundary_log_density_rel_peak=q["boundary_rel"],
                               boundary_tolerance=BOUNDARY_TOL))
        elbo_exact = exact.gauss_hermite_elbo(toy, x, 40)
        gh_diff = float((elbo_exact - exact.gauss_hermite_elbo(toy, x, 20)).abs().max())
        results.append(_result("gauss_hermite_converged", "-", gh_diff, QUAD_TOL, gh_diff <= QUAD_TOL, 0.0,
                               nodes_per_dim=[20, 40]))
        kl = log_px - elbo_exact
        quad = {"method": f"midpoint rule, {2 * n} points per dimension on a per-example box "
                          f"(agrees with {n} points to {q['max_abs_diff']:.1e} nats)"}
    kl_min = float(kl.min())
    results.append(_result("kl_nonnegative", "-", kl_min, -EXACT_TOL, kl_min >= -EXACT_TOL, 0.0,
                           kl_mean=float(kl.mean())))
    log_px_mean = float(log_px.mean())
    elbo_ref = float((log_px - kl).mean())

    bar = tqdm(total=len(estimators) * cfg.draws, desc="check: ELBO estimators", unit="draw",
               disable=not cfg.progress, leave=False)
    bounds = {}
    z_tol = t_tolerance(Z_TOL, cfg.draws - 1)  # se estimated from the draws: Student t
    for name, est in estimators.items():
        bar.set_postfix(estimator=name)
        draws = _elbo_draws(est, toy, x, cfg.draws, bar)
        mean, se = _mean_se(draws)
        bounds[name] = {"mean": mean, "se": se, "num_particles": est.num_particles}
        z = (mean - elbo_ref) / se if se > 0 else (0.0 if abs(mean - elbo_ref) <= EXACT_TOL else math.inf)
        results.append(_result("elbo_matches_exact", name, z, z_tol, abs(z) <= z_tol, elbo_ref,
                               mean=mean, se=se, draws=cfg.draws))
        zb = (mean - log_px_mean) / se if se > 0 else (0.0 if mean - log_px_mean <= EXACT_TOL else math.inf)
        results.append(_result("bound_below_log_px", name, zb, z_tol, zb <= z_tol, log_px_mean,
                               mean=mean, se=se, gap=log_px_mean - mean))
    bar.close()

    # --- IWAE_k: ours vs Pyro's, monotone in k, converging to log p(x) ----------------------------
    sn = iwae_same_noise(toy, x, 10)
    results.append(_result("iwae_same_noise", "iwae vs renyi0", sn["value_max_abs_diff"], SAME_NOISE_TOL,
                           sn["value_max_abs_diff"] <= SAME_NOISE_TOL and sn["grad_max_rel_diff"] <= 1e-6, 0.0,
                           **sn))
    torch.manual_seed(cfg.seed + 1)
    iw = {k: iwae_log_likelihood(toy, x, k=k, progress=cfg.progress, desc=f"check: IWAE_{k}") for k in IWAE_KS}
    for k, values in iw.items():
        mean, se = _mean_se(values - log_px)
        bounds[f"iwae_k{k}"] = {"mean": float(values.mean()), "se_of_gap": se, "num_particles": k}
        z = mean / se
        results.append(_result("bound_below_log_px", f"iwae[k={k}]", z, Z_TOL, z <= Z_TOL, log_px_mean,
                               mean=float(values.mean()), gap=-mean, se=se))
    steps = []
    for k1, k2 in zip(IWAE_KS[:-1], IWAE_KS[1:]):
        mean, se = _mean_se(iw[k2] - iw[k1])
        steps.append({"k": [k1, k2], "mean_increase": mean, "se": se, "z": mean / se})
    z_min = min(s["z"] for s in steps)
    results.append(_result("iwae_nondecreasing", "iwae", z_min, -Z_TOL, z_min >= -Z_TOL, None, steps=steps))
    kmax = IWAE_KS[-1]
    gap, gap_se = _mean_se(log_px - iw[kmax])
    results.append(_result("iwae_close_to_log_px", f"iwae[k={kmax}]", gap, IWAE_GAP_TOL,
                           -Z_TOL * gap_se <= gap <= IWAE_GAP_TOL, log_px_mean, se=gap_se))

    # --- the posterior-matching encoder ----------------------------------------------------------
    if linear:
        results += _linear_gaussian_at_posterior(toy, x, log_px, cfg)
    else:
        reason = ("p(z|x) of a nonlinear decoder is not Gaussian, so no Gaussian encoder makes the ELBO "
                  f"tight; the fitted encoder's gap KL(q || p(z|x)) is {float(kl.mean()):.4f} nats/example")
        for name in ("tight_at_posterior", "stl_zero_variance"):
            results.append(CheckResult(name, "-", None, None, SKIP, details={"reason": reason}))

    quality = _gradient_table(toy, x[: min(b, 100)], cfg)
    return {"exact_log_px": log_px_mean, "exact_log_px_per_example": log_px.tolist(), "exact_method": quad,
            "exact_elbo": elbo_ref, "kl_to_posterior": float(kl.mean()), "bounds": bounds,
            "checks": results, "gradient_quality": quality}


def _linear_gaussian_at_posterior(toy, x, log_px, cfg) -> list[CheckResult]:
    at = toy.clone()
    exact.diagonalize_linear_decoder(at)
    exact.set_optimal_linear_encoder(at)
    closed = float((exact.linear_gaussian_elbo(at, x) - log_px).abs().max())
    worst = {}
    torch.manual_seed(cfg.seed + 2)
    with torch.no_grad():
        for name, k in (("trace", 1), ("stl", 1), ("iwae", 10)):
            log_w = log_weights(at, x, k)                                  # every draw, every example
            worst[name] = float((log_w - log_px).abs().max())
    value = max(closed, *worst.values())
    out = [_result("tight_at_posterior", "closed form, trace, stl, iwae", value, EXACT_TOL, value <= EXACT_TOL, 0.0,
                   closed_form_max_abs_diff=closed, single_draw_max_abs_diff=worst,
                   posterior_diagonal=True)]
    torch.manual_seed(cfg.seed + 3)
    stl = gradient_quality(build_estimator("stl"), at, x, cfg.grad_draws)
    trace = gradient_quality(build_estimator("trace"), at, x, cfg.grad_draws)
    ratio = stl.encoder_var / trace.encoder_var
    out.append(_result("stl_zero_variance", "stl", ratio, STL_RATIO_TOL, ratio <= STL_RATIO_TOL, 0.0,
                       stl_encoder_var=stl.encoder_var, trace_encoder_var=trace.encoder_var,
                       stl_decoder_var=stl.decoder_var, trace_decoder_var=trace.decoder_var))
    return out


def _gradient_table(vae, x, cfg) -> list[dict]:
    """Gradient SNR / variance of each estimator at the same parameters (Rainforth et al. 2018); IWAE
    at k = 1, 10, 100 to show the encoder's SNR falling and the decoder's rising with k. Estimators
    that do not apply to this VAE (e.g. ``analytic`` for a mixture prior) are left out."""
    rows = [(n, build_estimator(n, cfg.particles), None) for n in ("analytic", "trace", "tmf", "stl")]
    rows += [("iwae", build_estimator("iwae", k), f"iwae[k={k}]") for k in (1, 10, 100)]
    rows.append(("renyi0", build_estimator("renyi0", 10), "renyi0[k=10]"))
    rows = [row for row in rows if row[1].validity(vae).valid]
    bar = tqdm(total=len(rows) * cfg.grad_draws, desc="check: gradient SNR", unit="draw",
               disable=not cfg.progress, leave=False)
    torch.manual_seed(cfg.seed + 4)
    out = [gradient_quality(est, vae, x, cfg.grad_draws, bar, label).to_dict() for _, est, label in rows]
    bar.close()
    return out


def run_toy(cfg: CheckConfig, estimators: dict[str, Estimator] | None = None) -> dict:
    cfg.validate()
    started = time.perf_counter()
    with torch_threads(1):
        x_train, x_test = pooled_digits(binary=cfg.toy != "linear_gaussian")
        toy = build_toy(cfg.toy, x_train, seed=cfg.seed, epochs=cfg.epochs, progress=cfg.progress)
        fitted = time.perf_counter() - started
        # every 10th test digit: 10 of each class (the test split is sorted by digit)
        x = x_test[:: max(len(x_test) // cfg.examples, 1)][: cfg.examples]
        torch.manual_seed(cfg.seed)
        out = toy_checks(toy, x, cfg, estimators)
    out.update(_header(cfg, "cpu", f"toy {cfg.toy} ({toy.config.x_dim} pixels of 14x14 MNIST digits, "
                                   f"z_dim {toy.config.z_dim})",
                       "grey levels (no binarization)" if cfg.toy == "linear_gaussian" else "static"))
    out.update({"examples": int(len(x)), "model": toy.config.to_dict(), "fit_seconds": fitted,
                "seconds": time.perf_counter() - started, "verdict": overall(out["checks"])})
    out["checks"] = [r.to_dict() for r in out["checks"]]
    return out


def _header(cfg, device, what, binarization) -> dict:
    return {"schema_version": 1, "command": "check", "toy": cfg.toy, "device": str(device),
            "device_name": platform.processor() or platform.machine() if str(device) == "cpu"
            else torch.cuda.get_device_name(device), "data": what, "binarization": binarization,
            "seed": cfg.seed, "particles": cfg.particles, "draws": cfg.draws, "grad_draws": cfg.grad_draws,
            "torch_version": torch.__version__, "pyro_version": pyro.__version__,
            "tolerances": {"z": Z_TOL, "exact": EXACT_TOL, "quadrature": QUAD_TOL, "same_noise": SAME_NOISE_TOL,
                           "iwae_gap": IWAE_GAP_TOL, "stl_ratio": STL_RATIO_TOL}}


# ----------------------------------------------------------------------------------------------
# The MNIST VAE


MNIST_ESTIMATORS = ("trace", "tmf", "jit_trace", "jit_tmf", "stl")


def run_mnist(cfg: CheckConfig) -> dict:
    from .data import load_dataset, prepare
    from .model import VAE
    from .train import resolve_device, seed_all, train

    from .spec import load_spec

    cfg.validate()
    started = time.perf_counter()
    spec = cfg.spec if cfg.spec is not None else load_spec(None)
    device = resolve_device(cfg.device)
    generator = seed_all(cfg.seed)
    vae = VAE(spec.model_config()).to(device)
    binarization, transform = spec.resolved_data()
    ds = load_dataset(spec.data.dataset)
    # the checks need one fixed data set: dynamic binarization is checked on a static draw
    binarization = "static" if binarization == "dynamic" else binarization
    x_train = prepare(ds.train_x, binarization, transform).to(device)
    x_test = prepare(ds.test_x, binarization, transform).to(device)
    vae.check_data(x_test)
    epochs = 3 if cfg.epochs is None else cfg.epochs
    reference = checks.reference_for(vae, cfg.particles)
    trainer = spec.training.estimator
    if not build_estimator(trainer).validity(vae).valid:
        trainer = reference.estimator
    train(vae, build_estimator(trainer, cfg.particles), x_train, epochs=epochs, batch_size=128,
          generator=generator, progress=cfg.progress)
    results: list[CheckResult] = []
    x_grad = x_test[::4][:256]
    names = [n for n in MNIST_ESTIMATORS if build_estimator(n).validity(vae).valid]
    bar = tqdm(total=(cfg.draws + cfg.grad_draws) * (len(names) + 1), desc="check: agreement",
               unit="draw", disable=not cfg.progress, leave=False)
    ref = build_estimator(reference.estimator, reference.particles)
    ref_mc = checks.MCStats.of(reference.estimator, checks.loss_draws(ref, vae, x_test, cfg.draws, bar),
                               reference.particles)
    directions = checks.gradient_directions(vae, x_grad, seed=cfg.seed, reference=reference.estimator)
    ref_grad = checks.gradient_draws(ref, vae, x_grad, cfg.grad_draws, directions, bar)
    for name in names:
        bar.set_postfix(estimator=name)
        est = build_estimator(name, cfg.particles)
        mc = checks.MCStats.of(name, checks.loss_draws(est, vae, x_test, cfg.draws, bar), cfg.particles)
        results += [checks.monte_carlo_check(mc, ref_mc),
                    checks.same_noise_check(vae, x_test[:200], name, cfg.particles),
                    checks.gradient_check(checks.gradient_draws(est, vae, x_grad, cfg.grad_draws, directions, bar),
                                          ref_grad)]
    bar.close()
    iw = None
    if build_estimator("iwae").validity(vae).valid:  # IWAE_k has no KL weight: beta = 1 only
        sn = iwae_same_noise(vae, x_test[:200], 5)
        results.append(_result("iwae_same_noise", "iwae vs renyi0", sn["value_max_abs_diff"], SAME_NOISE_TOL,
                               sn["value_max_abs_diff"] <= SAME_NOISE_TOL and sn["grad_max_rel_diff"] <= 1e-6, 0.0, **sn))
        # IWAE_50 >= ELBO, paired per example: one IWAE_50 draw and a 50-particle ELBO per digit
        torch.manual_seed(cfg.seed + 1)
        iw = iwae_log_likelihood(vae, x_test, k=50, chunk=50, progress=cfg.progress, desc="check: IWAE_50")
        with torch.no_grad():
            elbo = torch.cat([log_weights(vae, x_test[i:i + 100], 50).mean(0) for i in range(0, len(x_test), 100)])
        mean, se = _mean_se((iw - elbo).double().cpu())
        results.append(_result("iwae_at_least_elbo", "iwae[k=50]", mean / se, -Z_TOL, mean / se >= -Z_TOL, 0.0,
                               mean_difference=mean, se=se, iwae_mean=float(iw.mean()), elbo_mean=float(elbo.mean())))
    quality = _gradient_table(vae, x_grad[:64], cfg)  # 64 digits: IWAE_100 gradients of the 784-400-20 VAE are costly on CPU
    m = spec.model_config()
    out = _header(cfg, device, f"MNIST VAE {m.x_dim}-{'-'.join(map(str, m.hidden))}-{m.z_dim} (prior {m.prior}, "
                               f"likelihood {m.likelihood}) on {ds.name} ({len(x_test)} test digits)", binarization)
    out["spec"] = spec.source
    out["reference"] = {"estimator": reference.estimator, "particles": reference.particles, "why": reference.why}
    out.update({"exact_log_px": None, "examples": int(len(x_test)), "trained_epochs": epochs,
                "bounds": {"elbo": {"mean": -ref_mc.mean, "se": ref_mc.se},
                           "iwae_k50": {"mean": float(iw.mean())} if iw is not None else None},
                "checks": [r.to_dict() for r in results], "gradient_quality": quality,
                "verdict": overall(results), "seconds": time.perf_counter() - started})
    return out


def run_check(cfg: CheckConfig) -> dict:
    return run_toy(cfg) if cfg.toy else run_mnist(cfg)


# ----------------------------------------------------------------------------------------------
# Report


def check_table(result: dict) -> str:
    from .report import fmt, table

    rows = []
    for c in result["checks"]:
        rows.append([c["name"], c["estimator"], fmt(c["value"], ".4g"), fmt(c["reference"], ".6g"),
                     fmt(c["tolerance"], ".3g"), c["verdict"].upper()])
    lines = [f"vae-pyro check: {result['data']}, binarization: {result['binarization']}, device {result['device']}, "
             f"seed {result['seed']}, {result['particles']} particle(s), torch {result['torch_version']}, "
             f"pyro {result['pyro_version']}"]
    b = result["bounds"]
    if result.get("exact_log_px") is not None:
        lines.append(f"exact log p(x) = {result['exact_log_px']:.6f} nats/example over {result['examples']} test digits "
                     f"({result['exact_method']['method']})")
        lines.append(f"exact ELBO of the fitted encoder = {result['exact_elbo']:.6f}; KL(q || p(z|x)) = "
                     f"{result['kl_to_posterior']:.6f}")
        bound_rows = [[name, f"{v['mean']:.4f}", fmt(v.get("se"), ".4f"), f"{result['exact_log_px'] - v['mean']:.4f}"]
                      for name, v in b.items()]
        lines += ["", table(["bound", "mean (nats/example)", "s.e.", "log p(x) - bound"], bound_rows)]
    else:
        lines.append(f"ELBO = {b['elbo']['mean']:.3f} ± {b['elbo']['se']:.3f}, IWAE_50 = {b['iwae_k50']['mean']:.3f} "
                     f"nats/example over {result['examples']} test digits")
    lines += ["", table(["check", "estimator", "value", "reference", "tolerance", "verdict"], rows, align="llrrrl")]
    skipped = sorted({c["details"]["reason"] for c in result["checks"] if c["verdict"] == "skip" and "reason" in c["details"]})
    for reason in skipped:
        lines.append(f"skipped: {reason}")
    q = result["gradient_quality"]
    qrows = [[r["estimator"], r["num_particles"], fmt(r["encoder_snr"], ".3g"), fmt(r["decoder_snr"], ".3g"),
              fmt(r["encoder_var"], ".3g"), fmt(r["decoder_var"], ".3g")] for r in q]
    lines += ["", f"gradient quality at the same parameters ({result['grad_draws']} draws; SNR = |mean| / sd per "
                  "element, averaged; var = sum of element variances):",
              table(["estimator", "particles", "encoder SNR", "decoder SNR", "encoder var", "decoder var"], qrows)]
    lines.append(f"overall: {result['verdict'].upper()} in {result['seconds']:.0f} s")
    return "\n".join(lines)
