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

from . import distributed
from .data import load_dataset, prepare
from .estimators import build_estimator
from .checkpoint import CheckpointError, load_checkpoint, restore
from .model import VAE
from .train import resolve_device, seed_all, train

#: version of the JSON layout every command writes (the header below plus its own fields)
SCHEMA_VERSION = 2


@dataclass
class RunSettings:
    """The settings every training command shares (those of the spec's [data] and [training] and the
    particles of [checks]), as flat fields; each command's config adds its own."""

    dataset: str = "mnist5k"
    binarization: str = "auto"
    transform: str = "auto"
    device: str = "auto"
    seed: int = 0
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    particles: int = 1
    kl_anneal_epochs: int = 0
    progress: bool = True
    spec: str = "defaults"

    @staticmethod
    def fields_of(spec, progress: bool = True) -> dict:
        """The shared fields from a :class:`~vae_pyro.spec.VAESpec`."""
        d, t = spec.data, spec.training
        return dict(dataset=d.dataset, binarization=d.binarization, transform=d.transform, device=t.device,
                    seed=t.seed, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, particles=spec.checks.particles,
                    kl_anneal_epochs=t.kl_anneal_epochs, progress=progress, spec=spec.source)


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

    def restart(self) -> VAE:
        """Seed again and build a new VAE, as :func:`prepare_run` did: another model from the same
        start (the same initial weights and data order) on the same data, e.g. one per estimator."""
        self.generator, self.vae = seeded_model(self.spec, self.device)
        return self.vae

    @property
    def test_binarization(self) -> str:
        return "static" if self.dynamic else self.binarization


def seeded_model(spec, device) -> tuple[torch.Generator, VAE]:
    """Every generator seeded by the spec's seed (:func:`~vae_pyro.train.seed_all`; the returned one
    orders the data), then the spec's VAE on ``device``: the same initial weights every time."""
    generator = seed_all(spec.training.seed)
    return generator, VAE(spec.model_config()).to(device)


def prepare_run(spec, binarization: str | None = None, checkpoint: str | None = None) -> Run:
    """Device, seeds, VAE and data for ``spec`` (``binarization`` overrides the spec's resolved one).
    ``checkpoint``: the VAE is the one saved there (its weights; ``spec`` must describe its model,
    see :func:`spec_for_checkpoint`)."""
    device = resolve_device(spec.training.device)
    generator, vae = seeded_model(spec, device)
    if checkpoint is not None:
        restore(load_checkpoint(checkpoint), vae, path=checkpoint)
    resolved, transform = spec.resolved_data()
    binarization = binarization or resolved
    ds = load_dataset(spec.data.dataset)
    dynamic = binarization == "dynamic"
    x_train = prepare(ds.train_x, binarization, transform).to(device)
    x_test = prepare(ds.test_x, "static" if dynamic else binarization, transform).to(device)
    return Run(spec, device, generator, vae, ds, binarization, transform, x_train, x_test)


def fit_run(run: Run, trainer: str, note: str | None, progress: bool, **train_kwargs):
    """Train ``run.vae`` as its spec says, with ``trainer`` (chosen by :func:`training_estimator`);
    returns the epoch history and the training record every command's JSON carries."""
    t = run.spec.training
    history = train(run.vae, build_estimator(trainer, run.spec.checks.particles), run.x_train, epochs=t.epochs,
                  batch_size=t.batch_size, lr=t.lr, dynamic=run.dynamic, generator=run.generator,
                  progress=progress, kl_anneal_epochs=t.kl_anneal_epochs, **train_kwargs)
    return history, {"estimator": trainer, "requested_estimator": t.estimator, "estimator_note": note,
                     "epochs": t.epochs, "batch_size": t.batch_size, "lr": t.lr,
                     "kl_anneal_epochs": t.kl_anneal_epochs}


def check_before_work(spec, *, json=None, checkpoint=None, resume: bool = False, out=None, force: bool = False,
                      k: int | None = None, chunk: int | None = None) -> None:
    """What every command checks before it loads data or allocates a model, so a bad output or an
    impossible size is one clear error instead of a traceback after the work: every output can be
    written and none is an earlier result unless ``force`` (:func:`vae_pyro.preflight.check_outputs`;
    ``checkpoint`` here is a training checkpoint to write or, with ``resume``, to continue), and the
    run's sizes fit the device's free memory (:func:`vae_pyro.memory.check_fits`; ``k``/``chunk``:
    the IWAE test NLL's). ``spec`` None: no model of the spec's (a toy) to size."""
    from . import memory, preflight

    preflight.check_outputs(json=json, checkpoint=checkpoint, resume=resume, out=out, force=force)
    if spec is not None:
        spec.resolved_data()  # the likelihood's support holds for the data options, after every override
        memory.check_fits(spec, resolve_device(spec.training.device), k=k, chunk=chunk)


