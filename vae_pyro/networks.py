"""The encoder and decoder: plain MLPs, default 784-400-20 with ReLU as in PyTorch's ``examples/vae/main.py``.

``activation`` picks the nonlinearity between layers (:data:`ACTIVATIONS`): ``relu`` (the default) or
``tanh``, the one Burda, Grosse & Salakhutdinov 2015 use (one stochastic layer: 784-200-200-50, two
deterministic tanh layers of 200 units on each side).

The encoder returns ``(mu, logvar)`` exactly like the classic hand-written VAE, so the same module feeds
both the hand-derived loss and the Pyro guide (which uses ``sigma = exp(logvar / 2)``). The decoder
returns unconstrained outputs (logits for Bernoulli pixels); the likelihood decides what they mean.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


#: the nonlinearities a network may use, by name (a spec's ``networks.activation``)
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def activation_layer(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(sizes: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """Linear layers with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation_layer(activation))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """q(z|x) = N(mu(x), diag(exp(logvar(x))))."""

    def __init__(self, x_dim: int = 784, hidden: Sequence[int] = (400,), z_dim: int = 20,
                 input_scale: float = 1.0, activation: str = "relu"):
        super().__init__()
        self.z_dim = z_dim
        #: multiplies the data before the first layer: raw 0-255 counts (Binomial likelihood) enter
        #: as x/255, on the scale the default initialisation expects (fed raw, the first layer's
        #: outputs are ~255x too large and exp(logvar) overflows)
        self.input_scale = input_scale
        self.body = mlp([x_dim, *hidden], activation)
        if hidden:
            self.body.append(activation_layer(activation))
        self.head = nn.Linear(hidden[-1] if hidden else x_dim, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_scaled(x * self.input_scale if self.input_scale != 1.0 else x)

    def encode_scaled(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of an input already on the [0, 1] scale (the VampPrior's pseudo-inputs)."""
        mu, logvar = self.head(self.body(u)).chunk(2, dim=-1)
        return mu, logvar


class Decoder(nn.Module):
    """z -> ``out_per_pixel`` unconstrained numbers per pixel (Bernoulli: one logit)."""

    def __init__(self, x_dim: int = 784, hidden: Sequence[int] = (400,), z_dim: int = 20,
                 out_per_pixel: int = 1, activation: str = "relu"):
        super().__init__()
        self.x_dim, self.out_per_pixel = x_dim, out_per_pixel
        self.net = mlp([z_dim, *hidden, x_dim * out_per_pixel], activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        if self.out_per_pixel == 1:
            return out
        return out.unflatten(-1, (self.out_per_pixel, self.x_dim))
