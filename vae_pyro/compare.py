"""The estimator comparison: train briefly (so the checks run at a trained point, not at random
weights), then run every check for every estimator and collect one record per estimator.

The result is the stable JSON interface documented in docs/command-line.md: top-level ``device``, ``dataset``,
``seed``, ``particles``, ``torch_version``, ``pyro_version`` ... and ``estimators``, one object each
with ``name``, ``neg_elbo_mean``, ``neg_elbo_se``, ``kl``, ``validity`` (``kind``: exact_kl,
monte_carlo_kl or invalid, and ``reason``), ``z_vs_reference``, ``z_vs_analytic`` (the same number when
the reference is the analytic loss, else null), ``same_noise_max_abs_diff``, ``grad_agreement``,
``ms_per_step``, ``verdict`` and ``checks``. An invalid estimator (``analytic`` for a prior without a
closed-form KL) is not run: its checks have verdict "skip" and the reason. Top-level ``reference``
says which estimator the statistical checks compare with and why, and ``spec`` the spec it came from.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import torch

from . import checks
from .checks.agreement import AgreementSetup, run_agreement
from .checks.tolerances import z_tolerances
from .estimators import build_estimator
from .runs import Run, fit_run, result_header, training_estimator
from .train import evaluate, time_steps


def _record(name, est, valid, mc, results, vae, ref, x_time, timing_steps: int) -> dict:
    """One estimator's entry of the JSON (see the module docstring)."""
    if mc is None:  # invalid here: not run
        return {
            "name": name,
            "description": est.description,
            "neg_elbo_mean": None,
            "neg_elbo_se": None,
            "kl": valid.kind,
            "validity": valid.to_dict(),
            "z_vs_reference": None,
            "z_vs_analytic": None,
            "same_noise_max_abs_diff": None,
            "grad_agreement": None,
            "grad_max_rel_err": None,
            "ms_per_step": None,
            "verdict": checks.SKIP,
            "checks": [r.to_dict() for r in results],
        }
    by_name = {r.name: r for r in results}
    z = by_name["monte_carlo"].value
    return {
        "name": name,
        "description": est.description,
        "neg_elbo_mean": mc.mean,
        "neg_elbo_se": mc.se,
        "kl": est.validity(vae).kind,
        "validity": valid.to_dict(),
        "z_vs_reference": z,
        "z_vs_analytic": z if ref.estimator == "analytic" else None,
        "same_noise_max_abs_diff": by_name["same_noise"].value,
        "grad_agreement": by_name["gradient"].value,
        "grad_max_rel_err": by_name["gradient"].details.get("max_rel_err"),
        "bound": est.bound,
        "ms_per_step": time_steps(vae, est, x_time, timing_steps),
        "verdict": checks.overall(results),
        "checks": [r.to_dict() for r in results],
    }


def run_comparison(spec, run: Run, checkpoint: str | None = None, progress: bool = False) -> dict:
    """Train ``run.vae`` (:func:`~vae_pyro.runs.prepare_run`; with ``checkpoint``, the weights saved
    there, evaluated without training), then :func:`run_agreement` for every estimator of
    ``spec.checks.estimators``; the result is the JSON of the module docstring. A dynamically
    binarized run is checked on ``run.x_test``, one static draw of the test set: the checks need one
    fixed data set."""
    started = time.perf_counter()
    vae, x_test, t, c = run.vae, run.x_test, spec.training, spec.checks
    vae.check_data(x_test)
    if checkpoint is not None:
        history, training = (
            [],
            {
                "estimator": None,
                "requested_estimator": t.estimator,
                "epochs": 0,
                "estimator_note": f"evaluated the model saved in {checkpoint} (no training)",
            },
        )
    else:
        history, training = fit_run(run, *training_estimator(vae, t.estimator), progress)
    ref = checks.reference_for(vae, c.particles, c.reference_particles)
    trained = t.epochs or checkpoint is not None
    # (in this order: both draw random numbers, and the checks' draws follow)
    training.update(
        checkpoint=checkpoint,
        history=[asdict(h) for h in history],
        test_neg_elbo=(evaluate(vae, build_estimator(ref.estimator, ref.particles), x_test) if trained else None),
    )
    x_time = run.x_train[: t.batch_size]
    x_time = torch.bernoulli(x_time) if run.dynamic else x_time
    setup = AgreementSetup(
        vae,
        x_test,
        x_test[: c.grad_batch],
        x_test,
        c.particles,
        c.draws,
        c.grad_draws,
        c.reference_particles,
        t.seed,
        c.z_tol,
        c.same_noise_tol,
    )
    records = []
    agreement = run_agreement(
        setup,
        c.estimators,
        progress,
        "checks",
        on_estimator=lambda name, *entry: records.append(_record(name, *entry, vae, ref, x_time, c.timing_steps)),
    )
    model = spec.model_config()
    return {
        **result_header("compare", spec, run.device),
        "dataset": run.dataset.name,
        "binarization": run.binarization,
        "transform": run.transform,
        "particles": c.particles,
        "draws": c.draws,
        "grad_draws": c.grad_draws,
        "eval_examples": int(x_test.shape[0]),
        "timing_batch_size": int(x_time.shape[0]),
        "model": model.to_dict(),
        "kl_weight": model.kl_weight,
        "training": training,
        "reference": {
            **ref.to_dict(),
            "neg_elbo_mean": agreement.reference_mc.mean,
            "neg_elbo_se": agreement.reference_mc.se,
        },
        # the |z| each check applied: z_tol as a t-tolerance at the draws' degrees of freedom
        "tolerances": {**z_tolerances(c.z_tol, c.draws, c.grad_draws), "same_noise": c.same_noise_tol},
        "estimators": records,
        "verdict": checks.overall([checks.CheckResult("", r["name"], None, None, r["verdict"]) for r in records]),
        "seconds": time.perf_counter() - started,
    }
