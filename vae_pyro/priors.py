"""Priors p(z), by name. Each is an ``nn.Module`` (so a learnable prior's parameters train with the
rest) whose ``dist(batch_shape)`` is a Pyro distribution with event shape ``(z_dim,)``."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from .registry import Registry

PRIORS: Registry[type["Prior"]] = Registry("prior")
register_prior = PRIORS.register


class Prior(nn.Module):
    name = "prior"

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        # A buffer, so the prior's tensors follow the model's device and dtype.
        self.register_buffer("_anchor", torch.zeros(()))

    def dist(self, batch_shape: torch.Size | tuple = ()) -> dist.TorchDistribution:
        raise NotImplementedError


@register_prior("standard_normal")
class StandardNormal(Prior):
    """p(z) = N(0, I), the prior of Kingma & Welling (2013)."""

    def dist(self, batch_shape=()):
        zeros = self._anchor.new_zeros(tuple(batch_shape) + (self.z_dim,))
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)


def build_prior(name: str, z_dim: int, **options) -> Prior:
    return PRIORS[name](z_dim, **options)
