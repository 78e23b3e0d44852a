"""From a spec to a run: the one setup every command uses (:func:`prepare_run`), the rule that picks
a valid training estimator (:func:`training_estimator`), and the header every JSON result carries
(:func:`result_header`).

    spec (TOML / options)  ->  Run (device, seeds, data on device, VAE)  ->  estimators  ->  checks
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import pyro
import torch

from .data import load_dataset, prepare
from .estimators import build_estimator
from .model import VAE
from .train import resolve_device, seed_all

#: version of the JSON layout every command writes (the header below plus its own fields)
SCHEMA_VERSION = 2


@dataclass
class Run:
    """What every training command starts with: the device, the seeded shuffling generator, the VAE
    on the device, and the data the likelihood takes. A dynamic run trains on fresh draws and is
    evaluated (and checked) on one static draw of the test set."""

    spec: object
    device: torch.device
    generator: torch.Generator
    vae: VAE
    dataset: object
    binarization: str
    transform: str
    x_train: torch.Tensor
    x_test: torch.Tensor

    @property
    def dynamic(self) -> bool:
        return self.binarization == "dynamic"

    @property
    def test_binarization(self) -> str:
        return "static" if self.dynamic else self.binarization


def prepare_run(spec, binarization: str | None = None) -> Run:
    """Device, seeds, VAE and data for ``spec`` (``binarization`` overrides the spec's resolved one)."""
    device = resolve_device(spec.training.device)
    generator = seed_all(spec.training.seed)
    vae = VAE(spec.model_config()).to(device)
    resolved, transform = spec.resolved_data()
    binarization = binarization or resolved
    ds = load_dataset(spec.data.dataset)
    dynamic = binarization == "dynamic"
    x_train = prepare(ds.train_x, binarization, transform).to(device)
    x_test = prepare(ds.test_x, "static" if dynamic else binarization, transform).to(device)
    return Run(spec, device, generator, vae, ds, binarization, transform, x_train, x_test)


def training_estimator(vae, requested: str) -> tuple[str, str | None]:
    """``(name, note)``: the estimator to train with. ``requested`` when it applies to this VAE; else
    the one the checks use as reference (``analytic`` with a closed-form KL, else ``tmf``), with a
    note saying why, which every training command prints and writes to its JSON."""
    from .checks.agreement import reference_for

    valid = build_estimator(requested).validity(vae)
    if valid.valid:
        return requested, None
    chosen = reference_for(vae).estimator
    return chosen, f"trained with {chosen!r} instead of {requested!r}: {valid.reason}"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def result_header(command: str, spec_source: str, device, seed: int) -> dict:
    """The fields every JSON result starts with."""
    return {"schema_version": SCHEMA_VERSION, "command": command, "spec": spec_source, "device": str(device),
            "device_name": device_name(torch.device(device)), "seed": seed,
            "torch_version": torch.__version__, "pyro_version": pyro.__version__}
