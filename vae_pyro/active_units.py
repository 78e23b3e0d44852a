r"""Active units: how many latent dimensions the model uses (Burda, Grosse & Salakhutdinov 2015, §5.2).

A latent dimension d is *active* when its posterior mean moves with the data:

    A_d = Cov_x( E_{q(z|x)}[z_d] ) > 0.01,

the variance over the data set x of the encoder's mean of z_d. A dimension whose posterior mean is the
same for every digit carries no information about x (its posterior is collapsed onto the prior); Burda
et al. count the active ones to show that IWAE training keeps more dimensions in use than VAE training.
For our Gaussian encoder q(z|x) = N(mu(x), diag(sigma(x)^2)), E_q[z_d | x] = mu_d(x) exactly, so no
sampling is needed. The covariance is the population one (divide by N), over all of ``x``.
"""

from __future__ import annotations

import torch

#: Burda et al.'s threshold on Cov_x(E_q[z_d | x])
ACTIVITY_THRESHOLD = 1e-2


def posterior_mean_variance(means: torch.Tensor) -> torch.Tensor:
    """Cov_x(E_q[z_d | x]) for every d, from the posterior means ``means`` of shape (N, z_dim):
    (1/N) sum_n (m_nd - mean_n m_nd)^2."""
    if means.ndim != 2 or len(means) < 1:
        raise ValueError(f"means must have shape (N, z_dim) with N >= 1, got {tuple(means.shape)}")
    return means.double().var(dim=0, unbiased=False)


@torch.no_grad()
def encoder_means(vae, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """E_q[z | x] = mu(x) for every row of ``x``, shape (N, z_dim)."""
    return torch.cat([vae.encoder(x[i : i + batch_size])[0] for i in range(0, len(x), batch_size)])


def active_units(vae, x: torch.Tensor, threshold: float = ACTIVITY_THRESHOLD) -> dict:
    """``{"active": A, "z_dim": D, "threshold": t, "variances": [...]}``: A = #{d : Cov_x(mu_d(x)) > t}
    over the digits ``x`` (Burda et al. 2015, §5.2, t = 0.01)."""
    variances = posterior_mean_variance(encoder_means(vae, x))
    return {
        "active": int((variances > threshold).sum()),
        "z_dim": int(len(variances)),
        "threshold": threshold,
        "variances": variances.tolist(),
    }
