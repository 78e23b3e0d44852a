"""More than one process: ``torchrun --nproc_per_node N -m vae_pyro COMMAND ...`` (PyTorch's own
``torch.distributed``: NCCL on GPUs, Gloo on CPUs). In one process the collectives are no-ops:
training computes exactly what it computed before; the checks' draws and the IWAE NLL are seeded per
draw (below), which changed their numbers once, when this module came, but makes them independent of
the number of processes.

**Launch** (:func:`launch`): torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; the process
group is started with a timeout (``VAE_PYRO_DIST_TIMEOUT`` seconds, default 300), so a collective
whose peer died raises instead of hanging; each process uses GPU ``LOCAL_RANK``. Only process 0 prints
and writes files (:func:`is_main`: JSON, reports, plots, checkpoints); the others' stdout and stderr go
to /dev/null. An error on any process prints one line naming the process and exits non-zero; torchrun
then stops the others (and the timeout ends any collective still waiting on it).

**Training: explicit gradient all-reduce, not DistributedDataParallel.** Pyro's ``pyro.module(name,
m)`` (pyro/primitives.py) registers ``m``'s own ``nn.Parameter`` objects in the global param store
under ``name.param_name`` and returns ``m``; the model and guide then call the VAE's encoder and
decoder directly. DDP only reduces gradients when its *wrapper's* ``forward`` runs (it arms its
reducer there), so the Pyro model/guide would have to call the wrapper: that renames every
parameter (``module.`` prefix, in the param store and in checkpoints), breaks the JIT-traced and
graph-captured estimators, and forward is called several times per step (guide, model, particles),
which DDP's reducer does not expect without ``find_unused_parameters``. The training loop already
owns one Adam over ``vae.parameters()`` -- the very tensors the param store holds -- so after
``backward`` :func:`reduce_gradients` sums their gradients (one flat all-reduce) together with the
loss. Each process's loss is its shard's -ELBO divided by the *global* batch size, so the summed
gradient is exactly the one-process gradient of -ELBO/example over the global batch, whatever the
shard sizes. Every estimator trains this way unchanged.

**Random numbers.** Training: every process reseeds torch at each epoch from (seed, epoch, rank)
(:func:`seed_epoch`), so noise and dynamic binarization differ per process and are reproducible (also
after a resume); the data order comes from the shared shuffling generator, so every process sees the
same global batches. The global generator is put back afterwards (:func:`shared_rng_state`) so all
processes leave training in the same state. Checks and NLL: draw ``r`` of ``n`` runs with torch
seeded by ``base + r`` (:func:`seeded_draws`), ``base`` drawn once from process 0's generator and
broadcast; process ``p`` runs draws ``p, p + N, ...``; the draws (or sufficient statistics) are summed
across processes into their slots (:func:`gather_draws`, :func:`sum_across`), so the union is the
same set of draws a single process makes, and the statistics and verdicts are the same numbers.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from .errors import SpecError

TIMEOUT_ENV = "VAE_PYRO_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300


def launched() -> bool:
    """Started by torchrun (or any launcher that sets WORLD_SIZE > 1 and RANK)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Whether this process prints and writes files (process 0, or the only one)."""
    return rank() == 0


def backend() -> str | None:
    return dist.get_backend() if active() else None


def timeout_s() -> float:
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def init(device: str = "auto", timeout: float | None = None) -> int:
    """Start the process group from torchrun's environment: NCCL with one GPU per local rank when
    ``device`` may be CUDA and CUDA exists, else Gloo. Returns the number of processes."""
    if not launched() or dist.is_initialized():
        return world_size()
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout or timeout_s()))
    return world_size()


def _device_arg(argv) -> str:
    """The value of ``--device`` in ``argv`` (the backend is chosen before the options are parsed)."""
    for i, arg in enumerate(argv):
        if arg == "--device" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--device="):
            return arg.split("=", 1)[1]
    return "auto"


def launch(main, argv=None) -> int:
    """Run the command-line ``main(argv)`` in one process, or in each of torchrun's processes:
    process 0 prints, the others only their error lines; an error anywhere ends the run with one line
    naming the process (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not launched():
        return main(argv)
    real_stderr = sys.stderr
    try:
        n = init(_device_arg(argv))
        if not is_main():
            sys.stdout, sys.stderr = open(os.devnull, "w"), _ErrorLinesOnly(real_stderr, rank())
        code = main(argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 2
    except Exception as err:  # any process's failure: say which, then stop (torchrun stops the others)
        print(
            f"vae-pyro: error on process {rank_from_env()} of {os.environ.get('WORLD_SIZE')}: "
            f"{type(err).__name__}: {err}"
            + (
                " (a collective failed or timed out: another process probably failed first; see its message)"
                if _is_collective(err)
                else ""
            ),
            file=real_stderr,
            flush=True,
        )
        os._exit(1)  # not a clean shutdown: the other processes may be blocked in a collective
    if is_main() and code != 2:
        print(f"{n} processes ran (torch.distributed, {backend()} backend)")
    if code:
        sys.stdout.flush()
        real_stderr.flush()
        os._exit(code)  # as above: a process that stops early may leave others in a collective
    dist.destroy_process_group()
    return 0


class _ErrorLinesOnly:
    """stderr of a process other than 0: only the lines the tool writes as errors (``vae-pyro: ...``,
    prefixed with the process), not progress bars or warnings, which process 0 shows."""

    def __init__(self, real, process: int):
        self.real, self.process, self.passing = real, process, False

    def write(self, text: str) -> int:
        if text.startswith("vae-pyro:"):
            self.passing = True
            text = f"[process {self.process}] {text}"
        if self.passing:
            self.real.write(text)
            self.passing = not text.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.real.flush()

    def isatty(self) -> bool:
        return False


def rank_from_env() -> str:
    return os.environ.get("RANK", "0")


def _is_collective(err: Exception) -> bool:
    text = str(err).lower()
    return isinstance(err, (RuntimeError, dist.DistBackendError)) and any(
        w in text for w in ("gloo", "nccl", "timed out", "timeout", "connection", "peer")
    )


# ----------------------------------------------------------------------------------------------
# Moving numbers between processes


def _comm_device(t: torch.Tensor) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if backend() == "nccl" else t.device


def sum_across(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor summed over the processes (one all-reduce each), on its own device."""
    if not active():
        return tensors
    out = []
    for t in tensors:
        buf = t.detach().to(_comm_device(t)).clone()
        dist.all_reduce(buf)
        out.append(buf.to(t.device))
    return tuple(out)


def broadcast_tensors(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Process 0's copies of ``tensors`` on every process."""
    if not active():
        return tensors
    out = []
    for t in tensors:
        buf = t.detach().to(_comm_device(t)).contiguous().clone()
        dist.broadcast(buf, 0)
        out.append(buf.to(t.device))
    return out


def shared_seed() -> int:
    """A seed drawn from torch's generator on process 0, the same on every process."""
    seed = torch.randint(0, 2**62, (1,), dtype=torch.int64)
    return int(broadcast_tensors([seed])[0])


def my_draws(n: int) -> range:
    """The indices among ``n`` draws that this process runs: rank, rank + N, ..."""
    return range(rank(), n, world_size())


def seeded_draws(n: int, warmup=None):
    """Yield this process's draw indices among ``n``, with torch seeded by ``base + r`` before draw
    ``r`` (``base``: :func:`shared_seed`), so that draw ``r`` is the same number on whichever process
    runs it. ``warmup()`` runs once before the draws (a compiled estimator's first call traces, and
    tracing draws random numbers). Torch's generator is restored afterwards (the draws do not move
    it), so every process stays in step."""
    base = shared_seed()
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        if warmup is not None:
            warmup()
        for r in my_draws(n):
            torch.manual_seed((base + r) % 2**63)
            yield r


def gather_draws(values: list[float], n: int) -> list[float]:
    """All ``n`` draws in order, from each process's share (:func:`my_draws`)."""
    if not active():
        return values
    t = torch.zeros(n, dtype=torch.float64)
    t[list(my_draws(n))] = torch.tensor(values, dtype=torch.float64)
    return sum_across(t)[0].tolist()  # each slot is one process's value plus zeros: exact


def map_seeded_batches(x: torch.Tensor, batch_size: int, fn, outputs: int = 1, progress=None) -> list[torch.Tensor]:
    """``outputs`` per-example float64 tensors over all of ``x``: ``fn(x_batch)`` returns one value per
    example of the batch for each output; batch b runs seeded by its index (:func:`seeded_draws`), on
    whichever process, and the rows are summed into place across processes (exact: zeros elsewhere)."""
    out = [torch.zeros(len(x), dtype=torch.float64, device=x.device) for _ in range(outputs)]
    for b in seeded_draws(-(-len(x) // batch_size)):
        rows = slice(b * batch_size, (b + 1) * batch_size)
        for o, value in zip(out, fn(x[rows])):
            o[rows] = value.detach()
        if progress is not None:
            progress.update(world_size())
    return list(sum_across(*out))


# ----------------------------------------------------------------------------------------------
# Training


def shard_batch(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """This process's contiguous share of a global batch, and the global batch size."""
    n = world_size()
    if n == 1:
        return x, x.shape[0]
    if x.shape[0] < n:
        raise ValueError(
            f"a batch of {x.shape[0]} examples cannot be split over {n} processes; use --batch-size >= {n}"
        )
    return x.tensor_split(n)[rank()], x.shape[0]


def reduce_gradients(params, loss: torch.Tensor) -> torch.Tensor:
    """Sum the parameters' gradients and ``loss`` over the processes, in one all-reduce of one flat
    buffer (no host synchronisation). Returns the summed loss."""
    if not active():
        return loss
    params = list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.reshape(1).to(grads[0].dtype)])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    return flat[-1].to(loss.dtype)


def refuse_in_several_processes(what: str) -> None:
    """A ``ValueError`` (exit 2, before any work) for a feature that runs in one process only."""
    if active():
        raise SpecError(
            f"{what} runs in one process only, not under torchrun ({world_size()} processes); "
            f"drop {what} or run without torchrun"
        )


def shared_rng_state():
    """Torch's generator state before training (the same on every process), or None in one process."""
    return torch.random.get_rng_state() if active() else None


def restore_rng_state(state) -> None:
    if state is not None:
        torch.random.set_rng_state(state)


def seed_epoch(generator: torch.Generator | None, epoch: int) -> None:
    """In a distributed run: seed torch from (the run's seed, ``epoch``, this process's rank), so each
    process draws its own noise and dynamic binarization, reproducibly (also after a resume)."""
    if not active():
        return
    seed = generator.initial_seed() if generator is not None else torch.initial_seed()
    torch.manual_seed(epoch_seed(seed, epoch, rank()))


def epoch_seed(seed: int, epoch: int, process: int) -> int:
    """The torch seed of ``process`` in ``epoch`` of a distributed training run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, epoch, process]).generate_state(1)[0])
