#!/usr/bin/env python3
"""Speed of every ELBO estimator, side by side in one process, as a ratio to the hand-written loss.

    python scripts/benchmark.py                         # CPU (or CUDA when present), table on stdout
    python scripts/benchmark.py --device cuda --json runs/bench-cuda.json --markdown runs/bench-cuda.md
    python scripts/benchmark.py --profile               # where Pyro's per-step overhead goes

For each batch size and estimator: ms per training step (loss, backward, Adam: ``vae_pyro.train.
train_step``, with the optimiser ``train`` uses: Adam, fused on CUDA), examples/s, the ratio to
``analytic`` (the hand-written loss, eager) and to ``analytic_graph`` (the same, captured) measured
in the same run (repeats are interleaved across estimators, and the median kept, so drifts in
machine load hit every estimator alike), and peak memory.

Rows: every estimator asked for (by default the eager Pyro ELBOs, their ``jit_*`` compilations and the
captured ``*_graph`` estimators); on CUDA also ``analytic_step_graph``, ``trace_step_graph`` and
``tmf_step_graph``: the *whole* step (loss, backward and ``Adam(capturable=True)``) of the captured
estimator replayed as one CUDA graph (``vae_pyro.captured_step``; on the CPU, where they run only if
asked for, the same step eagerly); plus ``pytorch_example``: a step written exactly as PyTorch's
``examples/vae/main.py`` writes it (its own 784-400-20 model, sigmoid + ``binary_cross_entropy`` +
KLD, Adam, and its ``loss.item()`` per step), so users see where vae-pyro stands against the code they
know.

* **CUDA** (default ``--epoch-examples 60000``): each timing is one full epoch over 60,000 examples
  (the embedded digits tiled to full-MNIST size, resident on the GPU; the epoch's batches gathered
  by a fresh permutation before the timing, the same for every row), timed with CUDA events; peak
  memory is ``torch.cuda.max_memory_allocated`` during that epoch, above what was allocated before
  it. Also timed: the other data path (a host batch copied every step), so the saving of resident
  data is a measured number.
* **CPU** (default ``--steps 20``): ``--steps`` steps per timing (an epoch would take minutes per row
  on a small CPU); memory is the peak resident set of a fresh subprocess per (estimator, batch) that
  does only those steps (absolute, so about 300 MiB of it is Python, torch and Pyro; compare rows).

Warm-up steps (not timed) absorb JIT compilation and graph capture; the first one runs with Pyro's
validation on, the rest without, as ``vae_pyro.train.train`` does.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time

import numpyro_peer  # first: it pins XLA's CPU backend to one thread before JAX is imported
import pyro
import torch

import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vae_pyro.data import load_mnist5k, prepare
from vae_pyro.estimators import DEFAULT_ESTIMATORS, build_estimator
from vae_pyro.model import VAE
from vae_pyro.report import atomic_write_text, fmt, table, write_json
from vae_pyro.estimators.syncfree import step_without_validation
from vae_pyro.train import WHOLE_STEPS, make_optimizer, resolve_device, seed_all, time_steps, train_step

REFERENCE = "pytorch_example"
#: whole-step rows: loss, backward and Adam(capturable=True) in one CUDA graph
#: (vae_pyro.captured_step.CapturedTrainStep over the captured estimator's loss; eager on the CPU)
WHOLE_STEP = {"analytic_step_graph": "analytic_graph", "trace_step_graph": "trace_graph", "tmf_step_graph": "tmf_graph"}
CAPTURED = ("analytic_graph", "trace_graph", "tmf_graph", *WHOLE_STEP)
#: whole-step rows traced out of Pyro by make_fx and fused by inductor (vae_pyro.fused_step.FusedTrainStep)
FUSED = {"analytic_step_fused": "analytic", "trace_step_fused": "trace", "tmf_step_fused": "tmf"}
#: the peer's rows (scripts/numpyro_peer.py): NumPyro's jitted SVI.update, when numpyro is installed
PEERS = tuple(numpyro_peer.ROWS)
DEFAULT_CPU = ("analytic", *CAPTURED[:1], *DEFAULT_ESTIMATORS[1:], *CAPTURED[1:], *FUSED, *PEERS, REFERENCE)
#: on CUDA without jit_tmf_pyro: it re-traces every step (tens of ms), a full epoch of it adds minutes
DEFAULT_CUDA = (
    "analytic",
    "analytic_graph",
    "trace",
    "tmf",
    "jit_trace",
    "jit_tmf",
    "trace_graph",
    "tmf_graph",
    *WHOLE_STEP,
    *FUSED,
    *PEERS,
    REFERENCE,
)
WARMUP = 4


class ExampleVAE(nn.Module):
    """PyTorch's ``examples/vae/main.py`` model, as written there."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def example_loss_function(recon_x, x, mu, logvar):
    """``loss_function`` of ``examples/vae/main.py``: reconstruction + KL summed over the batch."""
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    # see Appendix B from VAE paper: Kingma and Welling. Auto-Encoding Variational Bayes. ICLR, 2014
    # 0.5 * sum(1 + log(sigma^2) - mu^2 - sigma^2)
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


