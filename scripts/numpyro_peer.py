"""The peer: the same VAE in NumPyro, its ``SVI.update`` jitted by XLA, for ``scripts/benchmark.py``.

Written the way ``numpyro/examples/vae.py`` writes it (``stax`` networks registered by
``numpyro.module``, ``SVI`` with ``optim.Adam``, the step ``jax.jit(svi.update)``), with our default
architecture so that the arithmetic is the same: 784-400-20, ReLU, q(z|x) = N(mu, exp(logvar / 2)),
p(z) = N(0, I), p(x|z) Bernoulli with logits, Adam(1e-3), one z per example. Optional: vae-pyro never
needs it (``pip install -e .[peers]``); :data:`AVAILABLE` says whether it is installed and, if not, why.

Import this module before anything imports JAX: it pins XLA's CPU backend to one thread unless
``XLA_FLAGS`` is already set, as the benchmark pins torch (one thread per process).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
# on a GPU, JAX would otherwise reserve 75% of its memory at start, beside torch's rows
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

try:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from jax.example_libraries import stax
    from numpyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

    AVAILABLE, MISSING = True, None
except ImportError as err:  # the optional extra is not installed: the benchmark says so in its row
    AVAILABLE, MISSING = False, f"numpyro/jax not installed ({err}); pip install -e .[peers]"

#: benchmark row -> NumPyro ELBO class name
ROWS = {"numpyro_trace": "Trace_ELBO", "numpyro_tmf": "TraceMeanField_ELBO"}
HIDDEN, Z_DIM = 400, 20


def encoder(hidden: int, z_dim: int):
    """x -> (mu, sigma): one ReLU layer, then the two heads (``examples/vae.py``'s shape)."""
    return stax.serial(
        stax.Dense(hidden),
        stax.Relu,
        stax.Dense(2 * z_dim),
        stax.FanOut(2),
        stax.parallel(stax.Identity, stax.Identity),
    )


def decoder(hidden: int, out_dim: int):
    """z -> Bernoulli logits."""
    return stax.serial(stax.Dense(hidden), stax.Relu, stax.Dense(out_dim))


def model(batch, hidden: int = HIDDEN, z_dim: int = Z_DIM):
    batch_dim, out_dim = jnp.shape(batch)
    decode = numpyro.module("decoder", decoder(hidden, out_dim), (batch_dim, z_dim))
    with numpyro.plate("batch", batch_dim):
        z = numpyro.sample("z", dist.Normal(0, 1).expand([z_dim]).to_event(1))
        numpyro.sample("obs", dist.Bernoulli(logits=decode(z)).to_event(1), obs=batch)


def guide(batch, hidden: int = HIDDEN, z_dim: int = Z_DIM):
    batch_dim, out_dim = jnp.shape(batch)
    encode = numpyro.module("encoder", encoder(hidden, z_dim), (batch_dim, out_dim))
    heads, _ = encode(batch)
    mu, logvar = heads[:, :z_dim], heads[:, z_dim:]
    with numpyro.plate("batch", batch_dim):
        numpyro.sample("z", dist.Normal(mu, jnp.exp(0.5 * logvar)).to_event(1))


class NumPyroStep:
    """``step(x)``: one jitted ``svi.update`` on a torch batch (shared by DLPack, not copied), blocking
    until it is done so that wall time is work; ``compile_s``: the first call's seconds."""

    def __init__(self, row: str, example_batch, lr: float = 1e-3, seed: int = 0):
        elbo = {"Trace_ELBO": Trace_ELBO, "TraceMeanField_ELBO": TraceMeanField_ELBO}[ROWS[row]]()
        self.svi = SVI(model, guide, numpyro.optim.Adam(lr), elbo)
        self.state = self.svi.init(jax.random.PRNGKey(seed), self._to_jax(example_batch))
        self.update = jax.jit(self.svi.update)
        self.compile_s: float | None = None

    @staticmethod
    def _to_jax(x):
        """The torch batch as a JAX array on the same device, by DLPack (no copy)."""
        return jnp.from_dlpack(x.detach().contiguous())

    def __call__(self, x) -> None:
        start = time.perf_counter() if self.compile_s is None else None
        self.state, loss = self.update(self.state, self._to_jax(x))
        loss.block_until_ready()
        if start is not None:
            self.compile_s = time.perf_counter() - start
