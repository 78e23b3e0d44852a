r"""Score-function (REINFORCE) gradients of the same ELBO: the guide's z treated as non-reparameterised.

With z ~ q_phi(z|x) drawn without a path to phi, the ELBO's gradient is the score-function identity
(Williams 1992; Glynn 1990; Ranganath, Gerrish & Blei 2014):

    grad_phi E_q[f_phi(z)] = E_q[ f(z) grad_phi log q_phi(z|x) + grad_phi f_phi(z) ],
    f(z) = log p(x, z) - log q_phi(z|x),

whose second term has expectation -E_q[grad_phi log q] = 0. Pyro builds it as a surrogate whose value
is irrelevant and whose gradient is that estimate: for a non-reparameterised site ``score_parts`` gives
``score_function = log q`` and ``entropy_term = 0``, and the surrogate adds ``log q * cost.detach()``.
The decoder's gradient is the usual one, grad_theta log p(x|z) at the sampled z.

=========================  ===================================================================
``score_function``         hand-written, no Pyro: z = mu + sigma * eps drawn and detached, cost
                           f_i = log p(x_i, z_i) - log q(z_i|x_i) of the example's own z, surrogate
                           log p(x_i, z_i) + f_i.detach() log q(z_i|x_i) (the zero-mean
                           -grad log q of the second term dropped, as Pyro drops it): plain REINFORCE.
``tracegraph``             ``TraceGraph_ELBO`` under :class:`NonReparam`: the cost of z_i is what
                           lies downstream of it (Schulman, Heess, Weber & Abbeel 2015). Here that
                           is f_i, the example's own terms, so its gradient equals ``score_function``'s
                           at the same noise (an exact test of Pyro's signs, cf. pyro #1982); with
                           several latent sites the two differ. (``Trace_ELBO`` under
                           :class:`NonReparam` is the same number too: since pyro 0.3 it sums its
                           cost to each site's plates, ``_compute_log_r(...).sum_to(...)`` in
                           ``trace_elbo.py``, so it is Rao-Blackwellised over the data plate as well.)
``tracegraph_baseline``    the same with a baseline b_i subtracted from the cost (Mnih & Gregor
                           2014): b_i = f at z = mu(x_i), the cost at the guide's mean. b_i does not
                           depend on the sampled z_i, so E[b_i grad log q(z_i)] = 0 and the estimate
                           stays unbiased; it removes the cost's offset (~ -100 nats/example).
=========================  ===================================================================

The value is the single-sample ELBO, as ``trace``'s. **Validity**: the ELBO itself (beta = 1) only:
``poutine.scale(beta)`` on the z sites scales each site's ``score_parts`` -- the score-function term
included (``pyro/poutine/trace_struct.py``: ``value.scale_and_mask(site["scale"], ...)``) -- so with
beta != 1 the surrogate's gradient is beta E[grad log q * cost], not the beta-ELBO's gradient.
"""

from __future__ import annotations

import torch
from pyro.infer import TraceGraph_ELBO
from pyro.poutine.messenger import Messenger

from .base import INVALID, MONTE_CARLO_KL, Estimator, Validity, register_estimator
from .iwae import log_weights
from .pyro_elbos import PyroEstimator


def detach_sampling(fn):
    """``fn`` drawing without a reparameterised path (``has_rsample_(False)`` on the innermost
    distribution: torch's ``Independent`` has no setter, it reads ``base_dist.has_rsample``)."""
    inner = fn
    while isinstance(inner, torch.distributions.Independent):
        inner = inner.base_dist
    inner.has_rsample_(False)
    return fn


class NonReparam(Messenger):
    """Every latent sample site handled inside it is drawn non-reparameterised; with ``baseline`` set
    (a tensor of the site's batch shape, or None), it is the site's ``baseline_value`` for
    ``TraceGraph_ELBO`` (``infer={"baseline": {"baseline_value": b}}``)."""

    def __init__(self):
        super().__init__()
        self.baseline: torch.Tensor | None = None

    def _pyro_sample(self, msg):
        if msg["is_observed"]:
            return
        detach_sampling(msg["fn"])
        if self.baseline is not None:
            msg["infer"] = {**msg["infer"], "baseline": {"baseline_value": self.baseline}}