def make_step(name: str, device: torch.device):
    """``step(x)``: one training step of estimator ``name`` (or of the PyTorch example) on a fresh model
    and Adam; validation on for the first call only (see ``vae_pyro.train.train``)."""
    if name == REFERENCE:
        model = ExampleVAE().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(data):  # the body of main.py's train loop, line for line
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = example_loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss = loss.item()  # noqa: F841  (main.py accumulates it: a host read per step)
            optimizer.step()

        return step
    if name in WHOLE_STEP:
        return make_whole_step("captured", WHOLE_STEP[name], device)
    if name in FUSED:
        return make_whole_step("fused", FUSED[name], device)
    if name in PEERS:
        return numpyro_peer.NumPyroStep(name, torch.zeros(128, 784))
    vae = VAE().to(device)
    est = build_estimator(name)
    optimizer = make_optimizer(vae)  # as vae_pyro.train.train: fused Adam on CUDA
    calls = [0]

    def step(x):
        with step_without_validation(calls[0] == 0):
            train_step(vae, est, optimizer, x)
        calls[0] += 1

    return step


def make_whole_step(route: str, estimator: str, device: torch.device):
    """``step(x)``: one whole step of ``route`` (``vae_pyro.train.WHOLE_STEPS``: ``captured``, a
    :class:`~vae_pyro.captured_step.CapturedTrainStep`, or ``fused``, a
    :class:`~vae_pyro.fused_step.FusedTrainStep`) per batch shape, built at its first batch (capture or
    compile: not timed), all sharing one model and the Adam ``train`` gives that route."""
    vae = VAE().to(device)
    est = build_estimator(estimator)
    optimizer = make_optimizer(vae, capturable=route == "captured", fused=False if route == "fused" else None)
    per_shape: dict[tuple, object] = {}

    def step(x):
        if x.shape not in per_shape:
            per_shape[x.shape] = WHOLE_STEPS[route](vae, est, optimizer, tuple(x.shape), dtype=x.dtype)
        with step_without_validation(step.calls == 0):  # as train(): the first step validated
            per_shape[x.shape].step(x, 1.0)
        step.calls += 1
        if route == "fused":
            fused_kernels[f"{estimator} @ {x.shape[0]}"] = per_shape[x.shape].kernels

    step.calls = 0
    return step


#: what fusion did to each fused step, by "estimator @ batch" (FusedTrainStep.kernels), for the JSON
fused_kernels: dict[str, dict] = {}


