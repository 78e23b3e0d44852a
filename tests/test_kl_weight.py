"""The KL weight beta (beta-VAE) and its annealing: every estimator optimises the same objective
E_q[log p(x|z)] - beta KL(q || p), exactly at shared noise and statistically, including the JIT ones
(beta reaches their compiled graph as an input), and the Pyro trap this design avoids is shown.

Tolerances: same noise as in test_combinations (< 1e-10 nats/example, float64); Monte Carlo
z-scores with ``Z_SWEEP`` (|t| <= 5.58 at 30 draws; Bonferroni over the sweep's z-scores there;
these few add little).
"""

from __future__ import annotations

import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from vae_pyro import checks
from vae_pyro.estimators.analytic import closed_form_kl
from vae_pyro.estimators import Estimator, build_estimator
from vae_pyro.train import kl_weight_at, train
from test_combinations import Z_SWEEP, assert_pair_agrees, assert_same_noise, trained_pair  # noqa: F401
from test_combinations import data_by_likelihood  # noqa: F401  (a fixture)

BETA = 2.5
CASES = [("standard_normal", "bernoulli"), ("mog", "bernoulli"), ("laplace", "continuous_bernoulli")]


@pytest.mark.parametrize("prior, likelihood", CASES, ids=[f"{p}-{lk}" for p, lk in CASES])
def test_all_estimators_agree_for_beta_not_one(prior, likelihood, data_by_likelihood):
    vae, x = trained_pair(prior, likelihood, data_by_likelihood[likelihood], kl_weight=BETA)
    assert vae.kl_weight == BETA
    assert_same_noise(vae, x)  # trace and tmf = recon + beta (KL or log q - log p), at the recorded noise
    for name in ("jit_trace", "jit_tmf"):  # compiled = uncompiled at the same seed, at beta
        r = checks.same_noise_check(vae, x, name, repeats=1)
        assert r.verdict == "pass" and r.value < 1e-10, r
    assert_pair_agrees(vae, x, estimators=("trace", "tmf", "jit_trace", "jit_tmf"), gradients=False)


def test_beta_really_weights_the_kl(data_by_likelihood):
    """At the same noise, -ELBO_beta - (-ELBO_1) = (beta - 1) KL for tmf (exact KL), to 1e-9."""
    vae, x = trained_pair("standard_normal", "bernoulli", data_by_likelihood["bernoulli"])
    vae, x = vae.clone(dtype=torch.float64), x.double()
    est = build_estimator("tmf")
    torch.manual_seed(5)
    one = est.loss(vae, x)
    vae.kl_weight = BETA
    torch.manual_seed(5)
    weighted = est.loss(vae, x)
    kl = closed_form_kl(vae, *vae.encoder(x)).sum().item()
    assert kl > 1.0 and abs((weighted - one) - (BETA - 1) * kl) < 1e-9 * abs(one)


def test_the_trap_scaling_only_the_model_site(data_by_likelihood):
    """Scaling only the model's z site (the obvious poutine.scale) changes Trace_ELBO but not
    TraceMeanField_ELBO (which scales its KL by the guide site's scale): the two estimators would
    then optimise different objectives. Scaling both sites, as vae_pyro does, makes them agree; the
    Monte Carlo check catches the one-site version."""
    vae, x = trained_pair("standard_normal", "bernoulli", data_by_likelihood["bernoulli"])
    vae, x = vae.clone(dtype=torch.float64), x.double()

    def model_only(xx):  # beta on the model's z only
        return vae.model(xx, BETA)

    def guide_plain(xx):
        return vae.guide(xx, 1.0)

    def at_seed(elbo, model, guide):
        torch.manual_seed(11)
        return elbo.loss(model, guide, x)

    tmf, trace = TraceMeanField_ELBO(max_plate_nesting=1), Trace_ELBO(max_plate_nesting=1)
    plain = lambda xx: vae.model(xx, 1.0)  # noqa: E731
    assert at_seed(tmf, model_only, guide_plain) == at_seed(tmf, plain, guide_plain)  # tmf: no change at all
    assert abs(at_seed(trace, model_only, guide_plain) - at_seed(trace, plain, guide_plain)) > 10  # trace: changed

    class ModelOnlyBeta(Estimator):  # the buggy estimator, for the statistical check
        name = "trace_model_only_beta"

        def differentiable_loss(self, vae_, xx):
            return Trace_ELBO(max_plate_nesting=1).differentiable_loss(model_only, guide_plain, xx)

    vae.kl_weight = BETA
    torch.manual_seed(0)
    ref = checks.MCStats.of("analytic", checks.loss_draws(build_estimator("analytic"), vae, x, 30), 1)
    bad = checks.MCStats.of("bug", checks.loss_draws(ModelOnlyBeta(), vae, x, 30), 1)
    r = checks.monte_carlo_check(bad, ref, Z_SWEEP)
    assert r.verdict == "fail" and abs(r.value) > 3 * Z_SWEEP


def test_annealing_schedule_and_that_compiled_estimators_follow_it(data_by_likelihood):
    assert [kl_weight_at(s, 4.0, 4) for s in (1, 2, 4, 9)] == [1.0, 2.0, 4.0, 4.0]
    assert kl_weight_at(1, 4.0, 0) == 4.0
    vae, x = trained_pair("standard_normal", "bernoulli", data_by_likelihood["bernoulli"], kl_weight=3.0)
    x_train = data_by_likelihood["bernoulli"][0]
    history = train(
        vae, build_estimator("jit_tmf"), x_train, epochs=3, batch_size=64, progress=False, kl_anneal_epochs=2
    )
    # 4 steps per epoch, warm-up 8 steps: beta = 3 * step / 8 at each epoch's last step, then 3
    assert [h.kl_weight for h in history] == [1.5, 3.0, 3.0]
    assert vae.kl_weight == 3.0  # restored to the target for evaluation and checks
    # the compiled graph takes beta as an input: compile at one beta, run at another, still exact
    vae64, x64 = vae.clone(dtype=torch.float64), x.double()
    jit, plain = build_estimator("jit_tmf"), build_estimator("tmf")
    vae64.kl_weight = 1.0
    jit.differentiable_loss(vae64, x64)  # compiles with beta = 1
    vae64.kl_weight = 0.25
    torch.manual_seed(3)
    a = jit.differentiable_loss(vae64, x64).item()
    torch.manual_seed(3)
    b = plain.differentiable_loss(vae64, x64).item()
    assert abs(a - b) < 1e-9 * abs(b)
