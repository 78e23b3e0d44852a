"""check_estimators drives every pyro.infer ELBO through the interface every ELBO has (values from
``loss``, gradients from ``loss_and_grads`` or ``differentiable_loss``), on models written the way
Pyro's examples write them (tests/pyro_models.py): refusals are skips with Pyro's reason, crashes are
errors, and a wrong estimator fails."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import (
    JitTrace_ELBO,
    JitTraceGraph_ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
    TraceTMC_ELBO,
)
from pyro.infer.util import is_identically_zero

import vae_pyro
from vae_pyro.checks.any_model import accumulated_grads, gradient_interface
from vae_pyro.estimators.iwae import DifferentiableRenyiELBO

from pyro_models import (
    mixture_data,
    mixture_guide,
    mixture_guide_enum,
    mixture_model,
    sparse_gamma_data,
    sparse_gamma_def,
    sparse_gamma_guide,
)

#: Trace_ELBO warns that the guide's sites are configured for enumeration (only TraceEnum_ELBO uses it)
ENUM_WARNING = "ignore:Found sample sites configured for enumeration"


class ScoreWithoutLogQ(Trace_ELBO):
    """A deliberately wrong user subclass: Trace_ELBO's surrogate without the score-function term
    log q(z) * cost.detach() of the non-reparameterised sites, so the gradient of a discrete guide's
    parameters is missing (zero), while the value is right."""

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo, surrogate = 0.0, 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo, surrogate = elbo + site["log_prob_sum"], surrogate + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo - site["log_prob_sum"]
                entropy = site["score_parts"].entropy_term
                if not is_identically_zero(entropy):
                    surrogate = surrogate - entropy.sum()
        return -float(elbo), -surrogate


def _by(report, estimator: str) -> dict:
    return {c.name: c for c in report.checks if c.estimator == estimator}


@pytest.mark.filterwarnings(ENUM_WARNING)
def test_mixture_with_sampled_assignments_passes_score_function_elbos_and_skips_tmf():
    """Trace_ELBO as the reference; TraceGraph_ELBO and TraceEnum_ELBO (the assignments summed out
    in the guide) agree with it, TMF is skipped with Pyro's refusal. 100 draws each: |z| <= 4.18."""
    pyro.clear_param_store()
    report = vae_pyro.check_estimators(
        mixture_model,
        mixture_guide_enum,
        mixture_data(),
        draws=100,
        grad_draws=100,
        estimators={
            "Trace_ELBO": Trace_ELBO(),
            "TraceGraph_ELBO": TraceGraph_ELBO(),
            "TraceEnum_ELBO": TraceEnum_ELBO(max_plate_nesting=1),
            "TraceMeanField_ELBO": TraceMeanField_ELBO(),
            "TraceTMC_ELBO": TraceTMC_ELBO(max_plate_nesting=1),
        },
    )
    assert report.ok, report.table()
    for name in ("TraceGraph_ELBO", "TraceEnum_ELBO"):
        checks = _by(report, name)
        assert checks["monte_carlo"].verdict == "pass" and checks["gradient"].verdict == "pass"
        assert checks["gradient"].details["gradient_via"] == "loss_and_grads"
    tmf = _by(report, "TraceMeanField_ELBO")
    assert {c.verdict for c in tmf.values()} == {"skip"}
    assert (
        "Pyro refuses it for this model: NotImplementedError: All distributions in the guide must be fully "
        "reparameterized" in tmf["gradient"].details["reason"]
    )
    # with the assignments enumerated, TMC sums the weights over them: a bound on log p(x), not the ELBO
    assert "TMC_k bound, not the ELBO" in _by(report, "TraceTMC_ELBO")["monte_carlo"].details["reason"]
    # exact enumeration in the guide: TraceEnum's value has ~1/10 of Trace_ELBO's standard error
    assert report.means["TraceEnum_ELBO"]["se"] < 0.2 * report.means["Trace_ELBO"]["se"]


