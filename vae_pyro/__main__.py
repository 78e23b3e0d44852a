"""``python -m vae_pyro`` and ``torchrun --nproc_per_node N -m vae_pyro``: the command line, in one
process or in each of torchrun's (:func:`vae_pyro.cli.main` starts the process group, see
:mod:`vae_pyro.distributed`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
