"""How much memory and time a run will need, estimated before anything is allocated.

A size that cannot fit (``--hidden 1000000000``, ``--particles 1000000000``, ``--chunk 1000000000``,
``--set prior.components=1000000000``, ``--z-dim 100000000``, ``--grad-draws 1000000000``, ``reproduce
--k 1000000000``) would otherwise end in an allocator traceback, possibly after minutes of work; a loop
that cannot end (``--draws 1000000000``, ``--variance-draws``, ``checks.timing_steps``) would run for
years. :func:`check_fits` refuses both before any work, with one line naming the setting to lower.

**Memory** (:func:`estimate`): the largest tensors a run holds at once, per part, against the memory
the device has free (CUDA: ``torch.cuda.mem_get_info``; CPU: ``MemAvailable`` in ``/proc/meminfo``,
else ``os.sysconf``). An order of magnitude, not a promise: float32 everywhere; parameters are held
four times in training (weights, gradients and Adam's two moments); each activation of a step about
three times (pre-activation, output, gradient); the IWAE test NLL draws a batch's noise at once
(k x 100 x z_dim floats) and keeps its k log-weights; the gradient check keeps 4 float64 projections
per parameter tensor per draw; a value draw is kept as a Python float (~32 bytes).

**Time** (:func:`time_estimate`): the loops of the command (training steps, the checks' draws, the
timed steps, the test NLL's chunks, proposal refinement), each a number of calls and of multiply-adds
(a forward pass costs ~2 x parameters per sample, a training step ~6 x), costed at rates no device
here beats: :data:`CALL_FLOOR_S` per call and :data:`RATE` multiply-adds per second. The estimate is
therefore a *lower bound* on the run's time; a run whose lower bound exceeds :data:`TIME_LIMIT_S`
(a day) is refused, naming the setting that accounts for the most.

Each part is named by the setting that scales it (``training.particles``, ``checks.draws``, or a
command's own option as ``nll k``); where several scale one part, by the one furthest above its
declared default, since lowering that one is what helps. The command line names the flag where one
was given (:func:`vae_pyro.cli.in_flags`).
"""

from __future__ import annotations

import math
import os

import torch

from .datasets import dataset_class
from .errors import MemoryBoundError
from .likelihoods import LIKELIHOODS
from .networks import build_network
from .spec import COMMAND_OPTIONS, SECTION_TYPES, setting_options

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
    return build_network(
        spec.networks.network, images, spec.networks.z_dim, spec.networks.hidden, spec.networks.activation
    )


def parameter_counts(spec) -> tuple[int, int]:
    """(encoder + decoder, prior components) parameters of ``spec``'s VAE, counted without allocating
    it (the networks on the meta device): a mixture prior has a mean, a scale and a weight per
    component and dimension, a VampPrior one pseudo-image per component."""
    network, z = _network(spec), spec.networks.z_dim
    networks = network.parameter_count(LIKELIHOODS[spec.likelihood.name].out_per_pixel)
    components = int(spec.prior.options.get("components", 0))
    return networks, components * (network.x_dim if spec.prior.name == "vamp" else 2 * z + 1)


#: the least one call of an estimator (one draw, one step, one chunk) takes on any device: Python,
#: Pyro's trace and a few kernel launches (optimistic: a captured CUDA step is ~0.1 ms)
CALL_FLOOR_S = 1e-4
#: float32 multiply-adds per second that no device of its type here exceeds (optimistic)
RATE = {"cuda": 1e15, "cpu": 2e12}
#: a run that even at these rates would take longer is refused (seconds)
TIME_LIMIT_S = 24 * 3600
#: float64 projections kept per parameter tensor per gradient draw (vae_pyro.checks.stats.grad_moments)
GRAD_PROJECTIONS = 4
#: bytes a value draw is kept in (a Python float in a list)
DRAW_BYTES = 32
#: importance samples per chunk of the test NLL where the command has no ``chunk`` option
NLL_CHUNK_DEFAULT = 500
#: Adam steps of proposal refinement: batch 100, IWAE_5 (vae_pyro.amortization)
REFINE_BATCH, REFINE_K = 100, 5


def _default(path: str):
    if " " in path:  # a command's own option: "nll k"
        command, name = path.split(" ")
        return COMMAND_OPTIONS[command][name].default
    return setting_options()[path].default


def _value(spec, path: str, options: dict):
    if " " in path:
        return options.get(path.split(" ")[1])
    section, key = path.split(".")
    return getattr(getattr(spec, section), key) if section in SECTION_TYPES else spec.prior.options.get(key)


def _ratio(spec, path: str, options: dict) -> float:
    value, default = _value(spec, path, options), _default(path)
    value = max(value) if isinstance(value, (list, tuple)) else value
    default = max(default) if isinstance(default, (list, tuple)) else default
    return (value or 0) / max(default or 1, 1)


def culprit(spec, paths: tuple[str, ...], options: dict | None = None) -> str:
    """Of the settings ``paths`` that scale one part, the one furthest above its declared default
    (lowering it is what helps); the first where none is above."""
    ratios = [(_ratio(spec, p, options or {}), -i, p) for i, p in enumerate(paths)]
    best = max(ratios)
    return best[2] if best[0] > 1 else paths[0]


