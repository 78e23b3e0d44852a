r"""z-tolerances that follow the number of draws: Student's t, exactly, without SciPy.

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
least that many), so the stated rate is an upper bound.

The t distribution's CDF has a finite closed form for integer degrees of freedom nu (Abramowitz &
Stegun 26.7.3-4), with theta = atan(t / sqrt(nu)) and A(t | nu) = P(|T| <= t):

    nu = 1:       A = 2 theta / pi
    nu odd > 1:   A = 2/pi [theta + sin(theta) (cos(theta) + 2/3 cos^3(theta) + ...
                                               + (2 4 ... (nu-3)) / (1 3 ... (nu-2)) cos^(nu-2)(theta))]
    nu even:      A = sin(theta) [1 + 1/2 cos^2(theta) + (1 3)/(2 4) cos^4(theta) + ...
                                  + (1 3 ... (nu-3)) / (2 4 ... (nu-2)) cos^(nu-2)(theta)]

and the quantile is found by bisection on it. Above ``NORMAL_DF`` degrees of freedom the normal
tail is used (the t-quantile then differs from z_tol by < z_tol (z_tol^2 + 1) / (4 nu) < 1e-3).
"""

from __future__ import annotations

import math

#: degrees of freedom above which the t tail is replaced by the normal one (see the module docstring)
NORMAL_DF = 100_000


def t_two_sided_tail(t: float, df: float) -> float:
    """P(|T| > t) for Student's t with ``df`` degrees of freedom (a positive integer, or inf)."""
    t = abs(t)
    if df == math.inf or df > NORMAL_DF:
        return math.erfc(t / math.sqrt(2))
    nu = int(df)
    if nu != df or nu < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df}")
    theta = math.atan(t / math.sqrt(nu))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if nu % 2:  # odd: 2/pi [theta + sin cos (1 + 2/3 cos^2 + (2 4)/(3 5) cos^4 + ...)]
        term, total = 1.0, (1.0 if nu > 1 else 0.0)
        for k in range(1, (nu - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        inside = (2 / math.pi) * (theta + s * math.cos(theta) * total)
    else:  # even: sin (1 + 1/2 cos^2 + (1 3)/(2 4) cos^4 + ...)
        term, total = 1.0, 1.0
        for k in range(1, nu // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        inside = s * total
    return max(1.0 - inside, 0.0)


def t_quantile(p: float, df: float) -> float:
    """The t > 0 with P(|T| > t) = ``p`` (two-sided), by bisection (to 1e-10 relative)."""
    if not 0 < p < 1:
        raise ValueError(f"tail probability must be in (0, 1), got {p}")
    lo, hi = 0.0, 1.0
    while t_two_sided_tail(hi, df) > p:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-10 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_two_sided_tail(mid, df) > p else (lo, mid)
    return (lo + hi) / 2


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
