"""Likelihoods p(x|z), by name. Each turns the decoder's output into a Pyro distribution with event
shape ``(x_dim,)`` and says what data it takes, so bad data is caught before Pyro sees it."""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .data import check_binary
from .registry import Registry

LIKELIHOODS: Registry[type["Likelihood"]] = Registry("likelihood")
register_likelihood = LIKELIHOODS.register


class Likelihood(nn.Module):
    name = "likelihood"
    #: what the data pipeline must hand this likelihood ("binary", "unit_interval", ...)
    data_kind = "binary"
    #: unconstrained decoder outputs per pixel
    out_per_pixel = 1

    def dist(self, decoder_out: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def check_data(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def log_prob(self, decoder_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Closed-form log p(x|z) summed over pixels, written out by hand (not through Pyro)."""
        raise NotImplementedError


@register_likelihood("bernoulli")
class BernoulliLikelihood(Likelihood):
    """Binary pixels, x ~ Bernoulli(sigmoid(logits)). Logits, not probabilities, so that
    log p(x|z) = -BCE never takes log(0)."""

    data_kind = "binary"

    def dist(self, logits):
        return dist.Bernoulli(logits=logits).to_event(1)

    def check_data(self, x):
        check_binary(x, "data for the Bernoulli likelihood")

    def log_prob(self, logits, x):
        # -BCE(sigmoid(logits), x), summed over pixels: x*log(p) + (1-x)*log(1-p), computed stably.
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def build_likelihood(name: str, **options) -> Likelihood:
    return LIKELIHOODS[name](**options)