def _add(parts: dict, name: str, amount: float) -> None:
    parts[name] = parts.get(name, 0) + amount


def estimate(
    spec, *, k: int | None = None, chunk: int | None = None, command: str | None = None, options: dict | None = None
) -> dict[str, int]:
    """Bytes a run of ``spec`` holds at its peak, split by the setting that scales each part
    (``k``/``chunk``: an IWAE test NLL's, named as ``command``'s options; ``options``: the command's
    own, for the draws they set)."""
    options = options or {}
    dataset, network, z = dataset_class(spec.data.dataset)[0], _network(spec), spec.networks.z_dim
    x_dim = math.prod(dataset.image_shape)
    params, prior_params = parameter_counts(spec)
    components = int(spec.prior.options.get("components", 0))
    width = network.activation_floats(LIKELIHOODS[spec.likelihood.name].out_per_pixel)  # floats per sample
    batch = max(spec.training.batch_size, EVAL_BATCH, spec.checks.grad_batch)
    particles = max(spec.training.particles, spec.checks.particles)  # training's and the checks' draws
    examples = dataset.examples
    parts: dict[str, float] = {}
    _add(parts, culprit(spec, ("networks.hidden", "networks.z_dim")), PARAM_COPIES * FLOAT * params)
    _add(
        parts,
        "prior.components",
        FLOAT * (PARAM_COPIES * prior_params + ACTIVATION_COPIES * batch * particles * components * z),
    )
    activations = (
        "training.batch_size",
        "training.particles",
        "checks.particles",
        "checks.grad_batch",
        "networks.hidden",
        "networks.z_dim",
    )
    _add(parts, culprit(spec, activations), ACTIVATION_COPIES * FLOAT * batch * particles * width)
    _add(parts, "data.dataset", 2 * FLOAT * examples * x_dim)  # the data, and its binarized copy
    tensors = 4 * (len(spec.networks.hidden) + 2) + 3  # weights and biases both ways, the prior's
    grad_draws = max(spec.checks.grad_draws, options.get("variance_draws") or 0)
    name = "experiment variance_draws" if grad_draws > spec.checks.grad_draws else "checks.grad_draws"
    _add(parts, name, 8 * GRAD_PROJECTIONS * tensors * grad_draws)
    _add(parts, "checks.draws", DRAW_BYTES * spec.checks.draws)
    if k is not None:
        names = {"nll": ("nll k", "nll chunk"), "experiment": ("experiment nll_k", None)}.get(
            command, (f"{command} k" if command else "k", None)
        )
        samples = min(k, chunk or NLL_CHUNK_DEFAULT)
        given = {**options, names[0].split(" ")[-1]: k, "chunk": chunk}
        scales = (names[1] or names[0], "networks.hidden", "networks.z_dim")  # a chunk's activations
        _add(parts, culprit(spec, scales, given) if command else scales[0], 2 * FLOAT * NLL_BATCH * samples * width)
        noise = culprit(spec, (names[0], "networks.z_dim"), given) if command else names[0]
        _add(parts, noise, FLOAT * NLL_BATCH * k * (z + 2))  # the batch's noise and log-weights
    return {name: int(v) for name, v in parts.items()}


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_fits(
    spec,
    device: torch.device,
    *,
    k: int | None = None,
    chunk: int | None = None,
    command: str | None = None,
    options: dict | None = None,
    trains: bool = True,
) -> None:
    """Refuse a run whose :func:`estimate` exceeds what ``device`` has free, or (given its
    ``command``) whose :func:`time_estimate` exceeds :data:`TIME_LIMIT_S`, naming the biggest part's
    setting. ``trains``: False where a saved model is evaluated."""
    free = available_bytes(device)
    if free is not None:
        parts = estimate(spec, k=k, chunk=chunk, command=command, options=options)
        need = sum(parts.values())
        if need > free:
            option, biggest = max(parts.items(), key=lambda kv: kv[1])
            raise MemoryBoundError(
                f"this run needs about {_gib(need)} but device {device} has {_gib(free)} free; "
                f"lower {option} (it accounts for {_gib(biggest)})"
            )
    if command is not None:
        check_time(time_estimate(spec, command, options or {}, trains), device)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.0f} hours" if seconds >= 3600 else f"{seconds:.0f} s"


def check_time(loops: dict[str, tuple[float, float]], device: torch.device) -> None:
    """Refuse a run whose loops (setting -> (calls, multiply-adds), :func:`time_estimate`) take, at
    the optimistic rates, longer than :data:`TIME_LIMIT_S`, naming the loop that takes the longest."""
    rate = RATE.get(torch.device(device).type, RATE["cpu"])
    seconds = {name: calls * CALL_FLOOR_S + flops / rate for name, (calls, flops) in loops.items()}
    total = sum(seconds.values())
    if total <= TIME_LIMIT_S:
        return
    option, longest = max(seconds.items(), key=lambda kv: kv[1])
    raise MemoryBoundError(
        f"this run would take at least {_hours(total)} on device {device} (a lower bound: "
        f"{CALL_FLOOR_S * 1e3:g} ms per call, {rate:.0e} multiply-adds/s), over the limit of "
        f"{_hours(TIME_LIMIT_S)}; lower {option} (it accounts for {_hours(longest)})"
    )


