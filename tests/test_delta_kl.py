"""Pyro trap (issue 18, item 7): TraceMeanField_ELBO with an autoguide on a constrained latent is biased
by E[log|J|], because pyro 1.9.2's kl_divergence(Delta, .) ignores the Delta's log_density; the fix
(vae_pyro.estimators.delta_kl) and check_estimators' reason naming the cause."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal, AutoNormal, init_to_median

import vae_pyro
from vae_pyro.estimators.delta_kl import DeltaAwareTraceMeanField_ELBO, delta_log_density

from pyro_models import poisson_rates, poisson_rates_data


def _autoguide(cls):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x = poisson_rates_data()
    guide = cls(poisson_rates, init_loc_fn=init_to_median)  # at the posterior's scale, rate ~ 8, not 1
    guide(x)
    return guide, x


def test_pyros_kl_of_a_delta_drops_its_log_density():
    """The defect itself, read from pyro/distributions/kl.py: KL(Delta(v, ld) || p) should be
    E_delta[log delta - log p] = ld - log p(v); Pyro returns -log p(v)."""
    p = pyro.distributions.Gamma(2.0, 0.2)
    delta = pyro.distributions.Delta(torch.tensor(8.0), log_density=torch.tensor(-2.0794))
    assert torch.allclose(torch.distributions.kl_divergence(delta, p), -p.log_prob(torch.tensor(8.0)))


@pytest.mark.parametrize(
    "elbo_class",
    [
        pytest.param(
            TraceMeanField_ELBO,
            marks=pytest.mark.xfail(
                strict=True, reason="pyro 1.9.2: kl_divergence(Delta, .) ignores log_density, TMF is off by E[log|J|]"
            ),
        ),
        DeltaAwareTraceMeanField_ELBO,
    ],
)
@pytest.mark.parametrize("autoguide", [AutoNormal, AutoDiagonalNormal])
def test_mean_field_elbo_with_an_autoguide_agrees_with_trace_elbo(elbo_class, autoguide):
    """Monte Carlo agreement with Trace_ELBO (100 draws each, |z| <= 4.18). Measured at these seeds:
    Pyro's TMF is 10.4-10.8 nats too high in loss (5 rates x E[log rate] ~ 2.1), z = 6-17; the fixed
    one agrees (|z| < 1)."""
    guide, x = _autoguide(autoguide)
    report = vae_pyro.check_estimators(
        poisson_rates,
        guide,
        x,
        draws=100,
        grad_draws=20,
        estimators={"Trace_ELBO": Trace_ELBO(), "mean_field": elbo_class()},
    )
    mc = next(c for c in report.checks if c.name == "monte_carlo")
    assert mc.verdict == "pass", (mc.value, mc.tolerance)


def test_the_report_names_the_cause_and_the_bias_is_the_mean_log_density():
    """Pyro's TMF fails with the cause in the report; its loss minus Trace_ELBO's is -E[log_density]
    (E estimated from 200 guide draws): z-score within 4.18 with every standard error counted.
    Measured: bias 10.56 nats, -E[log_density] 11.09, s.e. 1.30 (z = 0.41); the bias itself is 8.1 s.e."""
    guide, x = _autoguide(AutoNormal)
    report = vae_pyro.check_estimators(
        poisson_rates,
        guide,
        x,
        draws=100,
        grad_draws=20,
        estimators={
            "Trace_ELBO": Trace_ELBO(),
            "TraceMeanField_ELBO": TraceMeanField_ELBO(),
            "fixed": DeltaAwareTraceMeanField_ELBO(),
        },
    )
    assert not report.ok
    assert len(report.notes) == 1 and "kl_divergence(Delta, .) ignores" in report.notes[0]
    assert "cause: TraceMeanField_ELBO: the guide's Delta sites rate carry a log_density" in report.table()
    failed = next(c for c in report.checks if c.estimator == "TraceMeanField_ELBO" and c.name == "monte_carlo")
    assert failed.verdict == "fail" and failed.details["cause"] == report.notes[0]
    assert all(c.verdict != "fail" for c in report.checks if c.estimator == "fixed")
    pyro.set_rng_seed(1)
    with torch.no_grad():
        ld = torch.tensor([float(_log_density_draw(guide, x)) for _ in range(200)], dtype=torch.float64)
    tmf, ref = report.means["TraceMeanField_ELBO"], report.means["Trace_ELBO"]
    bias, se = tmf["mean"] - ref["mean"], (tmf["se"] ** 2 + ref["se"] ** 2 + float(ld.var()) / 200) ** 0.5
    assert abs(bias + float(ld.mean())) / se < 4.18 and bias > 5 * se


def _log_density_draw(guide, x):
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(poisson_rates, trace=guide_trace)).get_trace(x)
    return delta_log_density(model_trace, guide_trace)


def test_the_fix_adds_exactly_the_log_density_at_the_same_draw():
    """At one seed both run the guide on the same random numbers: the fixed loss is Pyro's plus the
    draw's sum of log_density, to float32 rounding (values ~300 nats: 1e-3 absolute)."""
    guide, x = _autoguide(AutoNormal)
    losses = []
    for elbo in (TraceMeanField_ELBO(), DeltaAwareTraceMeanField_ELBO()):
        pyro.set_rng_seed(5)
        losses.append(elbo.loss(poisson_rates, guide, x))
    pyro.set_rng_seed(5)
    with torch.no_grad():
        ld = float(_log_density_draw(guide, x))
    assert ld < -5 and abs(losses[1] - (losses[0] + ld)) < 1e-3
