#!/usr/bin/env python3
"""Check draws per second in one process or several (torch.distributed), one thread per process:

    python scripts/distributed_benchmark.py --draws 400 --grad-draws 100
    torchrun --standalone --nproc_per_node 2 scripts/distributed_benchmark.py --draws 400 --grad-draws 100

Times the agreement checks' two kinds of draws -- Monte Carlo values (``loss_draws``) and gradients
(``gradient_draws``) of one estimator on the MNIST VAE at random weights over the 1,000 test digits
-- including the all-reduce that gathers them, and prints (process 0) one JSON line: processes, draws,
seconds and draws per second for each. The draws are seeded by index, so the statistics printed are
the same numbers for any number of processes.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vae_pyro import distributed
from vae_pyro.checks.stats import MCStats, gradient_directions, gradient_draws, loss_draws
from vae_pyro.data import load_mnist5k, prepare
from vae_pyro.estimators import build_estimator
from vae_pyro.model import VAE
from vae_pyro.train import seed_all


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=400)
    p.add_argument("--grad-draws", type=int, default=100)
    p.add_argument("--estimator", default="analytic")
    p.add_argument("--hidden", type=int, default=400)
    args = p.parse_args()
    torch.set_num_threads(1)  # one core per process: 1 vs N processes is 1 vs N cores
    n = distributed.init("cpu")
    seed_all(0)
    vae = VAE(hidden=(args.hidden,), z_dim=20)
    x = prepare(load_mnist5k().test_x, "static")
    est = build_estimator(args.estimator)
    loss_draws(est, vae, x, 2 * n)  # warm-up (allocations, the process group's first collective)
    start = time.perf_counter()
    values = MCStats.of(est.name, loss_draws(est, vae, x, args.draws), 1)
    mc_s = time.perf_counter() - start
    directions = gradient_directions(vae, x[:256])
    start = time.perf_counter()
    grads = gradient_draws(est, vae, x[:256], args.grad_draws, directions)
    grad_s = time.perf_counter() - start
    if distributed.is_main():
        print(
            json.dumps(
                {
                    "processes": n,
                    "estimator": est.name,
                    "draws": args.draws,
                    "mc_seconds": round(mc_s, 3),
                    "mc_draws_per_s": round(args.draws / mc_s, 2),
                    "mean": values.mean,
                    "se": values.se,
                    "grad_draws": args.grad_draws,
                    "grad_seconds": round(grad_s, 3),
                    "grad_draws_per_s": round(args.grad_draws / grad_s, 2),
                    "grad_proj_sum": float(grads.proj.sum()),
                }
            )
        )


if __name__ == "__main__":
    main()