def _training(spec, loops: dict, times: int = 1) -> None:
    """``times`` trainings of ``spec``: epochs x batches steps of ~6 x parameters per sample and particle."""
    t, examples = spec.training, dataset_class(spec.data.dataset)[0].examples
    params = sum(parameter_counts(spec))
    steps = t.epochs * -(-examples // t.batch_size)
    name = culprit(spec, ("training.epochs", "training.particles", "networks.hidden", "networks.z_dim"))
    loops.setdefault(name, [0, 0])
    loops[name][0] += times * steps
    loops[name][1] += times * t.epochs * examples * t.particles * 6 * params


def _loop(loops: dict, name: str, calls: float, flops: float) -> None:
    entry = loops.setdefault(name, [0, 0])
    entry[0] += calls
    entry[1] += flops


def time_estimate(spec, command: str, options: dict, trains: bool = True) -> dict[str, tuple[float, float]]:
    """The loops a run of ``command`` on ``spec`` makes: setting -> (calls, multiply-adds). ``options``:
    the command's own (``k``, ``variance_draws``, ``refine_steps`` ...). ``trains``: False where a
    saved model is evaluated."""
    c, t = spec.checks, spec.training
    params = sum(parameter_counts(spec))
    examples = dataset_class(spec.data.dataset)[0].examples
    tests = max(examples // 7, 1)  # the test images: about a seventh (MNIST: 10,000 of 70,000)
    loops: dict = {}
    models = {"experiment": len(options.get("train_estimators") or ()) or 1}.get(command, 1)
    if trains:
        _training(spec, loops, models)
    if command in ("compare", "check"):
        estimators = len(c.estimators) + 1  # and the reference
        _loop(loops, "checks.draws", estimators * c.draws, estimators * c.draws * tests * c.particles * 2 * params)
        _loop(
            loops,
            "checks.grad_draws",
            estimators * c.grad_draws,
            estimators * c.grad_draws * c.grad_batch * c.particles * 6 * params,
        )
    if command == "compare":
        _loop(
            loops,
            "checks.timing_steps",
            len(c.estimators) * (c.timing_steps + 3),
            len(c.estimators) * (c.timing_steps + 3) * t.batch_size * c.particles * 6 * params,
        )
    nll_k, nll_name = {
        "nll": (options.get("k"), "nll k"),
        "experiment": (options.get("nll_k"), "experiment nll_k"),
        "reproduce": (options.get("k"), "reproduce k"),
    }.get(command, (None, None))
    if nll_k:
        chunk = options.get("chunk") or NLL_CHUNK_DEFAULT
        n = min(options.get("examples") or tests, tests)
        twice = 2 if options.get("refine_steps") else 1  # the refined proposal's estimate too
        _loop(
            loops,
            nll_name,
            twice * models * -(-n // NLL_BATCH) * -(-nll_k // chunk),
            twice * models * n * nll_k * 2 * params,
        )
    if command == "experiment":
        draws = options.get("variance_draws") or 0
        _loop(
            loops,
            "experiment variance_draws",
            models * 2 * draws,
            models * draws * (tests * t.particles * 2 + 256 * t.particles * 6) * params,
        )
    if command == "reproduce":
        sel = spec.selection
        evaluations = -(-t.epochs // sel.every)
        _loop(
            loops,
            "selection.k",
            evaluations * 2 * -(-(tests + sel.validation) // NLL_BATCH),
            evaluations * (tests + sel.validation) * sel.k * 2 * params,
        )
        steps = options.get("refine_steps") or 0
        _loop(loops, "reproduce refine_steps", steps, steps * REFINE_BATCH * REFINE_K * 6 * params)
    return {name: (calls, flops) for name, (calls, flops) in loops.items()}


def check_draws(spec, device: torch.device) -> None:
    """The checks' draws of a toy model (``check --toy``): the model is tiny, the draws are what can
    exceed memory (the gradient projections, the values) or a day (each draw a call)."""
    c, free = spec.checks, available_bytes(device)
    parts = {"checks.grad_draws": 8 * GRAD_PROJECTIONS * 16 * c.grad_draws, "checks.draws": DRAW_BYTES * c.draws}
    if free is not None and sum(parts.values()) > free:
        option, biggest = max(parts.items(), key=lambda kv: kv[1])
        raise MemoryBoundError(
            f"this run needs about {_gib(sum(parts.values()))} but device {device} has "
            f"{_gib(free)} free; lower {option} (it accounts for {_gib(biggest)})"
        )
    estimators = len(c.estimators) + 1
    check_time({"checks.draws": (estimators * c.draws, 0), "checks.grad_draws": (estimators * c.grad_draws, 0)}, device)