class DifferentiableTraceGraph_ELBO(TraceGraph_ELBO):
    """``TraceGraph_ELBO`` plus ``differentiable_loss`` (pyro 1.9.2 has only ``loss`` and
    ``loss_and_grads``): the value -ELBO and the gradient of Pyro's own surrogate, the one
    ``loss_and_grads`` back-propagates (baseline losses included)."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        elbo, surrogate_loss = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        return -elbo.detach() + (surrogate_loss - surrogate_loss.detach())


def score_function_validity(vae) -> Validity:
    if float(vae.kl_weight) != 1.0:
        return Validity(
            INVALID,
            f"poutine.scale(beta) scales the guide's score-function term too, so the "
            f"surrogate is not the beta-ELBO's; beta = {vae.kl_weight:g} != 1",
        )
    return Validity(
        MONTE_CARLO_KL,
        "log p(x, z) - log q(z|x) at z drawn without reparameterisation; the "
        "encoder's gradient by the score function, for any prior",
    )


class PyroScoreFunctionEstimator(PyroEstimator):
    """A Pyro ELBO run on ``vae.model`` and the guide under :class:`NonReparam`."""

    same_noise_skip = (
        "a score-function gradient differs from the reparameterised one draw by draw (equal "
        "in expectation); checked statistically, and against score_function at shared noise"
    )
    elbo_class = DifferentiableTraceGraph_ELBO
    use_baseline = False

    def elbo_for(self, vae, x):
        per_vae = self._elbos.setdefault(vae, {})
        if None not in per_vae:
            handler = NonReparam()
            per_vae[None] = (self.make_elbo(), vae.model, handler(vae.guide), handler)
        return per_vae[None]

    def differentiable_loss(self, vae, x):
        elbo, model, guide, handler = self.elbo_for(vae, x)
        handler.baseline = self.baseline(vae, x) if self.use_baseline else None
        return elbo.differentiable_loss(model, guide, x, vae.kl_weight)

    def loss(self, vae, x):
        elbo, model, guide, handler = self.elbo_for(vae, x)
        handler.baseline = None
        with torch.no_grad():
            return float(elbo.loss(model, guide, x, vae.kl_weight))

    def baseline(self, vae, x) -> torch.Tensor:
        """b_i = log p(x_i, mu_i) - log q(mu_i|x_i), the cost at the guide's mean: free of the sampled z."""
        with torch.no_grad():  # eps = 0: z at the guide's centre (mu; a flow's image of mu)
            q = vae.posterior(x)
            zero = torch.zeros(1, *q.mu.shape[:-1], q.noise_dim, dtype=q.mu.dtype, device=q.mu.device)
            b = log_weights(vae, x, 1, zero)[0]
        return b.expand((self.num_particles, -1)) if self.num_particles > 1 else b

    def same_noise_elbo(self, vae):
        return None

    def validity(self, vae):
        return score_function_validity(vae)


def score_function_neg_elbo(
    vae, x: torch.Tensor, num_particles: int = 1, eps: torch.Tensor | None = None
) -> torch.Tensor:
    """-sum_i ELBO(x_i) with the score-function gradient of the module docstring (differentiable)."""
    q = vae.posterior(x)  # the guide family's q(z|x): its own sampler and hand-written log-density
    z = q.rsample(num_particles, q.draw_noise(num_particles, eps)).detach()
    log_p = vae.likelihood.log_prob(vae.decoder(z), x) + vae.prior.dist(z.shape[:-1]).log_prob(z)
    log_q = q.log_prob(z)
    cost = (log_p - log_q).detach()
    surrogate = log_p + cost * log_q
    return -(cost + surrogate - surrogate.detach()).mean(0).sum()


@register_estimator("score_function")
class ScoreFunctionEstimator(Estimator):
    description = "plain REINFORCE of the ELBO, hand-written: z detached, cost * log q (no baseline)"
    same_noise_skip = PyroScoreFunctionEstimator.same_noise_skip

    def differentiable_loss(self, vae, x):
        return score_function_neg_elbo(vae, x, self.num_particles)

    def validity(self, vae):
        return score_function_validity(vae)


@register_estimator("tracegraph")
class TraceGraphEstimator(PyroScoreFunctionEstimator):
    description = "TraceGraph_ELBO with z non-reparameterised: Rao-Blackwellised score function"


@register_estimator("tracegraph_baseline")
class TraceGraphBaselineEstimator(PyroScoreFunctionEstimator):
    description = "TraceGraph_ELBO, z non-reparameterised, baseline: the cost at the guide's mean"
    use_baseline = True
