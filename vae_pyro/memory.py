"""How much memory a run will need, estimated before anything is allocated.

A size that cannot fit (``--hidden 1000000000``, ``--particles 1000000000``, ``--chunk 1000000000``,
``--set prior.components=1000000000``) would otherwise end in an allocator traceback, possibly after
minutes of work. :func:`check_fits` adds up the largest tensors a run holds at once, per option that
scales them, and refuses with one line naming the option that accounts for the most, when the total
exceeds the memory the device has free (CUDA: ``torch.cuda.mem_get_info``; CPU: ``MemAvailable`` in
``/proc/meminfo``, else ``os.sysconf``).

The estimate is an order of magnitude, not a promise: float32 everywhere; parameters are held four
times in training (weights, gradients and Adam's two moments); each activation of a step is held about
three times (pre-activation, output, gradient). A run under the limit can still run out of memory
(other processes, the allocator's fragmentation); a run over it certainly would.
"""

from __future__ import annotations

import math
import os

import torch

from .datasets import dataset_class
from .errors import MemoryBoundError
from .likelihoods import LIKELIHOODS
from .networks import build_network

FLOAT = 4  # bytes of float32
#: copies of each parameter held in training: the weight, its gradient, Adam's two moments
PARAM_COPIES = 4
#: copies of each activation held in a training step: pre-activation, output and gradient
ACTIVATION_COPIES = 3
#: test digits per batch in evaluation (vae_pyro.train.evaluate) and in the IWAE test NLL
EVAL_BATCH, NLL_BATCH = 1000, 100


def available_bytes(device: torch.device) -> int | None:
    """Memory free on ``device`` now, or None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _network(spec):
    images = dataset_class(spec.data.dataset)[0].image_shape
    return build_network(spec.networks.network, images, spec.networks.z_dim, spec.networks.hidden,
                         spec.networks.activation)


def parameter_counts(spec) -> tuple[int, int]:
    """(encoder + decoder, prior components) parameters of ``spec``'s VAE, counted without allocating
    it (the networks on the meta device): a mixture prior has a mean, a scale and a weight per
    component and dimension, a VampPrior one pseudo-image per component."""
    network, z = _network(spec), spec.networks.z_dim
    networks = network.parameter_count(LIKELIHOODS[spec.likelihood.name].out_per_pixel)
    components = int(spec.prior.options.get("components", 0))
    return networks, components * (network.x_dim if spec.prior.name == "vamp" else 2 * z + 1)


def estimate(spec, *, k: int | None = None, chunk: int | None = None) -> dict[str, int]:
    """Bytes a run of ``spec`` holds at its peak, split by the option that scales each part
    (``k``/``chunk``: the IWAE test NLL of ``vae-pyro nll``)."""
    dataset, network, z = dataset_class(spec.data.dataset)[0], _network(spec), spec.networks.z_dim
    x_dim = math.prod(dataset.image_shape)
    params, prior_params = parameter_counts(spec)
    components = int(spec.prior.options.get("components", 0))
    width = network.activation_floats(LIKELIHOODS[spec.likelihood.name].out_per_pixel)  # floats per sample
    batch = max(spec.training.batch_size, EVAL_BATCH, spec.checks.grad_batch)
    particles = max(spec.training.particles, spec.checks.particles)  # training's and the checks' draws
    examples = dataset.examples
    parts = {
        "--hidden": PARAM_COPIES * FLOAT * params,
        "prior.components": FLOAT * (PARAM_COPIES * prior_params
                                     + ACTIVATION_COPIES * batch * particles * components * z),
        "--particles" if particles > 1 else "--batch-size": ACTIVATION_COPIES * FLOAT * batch * particles * width,
        "--dataset": 2 * FLOAT * examples * x_dim,  # the data, and its binarized copy
    }
    if k is not None:
        samples = min(k, chunk or k)
        parts["--chunk"] = 2 * FLOAT * NLL_BATCH * samples * width
        parts["--k"] = FLOAT * NLL_BATCH * k
    return parts


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_fits(spec, device: torch.device, *, k: int | None = None, chunk: int | None = None) -> None:
    """Refuse a run whose :func:`estimate` exceeds what ``device`` has free, naming the biggest part."""
    free = available_bytes(device)
    if free is None:
        return
    parts = estimate(spec, k=k, chunk=chunk)
    need = sum(parts.values())
    if need <= free:
        return
    option, biggest = max(parts.items(), key=lambda kv: kv[1])
    raise MemoryBoundError(f"this run needs about {_gib(need)} but device {device} has {_gib(free)} free; "
                           f"lower {option} (it accounts for {_gib(biggest)})")
