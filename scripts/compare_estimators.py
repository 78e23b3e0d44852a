#!/usr/bin/env python3
"""Train one VAE per estimator and write a run folder (metrics, plots, report).

    python scripts/compare_estimators.py --out runs/experiment            # defaults: ~5 min on 2 CPU cores
    python scripts/compare_estimators.py --out runs/big --dataset idx:~/mnist --epochs 100 --device cuda

The same as ``vae-pyro experiment``; every option of that command works here.
"""

import sys

from vae_pyro.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", *sys.argv[1:]]))
