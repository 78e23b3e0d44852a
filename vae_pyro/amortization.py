r"""The amortization gap: how much of a test NLL estimate is the encoder's, not the model's.

IWAE_k with proposal q is a stochastic lower bound on log p(x) for *any* q (Burda et al. 2015, Thm 1:
E[log (1/k) sum_j p(x, z_j) / q(z_j | x)] <= log p(x), z_j ~ q), so q may be chosen per digit. The
VAE's amortized encoder q(z|x) is fitted to the training digits; on the few thousand embedded digits
it overfits them, and on test digits it is a worse proposal than it could be. Cremer, Li & Duvenaud
2018 (Inference Suboptimality in Variational Autoencoders) call the difference the *amortization gap*
and measure the model's NLL with a proposal optimised for the test digits.

:func:`refine_proposal` does that: a copy of the encoder, trained on the test digits to maximise
their IWAE_k bound, with the model p(x|z) p(z) (decoder, prior, and a VampPrior's use of the VAE's own
encoder) held fixed. The estimate with that proposal is a bound on the *same* model's log p(x),
drawn with fresh noise; the VAE is not changed.
"""

from __future__ import annotations

import copy

import torch

from .estimators.iwae import log_mean_exp, log_weights


def refine_proposal(
    vae, x: torch.Tensor, steps: int, k: int = 5, batch_size: int = 100, lr: float = 3e-4, seed: int = 0
) -> torch.nn.Module:
    """A copy of ``vae.encoder`` after ``steps`` Adam steps on -IWAE_k of random batches of ``x``
    (only the copy's weights move; the gradient is taken with respect to them alone). Seeded by
    ``seed`` inside ``fork_rng``: the caller's random stream is untouched."""
    proposal = copy.deepcopy(vae.encoder)
    params = list(proposal.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    devices = [x.device] if x.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for _ in range(steps):
            xb = x[torch.randint(len(x), (min(batch_size, len(x)),), device=x.device)]
            loss = -log_mean_exp(log_weights(vae, xb, k, proposal=proposal), dim=0).mean()
            optimizer.zero_grad()
            for p, g in zip(params, torch.autograd.grad(loss, params)):
                p.grad = g
            optimizer.step()
    return proposal.requires_grad_(False)