def timed_ms(step, batches: list[torch.Tensor], device: torch.device) -> float:
    """Wall time of running ``step`` over ``batches`` in ms: CUDA events on a GPU (queued with the
    kernels, so no host-side stall is counted as work), ``perf_counter`` on the CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for x in batches:
            step(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    for x in batches:
        step(x)
    return (time.perf_counter() - t0) * 1e3


def capture_probe(name: str, batch_sizes: list[int]) -> None:
    """In a fresh process: capture ``name`` on CUDA at each batch size and replay it a few steps."""
    seed_all(0)
    step = make_step(name, torch.device("cuda"))
    for batch in batch_sizes:
        x = torch.bernoulli(torch.full((batch, 784), 0.13, device="cuda"))
        for _ in range(3):
            step(x)
    torch.cuda.synchronize()


def capture_preflight(names: list[str], batch_sizes: list[int]) -> dict[str, str]:
    """Which captured (and fused) steps capture on this GPU, each tried in its own process (in parallel): a
    failed CUDA-graph capture leaves the process's CUDA generator unusable ("Offset increment outside
    graph capture"), so one failure must not spoil the other rows. Returns {name: error}."""
    cmd = [sys.executable, __file__, "--_capture_probe"]
    procs = {
        n: subprocess.Popen(
            cmd + [f"{n}:{','.join(map(str, batch_sizes))}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for n in names
        if n in CAPTURED or n in FUSED
    }
    failed = {}
    for name, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            failed[name] = "capture probe timed out"
            continue
        if proc.returncode != 0:
            failed[name] = (err.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return failed


def epoch_batches(x_all: torch.Tensor, batch: int, n_steps: int, seed: int) -> list[torch.Tensor]:
    """``n_steps`` batches gathered by a fresh permutation on the data's device (before any timing)."""
    order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(seed)).to(x_all.device)
    return [x_all[order[i * batch : (i + 1) * batch]] for i in range(n_steps)]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return (
                        f"{line.split(':', 1)[1].strip()} "
                        f"({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
                    )
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Not ``getrusage().ru_maxrss``: Linux carries that
    across ``execve``, so a child started from a big parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_probe(estimator: str, batch: int, steps: int) -> float:
    """Run in a fresh process: the process's peak RSS (MiB) after ``steps`` training steps. Absolute,
    so it includes Python, torch and Pyro (~300 MiB); differences between rows are the estimators'."""
    seed_all(0)
    # Synthetic binary digits: a step's memory does not depend on pixel values, and parsing the CSV
    # would set a high-water mark (the int64 table) above the step's own peak.
    x = torch.bernoulli(torch.full((batch, 784), 0.13))
    step = make_step(estimator, torch.device("cpu"))
    for _ in range(steps + 1):
        step(x)
    return peak_rss_mib()


def cpu_peak_memory(estimator: str, batch: int, steps: int) -> float | None:
    cmd = [sys.executable, __file__, "--_probe", f"{estimator},{batch},{steps}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def host_copy_ms(vae, x_host: torch.Tensor, device, steps: int) -> float:
    """The other data path: each step copies its batch from (pinned) host memory."""
    vae = vae.clone()
    est = build_estimator("analytic")
    opt = make_optimizer(vae)
    x_host = x_host.pin_memory()
    for i in range(steps + 3):
        if i == 3:
            torch.cuda.synchronize()
            start = time.perf_counter()
        opt.zero_grad()
        (est.differentiable_loss(vae, x_host.to(device, non_blocking=True)) / len(x_host)).backward()
        opt.step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e3


def step_floor(batch: int, device: torch.device, repeats: int = 20) -> dict:
    """The floor of one training step of the default VAE at ``batch``, from counts, not guesses: its
    FLOPs (``torch.utils.flop_counter`` over one eager step: the matrix products, forward and
    backward), the bytes its Adam update must move (read parameter, gradient and both moments, write
    parameter and moments: 7 x 4 bytes per parameter), the GEMM throughput this device reaches on the
    step's largest product (B x 784 by 784 x 400, median of ``repeats``), and so the compute floor
    FLOPs / throughput. Kernels before and after fusion come from :class:`FusedTrainStep`."""
    vae = VAE().to(device)
    est, opt = build_estimator("analytic"), make_optimizer(vae)
    x = torch.bernoulli(torch.full((batch, 784), 0.13, device=device))
    with FlopCounterMode(display=False) as counter:
        train_step(vae, est, opt, x)
    a, b = torch.randn(batch, 784, device=device), torch.randn(784, 400, device=device)
    times = []
    for _ in range(repeats):
        times.append(timed_ms(lambda _: torch.mm(a, b), [None] * 10, device) / 10)
    gemm_gflops = 2 * batch * 784 * 400 / statistics.median(times) / 1e6
    flops = counter.get_total_flops()
    params = sum(p.numel() for p in vae.parameters())
    return {
        "batch": batch,
        "flops": flops,
        "params": params,
        "adam_bytes": 7 * 4 * params,
        "gemm_gflops": gemm_gflops,
        "compute_floor_ms": flops / gemm_gflops / 1e6,
    }


def profile_overhead(device, batch: int = 32, steps: int = 100) -> dict:
    """Where a ``Trace_ELBO`` step spends its time, at a small batch where overhead dominates: cProfile
    self-time grouped by package, plus the cost of Pyro's argument validation."""
    seed_all(0)
    x = prepare(load_mnist5k().train_x[:batch], "static").to(device)
    vae = VAE().to(device)
    est = build_estimator("trace")
    time_steps(vae, est, x, steps=5)
    prof = cProfile.Profile()
    prof.enable()
    time_steps(vae, est, x, steps=steps, warmup=0)
    prof.disable()
    stats = pstats.Stats(prof)
    groups: dict[str, float] = {}
    total = 0.0
    for (filename, _, func), (_, _, tottime, _, _) in stats.stats.items():
        total += tottime
        if "/pyro/poutine/" in filename:
            key = "pyro.poutine (messengers, traces)"
        elif "/pyro/infer/" in filename:
            key = "pyro.infer (ELBO bookkeeping)"
        elif "/pyro/distributions/" in filename or "/torch/distributions/" in filename:
            key = "distributions (log_prob, validation, broadcasting)"
        elif "/pyro/" in filename:
            key = "pyro (other)"
        elif "/torch/" in filename or (filename == "~" and ("torch" in func or "Tensor" in func or "backward" in func)):
            key = "torch (tensor ops, autograd, optimizer)"
        elif filename == "~":
            key = "Python built-ins (dicts, getattr, isinstance ...)"
        else:
            key = "other Python"
        groups[key] = groups.get(key, 0.0) + tottime
    shares = {k: v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}
    with_validation = time_steps(vae, est, x, steps=steps, validate_every_step=True)
    without_validation = time_steps(vae, est, x, steps=steps)  # validation on the first step only
    analytic = time_steps(vae, build_estimator("analytic"), x, steps=steps)
    jit = time_steps(vae, build_estimator("jit_trace"), x, steps=steps)
    return {
        "batch": batch,
        "self_time_share": shares,
        "trace_ms": with_validation,
        "trace_ms_without_validation": without_validation,
        "analytic_ms": analytic,
        "jit_trace_ms": jit,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--batch-sizes", default=None, help="comma-separated (default: 32,128,512 on the CPU, 128,1024 on CUDA)"
    )
    parser.add_argument(
        "--estimators",
        default=None,
        help=f"comma-separated, {REFERENCE} for PyTorch's example, {','.join(WHOLE_STEP)} for the "
        f"whole step captured (default CPU: {','.join(DEFAULT_CPU)}; "
        f"CUDA: {','.join(DEFAULT_CUDA)})",
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="timed steps per repeat without --epoch-examples (default: 20)"
    )
    parser.add_argument(
        "--epoch-examples",
        type=int,
        default=None,
        help="time full epochs over this many examples (the digits tiled) instead of --steps "
        "(default: 60000 on CUDA, off on the CPU)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="interleaved repeats; the median is kept (default: 3 on the CPU, 2 on CUDA)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on the CPU (default: 1, one thread per process, as the NumPyro rows' "
        "XLA backend is pinned)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--profile", action="store_true", help="also profile Pyro's per-step overhead")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also count one step's FLOPs and bytes and measure this device's GEMM throughput: "
        "the step's compute floor",
    )
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument(
        "--markdown", metavar="PATH", help="also write the tables as a Markdown page (docs/benchmark.md)"
    )
    parser.add_argument("--_probe", help=argparse.SUPPRESS)
    parser.add_argument("--_capture_probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._capture_probe:
        name, batches = args._capture_probe.split(":")
        capture_probe(name, [int(b) for b in batches.split(",")])
        return 0
    if args._probe:
        name, batch, steps = args._probe.split(",")
        print(memory_probe(name, int(batch), int(steps)))
        return 0

    try:
        device = resolve_device(args.device)
        cuda = device.type == "cuda"
        batch_sizes = [int(b) for b in (args.batch_sizes or ("128,1024" if cuda else "32,128,512")).split(",")]
        names = [n for n in (args.estimators or ",".join(DEFAULT_CUDA if cuda else DEFAULT_CPU)).split(",") if n]
        for n in names:
            if n != REFERENCE and n not in WHOLE_STEP and n not in FUSED and n not in PEERS:
                build_estimator(n)
        epoch_examples = args.epoch_examples if args.epoch_examples is not None else (60000 if cuda else 0)
        repeats = args.repeats if args.repeats is not None else (2 if cuda else 3)
        for value, what in (
            (args.steps, "--steps"),
            (repeats, "--repeats"),
            (args.threads, "--threads"),
            *((b, "--batch-sizes") for b in batch_sizes),
        ):
            if value < 1:
                raise ValueError(f"{what} must be >= 1, got {value}")
        if epoch_examples < 0 or (epoch_examples and epoch_examples < max(batch_sizes)):
            raise ValueError(
                f"--epoch-examples must be 0 (off) or >= the largest batch ({max(batch_sizes)}), got {epoch_examples}"
            )
    except (ValueError, KeyError) as err:
        print(f"benchmark: error: {err}", file=sys.stderr)
        return 2
    for required in ("analytic", "analytic_graph"):  # the two bases of the ratios
        if required not in names:
            names.insert(0, required)
    missing = {n: numpyro_peer.MISSING for n in names if n in PEERS and not numpyro_peer.AVAILABLE}
    for name, why in missing.items():
        print(f"benchmark: {name} left out: {why}", file=sys.stderr)
    names = [n for n in names if n not in missing]
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    failed = capture_preflight(names, batch_sizes) if cuda else {}
    for name, why in failed.items():
        print(f"benchmark: {name} could not be captured on this device, left out: {why}", file=sys.stderr)
    names = [n for n in names if n not in failed]

    seed_all(0)
    digits = prepare(load_mnist5k().train_x, "static")
    n_data = max(epoch_examples, args.steps * max(batch_sizes), len(digits))
    x_all = digits.repeat(-(-n_data // len(digits)), 1)[:n_data].to(device)  # tiled, resident on the device
    results = []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(batch_sizes) * len(names) * repeats, desc="benchmark", unit="run")
    for batch in batch_sizes:
        n_steps = epoch_examples // batch if epoch_examples else args.steps
        steps, first_call_s = {}, {}
        for name in names:  # built and warmed up once: compilation and capture are not timed
            seed_all(0)
            start = time.perf_counter()
            steps[name] = make_step(name, device)
            for i, x in enumerate(epoch_batches(x_all, batch, WARMUP, seed=-1)):
                steps[name](x)
                if i == 0:  # building the step and its first call: tracing, compilation, capture
                    first_call_s[name] = time.perf_counter() - start
        times: dict[str, list[float]] = {n: [] for n in names}
        peak: dict[str, float] = {}
        for r in range(repeats):
            batches = epoch_batches(x_all, batch, n_steps, seed=r)
            for name in names:  # interleaved, so load drifts hit every estimator alike
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base_mem = torch.cuda.memory_allocated()
                times[name].append(timed_ms(steps[name], batches, device) / n_steps)
                if cuda:
                    peak[name] = max(peak.get(name, 0.0), (torch.cuda.max_memory_allocated() - base_mem) / 2**20)
                bar.update(1)
            del batches
        base = statistics.median(times["analytic"])
        base_graph = statistics.median(times["analytic_graph"]) if "analytic_graph" in times else None
        for name in names:
            ms = statistics.median(times[name])
            row = {
                "batch_size": batch,
                "estimator": name,
                "ms_per_step": ms,
                "examples_per_s": batch / ms * 1e3,
                "steps": n_steps,
                "epoch_s": ms * n_steps / 1e3 if epoch_examples else None,
                "ratio_to_analytic": ms / base,
                "ratio_to_analytic_graph": ms / base_graph if base_graph else None,
                "ms_all_repeats": times[name],
                "first_call_s": first_call_s[name],
                "peak_mib": None,
            }
            if not args.no_memory:
                # the peer's memory is JAX's, which neither torch nor a torch-only probe sees
                row["peak_mib"] = None if name in PEERS else peak[name] if cuda else cpu_peak_memory(name, batch, 5)
            results.append(row)
        if cuda:
            ms = host_copy_ms(VAE().to(device), digits[:batch], device, args.steps)
            results.append(
                {
                    "batch_size": batch,
                    "estimator": "analytic (host copy per step)",
                    "ms_per_step": ms,
                    "examples_per_s": batch / ms * 1e3,
                    "steps": args.steps,
                    "epoch_s": None,
                    "ratio_to_analytic": ms / base,
                    "ratio_to_analytic_graph": ms / base_graph if base_graph else None,
                    "ms_all_repeats": [ms],
                    "peak_mib": None,
                }
            )
        del steps
    bar.close()

    out = {
        "device": str(device),
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "pyro_version": pyro.__version__,
        "steps": args.steps,
        "repeats": repeats,
        "epoch_examples": epoch_examples,
        "timing": ("CUDA events around each full epoch" if cuda else "perf_counter")
        if epoch_examples or cuda
        else "perf_counter",
        "memory": None
        if args.no_memory
        else (
            "torch.cuda.max_memory_allocated during the epoch, above what was allocated before it"
            if cuda
            else "peak RSS of a fresh process doing the steps (absolute)"
        ),
        "threads": torch.get_num_threads() if not cuda else None,
        "peers_missing": missing,
        "results": results,
        "failed": failed,
    }
    if args.profile:
        out["profile"] = profile_overhead(device)
    if args.floor:
        out["floor"] = [step_floor(b, device) for b in batch_sizes]
    out["kernels"] = {name: kernels for name, kernels in fused_kernels.items()}

    print(f"device: {out['device']} ({out['device_name']}), torch {out['torch_version']}, pyro {out['pyro_version']}")
    rows = [
        [
            r["batch_size"],
            r["estimator"],
            fmt(r["ms_per_step"], ".3f"),
            fmt(r["examples_per_s"], ".0f"),
            fmt(r["epoch_s"], ".3f"),
            fmt(r["ratio_to_analytic"], ".2f"),
            fmt(r["ratio_to_analytic_graph"], ".2f"),
            fmt(r["peak_mib"], ".1f"),
            fmt(r.get("first_call_s"), ".1f"),
        ]
        for r in results
    ]
    print(
        table(
            [
                "batch",
                "estimator",
                "ms/step",
                "examples/s",
                "epoch s",
                "x analytic",
                "x analytic_graph",
                "peak MiB",
                "first call s",
            ],
            rows,
        )
    )
    if args.profile:
        p = out["profile"]
        print(
            f"\nTrace_ELBO step at batch {p['batch']}: {p['trace_ms']:.2f} ms "
            f"({p['trace_ms_without_validation']:.2f} ms with pyro.enable_validation(False); "
            f"analytic {p['analytic_ms']:.2f} ms; jit_trace {p['jit_trace_ms']:.2f} ms). Self time by package:"
        )
        print(table(["where", "share"], [[k, f"{v:.0%}"] for k, v in p["self_time_share"].items()]))
    for f in out.get("floor", []):
        print(
            f"\nfloor at batch {f['batch']}: {f['flops'] / 1e6:.1f} MFLOP per step (forward + backward products), "
            f"{f['params']:,} parameters (Adam moves {f['adam_bytes'] / 2**20:.1f} MiB), GEMM "
            f"{f['gemm_gflops']:.1f} GFLOP/s here: compute floor {f['compute_floor_ms']:.3f} ms"
        )
    for name, k in out["kernels"].items():
        print(
            f"fused {name}: {k['aten_ops']} ATen operations eagerly -> {k['gemms']} GEMM calls + "
            f"{k['fused_kernels']} generated kernels"
        )
    if args.json:
        write_json(args.json, out)
        print(f"wrote {args.json}")
    if args.markdown:
        command = " ".join(["python scripts/benchmark.py", *(argv or sys.argv[1:])])
        atomic_write_text(args.markdown, markdown(out, command))
        print(f"wrote {args.markdown}")
    return 1 if failed else 0


def markdown(out: dict, command: str) -> str:
    per = (
        f"one epoch of {out['epoch_examples']:,} examples per repeat"
        if out.get("epoch_examples")
        else f"{out['steps']} steps per repeat"
    )
    lines = [
        f"### {out['device_name']} ({out['device']})",
        "",
        f"`{command}` — torch {out['torch_version']}, pyro {out['pyro_version']}, median of {out['repeats']} "
        f"interleaved repeats, {per}; timing: {out.get('timing', 'perf_counter')}. "
        f"Memory: {out['memory'] or 'not measured'}.",
        "",
        "| batch | estimator | ms/step | examples/s | epoch s | × analytic | × analytic_graph | peak MiB "
        "| first call s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, why in (out.get("failed") or {}).items():
        lines.append(f"| - | {name} | could not be captured here: {why} | | | | | | |")
    for name, why in (out.get("peers_missing") or {}).items():
        lines.append(f"| - | {name} | not measured: {why} | | | | | | |")
    for r in out["results"]:
        lines.append(
            f"| {r['batch_size']} | {r['estimator']} | {r['ms_per_step']:.3f} | {r['examples_per_s']:.0f} | "
            f"{fmt(r.get('epoch_s'), '.3f')} | {r['ratio_to_analytic']:.2f} | "
            f"{fmt(r.get('ratio_to_analytic_graph'), '.2f')} | {fmt(r['peak_mib'], '.0f')} | "
            f"{fmt(r.get('first_call_s'), '.1f')} |"
        )
    for f in out.get("floor", []):
        lines += [
            "",
            f"Floor at batch {f['batch']} (`--floor`): {f['flops'] / 1e6:.1f} MFLOP per step (the "
            f"matrix products, forward and backward), {f['params']:,} parameters (Adam moves "
            f"{f['adam_bytes'] / 2**20:.1f} MiB), GEMM throughput here {f['gemm_gflops']:.1f} GFLOP/s: "
            f"compute floor {f['compute_floor_ms']:.3f} ms per step.",
        ]
    for name, k in (out.get("kernels") or {}).items():
        lines += [
            "",
            f"Fused `{name}`: {k['aten_ops']} ATen operations eagerly, after fusion {k['gemms']} "
            f"GEMM calls + {k['fused_kernels']} generated kernels.",
        ]
    if "profile" in out:
        p = out["profile"]
        lines += [
            "",
            f"Overhead profile (`--profile`): one `Trace_ELBO` step at batch {p['batch']} takes "
            f"{p['trace_ms']:.2f} ms ({p['trace_ms_without_validation']:.2f} ms with "
            f"`pyro.enable_validation(False)`), the hand-written loss {p['analytic_ms']:.2f} ms, "
            f"`jit_trace` {p['jit_trace_ms']:.2f} ms. cProfile self time:",
            "",
            "| where | share |",
            "|---|---:|",
            *[f"| {k} | {v:.0%} |" for k, v in p["self_time_share"].items()],
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
