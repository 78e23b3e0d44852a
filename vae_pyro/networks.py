"""Networks, by name: each is one registered class that builds a VAE's encoder and decoder for images of
a given shape (channels, height, width; the dataset's, :mod:`vae_pyro.datasets`).

============  ==============================================================================================
``mlp``       plain MLPs, default 784-400-20 with ReLU as in PyTorch's ``examples/vae/main.py``; any shape.
``conv``      two stride-2 convolutions down (3x3, 32 then 64 channels), the ``hidden`` dense layers, and
              two stride-2 transposed convolutions up, in the style of TensorFlow Probability's VAE
              example (``tensorflow_probability/examples/vae.py``) and TensorFlow's convolutional VAE
              tutorial; height and width must be multiples of 4 (28x28 -> 14x14 -> 7x7; 8x8 -> 4x4 -> 2x2).
============  ==============================================================================================

``activation`` picks the nonlinearity between layers (:data:`ACTIVATIONS`): ``relu`` (the default) or
``tanh``, the one Burda, Grosse & Salakhutdinov 2015 use (one stochastic layer: 784-200-200-50, two
deterministic tanh layers of 200 units on each side).

Images travel flat, ``(..., C*H*W)``, as the likelihoods take them. The encoder returns ``(mu, logvar)``
exactly like the classic hand-written VAE, so the same module feeds both the hand-derived loss and the
Pyro guide (which uses ``sigma = exp(logvar / 2)``); ``encode_scaled`` encodes an input already on the
[0, 1] scale (the VampPrior's pseudo-inputs). The decoder returns unconstrained outputs (logits for
Bernoulli pixels), ``(..., x_dim)``, or ``(..., out_per_pixel, x_dim)`` when the likelihood takes more
than one number per pixel; the likelihood decides what they mean.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .errors import NetworkError
from .registry import Registry

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


class Network:
    """Builds the encoder (:meth:`encoder`, called first) and the decoder (:meth:`decoder`) of a VAE for
    images of ``image_shape`` (C, H, W) with ``z_dim`` latent dimensions; ``hidden`` and ``activation``
    are the spec's ``[networks]``. A subclass that cannot handle a shape says so in
    :meth:`check_image_shape`, before anything is built."""

    name = "network"
    summary = ""

    def __init__(
        self, image_shape: Sequence[int], z_dim: int, hidden: Sequence[int] = (400,), activation: str = "relu"
    ):
        self.image_shape, self.z_dim = tuple(image_shape), z_dim
        self.hidden, self.activation = tuple(hidden), activation
        self.x_dim = math.prod(self.image_shape)
        self.check_image_shape(self.image_shape)

    @classmethod
    def check_image_shape(cls, image_shape: tuple[int, ...]) -> None:
        """Raise :class:`NetworkError` for images this network cannot take (default: it takes any)."""

    def encoder(self, input_scale: float) -> nn.Module:
        """x (flat) -> (mu, logvar); the data are multiplied by ``input_scale`` first."""
        raise NotImplementedError

    def decoder(self, out_per_pixel: int) -> nn.Module:
        """z -> ``out_per_pixel`` unconstrained numbers per pixel."""
        raise NotImplementedError

    def parameter_count(self, out_per_pixel: int) -> int:
        """Parameters of encoder and decoder, counted on the meta device (nothing allocated, no
        random numbers drawn), for the memory estimate."""
        with torch.device("meta"):
            modules = (self.encoder(1.0), self.decoder(out_per_pixel))
        return sum(p.numel() for m in modules for p in m.parameters())

    def activation_floats(self, out_per_pixel: int) -> int:
        """Floats one example holds in a forward pass (the hidden layers both ways, the decoder's
        output, mu, logvar, eps and z), for the memory estimate."""
        return 2 * sum(self.hidden) + self.x_dim * out_per_pixel + 4 * self.z_dim


#: the network registry: name -> :class:`Network` subclass
NETWORKS: Registry[type[Network]] = Registry("network")
register_network = NETWORKS.register


class GaussianEncoder(nn.Module):
    """q(z|x) = N(mu(x), diag(exp(logvar(x)))): ``encode_scaled`` on ``x * input_scale``."""

    def __init__(self, z_dim: int, input_scale: float = 1.0):
        super().__init__()
        self.z_dim = z_dim
        #: multiplies the data before the first layer: raw counts (Binomial likelihood) enter as
        #: x / n, on the scale the default initialisation expects (fed raw 0-255 MNIST counts, the first
        #: layer's outputs are ~255x too large and exp(logvar) overflows)
        self.input_scale = input_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_scaled(x * self.input_scale if self.input_scale != 1.0 else x)

    def encode_scaled(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of an input already on the [0, 1] scale (the VampPrior's pseudo-inputs)."""
        raise NotImplementedError