@pytest.mark.filterwarnings(ENUM_WARNING)
def test_a_score_function_without_its_log_q_term_fails_and_so_does_renyi_on_a_discrete_guide():
    """TraceEnum_ELBO, whose gradient sums the assignments exactly (no score-function noise), is the
    reference: against it the injected wrong estimator's missing logits gradient is a |z| of ~50
    along the pilot direction (measured 52.7 at seed 0, 100 draws), while Trace_ELBO's and
    TraceGraph_ELBO's stay within tolerance. Pyro 1.9.2's RenyiELBO fails the same way: for a
    non-reparameterised site its surrogate adds only alpha / (1 - alpha) log q (renyi_elbo.py), zero at
    alpha = 0, so it drops the score-function term (the same 52.7: both give the logits no gradient)."""
    pyro.clear_param_store()
    report = vae_pyro.check_estimators(
        mixture_model,
        mixture_guide_enum,
        mixture_data(),
        draws=100,
        grad_draws=100,
        estimators={
            "TraceEnum_ELBO": TraceEnum_ELBO(max_plate_nesting=1),
            "Trace_ELBO": Trace_ELBO(),
            "TraceGraph_ELBO": TraceGraph_ELBO(),
            "RenyiELBO": RenyiELBO(num_particles=1),
            "ScoreWithoutLogQ": ScoreWithoutLogQ(),
        },
    )
    assert not report.ok
    for name in ("Trace_ELBO", "TraceGraph_ELBO"):
        assert {c.verdict for c in _by(report, name).values() if c.name != "same_seed"} == {"pass"}, report.table()
    for name in ("ScoreWithoutLogQ", "RenyiELBO"):
        checks = _by(report, name)
        assert checks["monte_carlo"].verdict == "pass"  # the value is right
        grad = checks["gradient"]
        assert grad.verdict == "fail" and grad.value > 10 * grad.tolerance, report.table()
        worst = max(grad.details["per_tensor"], key=lambda n: max(map(abs, grad.details["per_tensor"][n]["z"])))
        assert worst == "assignment_logits"


@pytest.mark.slow
def test_sparse_gamma_def_runs_every_elbo_class_without_error():
    """The issue's report: TraceGraph_ELBO and RenyiELBO were ERROR (no differentiable_loss). Every
    class now runs and agrees on a two-layer DEF with a mean-field Gamma guide (Gamma is reparameterised
    in torch, and torch registers KL(Gamma || Gamma), so TMF's KL is exact). 50 draws: |z| <= 4.38."""
    pyro.clear_param_store()
    estimators = {
        "Trace_ELBO": Trace_ELBO(),
        "TraceMeanField_ELBO": TraceMeanField_ELBO(),
        "TraceGraph_ELBO": TraceGraph_ELBO(),
        "RenyiELBO": RenyiELBO(num_particles=1),
        "TraceEnum_ELBO": TraceEnum_ELBO(max_plate_nesting=1),
        "JitTrace_ELBO": JitTrace_ELBO(),
        "JitTraceGraph_ELBO": JitTraceGraph_ELBO(),
        "TraceTMC_ELBO": TraceTMC_ELBO(),
    }
    report = vae_pyro.check_estimators(
        sparse_gamma_def, sparse_gamma_guide, sparse_gamma_data(), draws=50, grad_draws=50, estimators=estimators
    )
    assert report.ok, report.table()
    assert not [c for c in report.checks if c.verdict == "error"]
    judged = {c.estimator for c in report.checks if c.name == "gradient" and c.verdict == "pass"}
    assert judged == set(estimators) - {"Trace_ELBO"}
    assert _by(report, "RenyiELBO")["same_seed"].verdict == "pass"


class _OwnDifferentiableLoss(Trace_ELBO):
    def differentiable_loss(self, model, guide, *args, **kwargs):
        return super().differentiable_loss(model, guide, *args, **kwargs)


def test_gradient_interface_is_what_the_class_overrides_last():
    assert gradient_interface(Trace_ELBO()) == "loss_and_grads"  # both in one class: SVI's
    assert gradient_interface(JitTrace_ELBO()) == "loss_and_grads"  # not its 2x differentiable_loss
    assert gradient_interface(TraceGraph_ELBO()) == "loss_and_grads"  # it has no differentiable_loss
    assert gradient_interface(_OwnDifferentiableLoss()) == "differentiable_loss"
    assert gradient_interface(DifferentiableRenyiELBO()) == "differentiable_loss"

    class DuckTyped:
        def loss(self, model, guide):
            return 0.0

        def differentiable_loss(self, model, guide):
            return torch.zeros(())

    assert gradient_interface(DuckTyped()) == "differentiable_loss"


def test_accumulated_grads_equal_differentiable_loss_at_the_same_seed_and_leave_grads_alone():
    """An exact identity: Trace_ELBO's loss_and_grads back-propagates the surrogate whose gradient
    differentiable_loss returns, so at the same seed the gradients agree to float rounding (float32,
    ~1e-6 relative). A .grad the caller had accumulated is put back untouched."""
    pyro.clear_param_store()
    x = mixture_data()
    guide = mixture_guide
    elbo = Trace_ELBO()
    elbo.loss(mixture_model, guide, x)  # creates the params
    store = pyro.get_param_store()
    params = [store.get_param(n).unconstrained() for n in ("locs_loc", "locs_scale", "assignment_logits")]
    sentinel = torch.full_like(params[0], 7.0)
    params[0].grad = sentinel
    pyro.set_rng_seed(3)
    via_backward = accumulated_grads(elbo, mixture_model, guide, (x,), {}, params)
    pyro.set_rng_seed(3)
    direct = torch.autograd.grad(elbo.differentiable_loss(mixture_model, guide, x), params)
    for a, b in zip(via_backward, direct):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert params[0].grad is sentinel and params[1].grad is None
