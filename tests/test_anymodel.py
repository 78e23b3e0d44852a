"""`vae_pyro.check_estimators` on Pyro models other than our VAE, and the documented example."""

from __future__ import annotations

import re
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest

import vae_pyro

DOC = Path(__file__).resolve().parents[1] / "docs" / "check_any_model.md"


def test_the_documented_example_runs_and_passes_and_its_wrong_estimator_fails(capsys):
    """Every python block of docs/check_any_model.md, in order, in one namespace (the first asserts
    report.ok, the second asserts the deliberately wrong estimator is caught)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    report, bad = namespace["report"], namespace["bad"]
    assert report.ok and {c.name for c in report.checks} == {"same_seed", "monte_carlo", "gradient"}
    assert report.params == ["m", "s", "ls_m", "ls_s"]
    printed = capsys.readouterr().out
    assert "overall: PASS" in printed and "overall: FAIL" in printed
    failed = [c for c in bad.checks if c.verdict == "fail"]
    # the value shift is ~14 nats at s.e. ~0.22 (z ~ -64); the gradient's largest |z| is ~6.2 at these seeds
    assert {c.name for c in failed} == {"monte_carlo", "gradient"} and all(abs(c.value) > c.tolerance for c in failed)


def test_our_vae_passes_through_the_generic_api(small_vae, binary_test):
    pyro.clear_param_store()
    x = binary_test[:32]
    report = vae_pyro.check_estimators(small_vae.model, small_vae.guide, x, draws=30, grad_draws=30)
    assert report.ok, report.table()
    same = next(c for c in report.checks if c.name == "same_seed" and c.estimator == "RenyiELBO(k=1)")
    assert same.value < 1e-6 and same.verdict == "pass"
    # TraceMeanField_ELBO computes the KL in closed form: no same-seed twin, a reported skip
    assert (
        next(c for c in report.checks if c.name == "same_seed" and c.estimator == "TraceMeanField_ELBO").verdict
        == "skip"
    )
    assert any(name.startswith("vae") for name in report.params)


def test_a_model_without_params_checks_values_only():
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide():
        pyro.sample("z", dist.Normal(0.5, 1.2))

    report = vae_pyro.check_estimators(model, guide, draws=50, grad_draws=2)
    assert report.ok and report.params == []
    assert {c.name for c in report.checks if c.verdict != "skip"} == {"same_seed", "monte_carlo"}
    assert {c.details["reason"] for c in report.checks if c.name == "gradient"} == {"no parameters to differentiate"}


def test_bad_draws_is_a_clear_error():

    with pytest.raises(ValueError, match="draws and grad_draws must be >= 2, got 1 and 50"):
        vae_pyro.check_estimators(lambda: None, lambda: None, draws=1)


class _Crashes(pyro.infer.Trace_ELBO):
    """A real Pyro ELBO that cannot run: it raises the way a broken estimator does."""

    def loss(self, model, guide, *args, **kwargs):
        raise RuntimeError("shape mismatch in the likelihood\nsecond line")

    differentiable_loss = loss


def _tiny():
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide():
        pyro.sample("z", dist.Normal(0.5, 1.2))

    return model, guide


def test_an_estimator_that_crashes_is_an_error_not_a_pass():
    model, guide = _tiny()
    report = vae_pyro.check_estimators(
        model, guide, draws=10, grad_draws=2, estimators={"Trace_ELBO": pyro.infer.Trace_ELBO(), "broken": _Crashes()}
    )
    broken = [c for c in report.checks if c.estimator == "broken"]
    assert broken and all(c.verdict == "error" for c in broken)
    assert broken[0].details["reason"] == (
        "broken could not run on this model: RuntimeError: shape mismatch in the likelihood"
    )
    assert not report.ok and "overall: FAIL" in report.table()


def test_a_reference_that_crashes_makes_every_check_an_error():
    model, guide = _tiny()
    report = vae_pyro.check_estimators(
        model, guide, draws=10, grad_draws=2, estimators={"broken": _Crashes(), "Trace_ELBO": pyro.infer.Trace_ELBO()}
    )
    assert report.checks and all(c.verdict == "error" for c in report.checks)
    assert (
        "the reference broken could not run"
        in next(c for c in report.checks if c.estimator == "Trace_ELBO").details["reason"]
    )
    assert not report.ok
