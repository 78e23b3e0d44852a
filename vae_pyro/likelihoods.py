r"""Likelihoods p(x|z), by name. Each is built for ``x_dim`` pixels with values 0..``max_value`` (both
the dataset's, :mod:`vae_pyro.datasets`), turns the decoder's output into a Pyro distribution with event
shape ``(x_dim,)``, writes its log-density out by hand (``log_prob``, the analytic loss's
reconstruction term, tested against torch's to float64 precision), and says what data it takes
(``data_kind``, one of :data:`vae_pyro.data.DATA_KINDS`), so bad data is caught before Pyro sees it.

========================  ==========================  ===================================  ===========
name                      data                        log p(x|z), per pixel                outputs/px
========================  ==========================  ===================================  ===========
``bernoulli``             binary {0, 1}               x l - softplus(l)                    1 (logit l)
``continuous_bernoulli``  grey levels [0, 1]          x l - softplus(l) + log C(l)         1 (logit l)
``normal``                grey levels [0, 1]          log N(x; sigmoid(o), s^2), s fixed   1
``normal_learned``        grey levels [0, 1]          log N(x; sigmoid(o), s_j^2), s_j     1
                                                      learnt per pixel
``beta``                  clamped into (0, 1)         log Beta(x; a, b)                    2 (a, b)
``binomial``              counts 0..n                 log C(n, x) + x l - n softplus(l)    1 (logit l)
========================  ==========================  ===================================  ===========

The Binomial's n is the dataset's ``max_value`` (255 for MNIST, 16 for ``digits8x8``).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .data import check_binary, check_counts, check_open_unit_interval, check_unit_interval
from .registry import Option, Registry, resolve_options

LIKELIHOODS: Registry[type["Likelihood"]] = Registry("likelihood")
register_likelihood = LIKELIHOODS.register

LOG_2PI = math.log(2 * math.pi)


class Likelihood(nn.Module):
    name = "likelihood"
    #: what the data pipeline must hand this likelihood (a key of vae_pyro.data.DATA_KINDS)
    data_kind = "binary"
    #: unconstrained decoder outputs per pixel
    out_per_pixel = 1
    options: dict[str, Option] = {}
    summary = ""
    #: what the encoder multiplies the data by (1/n for counts of n trials), so it sees the [0, 1] scale
    input_scale = 1.0

    def __init__(self, x_dim: int, max_value: int | None = None, **options):
        super().__init__()
        #: pixels per image, and the largest pixel value of the data (the dataset's)
        self.x_dim, self.max_value = x_dim, max_value
        self.opts = resolve_options("likelihood", self.name, self.options, options)

    def dist(self, decoder_out: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def check_data(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def log_prob(self, decoder_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Closed-form log p(x|z) summed over pixels, written out by hand (not through Pyro)."""
        raise NotImplementedError

    @property
    def what(self) -> str:
        return f"data for the {self.name} likelihood"


@register_likelihood("bernoulli")
class BernoulliLikelihood(Likelihood):
    """Binary pixels, x ~ Bernoulli(sigmoid(logits)). Logits, not probabilities, so that
    log p(x|z) = -BCE never takes log(0)."""

    data_kind = "binary"
    summary = "Bernoulli(sigmoid(l)), binary pixels"

    def dist(self, logits):
        return dist.Bernoulli(logits=logits).to_event(1)

    def check_data(self, x):
        check_binary(x, "data for the Bernoulli likelihood")

    def log_prob(self, logits, x):
        # -BCE(sigmoid(logits), x), summed over pixels: x*log(p) + (1-x)*log(1-p), computed stably.
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def continuous_bernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
    r"""log C(l) for the Continuous Bernoulli with logit l (Loaiza-Ganem & Cunningham 2019, eq. 7).

    With lambda = sigmoid(l): C = 2 atanh(1 - 2 lambda) / (1 - 2 lambda), and 1 - 2 lambda =
    -tanh(l / 2), atanh(1 - 2 lambda) = -l / 2, so C(l) = l / tanh(l / 2): even in l, 2 at l = 0.
    Written in l rather than lambda because lambda = sigmoid(l) rounds to 1 for large l and the
    lambda-form then takes log(0). At l = 0 it is 0/0; near 0 we use the Taylor series
    l / tanh(l / 2) = 2 (1 + l^2 / 12 - l^4 / 720 + ...), so log C = log 2 + l^2 / 12 - 7 l^4 / 1440 +
    O(l^6); below |l| = 1e-3 the next term is < 1e-19, far under float64 rounding."""
    a = logits.abs()
    small = a < 1e-3
    safe = torch.where(small, torch.ones_like(a), a)
    exact = torch.log(safe) - torch.log(torch.tanh(safe / 2))
    l2 = logits * logits
    taylor = math.log(2.0) + l2 / 12 - 7 * l2 * l2 / 1440
    return torch.where(small, taylor, exact)