def training_estimator(vae, requested: str, explicit: bool = False) -> tuple[str, str | None]:
    """``(name, note)``: the estimator to train with, the same rule for every command. ``requested``
    when it applies to this VAE. Else, when it came from a spec (or its default), the trainer of
    :func:`~vae_pyro.checks.agreement.reference_for` (``analytic`` with a closed-form KL, else ``tmf``;
    the checks' reference there is ``hand_mc``), with a note saying why that
    every training command prints and writes to its JSON; when the user named it (``explicit``), a
    ``ValueError`` naming it, why, and a valid one."""
    from .checks.agreement import reference_for

    valid = build_estimator(requested).validity(vae)
    if valid.valid:
        return requested, None
    chosen = reference_for(vae).trainer
    if explicit:
        raise ValueError(f"estimator {requested!r} is invalid for prior {vae.prior.name!r}: {valid.reason} "
                         f"(e.g. --estimator {chosen})")
    return chosen, f"trained with {chosen!r} instead of {requested!r}: {valid.reason}"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def result_header(command: str, spec_source: str, device, seed: int) -> dict:
    """The fields every JSON result starts with."""
    return {"schema_version": SCHEMA_VERSION, "command": command, "spec": spec_source, "device": str(device),
            "device_name": device_name(torch.device(device)), "seed": seed,
            "torch_version": torch.__version__, "pyro_version": pyro.__version__,
            "processes": distributed.world_size()}


def with_model(spec, model: dict):
    """A copy of ``spec`` with its model (networks and their activation, prior, likelihood, KL weight)
    replaced by ``model``, a :meth:`VAEConfig.to_dict` (saved in a checkpoint, or built in Python)."""
    import copy

    from .spec import ComponentSpec

    spec = copy.deepcopy(spec)
    spec.networks.hidden, spec.networks.z_dim = list(model["hidden"]), model["z_dim"]
    spec.networks.activation = model.get("activation", "relu")  # saved before the option: ReLU
    spec.prior = ComponentSpec(model["prior"], dict(model["prior_options"]))
    spec.likelihood = ComponentSpec(model["likelihood"], dict(model["likelihood_options"]))
    spec.training.kl_weight = model["kl_weight"]
    return spec


def spec_of(settings: RunSettings, model):
    """The spec of a command's flat settings and model (a :class:`VAEConfig`), for a config built in
    Python (``ExperimentConfig(...)``) to be set up by :func:`prepare_run` like a spec is."""
    from .spec import load_spec

    spec = with_model(load_spec(None), model.to_dict())
    d, t = spec.data, spec.training
    d.dataset, d.binarization, d.transform = settings.dataset, settings.binarization, settings.transform
    t.device, t.seed, t.epochs, t.batch_size = settings.device, settings.seed, settings.epochs, settings.batch_size
    t.lr, t.kl_anneal_epochs, spec.checks.particles = settings.lr, settings.kl_anneal_epochs, settings.particles
    spec.source = settings.spec
    return spec


def spec_for_checkpoint(spec, path: str, prior: str | None = None, z_dim: int | None = None):
    """``spec`` with its model (networks and their activation, prior, likelihood, KL weight) replaced by the one saved in
    the checkpoint at ``path``, so that the data, the checks and the reports all describe the loaded
    model. A ``prior`` or ``z_dim`` the user asked for that differs from the checkpoint's is a
    :class:`~vae_pyro.checkpoint.CheckpointError` (one line, exit 2 from the CLI)."""
    saved = load_checkpoint(path)["model_config"]
    for key, asked in (("prior", prior), ("z_dim", z_dim)):
        if asked is not None and asked != saved[key]:
            raise CheckpointError(f"checkpoint {path} holds a model with {key} {saved[key]!r}, not {asked!r}; "
                                  f"drop --{key.replace('_', '-')} (the model's settings come from the checkpoint)")
    spec = with_model(spec, saved)
    if saved.get("x_dim", 784) != spec.model_config().x_dim:
        raise CheckpointError(f"checkpoint {path} holds a model of {saved['x_dim']} pixels; this data has "
                              f"{spec.model_config().x_dim}")
    return spec
