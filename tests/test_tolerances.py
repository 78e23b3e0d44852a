"""Student-t tolerances: the closed-form tail is exact, the quantile inverts it, the tolerance keeps
the normal false-alarm rate at any number of draws, and a check with few draws no longer fails a
correct estimator for the t-statistic's heavy tails."""

from __future__ import annotations

import math

import pytest
import torch

from vae_pyro import checks
from vae_pyro.checks.tolerances import NORMAL_DF, t_quantile, t_tolerance, t_two_sided_tail, welch_df


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 4.0, 30.0])
def test_tail_matches_the_elementary_closed_forms(t):
    # nu = 1 is the Cauchy: P(|T| > t) = 1 - 2 atan(t) / pi; nu = 2: 1 - t / sqrt(t^2 + 2)
    assert t_two_sided_tail(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-12, abs=1e-15)
    assert t_two_sided_tail(t, 2) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-12, abs=1e-15)


# Published two-sided critical values (any t table, e.g. NIST/SEMATECH e-Handbook 1.4.2.2, quoted to 3
# decimals, so they hold to half a unit of the third: 5e-4): t_{1-p/2, df} for two-sided p.
PUBLISHED = [
    (0.05, 1, 12.706),
    (0.10, 5, 2.015),
    (0.05, 10, 2.228),
    (0.01, 30, 2.750),
    (0.05, 100, 1.984),
    (0.05, math.inf, 1.960),
]


@pytest.mark.parametrize("p,df,quantile", PUBLISHED)
def test_quantile_matches_published_t_tables(p, df, quantile):
    assert t_quantile(p, df) == pytest.approx(quantile, abs=5e-4)


@pytest.mark.parametrize("df", [1, 2, 5, 49, 1000])
def test_quantile_inverts_the_tail(df):
    for p in (0.5, 0.05, 6.3e-5):
        assert t_two_sided_tail(t_quantile(p, df), df) == pytest.approx(p, rel=1e-8)


def test_tolerance_has_the_normal_false_alarm_rate_and_tends_to_it():
    p = math.erfc(4 / math.sqrt(2))
    for df in (2, 9, 49):
        assert t_two_sided_tail(t_tolerance(4.0, df), df) == pytest.approx(p, rel=1e-8)
    values = [t_tolerance(4.0, df) for df in (2, 9, 49, 999, NORMAL_DF)]
    assert values == sorted(values, reverse=True) and values[-1] == pytest.approx(4.0, abs=1e-3)
    assert t_tolerance(4.0, math.inf) == 4.0


def test_welch_df_is_the_conservative_minimum():
    assert welch_df(50, 3) == 2 and welch_df(10, 0) == 9 and welch_df(0, 0) == math.inf
    with pytest.raises(ValueError):
        welch_df(1, 10)


def test_gradient_check_with_three_draws_uses_the_t_tolerance():
    """Three draws of the same noisy gradient from two samplers that agree: |z| of about 4 is an
    ordinary t(2) value, not a disagreement (the case that failed with the normal |z| <= 4)."""
    gen = torch.Generator().manual_seed(0)
    proj = torch.randn(3, 8, 4, generator=gen, dtype=torch.float64)
    ref = torch.randn(3, 8, 4, generator=gen, dtype=torch.float64)

    def stats(name, p):
        return checks.GradStats(
            name, [f"t{i}" for i in range(8)], [p.mean(0)[i] for i in range(8)], [p.var(0)[i] for i in range(8)], p, 3
        )

    result = checks.gradient_check(stats("a", proj), stats("ref", ref))
    assert result.tolerance == pytest.approx(t_tolerance(checks.Z_TOL, 2))
    assert result.value > checks.Z_TOL  # 32 t(2) statistics: the normal tolerance would fail it
    assert result.verdict == checks.PASS
