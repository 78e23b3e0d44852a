"""``python -m vae_pyro`` and ``torchrun --nproc_per_node N -m vae_pyro``: the command line, in one
process or in each of torchrun's (:func:`vae_pyro.distributed.launch`)."""

import sys

from .cli import main
from .distributed import launch

if __name__ == "__main__":
    sys.exit(launch(main))
