"""Every check of vae-pyro: agreement between estimators (:mod:`.agreement`, the one engine, on a
:mod:`.subject`),
ground truth on toys with exact log p(x) (:mod:`.ground_truth`, :mod:`.toys`, :mod:`.exact`),
gradient quality (:mod:`.gradquality`), any Pyro model (:mod:`.any_model`) and the validity
matrix (:mod:`.validity`). Each check returns :class:`CheckResult` objects with a verdict; the statistics
they share are in :mod:`.stats`, the result type and tolerances in :mod:`.result`, and the Student-t
form of a |z| tolerance at a number of draws (how every Monte Carlo check applies ``Z_TOL``) in
:mod:`.tolerances`."""

from .result import ERROR, EXACT_TOL, FAIL, GRAD_DETERMINISTIC_REL, GRAD_REL_TOL, IWAE_GAP_TOL, PASS, QUAD_TOL
from .result import SAME_NOISE_TOL, SKIP, STL_RATIO_TOL, Z_TOL, CheckResult, overall, result, skipped
from .result import torch_threads, verdict_of
from .tolerances import t_tolerance, welch_df, z_tolerances
from .stats import GradStats, MCStats, gradient_directions, gradient_draws, loss_draws, mean_se, pilot_directions
from .stats import value_draws, z_score
from .subject import Subject
from .agreement import AGREEMENT_CHECKS, Agreement, AgreementSetup, Reference, agreement_check, device_check
from .agreement import gradient_check
from .agreement import monte_carlo_check, reference_for, run_agreement, same_noise_check

__all__ = [
    "AGREEMENT_CHECKS",
    "Agreement",
    "AgreementSetup",
    "agreement_check",
    "CheckResult",
    "ERROR",
    "EXACT_TOL",
    "FAIL",
    "GRAD_DETERMINISTIC_REL",
    "GRAD_REL_TOL",
    "GradStats",
    "IWAE_GAP_TOL",
    "MCStats",
    "PASS",
    "QUAD_TOL",
    "Reference",
    "SAME_NOISE_TOL",
    "SKIP",
    "STL_RATIO_TOL",
    "Z_TOL",
    "device_check",
    "gradient_check",
    "gradient_directions",
    "gradient_draws",
    "loss_draws",
    "mean_se",
    "monte_carlo_check",
    "overall",
    "reference_for",
    "result",
    "run_agreement",
    "same_noise_check",
    "skipped",
    "Subject",
    "pilot_directions",
    "value_draws",
    "t_tolerance",
    "torch_threads",
    "verdict_of",
    "welch_df",
    "z_score",
    "z_tolerances",
]
