r"""``vae-pyro check``: ground truth for the bounds. Agreement between estimators shows they estimate
the same number; these checks show it is the right one.

On a toy with exact log p(x) (:mod:`vae_pyro.checks.toys`, :mod:`vae_pyro.checks.exact`), per example and then
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
``full_normal_tight``        the decoder rotated (full-covariance p(z|x), log p(x) unchanged),    1e-9 nats
                             ``full_normal`` guide at chol(S): max |ELBO - log p(x)|, closed
                             form and every single draw of each Monte Carlo ELBO estimator and
                             of iwae
``diag_gap_is_kl``           the same rotated decoder, best diagonal guide: max |(log p(x) -      1e-9 nats
                             ELBO) - KL(q || p(z|x))|, both closed form (the gap is > 0 there)
===========================  ==================================================================  ============

Why these tolerances: 1e-9 and 1e-8 nats are float64 rounding with five orders of margin (values are
~10^2 nats, sums of ~10^2 terms: rounding ~1e-13); 1e-6 for quadrature is the accuracy we ask of log p(x), and
the rules used converge spectrally (n = 48 vs 96 agree to ~1e-7 on the 2-d toy, n = 96 vs 192 to
1e-14); |z| <= 4 is the library's Z_TOL (two-sided p = 6e-5 per check under the null, fixed seeds),
read as Student's t at the draws' degrees of freedom where the standard error comes from the draws
(:mod:`vae_pyro.checks.tolerances`; the IWAE standard errors are over the data's examples);
0.05 nats is our target for k = 5,000 (measured gaps are 0.0001-0.006 nats); the STL ratio is
zero in exact arithmetic and ~1e-25 in float64.

On the MNIST VAE (no ``--toy``): the agreement checks of :mod:`vae_pyro.checks` (Monte Carlo z-score,
same noise, gradients) for trace, tmf, jit_trace, jit_tmf and stl against the analytic loss, iwae
against renyi0 at shared noise, and IWAE_50 >= ELBO per example (paired z-score).

Both also report each estimator's gradient signal-to-noise ratio (:mod:`vae_pyro.checks.gradquality`).
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import torch
from tqdm.auto import tqdm

from ..errors import SpecError
from ..estimators import (
    ELBO_BOUND,
    ESTIMATORS,
    MONTE_CARLO_KL,
    Estimator,
    build_estimator,
    checked_estimator_names,
    estimator_names,
)
from ..estimators.iwae import iwae_same_noise, log_weights
from ..evaluation import iwae_log_likelihood
from . import exact
from .result import EXACT_TOL, IWAE_GAP_TOL, QUAD_TOL, SAME_NOISE_TOL, SKIP, STL_RATIO_TOL, Z_TOL
from .result import CheckResult, overall, result, torch_threads
from ..report import fmt, table
from ..runs import prepare_run, result_header, training_estimator
from ..train import train
from .agreement import AgreementSetup, reference_for, run_agreement
from .gradquality import gradient_quality
from .stats import loss_draws, mean_se
from .tolerances import t_tolerance, z_tolerances
from .toys import TOYS, build_toy, pooled_digits, with_guide

IWAE_KS = (1, 5, 50, 500, 5000)
QUAD_POINTS = {1: 128, 2: 48}


#: test digits the toys are checked on (every 10th: 10 of each class)
TOY_EXAMPLES = 100


def checks_of(spec, toy: str | None = None, epochs: int | None = None, progress: bool = False) -> SimpleNamespace:
    """What the checks read, from ``spec`` (its [training] seed, epochs and particles, its [checks]
    particles and draws) and ``check``'s own choices: ``toy`` (None: the spec's MNIST VAE) and, for a
    toy, its fitting ``epochs`` (None: the toy's own). Nothing here has a default of its own."""
    if toy is not None and toy not in TOYS:
        raise SpecError(f"unknown toy {toy!r}; allowed: {', '.join(TOYS)}")
    if toy is not None and spec.training.device not in ("auto", "cpu"):
        raise SpecError(
            f"toy models run on the CPU (tiny, float64 quadrature); got training.device "
            f"{spec.training.device!r}; allowed with a toy: auto, cpu"
        )
    c, t = spec.checks, spec.training
    return SimpleNamespace(
        spec=spec,
        toy=toy,
        seed=t.seed,
        particles=c.particles,
        train_particles=t.particles,
        draws=c.draws,
        grad_draws=c.grad_draws,
        epochs=epochs if toy else t.epochs,
        examples=TOY_EXAMPLES,
        progress=progress,
    )


def _elbo_draws(est: Estimator, vae, x: torch.Tensor, draws: int, bar) -> torch.Tensor:
    """``draws`` independent estimates of the bound, averaged over the examples (nats/example)."""
    return -torch.tensor(loss_draws(est, vae, x, draws, bar), dtype=torch.float64)


def elbo_estimators(vae) -> list[str]:
    """The ELBO estimators judged against ground truth, from the registry (bound, validity). Asked
    with the random stream forked: asking ``tmf`` traces the guide once, which draws numbers."""
    with torch.random.fork_rng(devices=[]):
        return checked_estimator_names(vae)


# ----------------------------------------------------------------------------------------------
# Toys


def _exact_linear(toy, x, results) -> tuple:
    """Closed-form log p(x), KL(q || p(z|x)) and ELBO of the linear-Gaussian toy, and their identity."""
    log_px = exact.linear_gaussian_log_px(toy, x)
    kl = exact.linear_gaussian_kl_to_posterior(toy, x)
    elbo_exact = exact.linear_gaussian_elbo(toy, x)
    diff = float((elbo_exact - (log_px - kl)).abs().max())
    results.append(
        result(
            "exact_identity",
            "-",
            diff,
            EXACT_TOL,
            diff <= EXACT_TOL,
            0.0,
            what="closed-form ELBO vs closed-form log p(x) - KL(q || p(z|x))",
        )
    )
    return log_px, kl, {"method": "closed form (Cholesky of W W^T + s^2 I)"}


def _exact_by_quadrature(toy, x, cfg, results) -> tuple:
    """log p(x) by the midpoint rule (n and 2n points), the exact ELBO by Gauss-Hermite (20 and 40
    nodes), and KL(q || p(z|x)) as their difference, with both convergence checks."""
    n = QUAD_POINTS[toy.config.z_dim]
    q = exact.quadrature_log_px(toy, x, n=n, progress=cfg.progress)
    ok = q["max_abs_diff"] <= QUAD_TOL and q["boundary_rel"] <= exact.BOUNDARY_TOL
    results.append(
        result(
            "quadrature_converged",
            "-",
            q["max_abs_diff"],
            QUAD_TOL,
            ok,
            0.0,
            points_per_dim=[n, 2 * n],
            boundary_log_density_rel_peak=q["boundary_rel"],
            boundary_tolerance=exact.BOUNDARY_TOL,
        )
    )
    elbo_exact = exact.gauss_hermite_elbo(toy, x, 40)
    gh_diff = float((elbo_exact - exact.gauss_hermite_elbo(toy, x, 20)).abs().max())
    results.append(
        result("gauss_hermite_converged", "-", gh_diff, QUAD_TOL, gh_diff <= QUAD_TOL, 0.0, nodes_per_dim=[20, 40])
    )
    quad = {
        "method": f"midpoint rule, {2 * n} points per dimension on a per-example box "
        f"(agrees with {n} points to {q['max_abs_diff']:.1e} nats)"
    }
    return q["log_px"], q["log_px"] - elbo_exact, quad


def _elbo_bounds(toy, x, estimators, cfg, log_px_mean, elbo_ref, results) -> dict:
    """Each ELBO estimator's Monte Carlo mean against the exact ELBO (z-score) and below log p(x)."""
    bar = tqdm(
        total=len(estimators) * cfg.draws,
        desc="check: ELBO estimators",
        unit="draw",
        disable=not cfg.progress,
        leave=False,
    )
    bounds = {}
    z_tol = t_tolerance(Z_TOL, cfg.draws - 1)  # se estimated from the draws: Student t
    for name, est in estimators.items():
        bar.set_postfix(estimator=name)
        mean, se = mean_se(_elbo_draws(est, toy, x, cfg.draws, bar))
        bounds[name] = {"mean": mean, "se": se, "num_particles": est.num_particles}
        z = (mean - elbo_ref) / se if se > 0 else (0.0 if abs(mean - elbo_ref) <= EXACT_TOL else math.inf)
        results.append(
            result("elbo_matches_exact", name, z, z_tol, abs(z) <= z_tol, elbo_ref, mean=mean, se=se, draws=cfg.draws)
        )
        zb = (mean - log_px_mean) / se if se > 0 else (0.0 if mean - log_px_mean <= EXACT_TOL else math.inf)
        results.append(
            result(
                "bound_below_log_px",
                name,
                zb,
                z_tol,
                zb <= z_tol,
                log_px_mean,
                mean=mean,
                se=se,
                gap=log_px_mean - mean,
            )
        )
    bar.close()
    return bounds


def _iwae_bounds(toy, x, log_px, cfg, bounds, results) -> None:
    """IWAE_k: ours against Pyro's at shared noise, below log p(x), non-decreasing in k, within
    ``IWAE_GAP_TOL`` of log p(x) at the largest k."""
    log_px_mean = float(log_px.mean())
    results.append(_iwae_same_noise_result(iwae_same_noise(toy, x, 10)))
    torch.manual_seed(cfg.seed + 1)
    iw = {k: iwae_log_likelihood(toy, x, k=k, progress=cfg.progress, desc=f"check: IWAE_{k}") for k in IWAE_KS}
    for k, values in iw.items():
        mean, se = mean_se(values - log_px)
        bounds[f"iwae_k{k}"] = {"mean": float(values.mean()), "se_of_gap": se, "num_particles": k}
        results.append(
            result(
                "bound_below_log_px",
                f"iwae[k={k}]",
                mean / se,
                Z_TOL,
                mean / se <= Z_TOL,
                log_px_mean,
                mean=float(values.mean()),
                gap=-mean,
                se=se,
            )
        )
    steps = []
    for k1, k2 in zip(IWAE_KS[:-1], IWAE_KS[1:]):
        mean, se = mean_se(iw[k2] - iw[k1])
        steps.append({"k": [k1, k2], "mean_increase": mean, "se": se, "z": mean / se})
    z_min = min(s["z"] for s in steps)
    results.append(result("iwae_nondecreasing", "iwae", z_min, -Z_TOL, z_min >= -Z_TOL, None, steps=steps))
    kmax = IWAE_KS[-1]
    gap, gap_se = mean_se(log_px - iw[kmax])
    results.append(
        result(
            "iwae_close_to_log_px",
            f"iwae[k={kmax}]",
            gap,
            IWAE_GAP_TOL,
            -Z_TOL * gap_se <= gap <= IWAE_GAP_TOL,
            log_px_mean,
            se=gap_se,
        )
    )


def toy_checks(toy, x: torch.Tensor, cfg: SimpleNamespace, estimators: dict[str, Estimator] | None = None) -> dict:
    """Every check of the module docstring on a fitted toy; ``estimators`` (name -> instance) are
    the ELBO estimators judged (default: :func:`elbo_estimators` at ``cfg.particles``)."""
    toy = toy.clone(dtype=torch.float64)
    x = x.double()
    linear = toy.config.toy == "linear_gaussian"
    estimators = estimators or {n: build_estimator(n, cfg.particles) for n in elbo_estimators(toy)}
    results: list[CheckResult] = []
    log_px, kl, quad = _exact_linear(toy, x, results) if linear else _exact_by_quadrature(toy, x, cfg, results)
    kl_min = float(kl.min())
    results.append(
        result("kl_nonnegative", "-", kl_min, -EXACT_TOL, kl_min >= -EXACT_TOL, 0.0, kl_mean=float(kl.mean()))
    )
    log_px_mean, elbo_ref = float(log_px.mean()), float((log_px - kl).mean())
    bounds = _elbo_bounds(toy, x, estimators, cfg, log_px_mean, elbo_ref, results)
    _iwae_bounds(toy, x, log_px, cfg, bounds, results)
    # --- the posterior-matching encoder ----------------------------------------------------------
    if linear:
        results += _linear_gaussian_at_posterior(toy, x, log_px, cfg)
        results += _guide_axis_at_posterior(toy, x, log_px, cfg)
    else:
        reason = (
            "p(z|x) of a nonlinear decoder is not Gaussian, so no Gaussian encoder makes the ELBO "
            f"tight; the fitted encoder's gap KL(q || p(z|x)) is {float(kl.mean()):.4f} nats/example"
        )
        for name in ("tight_at_posterior", "stl_zero_variance"):
            results.append(CheckResult(name, "-", None, None, SKIP, details={"reason": reason}))
    quality = _gradient_table(toy, x[: min(len(x), 100)], cfg)
    return {
        "exact_log_px": log_px_mean,
        "exact_log_px_per_example": log_px.tolist(),
        "exact_method": quad,
        "exact_elbo": elbo_ref,
        "kl_to_posterior": float(kl.mean()),
        "bounds": bounds,
        "checks": results,
        "gradient_quality": quality,
    }


def _linear_gaussian_at_posterior(toy, x, log_px, cfg) -> list[CheckResult]:
    at = toy.clone()
    exact.diagonalize_linear_decoder(at)
    exact.set_optimal_linear_encoder(at)
    closed = float((exact.linear_gaussian_elbo(at, x) - log_px).abs().max())
    worst = {}
    torch.manual_seed(cfg.seed + 2)
    with torch.no_grad():
        for name, k in (("trace", 1), ("stl", 1), ("iwae", 10)):
            log_w = log_weights(at, x, k)  # every draw, every example
            worst[name] = float((log_w - log_px).abs().max())
    value = max(closed, *worst.values())
    out = [
        result(
            "tight_at_posterior",
            "closed form, trace, stl, iwae",
            value,
            EXACT_TOL,
            value <= EXACT_TOL,
            0.0,
            closed_form_max_abs_diff=closed,
            single_draw_max_abs_diff=worst,
            posterior_diagonal=True,
        )
    ]
    torch.manual_seed(cfg.seed + 3)
    stl = gradient_quality(build_estimator("stl"), at, x, cfg.grad_draws)
    trace = gradient_quality(build_estimator("trace"), at, x, cfg.grad_draws)
    ratio = stl.encoder_var / trace.encoder_var
    out.append(
        result(
            "stl_zero_variance",
            "stl",
            ratio,
            STL_RATIO_TOL,
            ratio <= STL_RATIO_TOL,
            0.0,
            stl_encoder_var=stl.encoder_var,
            trace_encoder_var=trace.encoder_var,
            stl_decoder_var=stl.decoder_var,
            trace_decoder_var=trace.decoder_var,
        )
    )
    return out


def _guide_axis_at_posterior(toy, x, log_px, cfg) -> list[CheckResult]:
    """The guide axis where the answer is exact: with the decoder rotated (log p(x) unchanged, p(z|x)
    full-covariance), ``full_normal`` at chol(S) closes the gap for every estimator and every draw,
    while the best diagonal guide keeps a gap equal to KL(q || p(z|x)), both in closed form."""
    rotated = toy.clone()
    exact.rotate_linear_decoder(rotated, cfg.seed)
    full = with_guide(rotated, "full_normal")
    exact.set_optimal_full_encoder(full)
    closed = float((exact.linear_gaussian_elbo_full(full, x) - log_px).abs().max())
    names = [n for n in elbo_estimators(full) if ESTIMATORS[n]().validity(full).kind == MONTE_CARLO_KL]
    worst = {}
    torch.manual_seed(cfg.seed + 4)
    with torch.no_grad():
        for name in names:  # every draw is log p(x, z) - log q(z|x) = log p(x): the batch mean is exact
            worst[name] = abs(-build_estimator(name).loss(full, x) / len(x) - float(log_px.mean()))
        worst["iwae (each draw, k = 10)"] = float((log_weights(full, x, 10) - log_px).abs().max())
    value = max(closed, *worst.values())
    out = [
        result(
            "full_normal_tight",
            "full_normal: closed form, " + ", ".join(worst),
            value,
            EXACT_TOL,
            value <= EXACT_TOL,
            0.0,
            closed_form_max_abs_diff=closed,
            max_abs_diff=worst,
        )
    ]
    diag = with_guide(rotated, "diag_normal")
    exact.set_optimal_linear_encoder(diag)
    gap = log_px - exact.linear_gaussian_elbo(diag, x)
    diff = float((gap - exact.linear_gaussian_kl_to_posterior(diag, x)).abs().max())
    out.append(
        result(
            "diag_gap_is_kl",
            "diag_normal: closed form",
            diff,
            EXACT_TOL,
            diff <= EXACT_TOL,
            0.0,
            gap_mean=float(gap.mean()),
            gap_min=float(gap.min()),
        )
    )
    return out


def _gradient_table(vae, x, cfg) -> list[dict]:
    """Gradient SNR / variance of each estimator at the same parameters (Rainforth et al. 2018); IWAE
    at k = 1, 10, 100 to show the encoder's SNR falling and the decoder's rising with k, and DReG at
    k = 10 (Tucker et al. 2018) beside IWAE_10, whose gradient it estimates. Estimators
    that do not apply to this VAE (e.g. ``analytic`` for a mixture prior) are left out."""
    with torch.random.fork_rng(devices=[]):  # asking validity may trace the guide (see elbo_estimators)
        plain = [n for n in checked_estimator_names(vae) if not ESTIMATORS[n].jit]
    rows = [(n, build_estimator(n, cfg.particles), None) for n in plain]
    rows += [("iwae", build_estimator("iwae", k), f"iwae[k={k}]") for k in (1, 10, 100)]
    rows.append(("renyi0", build_estimator("renyi0", 10), "renyi0[k=10]"))
    # DReG beside IWAE at the same k: the same expected gradient, the encoder's score term removed
    rows.append(("dreg", build_estimator("dreg", 10), "dreg[k=10]"))
    rows = [row for row in rows if row[1].validity(vae).valid]
    bar = tqdm(
        total=len(rows) * cfg.grad_draws, desc="check: gradient SNR", unit="draw", disable=not cfg.progress, leave=False
    )
    out = []
    for _, est, label in rows:
        # every row from the same seed: a row's draws do not depend on which estimators the registry
        # lists before it, and rows are compared on common random numbers
        torch.manual_seed(cfg.seed + 4)
        out.append(gradient_quality(est, vae, x, cfg.grad_draws, bar, label).to_dict())
    bar.close()
    return out


def run_toy(
    spec, toy: str, epochs: int | None = None, progress: bool = False, estimators: dict[str, Estimator] | None = None
) -> dict:
    """Fit ``toy`` (``epochs``; None: its own) and run every toy check at ``spec``'s seed and draws."""
    cfg = checks_of(spec, toy, epochs, progress)
    started = time.perf_counter()
    with torch_threads(1):
        x_train, x_test = pooled_digits(binary=cfg.toy != "linear_gaussian")
        toy = build_toy(cfg.toy, x_train, seed=cfg.seed, epochs=cfg.epochs, progress=cfg.progress)
        fitted = time.perf_counter() - started
        # every 10th test digit: 10 of each class (the test split is sorted by digit)
        x = x_test[:: max(len(x_test) // cfg.examples, 1)][: cfg.examples]
        torch.manual_seed(cfg.seed)
        out = toy_checks(toy, x, cfg, estimators)
    out.update(
        _header(
            cfg,
            "cpu",
            f"toy {cfg.toy} ({toy.config.x_dim} pixels of 14x14 MNIST digits, z_dim {toy.config.z_dim})",
            "grey levels (no binarization)" if cfg.toy == "linear_gaussian" else "static",
        )
    )
    out.update(
        {
            "examples": int(len(x)),
            "model": toy.config.to_dict(),
            "fit_seconds": fitted,
            "seconds": time.perf_counter() - started,
            "verdict": overall(out["checks"]),
        }
    )
    out["checks"] = [r.to_dict() for r in out["checks"]]
    return out


def _header(cfg, device, what, binarization, spec=None) -> dict:
    out = result_header("check", spec, device, cfg.seed)
    out.update(
        {
            "toy": cfg.toy,
            "data": what,
            "binarization": binarization,
            "particles": cfg.particles,
            "draws": cfg.draws,
            "grad_draws": cfg.grad_draws,
            "tolerances": {
                **z_tolerances(Z_TOL, cfg.draws, cfg.grad_draws),
                "exact": EXACT_TOL,
                "quadrature": QUAD_TOL,
                "same_noise": SAME_NOISE_TOL,
                "iwae_gap": IWAE_GAP_TOL,
                "stl_ratio": STL_RATIO_TOL,
            },
        }
    )
    return out


# ----------------------------------------------------------------------------------------------
# The MNIST VAE


def _mnist_estimators(vae, reference, particles: int) -> dict:
    """The ELBO estimators ``check`` runs on the MNIST VAE, from the registry (:func:`elbo_estimators`,
    each asked once), without the reference itself (at the same particles it would be compared with itself)."""
    out = {}
    for name in estimator_names():
        cls = ESTIMATORS[name]
        if (
            cls.bound != ELBO_BOUND
            or not cls.checked
            or (name == reference.estimator and reference.particles == particles)
        ):
            continue
        valid = cls().validity(vae)
        if valid.valid:
            out[name] = valid
    return out


def _iwae_checks(vae, x_test, cfg) -> tuple[list[CheckResult], torch.Tensor | None]:
    """iwae against renyi0 at shared noise, and IWAE_50 >= ELBO per example (paired z-score); only at
    beta = 1 (IWAE_k has no KL weight)."""
    if not build_estimator("iwae").validity(vae).valid:
        return [], None
    out = [_iwae_same_noise_result(iwae_same_noise(vae, x_test[:200], 5))]
    # IWAE_50 >= ELBO, paired per example: one IWAE_50 draw and a 50-particle ELBO per digit
    torch.manual_seed(cfg.seed + 1)
    iw = iwae_log_likelihood(vae, x_test, k=50, chunk=50, progress=cfg.progress, desc="check: IWAE_50")
    with torch.no_grad():
        elbo = torch.cat([log_weights(vae, x_test[i : i + 100], 50).mean(0) for i in range(0, len(x_test), 100)])
    mean, se = mean_se((iw - elbo).double().cpu())
    out.append(
        result(
            "iwae_at_least_elbo",
            "iwae[k=50]",
            mean / se,
            -Z_TOL,
            mean / se >= -Z_TOL,
            0.0,
            mean_difference=mean,
            se=se,
            iwae_mean=float(iw.mean()),
            elbo_mean=float(elbo.mean()),
        )
    )
    return out, iw


def _train_for_check(run, cfg, reference) -> tuple[str, str | None]:
    t = run.spec.training
    trainer, note = training_estimator(run.vae, t.estimator)
    train(
        run.vae,
        build_estimator(trainer, t.particles),
        run.x_train,
        epochs=cfg.epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        generator=run.generator,
        progress=cfg.progress,
        kl_anneal_epochs=t.kl_anneal_epochs,
    )
    return trainer, note


def run_mnist(spec, run=None, progress: bool = False) -> dict:
    """The agreement checks (:func:`~vae_pyro.checks.agreement.run_agreement`) and the IWAE checks on
    the MNIST VAE of ``spec``, trained first (``training.epochs``) unless ``run`` holds a trained one.
    A dynamically binarized spec is trained and checked on one static draw: the checks need fixed data."""
    cfg = checks_of(spec, progress=progress)
    started = time.perf_counter()
    trained = run is not None
    run = run or prepare_run(cfg.spec, binarization="static" if cfg.spec.resolved_data()[0] == "dynamic" else None)
    vae, x_test, c = run.vae, run.x_test, cfg.spec.checks
    vae.check_data(x_test)
    reference = reference_for(vae, cfg.particles, c.reference_particles)
    trainer, note = (None, "evaluated as loaded, no training") if trained else _train_for_check(run, cfg, reference)
    validities = _mnist_estimators(vae, reference, cfg.particles)
    setup = AgreementSetup(
        vae,
        x_test,
        x_test[::4][:256],
        x_test[:200],
        cfg.particles,
        cfg.draws,
        cfg.grad_draws,
        c.reference_particles,
        cfg.seed,
        c.z_tol,
        c.same_noise_tol,
        checks=("monte_carlo", "same_noise", "gradient"),
    )
    agreement = run_agreement(setup, list(validities), cfg.progress, "check: agreement", validities)
    results = [r for *_, checks_ in agreement.estimators.values() for r in checks_]
    iwae_results, iw = _iwae_checks(vae, x_test, cfg)
    # 64 digits: IWAE_100 gradients of the 784-400-20 VAE are costly on CPU
    quality = _gradient_table(vae, setup.x_grad[:64], cfg)
    m = cfg.spec.model_config()
    out = _header(
        cfg,
        run.device,
        f"MNIST VAE {m.x_dim}-{'-'.join(map(str, m.hidden))}-{m.z_dim} (prior {m.prior}, "
        f"likelihood {m.likelihood}) on {run.dataset.name} ({len(x_test)} test digits)",
        run.binarization,
        cfg.spec,
    )
    out["reference"] = reference.to_dict()
    ref_mc = agreement.reference_mc
    out.update(
        {
            "exact_log_px": None,
            "examples": int(len(x_test)),
            "trained_epochs": 0 if trained else cfg.epochs,
            "training": {
                "estimator": trainer,
                "requested_estimator": cfg.spec.training.estimator,
                "estimator_note": note,
            },
            "bounds": {
                "elbo": {"mean": -ref_mc.mean, "se": ref_mc.se},
                "iwae_k50": {"mean": float(iw.mean())} if iw is not None else None,
            },
            "checks": [r.to_dict() for r in results + iwae_results],
            "gradient_quality": quality,
            "verdict": overall(results + iwae_results),
            "seconds": time.perf_counter() - started,
        }
    )
    return out


# ----------------------------------------------------------------------------------------------
# Report


def check_table(result: dict) -> str:
    rows = []
    for c in result["checks"]:
        rows.append(
            [
                c["name"],
                c["estimator"],
                fmt(c["value"], ".4g"),
                fmt(c["reference"], ".6g"),
                fmt(c["tolerance"], ".3g"),
                c["verdict"].upper(),
            ]
        )
    lines = [
        f"vae-pyro check: {result['data']}, binarization: {result['binarization']}, device {result['device']}, "
        f"seed {result['seed']}, {result['particles']} particle(s), torch {result['torch_version']}, "
        f"pyro {result['pyro_version']}"
    ]
    b = result["bounds"]
    if result.get("exact_log_px") is not None:
        lines.append(
            f"exact log p(x) = {result['exact_log_px']:.6f} nats/example "
            f"over {result['examples']} test digits ({result['exact_method']['method']})"
        )
        lines.append(
            f"exact ELBO of the fitted encoder = {result['exact_elbo']:.6f}; KL(q || p(z|x)) = "
            f"{result['kl_to_posterior']:.6f}"
        )
        bound_rows = [
            [name, f"{v['mean']:.4f}", fmt(v.get("se"), ".4f"), f"{result['exact_log_px'] - v['mean']:.4f}"]
            for name, v in b.items()
        ]
        lines += ["", table(["bound", "mean (nats/example)", "s.e.", "log p(x) - bound"], bound_rows)]
    else:
        iwae = f", IWAE_50 = {b['iwae_k50']['mean']:.3f}" if b.get("iwae_k50") else " (IWAE_50: not at beta != 1)"
        lines.append(
            f"ELBO = {b['elbo']['mean']:.3f} ± {b['elbo']['se']:.3f}{iwae} nats/example over "
            f"{result['examples']} test digits"
        )
        if result.get("training", {}).get("estimator_note"):
            lines.append(result["training"]["estimator_note"])
    lines += ["", table(["check", "estimator", "value", "reference", "tolerance", "verdict"], rows, align="llrrrl")]
    skipped = sorted(
        {c["details"]["reason"] for c in result["checks"] if c["verdict"] == "skip" and "reason" in c["details"]}
    )
    for reason in skipped:
        lines.append(f"skipped: {reason}")
    q = result["gradient_quality"]
    qrows = [
        [
            r["estimator"],
            r["num_particles"],
            fmt(r["encoder_snr"], ".3g"),
            fmt(r["decoder_snr"], ".3g"),
            fmt(r["encoder_var"], ".3g"),
            fmt(r["decoder_var"], ".3g"),
        ]
        for r in q
    ]
    lines += [
        "",
        f"gradient quality at the same parameters ({result['grad_draws']} draws; SNR = |mean| / sd per "
        "element, averaged; var = sum of element variances):",
        table(["estimator", "particles", "encoder SNR", "decoder SNR", "encoder var", "decoder var"], qrows),
    ]
    lines.append(f"overall: {result['verdict'].upper()} in {result['seconds']:.0f} s")
    return "\n".join(lines)


def _iwae_same_noise_result(sn: dict):
    """Our IWAE against ``RenyiELBO(alpha=0)`` at shared noise: values within the same-noise tolerance,
    gradients to 1e-6 relative (:func:`iwae_same_noise`'s record, kept in the result)."""
    ok = sn["value_max_abs_diff"] <= SAME_NOISE_TOL and sn["grad_max_rel_diff"] <= 1e-6
    return result("iwae_same_noise", "iwae vs renyi0", sn["value_max_abs_diff"], SAME_NOISE_TOL, ok, 0.0, **sn)
