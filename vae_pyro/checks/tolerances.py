r"""z-tolerances that follow the number of draws: Student's t (``scipy.stats.t``).

A Monte Carlo check divides a difference of means by a standard error *estimated from the same R
draws*, so under agreement the statistic is (for normal draws) Student-t with R - 1 degrees of
freedom, not standard normal. Its tails are much heavier for few draws: with 3 draws (2 degrees of freedom)
|t| > 4 happens 5.7% of the time (a normal z: 6.3e-5), and a verdict over 32 such tests then fails a
correct estimator most of the time, which is why ``compare --grad-draws 3`` failed a correct
estimator. :func:`t_tolerance` turns a normal tolerance ``z_tol`` into the t-tolerance with the *same*
two-sided false-alarm rate, ``p = erfc(z_tol / sqrt(2))`` (6.3e-5 per test for the library's
``Z_TOL = 4``), so every check keeps its stated false-alarm rate at any number of draws; with m tests
in one verdict (the gradient check's projections) the chance of any false alarm is at most m p
(Bonferroni). For two samples with their own variances (Welch's statistic) the degrees of freedom
are taken as min(R_a, R_b) - 1, the conservative choice (Welch 1947; the true distribution has at
least that many), so the stated rate is an upper bound. The tolerance is 125.6 at 3 draws, 6.57 at
11, 4.38 at 50, 4.18 at 100 and 4.02 at 1,001: few draws give a weak check, not a false alarm.

The t distribution's tail and quantile are SciPy's (``scipy.stats.t.sf`` and ``.isf``; a test holds
them to published quantiles). Above ``NORMAL_DF`` degrees of freedom the normal tail is used (the
t-quantile then differs from z_tol by < z_tol (z_tol^2 + 1) / (4 nu) < 1e-3).
"""

from __future__ import annotations

import math

from scipy import stats

#: degrees of freedom above which the t tail is replaced by the normal one (see the module docstring)
NORMAL_DF = 100_000


def _normal(df: float) -> bool:
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    return df == math.inf or df > NORMAL_DF


def t_two_sided_tail(t: float, df: float) -> float:
    """P(|T| > t) for Student's t with ``df`` degrees of freedom (positive, or inf: the normal)."""
    t = abs(t)
    if _normal(df):
        return math.erfc(t / math.sqrt(2))
    return float(2 * stats.t.sf(t, df))


def t_quantile(p: float, df: float) -> float:
    """The t > 0 with P(|T| > t) = ``p`` (two-sided)."""
    if not 0 < p < 1:
        raise ValueError(f"tail probability must be in (0, 1), got {p}")
    if _normal(df):
        return float(stats.norm.isf(p / 2))
    return float(stats.t.isf(p / 2, df))


def t_tolerance(z_tol: float, df: float) -> float:
    """The |t| tolerance with the same two-sided false-alarm rate as |z| <= ``z_tol`` for a normal
    statistic, at ``df`` degrees of freedom (draws - 1; inf: the normal limit, ``z_tol`` itself)."""
    if df == math.inf or df > NORMAL_DF:
        return z_tol
    return t_quantile(math.erfc(z_tol / math.sqrt(2)), df)


def welch_df(*draws: int) -> float:
    """Conservative degrees of freedom of a statistic whose standard error is estimated from samples
    of these sizes: min(R) - 1 (samples given as 0 have no estimated variance and do not count)."""
    counted = [r for r in draws if r > 0]
    if any(r < 2 for r in counted):
        raise ValueError(f"a standard error needs at least 2 draws, got {min(counted)}")
    return min(counted) - 1 if counted else math.inf


def z_tolerances(z_tol: float, draws: int, grad_draws: int) -> dict[str, float]:
    """The |z| record a result's ``tolerances`` carries: what the value and gradient checks applied
    (``z_tol`` as a t-tolerance at ``draws - 1`` and ``grad_draws - 1`` degrees of freedom) and the
    normal tolerance whose false-alarm rate they keep (``z_normal``)."""
    return {"z": t_tolerance(z_tol, draws - 1), "grad_z": t_tolerance(z_tol, grad_draws - 1), "z_normal": z_tol}