def per_pixel(out: torch.Tensor, out_per_pixel: int, x_dim: int) -> torch.Tensor:
    """A decoder's flat output ``(..., out_per_pixel * x_dim)`` as the likelihood takes it."""
    return out if out_per_pixel == 1 else out.unflatten(-1, (out_per_pixel, x_dim))


# ----------------------------------------------------------------------------------------------
# mlp


class Encoder(GaussianEncoder):
    """The MLP encoder: x -> hidden layers -> (mu, logvar)."""

    def __init__(
        self,
        x_dim: int,
        hidden: Sequence[int] = (400,),
        z_dim: int = 20,
        input_scale: float = 1.0,
        activation: str = "relu",
    ):
        super().__init__(z_dim, input_scale)
        self.body = mlp([x_dim, *hidden], activation)
        if hidden:
            self.body.append(activation_layer(activation))
        self.head = nn.Linear(hidden[-1] if hidden else x_dim, 2 * z_dim)

    def encode_scaled(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(u)).chunk(2, dim=-1)
        return mu, logvar


class Decoder(nn.Module):
    """The MLP decoder: z -> hidden layers -> ``out_per_pixel`` numbers per pixel (Bernoulli: one logit)."""

    def __init__(
        self,
        x_dim: int,
        hidden: Sequence[int] = (400,),
        z_dim: int = 20,
        out_per_pixel: int = 1,
        activation: str = "relu",
    ):
        super().__init__()
        self.x_dim, self.out_per_pixel = x_dim, out_per_pixel
        self.net = mlp([z_dim, *hidden, x_dim * out_per_pixel], activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return per_pixel(self.net(z), self.out_per_pixel, self.x_dim)


@register_network("mlp")
class MLP(Network):
    """x_dim - hidden... - 2 z_dim and z_dim - hidden... - x_dim * outputs, fully connected."""

    summary = "fully connected layers of the hidden sizes, each way (any image shape)"

    def encoder(self, input_scale):
        return Encoder(self.x_dim, self.hidden, self.z_dim, input_scale, self.activation)

    def decoder(self, out_per_pixel):
        return Decoder(self.x_dim, self.hidden, self.z_dim, out_per_pixel, self.activation)


# ----------------------------------------------------------------------------------------------
# conv


#: channels after each stride-2 convolution of the ``conv`` network (and before each transposed one, reversed)
CONV_CHANNELS = (32, 64)


def _flat_batch(t: torch.Tensor, event_dims: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``t`` with its leading (batch, particle...) dimensions flattened into one, and those dimensions."""
    lead = t.shape[: t.dim() - event_dims]
    return t.reshape(-1, *t.shape[t.dim() - event_dims :]), tuple(lead)


class ConvEncoder(GaussianEncoder):
    """(C, H, W) -> stride-2 convolutions -> flatten -> hidden layers -> (mu, logvar)."""

    def __init__(self, image_shape, hidden, z_dim, input_scale, activation, channels=CONV_CHANNELS):
        super().__init__(z_dim, input_scale)
        self.image_shape = tuple(image_shape)
        layers, c_in = [], self.image_shape[0]
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), activation_layer(activation)]
            c_in = c_out
        self.convs = nn.Sequential(*layers, nn.Flatten())
        features = c_in * math.prod(s // 2 ** len(channels) for s in self.image_shape[1:])
        self.body = mlp([features, *hidden], activation)
        if hidden:
            self.body.append(activation_layer(activation))
        self.head = nn.Linear(hidden[-1] if hidden else features, 2 * z_dim)

    def encode_scaled(self, u):
        images, lead = _flat_batch(u, 1)
        out = self.head(self.body(self.convs(images.unflatten(-1, self.image_shape))))
        mu, logvar = out.reshape(*lead, -1).chunk(2, dim=-1)
        return mu, logvar


class ConvDecoder(nn.Module):
    """z -> hidden layers -> (channels, H / 4, W / 4) -> stride-2 transposed convolutions -> the
    ``out_per_pixel * C`` output maps at (H, W)."""

    def __init__(self, image_shape, hidden, z_dim, out_per_pixel, activation, channels=CONV_CHANNELS):
        super().__init__()
        self.image_shape, self.out_per_pixel = tuple(image_shape), out_per_pixel
        self.x_dim = math.prod(self.image_shape)
        c, h, w = self.image_shape
        start = (channels[-1], h // 2 ** len(channels), w // 2 ** len(channels))
        self.body = mlp([z_dim, *hidden, math.prod(start)], activation)
        self.body.append(activation_layer(activation))
        layers = [nn.Unflatten(-1, start)]
        ups = [*reversed(channels[:-1]), out_per_pixel * c]
        c_in = channels[-1]
        for i, c_out in enumerate(ups):
            layers.append(nn.ConvTranspose2d(c_in, c_out, kernel_size=3, stride=2, padding=1, output_padding=1))
            if i < len(ups) - 1:
                layers.append(activation_layer(activation))
            c_in = c_out
        self.ups = nn.Sequential(*layers)

    def forward(self, z):
        flat, lead = _flat_batch(z, 1)
        maps = self.ups(self.body(flat))  # (N, out_per_pixel * C, H, W)
        return per_pixel(maps.reshape(*lead, -1), self.out_per_pixel, self.x_dim)


@register_network("conv")
class Conv(Network):
    """Two stride-2 3x3 convolutions (32, 64 channels) and the ``hidden`` dense layers each way."""

    summary = "stride-2 convolutions down, transposed convolutions up (height and width multiples of 4)"

    @classmethod
    def check_image_shape(cls, image_shape):
        factor = 2 ** len(CONV_CHANNELS)
        if len(image_shape) != 3 or any(s % factor for s in image_shape[1:]):
            raise NetworkError(
                f"network 'conv' takes images (C, H, W) whose height and width are multiples of "
                f"{factor} (it halves them {len(CONV_CHANNELS)} times); got {tuple(image_shape)}"
            )

    def encoder(self, input_scale):
        return ConvEncoder(self.image_shape, self.hidden, self.z_dim, input_scale, self.activation)

    def decoder(self, out_per_pixel):
        return ConvDecoder(self.image_shape, self.hidden, self.z_dim, out_per_pixel, self.activation)

    def activation_floats(self, out_per_pixel):
        c, h, w = self.image_shape
        maps = sum(ch * (h // 2 ** (i + 1)) * (w // 2 ** (i + 1)) for i, ch in enumerate(CONV_CHANNELS))
        return super().activation_floats(out_per_pixel) + 2 * maps


def build_network(
    name: str, image_shape: Sequence[int], z_dim: int, hidden: Sequence[int] = (400,), activation: str = "relu"
) -> Network:
    """The registered network ``name`` for images of ``image_shape``."""
    return NETWORKS[name](image_shape, z_dim, hidden, activation)
