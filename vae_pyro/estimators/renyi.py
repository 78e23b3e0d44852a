r"""The Renyi bound L_alpha,k of Li & Turner (2016) at alpha = 1/2, by ``pyro.infer.RenyiELBO``.

For k samples z_j ~ q(z|x) and weights w_j = p(x, z_j) / q(z_j|x), Li & Turner's variational Renyi
bound with alpha in [0, 1) is

    L_alpha,k(x) = E[ 1/(1 - alpha) log (1/k) sum_j w_j^(1 - alpha) ]  <=  log p(x).

For every draw, 1/(1 - alpha) log mean_j w_j^(1 - alpha) is the log of the power mean of order
p = 1 - alpha of the weights, which is non-decreasing in p (the power-mean inequality): so per draw

    mean_j log w_j  <=  L_1/2 draw  <=  log mean_j w_j                (p -> 0, p = 1/2, p = 1),

the k-sample ELBO average, the Renyi bound and IWAE_k; with k = 1 all three are log w. RenyiELBO
computes it as its docstring says (``renyi_elbo.py``: log_weights = (1 - alpha) * elbo_particles,
logsumexp over particles minus log k, divided by 1 - alpha), one bound per example (the data plate is
shared by every site, see :mod:`.iwae`). Its gradient is that of the same bound, the reparameterised
sum_j v_j grad log w_j with v_j = w_j^(1-alpha) / sum_l w_l^(1-alpha).

``bound = "renyi"``: a bound of its own, not the ELBO (it is not judged against the ELBO) and not
IWAE_k. Valid where IWAE_k is (beta = 1: poutine.scale would scale log p(z) - log q(z) inside w).
"""

from __future__ import annotations

from .base import RENYI_BOUND, register_estimator
from .iwae import DifferentiableRenyiELBO, iwae_validity
from .pyro_elbos import PyroEstimator

ALPHA = 0.5


@register_estimator("renyi")
class RenyiHalfEstimator(PyroEstimator):
    description = "pyro.infer.RenyiELBO(alpha=0.5): the Renyi bound L_1/2,k (Li & Turner 2016), k = particles"
    elbo_class = DifferentiableRenyiELBO
    bound = RENYI_BOUND
    same_noise_skip = "estimates the Renyi bound L_1/2,k, not the ELBO; checked at shared noise by its tests"
    alpha = ALPHA

    def make_elbo(self):
        return self.elbo_class(
            alpha=self.alpha,
            num_particles=self.num_particles,
            vectorize_particles=self.num_particles > 1,
            max_plate_nesting=1,
        )

    def validity(self, vae):
        return iwae_validity(vae)
