r"""Test-set log-likelihood by IWAE_k with many samples (Burda, Grosse & Salakhutdinov 2015, section 5:
k = 5,000): the loop around the bound of :mod:`vae_pyro.estimators.iwae`, with its progress bar and its
split across processes. The estimators compute; this module (above them) batches, chunks, shows
progress and shards.

For each test digit and every k in ``ks``, from one draw of max(ks) samples z_j ~ q(z|x):

    log p(x) >= IWAE_k(x) = log (1/k) sum_{j<=k} p(x, z_j) / q(z_j|x)     (in expectation)

so -mean IWAE_k is an upper bound on the test NLL, tightening as k grows.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from . import distributed
from .estimators.iwae import BURDA_K, NLL_CHUNK, log_mean_exp, log_weights


@torch.no_grad()  # an evaluation: keeping the graph of k samples per digit would cost gigabytes
def iwae_bounds_at(
    vae,
    x: torch.Tensor,
    ks,
    chunk: int = NLL_CHUNK,
    batch_size: int = 100,
    progress: bool = False,
    desc: str = "log p(x), IWAE",
    proposal=None,
) -> dict[int, torch.Tensor]:
    """``{k: IWAE_k estimate of log p(x_i) per example}`` (nats, shape (N,)) for every k in ``ks``, all
    from one draw of max(ks) importance samples per digit: IWAE_k uses the first k of them (each is an
    unbiased draw of IWAE_k; they share samples, so a curve over k is smooth).

    Memory: the decoder's output for ``batch_size * chunk`` samples at a time (100 * 500 * 784 floats =
    157 MB for MNIST); a batch's noise is drawn at once (k * batch_size * noise_dim floats) and its log-weights
    are reduced with one logsumexp, so at one seed the result does not depend on the chunking. Batch b is
    seeded by its index (:func:`vae_pyro.distributed.map_seeded_batches`), so the estimates do not depend
    on how many processes computed them. ``proposal``: draw z from this encoder instead of the model's
    (:mod:`vae_pyro.amortization`)."""
    k_max = max(ks)
    if k_max < 1 or min(ks) < 1 or chunk < 1 or batch_size < 1:
        raise ValueError(f"k, chunk and batch_size must be >= 1, got {', '.join(map(str, ks))}, {chunk}, {batch_size}")
    chunks = -(-k_max // chunk)
    bar = tqdm(total=-(-len(x) // batch_size) * chunks, desc=desc, unit="chunk", disable=not progress, leave=False)

    def one_batch(xb):
        eps = torch.randn((k_max, len(xb), vae.guide_family.noise_dim), dtype=vae.dtype, device=xb.device)
        parts = []
        for j in range(0, k_max, chunk):
            parts.append(log_weights(vae, xb, min(chunk, k_max - j), eps[j : j + chunk], proposal=proposal))
            bar.update(distributed.world_size())  # all processes advance alike
        lw = torch.cat(parts)
        return [log_mean_exp(lw[:k], dim=0) for k in ks]

    with bar:
        return dict(zip(ks, distributed.map_seeded_batches(x, batch_size, one_batch, len(ks))))


def iwae_log_likelihood(
    vae,
    x: torch.Tensor,
    k: int = BURDA_K,
    chunk: int = NLL_CHUNK,
    batch_size: int = 100,
    progress: bool = True,
    desc: str = "log p(x), IWAE",
) -> torch.Tensor:
    """One IWAE_k estimate of log p(x_i) per example (nats), k = 5,000 as in Burda et al. 2015: the
    largest-k case of :func:`iwae_bounds_at` (the same draws at the same seed)."""
    return iwae_bounds_at(vae, x, [k], chunk=chunk, batch_size=batch_size, progress=progress, desc=desc)[k]