class ExactContinuousBernoulli(dist.ContinuousBernoulli):
    """Pyro's (torch's) ContinuousBernoulli with the normaliser computed from the logit.

    torch computes log C from probs = sigmoid(l) clamped to [eps, 1 - eps], so its log C *saturates*
    once sigmoid(l) rounds to 1: at log(15.9) for |l| >= ~16 in float32 and log(36) for |l| >= ~36
    in float64, where the true value is log|l| (measured: l = 40 gives 2.77 in float32, 3.58 in
    float64; the right value is 3.69). A trained decoder reaches such logits on MNIST's mostly-black
    pixels, and then Pyro's ELBO is not the density's: ``vae-pyro compare --spec laplace-cb`` showed
    same-noise differences of ~2 nats/example and Monte Carlo z of +3 to +6 against the hand-written
    loss before this class. Sampling, mean and support are torch's; only ``log_prob`` changes."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)
        bce = F.binary_cross_entropy_with_logits(logits, value, reduction="none")
        return continuous_bernoulli_log_norm(logits) - bce


@register_likelihood("continuous_bernoulli")
class ContinuousBernoulliLikelihood(Likelihood):
    r"""Grey levels x in [0, 1], p(x|l) = C(l) lambda^x (1 - lambda)^(1 - x) with lambda = sigmoid(l)
    (Loaiza-Ganem & Cunningham 2019). The Bernoulli loss applied to grey levels is this density
    *without* C(l), i.e. not a normalised density at all; the constant is what makes it one."""

    data_kind = "unit_interval"
    summary = "Continuous Bernoulli(sigmoid(l)) with its normaliser, grey levels"

    def dist(self, logits):
        return ExactContinuousBernoulli(logits=logits).to_event(1)

    def check_data(self, x):
        check_unit_interval(x, self.what)

    def log_prob(self, logits, x):
        bce = F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        return (continuous_bernoulli_log_norm(logits) - bce).sum(-1)


def _normal_log_prob(x, mean, log_scale):
    """log N(x; mean, exp(log_scale)^2) = -(log 2pi + 2 log s + (x - mean)^2 / s^2) / 2, per pixel."""
    return -0.5 * (LOG_2PI + 2 * log_scale + (x - mean).pow(2) * torch.exp(-2 * log_scale))


@register_likelihood("normal")
class NormalLikelihood(Likelihood):
    """Grey levels, x_j ~ N(sigmoid(o_j), s^2) with s fixed. The mean goes through a sigmoid so it
    lives where the data do; s is an option because the optimum of s is not the point here and a
    fixed s makes -log p(x|z) a scaled squared error, the familiar "MSE VAE"."""

    data_kind = "unit_interval"
    summary = "N(sigmoid(o), s^2), s fixed, grey levels"
    options = {"scale": Option(float, 0.1, low=0.0, help="the fixed pixel standard deviation s")}

    def dist(self, out):
        mean = torch.sigmoid(out)
        return dist.Normal(mean, torch.full_like(mean, self.opts["scale"])).to_event(1)

    def check_data(self, x):
        check_unit_interval(x, self.what)

    def log_prob(self, out, x):
        log_scale = torch.full_like(out, math.log(self.opts["scale"]))
        return _normal_log_prob(x, torch.sigmoid(out), log_scale).sum(-1)


@register_likelihood("normal_learned")
class LearnedNormalLikelihood(Likelihood):
    """Grey levels, x_j ~ N(sigmoid(o_j), s_j^2) with one learnt log s_j per pixel (not a function of
    z). Initialised at the ``scale`` option. Its parameters train with the rest and are registered
    with Pyro (``pyro.module``) by the model, so every estimator sees them."""

    data_kind = "unit_interval"
    summary = "N(sigmoid(o), s_j^2), s_j learnt per pixel, grey levels"
    options = {"scale": Option(float, 0.1, low=0.0, help="initial pixel standard deviation")}

    def __init__(self, x_dim, max_value=None, **options):
        super().__init__(x_dim, max_value, **options)
        self.log_scale = nn.Parameter(torch.full((x_dim,), math.log(self.opts["scale"])))

    def dist(self, out):
        mean = torch.sigmoid(out)
        return dist.Normal(mean, self.log_scale.exp().expand_as(mean)).to_event(1)

    def check_data(self, x):
        check_unit_interval(x, self.what)

    def log_prob(self, out, x):
        return _normal_log_prob(x, torch.sigmoid(out), self.log_scale).sum(-1)


@register_likelihood("beta")
class BetaLikelihood(Likelihood):
    r"""Grey levels strictly inside (0, 1), x_j ~ Beta(a_j, b_j), the decoder giving two numbers per
    pixel, a = softplus(o_1) + floor, b = softplus(o_2) + floor.

    log Beta(x; a, b) = (a - 1) log x + (b - 1) log(1 - x) - [lgamma(a) + lgamma(b) - lgamma(a + b)].
    The density is 0 or infinite at exactly 0 and 1, so the data are clamped into
    [eps, 1 - eps], eps half a grey level (``transform = "open_unit"``). The ``floor`` (default 1e-4) keeps a and b
    positive after softplus underflows for very negative outputs (float32: below about -100)."""

    data_kind = "open_unit_interval"
    out_per_pixel = 2
    summary = "Beta(a, b), 2 outputs per pixel, grey levels clamped into (0, 1)"
    options = {"floor": Option(float, 1e-4, low=0.0, help="added to softplus so a, b > 0")}

    def concentrations(self, out):
        ab = F.softplus(out) + self.opts["floor"]
        return ab[..., 0, :], ab[..., 1, :]

    def dist(self, out):
        a, b = self.concentrations(out)
        return dist.Beta(a, b).to_event(1)

    def check_data(self, x):
        check_open_unit_interval(x, self.what)

    def log_prob(self, out, x):
        a, b = self.concentrations(out)
        log_beta_fn = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
        return ((a - 1) * torch.log(x) + (b - 1) * torch.log1p(-x) - log_beta_fn).sum(-1)


@register_likelihood("binomial")
class BinomialLikelihood(Likelihood):
    r"""Raw intensities x_j in {0, ..., n} as Binomial(n, sigmoid(l_j)) counts, one logit per pixel, n
    the dataset's ``max_value`` (MNIST: 255; ``digits8x8``: 16): the data modelled as they are stored,
    no binarization and no rescaling.

    log p(x|l) = log C(n, x) + x log p + (n - x) log(1 - p), and with log p = l - softplus(l),
    log(1 - p) = -softplus(l) this is log C(n, x) + x l - n softplus(l), stable for any l."""

    data_kind = "counts"
    summary = "Binomial(n, sigmoid(l)), raw intensities 0..n (n: the dataset's largest pixel value)"

    def __init__(self, x_dim, max_value=None, **options):
        super().__init__(x_dim, max_value, **options)
        if not isinstance(max_value, int) or max_value < 1:
            raise ValueError(
                f"the binomial likelihood needs its number of trials, the data's max_value, "
                f"as an integer >= 1; got {max_value!r}"
            )
        #: n, the number of trials
        self.total_count = max_value
        self.input_scale = 1.0 / max_value

    def dist(self, logits):
        return dist.Binomial(total_count=self.total_count, logits=logits).to_event(1)

    def check_data(self, x):
        check_counts(x, self.what, self.total_count)

    def log_prob(self, logits, x):
        n = float(self.total_count)
        log_choose = math.lgamma(n + 1) - torch.lgamma(x + 1) - torch.lgamma(n - x + 1)
        return (log_choose + x * logits - n * F.softplus(logits)).sum(-1)


def build_likelihood(name: str, x_dim: int, max_value: int | None = None, **options) -> Likelihood:
    """The likelihood ``name`` for images of ``x_dim`` pixels with values 0..``max_value``."""
    return LIKELIHOODS[name](x_dim, max_value, **options)
