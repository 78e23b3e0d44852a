"""Each prior: a sampleable Pyro distribution of the right shape, learnable where it should be (and
in Pyro's param store exactly once, for the JIT estimators), and a closed-form KL exactly where one
exists, checked against torch and against Monte Carlo; the analytic loss refuses the others."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from torch.distributions import Independent, Normal, kl_divergence

from vae_pyro.estimators.analytic import NoClosedFormError, closed_form_kl, closed_form_kl_reason, gaussian_kl_diag
from vae_pyro.model import VAE
from vae_pyro.priors import PRIORS, build_prior

F64 = torch.float64
LEARNABLE = {
    "standard_normal": set(),
    "diag_normal": {"loc", "log_scale"},
    "mog": {"logits", "locs", "log_scales"},
    "vamp": {"pseudo_inputs"},
    "laplace": set(),
    "student_t": set(),
}
CLOSED_FORM = {"standard_normal", "diag_normal", "laplace"}


def _vae(prior, **kw):
    torch.manual_seed(0)
    return VAE(hidden=(16,), z_dim=3, prior=prior, **kw)


@pytest.mark.parametrize("name", PRIORS.names())
def test_prior_samples_and_scores_with_the_right_shapes(name):
    vae = _vae(name)
    d = vae.prior.dist((5,))
    assert tuple(d.batch_shape) == (5,) and tuple(d.event_shape) == (3,)
    z = d.sample((4,))  # Pyro samples the model's z whenever the model runs unreplayed
    assert z.shape == (4, 5, 3)
    lp = d.log_prob(z)
    assert lp.shape == (4, 5) and bool(torch.isfinite(lp).all())
    # the model runs on its own (z sampled from the prior) as well as replayed
    trace = poutine.trace(vae.model).get_trace(torch.zeros(5, 784))
    assert trace.nodes["z"]["value"].shape == (5, 3)


@pytest.mark.parametrize("name", PRIORS.names())
def test_learnable_parameters_train_and_are_in_the_param_store_once(name):
    vae = _vae(name)
    own = {n.split(".", 1)[1] for n, _ in vae.named_parameters() if n.startswith("prior.")}
    assert own == LEARNABLE[name]
    pyro.clear_param_store()
    with poutine.trace(param_only=True) as tr:
        vae.guide(torch.zeros(2, 784))
        vae.model(torch.zeros(2, 784))
    stored = [pyro.param(n).unconstrained() for n in tr.trace.nodes]
    # every trained tensor is in the store, and none twice (the VampPrior's encoder is attached, not
    # a submodule, so its weights are not registered a second time under the prior's name)
    assert len({id(p) for p in stored}) == len(stored)
    assert {id(p) for p in stored} == {id(p) for p in vae.parameters()}
    assert len(list(vae.parameters())) == len(vae.state_dict()) - 1  # the prior's buffer is the one extra


def test_vamp_prior_is_the_encoders_posterior_at_the_pseudo_inputs():
    vae = _vae("vamp", prior_options={"components": 4})
    z = torch.randn(7, 3, generator=torch.Generator().manual_seed(1))
    mu, logvar = vae.encoder(vae.prior.pseudo_inputs)
    by_hand = torch.logsumexp(Normal(mu, torch.exp(0.5 * logvar)).log_prob(z[:, None, :]).sum(-1), dim=1) - math.log(4)
    torch.testing.assert_close(vae.prior.dist((7,)).log_prob(z), by_hand, rtol=1e-6, atol=1e-6)
    # its pseudo-inputs get gradients through the encoder, and the encoder gets them through the prior
    vae.prior.dist((7,)).log_prob(z).sum().backward()
    assert vae.prior.pseudo_inputs.grad.abs().sum() > 0 and vae.encoder.head.weight.grad.abs().sum() > 0


def test_mog_log_prob_is_a_logsumexp_by_hand():
    vae = _vae("mog", prior_options={"components": 3})
    p = vae.prior
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    comp = Normal(p.locs, p.log_scales.exp()).log_prob(z[:, None, :]).sum(-1) + torch.log_softmax(p.logits, 0)
    torch.testing.assert_close(p.dist((6,)).log_prob(z), torch.logsumexp(comp, dim=1), rtol=1e-6, atol=1e-6)


def test_diag_normal_kl_matches_torch_in_float64():
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(5, 4, generator=g, dtype=F64), torch.randn(5, 4, generator=g, dtype=F64)
    mp, lvp = torch.randn(4, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64)
    ref = kl_divergence(Normal(mu, torch.exp(logvar / 2)), Normal(mp, torch.exp(lvp / 2))).sum(-1)
    torch.testing.assert_close(gaussian_kl_diag(mu, logvar, mp, lvp), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CLOSED_FORM))
def test_closed_form_kl_matches_monte_carlo(name):
    """The analytic KL against a 200k-sample Monte Carlo mean of log q - log p (CLT: 5 s.e. band,
    false-failure probability ~6e-7, seed fixed). A learnt prior is first moved off N(0, I)."""
    vae = _vae(name).to(F64)
    if name == "diag_normal":
        with torch.no_grad():
            vae.prior.loc.copy_(torch.tensor([0.5, -1.0, 0.2]))
            vae.prior.log_scale.copy_(torch.tensor([0.3, -0.4, 0.0]))
    mu = torch.tensor([[0.7, -1.2, 0.1]], dtype=F64)
    logvar = torch.tensor([[-0.5, 0.3, 1.0]], dtype=F64)
    exact = closed_form_kl(vae, mu, logvar).item()
    q = Independent(Normal(mu, torch.exp(logvar / 2)), 1)
    eps = torch.randn(200_000, 1, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    z = mu + eps * torch.exp(logvar / 2)
    samples = q.log_prob(z) - vae.prior.dist((1,)).log_prob(z)
    se = samples.std().item() / math.sqrt(len(samples))
    assert abs(samples.mean().item() - exact) < 5 * se, (samples.mean().item(), exact, se)


@pytest.mark.parametrize("name", PRIORS.names())
def test_analytic_refuses_exactly_the_priors_without_a_closed_form(name):
    vae = _vae(name)
    reason = closed_form_kl_reason(vae)
    if name in CLOSED_FORM:
        assert reason is None
        return
    assert f"no closed-form KL for prior {name!r}" in reason and "\n" not in reason
    mu = torch.zeros(2, 3)
    with pytest.raises(NoClosedFormError, match="use a Monte Carlo estimator: trace, tmf"):
        closed_form_kl(vae, mu, mu)


@pytest.mark.parametrize(
    "name, options, needle",
    [
        ("mog", {"components": 0}, "prior.components must be >= 1, got 0"),
        ("mog", {"components": 2.5}, "prior.components must be an integer, got 2.5"),
        ("laplace", {"scale": -1.0}, "prior.scale must be > 0, got -1.0"),
        ("student_t", {"nu": 3.0}, "unknown option 'nu' for prior 'student_t'; allowed: df, scale"),
        ("standard_normal", {"scale": 2.0}, "unknown option 'scale' for prior 'standard_normal'; allowed: none"),
    ],
)
def test_bad_prior_options_are_one_clear_error(name, options, needle):
    with pytest.raises(ValueError) as err:
        build_prior(name, 3, **options)
    assert needle in str(err.value)


def test_two_vaes_do_not_alias_in_pyros_global_param_store():
    """The README's trap: pyro.module keys the global store by name, so two VAEs registered under one
    name would share (silently overwrite) each other's parameters. Each VAE has its own prefix."""
    a, b = _vae("standard_normal"), _vae("standard_normal")
    pyro.clear_param_store()
    names = []
    for vae in (a, b):
        with poutine.trace(param_only=True) as tr:
            vae.guide(torch.zeros(2, 784))
            vae.model(torch.zeros(2, 784))
        names.append(set(tr.trace.nodes))
        assert {id(pyro.param(n).unconstrained()) for n in tr.trace.nodes} == {id(p) for p in vae.parameters()}
    assert names[0] and not names[0] & names[1]
