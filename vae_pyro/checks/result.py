"""What every check returns (:class:`CheckResult`), the verdicts, and the tolerances with why.

Tolerances and why:

* ``SAME_NOISE_TOL = 1e-8`` nats/example, float64: two computations that differ only by the order of
  float operations on ~10^3 terms of size ~1 disagree by ~1e-13; 1e-8 leaves five orders of margin
  while any real modelling difference (a missing constant, a factor 1/2) is >= 1e-3.
* ``Z_TOL = 4``: |z| > 4 happens with probability 6e-5 under agreement (two-sided normal tail), so a
  suite of ~50 such checks has < 0.5% chance of one false alarm, and seeds are fixed anyway.
* ``GRAD_REL_TOL = 1e-6``: the largest relative difference of any gradient entry at shared noise in
  float64; ``GRAD_DETERMINISTIC_REL = 1e-5``: the s.e. floor of a gradient that is deterministic in
  both estimators (~100 float32 epsilons of accumulated rounding).
* Ground truth (:mod:`vae_pyro.checks.ground_truth`): ``EXACT_TOL = 1e-9`` nats (float64 rounding with
  five orders of margin), ``QUAD_TOL = 1e-6`` (quadrature at n vs 2n points), ``IWAE_GAP_TOL = 0.05``
  nats at k = 5,000, ``STL_RATIO_TOL = 1e-12`` (zero in exact arithmetic, ~1e-25 in float64).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

import torch

PASS, FAIL, SKIP = "pass", "fail", "skip"
#: a check that could not run (the estimator or its reference raised): never a pass; ``skip`` is kept
#: for deliberate, documented not-applicable cases (an invalid estimator, no CUDA)
ERROR = "error"

SAME_NOISE_TOL = 1e-8
GRAD_REL_TOL = 1e-6
GRAD_DETERMINISTIC_REL = 1e-5
Z_TOL = 4.0
EXACT_TOL = 1e-9
QUAD_TOL = 1e-6
IWAE_GAP_TOL = 0.05
STL_RATIO_TOL = 1e-12
#: the engine's default draws per estimator (values, gradients) and the hand_mc reference's particles
#: where no closed-form KL exists (its s.e. shrinks like 1/sqrt(P)); the spec's ``[checks]`` declares
#: its settings with these, so a Python caller of the engine and the command line agree
DRAWS, GRAD_DRAWS, REFERENCE_PARTICLES = 100, 50, 8


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


def verdict_of(ok: bool) -> str:
    return PASS if ok else FAIL


def result(name, estimator, value, tolerance, ok, reference=None, **details) -> CheckResult:
    """A :class:`CheckResult` whose verdict is PASS when ``ok``."""
    return CheckResult(name, estimator, value, tolerance, verdict_of(ok), reference, details)


def skipped(name: str, estimator: str, reason: str, tolerance=None) -> CheckResult:
    return CheckResult(name, estimator, None, tolerance, SKIP, details={"reason": reason})


def overall(results) -> str:
    """FAIL if any check failed or could not run (ERROR), else PASS if any passed, else SKIP."""
    verdicts = {r.verdict for r in results}
    return FAIL if verdicts & {FAIL, ERROR} else (PASS if PASS in verdicts else SKIP)


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
