#!/usr/bin/env python3
"""Speed of every ELBO estimator, side by side in one process, as a ratio to the hand-written loss.

    python scripts/benchmark.py                         # CPU (or CUDA when present), table on stdout
    python scripts/benchmark.py --device cuda --json runs/bench-cuda.json
    python scripts/benchmark.py --profile               # where Pyro's per-step overhead goes

For each batch size and estimator: ms per training step (loss, backward, Adam), examples/s, the ratio
to ``analytic`` measured in the same run (repeats are interleaved across estimators, and the median
kept, so drifts in machine load hit every estimator alike), and peak memory: on CUDA
``torch.cuda.max_memory_allocated`` during the steps; on the CPU the growth of the process's peak
resident set of a fresh subprocess per (estimator, batch) that does only those steps (absolute, so
about 300 MiB of it is Python, torch and Pyro; compare rows).

The training data live on the device for the whole run (``vae_pyro.data.Batches`` indexes a resident
tensor). On CUDA the benchmark also times the other data path (a host batch copied every step) so the
saving is a measured number.
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

import pyro
import torch

from vae_pyro.data import load_mnist5k, prepare
from vae_pyro.estimators import DEFAULT_ESTIMATORS, build_estimator
from vae_pyro.model import VAE
from vae_pyro.report import atomic_write_text, fmt, table, write_json
from vae_pyro.train import resolve_device, seed_all, time_steps


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
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
    vae = VAE()
    est = build_estimator(estimator)
    time_steps(vae, est, x, steps=steps, warmup=1)
    return peak_rss_mib()


def cpu_peak_memory(estimator: str, batch: int, steps: int) -> float | None:
    cmd = [sys.executable, __file__, "--_probe", f"{estimator},{batch},{steps}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def cuda_step_memory(vae, est, x, steps: int) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    time_steps(vae, est, x, steps=steps, warmup=1)
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def host_copy_ms(vae, x_host: torch.Tensor, device, steps: int) -> float:
    """The other data path: each step copies its batch from (pinned) host memory."""
    vae = vae.clone()
    est = build_estimator("analytic")
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
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
        elif "/torch/" in filename or (filename == "~" and ("torch" in func or "Tensor" in func
                                                            or "backward" in func)):
            key = "torch (tensor ops, autograd, optimizer)"
        elif filename == "~":
            key = "Python built-ins (dicts, getattr, isinstance ...)"
        else:
            key = "other Python"
        groups[key] = groups.get(key, 0.0) + tottime
    shares = {k: v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}
    with_validation = time_steps(vae, est, x, steps=steps)
    pyro.enable_validation(False)
    try:
        without_validation = time_steps(vae, est, x, steps=steps)
    finally:
        pyro.enable_validation(True)
    analytic = time_steps(vae, build_estimator("analytic"), x, steps=steps)
    jit = time_steps(vae, build_estimator("jit_trace"), x, steps=steps)
    return {"batch": batch, "self_time_share": shares, "trace_ms": with_validation,
            "trace_ms_without_validation": without_validation, "analytic_ms": analytic, "jit_trace_ms": jit}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-sizes", default="32,128,512", help="comma-separated (default: 32,128,512)")
    parser.add_argument("--estimators", default=",".join(DEFAULT_ESTIMATORS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat (default: 20)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the median is kept (default: 3)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--profile", action="store_true", help="also profile Pyro's per-step overhead")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--markdown", metavar="PATH", help="also write the tables as a Markdown page (docs/benchmark.md)")
    parser.add_argument("--_probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._probe:
        name, batch, steps = args._probe.split(",")
        print(memory_probe(name, int(batch), int(steps)))
        return 0

    try:
        device = resolve_device(args.device)
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        names = [n for n in args.estimators.split(",") if n]
        for n in names:
            build_estimator(n)
    except (ValueError, KeyError) as err:
        print(f"benchmark: error: {err}", file=sys.stderr)
        return 2
    if "analytic" not in names:
        names.insert(0, "analytic")

    seed_all(0)
    x_all = prepare(load_mnist5k().train_x, "static")
    results = []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(batch_sizes) * len(names) * args.repeats, desc="benchmark", unit="run")
    for batch in batch_sizes:
        x = x_all[:batch].to(device)
        vae = VAE().to(device)
        times: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(args.repeats):
            for name in names:  # interleaved, so load drifts hit every estimator alike
                times[name].append(time_steps(vae, build_estimator(name), x, steps=args.steps))
                bar.update(1)
        base = statistics.median(times["analytic"])
        for name in names:
            ms = statistics.median(times[name])
            row = {"batch_size": batch, "estimator": name, "ms_per_step": ms, "examples_per_s": batch / ms * 1e3,
                   "ratio_to_analytic": ms / base, "ms_all_repeats": times[name], "peak_mib": None}
            if not args.no_memory:
                if device.type == "cuda":
                    row["peak_mib"] = cuda_step_memory(vae, build_estimator(name), x, args.steps)
                else:
                    row["peak_mib"] = cpu_peak_memory(name, batch, 5)
            results.append(row)
        if device.type == "cuda":
            results.append({"batch_size": batch, "estimator": "analytic (host copy per step)",
                            "ms_per_step": (ms := host_copy_ms(vae, x_all[:batch], device, args.steps)),
                            "examples_per_s": batch / ms * 1e3, "ratio_to_analytic": ms / base,
                            "ms_all_repeats": [ms], "peak_mib": None})
    bar.close()

    out = {
        "device": str(device), "device_name": device_name(device), "torch_version": torch.__version__,
        "pyro_version": pyro.__version__, "steps": args.steps, "repeats": args.repeats,
        "memory": None if args.no_memory else ("cuda max_memory_allocated growth" if device.type == "cuda"
                                               else "peak RSS of a fresh process doing the steps (absolute)"),
        "results": results,
    }
    if args.profile:
        out["profile"] = profile_overhead(device)

    print(f"device: {out['device']} ({out['device_name']}), torch {out['torch_version']}, pyro {out['pyro_version']}")
    rows = [[r["batch_size"], r["estimator"], fmt(r["ms_per_step"], ".2f"), fmt(r["examples_per_s"], ".0f"),
             fmt(r["ratio_to_analytic"], ".2f"), fmt(r["peak_mib"], ".1f")] for r in results]
    print(table(["batch", "estimator", "ms/step", "examples/s", "x analytic", "peak MiB"], rows))
    if args.profile:
        p = out["profile"]
        print(f"\nTrace_ELBO step at batch {p['batch']}: {p['trace_ms']:.2f} ms "
              f"({p['trace_ms_without_validation']:.2f} ms with pyro.enable_validation(False); "
              f"analytic {p['analytic_ms']:.2f} ms; jit_trace {p['jit_trace_ms']:.2f} ms). Self time by package:")
        print(table(["where", "share"], [[k, f"{v:.0%}"] for k, v in p["self_time_share"].items()]))
    if args.json:
        write_json(args.json, out)
        print(f"wrote {args.json}")
    if args.markdown:
        atomic_write_text(args.markdown, markdown(out, " ".join(["python scripts/benchmark.py", *(argv or sys.argv[1:])])))
        print(f"wrote {args.markdown}")
    return 0


def markdown(out: dict, command: str) -> str:
    lines = [
        f"### {out['device_name']} ({out['device']})",
        "",
        f"`{command}` — torch {out['torch_version']}, pyro {out['pyro_version']}, median of {out['repeats']} "
        f"interleaved repeats of {out['steps']} steps. Memory: {out['memory'] or 'not measured'}.",
        "",
        "| batch | estimator | ms/step | examples/s | × analytic | peak MiB |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in out["results"]:
        lines.append(f"| {r['batch_size']} | {r['estimator']} | {r['ms_per_step']:.2f} | {r['examples_per_s']:.0f} | "
                     f"{r['ratio_to_analytic']:.2f} | {fmt(r['peak_mib'], '.0f')} |")
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
