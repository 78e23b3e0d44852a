"""The estimator comparison: train briefly (so the checks run at a trained point, not at random
weights), then run every check for every estimator and collect one record per estimator.

The result is the stable JSON interface documented in the README: top-level ``device``, ``dataset``,
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
from dataclasses import asdict, dataclass, field

import torch

from . import checks
from .checks.agreement import AgreementSetup, run_agreement
from .checks.tolerances import z_tolerances
from .estimators import DEFAULT_ESTIMATORS, ESTIMATORS, build_estimator
from .model import VAEConfig
from .runs import Run, RunSettings, fit_run, result_header, training_estimator
from .train import evaluate, time_steps

@dataclass
class CompareConfig(RunSettings):
    draws: int = 100          # independent draws per estimator for the Monte Carlo check
    grad_draws: int = 50      # independent gradient draws per estimator
    grad_batch: int = 256     # test examples the gradient check uses
    timing_steps: int = 20
    estimators: tuple[str, ...] = DEFAULT_ESTIMATORS
    train_estimator: str = "analytic"
    model: VAEConfig = field(default_factory=VAEConfig)
    reference_particles: int = 8   # particles of the hand_mc reference where analytic is invalid
    z_tol: float = checks.Z_TOL
    same_noise_tol: float = checks.SAME_NOISE_TOL

    @classmethod
    def from_spec(cls, spec, progress: bool = True) -> "CompareConfig":
        c = spec.checks
        return cls(**RunSettings.fields_of(spec, progress), draws=c.draws, grad_draws=c.grad_draws,
                   grad_batch=c.grad_batch, timing_steps=c.timing_steps, estimators=tuple(c.estimators),
                   train_estimator=spec.training.estimator, model=spec.model_config(),
                   reference_particles=c.reference_particles, z_tol=c.z_tol, same_noise_tol=c.same_noise_tol)

    def validate(self) -> None:
        for name in (*self.estimators, self.train_estimator):
            ESTIMATORS[name]  # raises with the list of valid names
        for key in ("epochs", "batch_size", "particles", "draws", "grad_draws", "grad_batch", "timing_steps"):
            value = getattr(self, key)
            low = 0 if key == "epochs" else (2 if key in ("draws", "grad_draws") else 1)
            if value < low:
                raise ValueError(f"{key} must be >= {low}, got {value}")


def _record(name, est, valid, mc, results, vae, ref, x_time, cfg) -> dict:
    """One estimator's entry of the JSON (see the module docstring)."""
    if mc is None:  # invalid here: not run
        return {"name": name, "description": est.description, "neg_elbo_mean": None, "neg_elbo_se": None,
                "kl": valid.kind, "validity": valid.to_dict(), "z_vs_reference": None, "z_vs_analytic": None,
                "same_noise_max_abs_diff": None, "grad_agreement": None, "grad_max_rel_err": None,
                "ms_per_step": None, "verdict": checks.SKIP, "checks": [r.to_dict() for r in results]}
    by_name = {r.name: r for r in results}
    z = by_name["monte_carlo"].value
    return {
        "name": name, "description": est.description, "neg_elbo_mean": mc.mean, "neg_elbo_se": mc.se,
        "kl": est.validity(vae).kind, "validity": valid.to_dict(), "z_vs_reference": z,
        "z_vs_analytic": z if ref.estimator == "analytic" else None,
        "same_noise_max_abs_diff": by_name["same_noise"].value, "grad_agreement": by_name["gradient"].value,
        "grad_max_rel_err": by_name["gradient"].details.get("max_rel_err"), "bound": est.bound,
        "ms_per_step": time_steps(vae, est, x_time, cfg.timing_steps), "verdict": checks.overall(results),
        "checks": [r.to_dict() for r in results],
    }


def run_comparison(cfg: CompareConfig, run: Run, checkpoint: str | None = None) -> dict:
    """Train ``run.vae`` (:func:`~vae_pyro.runs.prepare_run`; with ``checkpoint``, the weights saved
    there, evaluated without training), then :func:`run_agreement` for every estimator of ``cfg``;
    the result is the JSON of the module docstring. A dynamically binarized run is checked on
    ``run.x_test``, one static draw of the test set: the checks need one fixed data set."""
    started = time.perf_counter()
    vae, x_test = run.vae, run.x_test
    vae.check_data(x_test)
    if checkpoint is not None:
        history, training = [], {"estimator": None, "requested_estimator": cfg.train_estimator, "epochs": 0,
                                 "estimator_note": f"evaluated the model saved in {checkpoint} (no training)"}
    else:
        history, training = fit_run(run, *training_estimator(vae, cfg.train_estimator), cfg.progress)
    ref = checks.reference_for(vae, cfg.particles, cfg.reference_particles)
    trained = cfg.epochs or checkpoint is not None
    # (in this order: both draw random numbers, and the checks' draws follow)
    training.update(checkpoint=checkpoint, history=[asdict(h) for h in history], test_neg_elbo=(
        evaluate(vae, build_estimator(ref.estimator, ref.particles), x_test) if trained else None))
    x_time = run.x_train[:cfg.batch_size]
    x_time = torch.bernoulli(x_time) if run.dynamic else x_time
    setup = AgreementSetup(vae, x_test, x_test[:cfg.grad_batch], x_test, cfg.particles, cfg.draws, cfg.grad_draws,
                           cfg.reference_particles, cfg.seed, cfg.z_tol, cfg.same_noise_tol)
    records = []
    agreement = run_agreement(setup, cfg.estimators, cfg.progress, "checks", on_estimator=lambda name, *entry:
                              records.append(_record(name, *entry, vae, ref, x_time, cfg)))
    return {
        **result_header("compare", cfg.spec, run.device, cfg.seed),
        "dataset": run.dataset.name, "binarization": run.binarization, "transform": run.transform,
        "particles": cfg.particles, "draws": cfg.draws, "grad_draws": cfg.grad_draws,
        "eval_examples": int(x_test.shape[0]), "timing_batch_size": int(x_time.shape[0]),
        "model": cfg.model.to_dict(), "kl_weight": cfg.model.kl_weight, "training": training,
        "reference": {**ref.to_dict(), "neg_elbo_mean": agreement.reference_mc.mean,
                      "neg_elbo_se": agreement.reference_mc.se},
        # the |z| each check applied: cfg.z_tol as a t-tolerance at the draws' degrees of freedom
        "tolerances": {**z_tolerances(cfg.z_tol, cfg.draws, cfg.grad_draws), "same_noise": cfg.same_noise_tol},
        "estimators": records,
        "verdict": checks.overall([checks.CheckResult("", r["name"], None, None, r["verdict"]) for r in records]),
        "seconds": time.perf_counter() - started,
    }
