"""From a spec to a run: the one setup every command uses (:func:`prepare_run`), the rule that picks
a valid training estimator (:func:`training_estimator`), and the header every JSON result carries
(:func:`result_header`).

    spec (TOML / options)  ->  Run (device, seeds, data on device, VAE)  ->  estimators  ->  checks
"""

from __future__ import annotations

import copy
import platform
from dataclasses import dataclass

import pyro
import torch

from . import distributed, memory, preflight
from .checkpoint import load_checkpoint, restore
from .checks.agreement import reference_for
from .data import load_dataset, prepare
from .devices import resolve_device
from .errors import CheckpointError, SpecError
from .estimators import build_estimator
from .model import VAE, VAEConfig
from .spec import ComponentSpec, VAESpec
from .steps import choose_step
from .train import seed_all, train

#: version of the JSON layout every command writes (the header below plus its own fields)
SCHEMA_VERSION = 2


@dataclass
class Run:
    """What every training command starts with: the device, the seeded shuffling generator, the VAE
    on the device, and the data the likelihood takes. A dynamic run trains on fresh draws and is
    evaluated (and checked) on one static draw of the test set."""

    spec: VAESpec
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
    x_train = prepare(ds.train_x, binarization, transform, ds.max_value).to(device)
    x_test = prepare(ds.test_x, "static" if dynamic else binarization, transform, ds.max_value).to(device)
    return Run(spec, device, generator, vae, ds, binarization, transform, x_train, x_test)


def fit_run(run: Run, trainer: str, note: str | None, progress: bool, vae=None, **train_kwargs):
    """Train ``run.vae`` (or ``vae``, e.g. a :meth:`Run.restart`) as its spec says, with ``trainer``
    (chosen by :func:`training_estimator`), each step run as ``training.step`` chooses
    (:func:`vae_pyro.steps.choose_step`); returns the epoch history and the training record every
    command's JSON carries."""
    vae = run.vae if vae is None else vae
    t = run.spec.training
    estimator = build_estimator(trainer, t.particles)
    route, why = choose_step(t.step, vae.device, estimator, len(run.x_train) // t.batch_size * t.epochs)
    history = train(
        vae,
        estimator,
        run.x_train,
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        dynamic=run.dynamic,
        generator=run.generator,
        progress=progress,
        kl_anneal_epochs=t.kl_anneal_epochs,
        step=route,
        **train_kwargs,
    )
    return history, {
        "estimator": trainer,
        "requested_estimator": t.estimator,
        "estimator_note": note,
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "lr": t.lr,
        "kl_anneal_epochs": t.kl_anneal_epochs,
        "step": route,
        "step_reason": why,
    }


def check_before_work(
    spec,
    *,
    json=None,
    checkpoint=None,
    resume: bool = False,
    out=None,
    force: bool = False,
    k: int | None = None,
    chunk: int | None = None,
    command: str | None = None,
    options: dict | None = None,
    trains: bool = True,
    toy: bool = False,
) -> None:
    """What every command checks before it loads data or allocates a model, so a bad output or an
    impossible size is one clear error instead of a traceback after the work: every output can be
    written and none is an earlier result unless ``force`` (:func:`vae_pyro.preflight.check_outputs`;
    ``checkpoint`` here is a training checkpoint to write or, with ``resume``, to continue), and the
    run's sizes fit the device's free memory and a day's time (:func:`vae_pyro.memory.check_fits`;
    ``k``/``chunk``: the IWAE test NLL's; ``command``, ``options``: the loops it runs, its own options;
    ``trains``: False where a saved model is evaluated; ``toy``: the spec's model is not run, only its
    checks' draws are sized, :func:`vae_pyro.memory.check_draws`). ``spec`` None: nothing to size."""
    preflight.check_outputs(
        json=json,
        checkpoint=checkpoint,
        resume=resume,
        out=out,
        force=force,
        epochs=spec.training.epochs if spec is not None and resume else None,
    )
    if spec is not None and toy:
        memory.check_draws(spec, torch.device("cpu"))  # toys run on the CPU (the toy says so, for --device)
    elif spec is not None:
        spec.resolved_data()  # the likelihood's support holds for the data options, after every override
        memory.check_fits(
            spec,
            resolve_device(spec.training.device),
            k=k,
            chunk=chunk,
            command=command,
            options=options,
            trains=trains,
        )
        # an explicit --step that cannot apply is refused now, not after the data is loaded
        choose_step(
            spec.training.step, resolve_device(spec.training.device), build_estimator(spec.training.estimator), 0
        )


def training_estimator(vae, requested: str, explicit: bool = False) -> tuple[str, str | None]:
    """``(name, note)``: the estimator to train with, the same rule for every command. ``requested``
    when it applies to this VAE. Else, when it came from a spec (or its default), the trainer of
    :func:`~vae_pyro.checks.agreement.reference_for` (``analytic`` with a closed-form KL, else ``tmf``;
    the checks' reference there is ``hand_mc``), with a note saying why that
    every training command prints and writes to its JSON; when the user named it (``explicit``), a
    :class:`~vae_pyro.errors.SpecError` naming it, why, and a valid one."""
    valid = build_estimator(requested).validity(vae)
    if valid.valid:
        return requested, None
    chosen = reference_for(vae).trainer
    if explicit:
        raise SpecError(
            f"training.estimator {requested!r} is invalid for prior {vae.prior.name!r}: {valid.reason} "
            f"(e.g. training.estimator {chosen!r})"
        )
    return chosen, f"trained with {chosen!r} instead of {requested!r}: {valid.reason}"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def result_header(command: str, spec: VAESpec | None, device, seed: int | None = None, settings: bool = True) -> dict:
    """The fields every JSON result starts with: the command, the spec's source and seed, every resolved
    setting (``settings``: the spec as it reads back, :meth:`VAESpec.to_raw`; left out where each row of
    the result carries its own spec), the device and the versions. ``spec`` None: a toy, whose ``seed``
    is given."""
    header = {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "spec": spec.source if spec else None,
        "device": str(device),
        "device_name": device_name(torch.device(device)),
        "seed": spec.training.seed if spec else seed,
        "torch_version": torch.__version__,
        "pyro_version": pyro.__version__,
        "processes": distributed.world_size(),
    }
    if spec is not None and settings:
        header["settings"] = spec.to_raw()
    return header


def with_model(spec: VAESpec, model: dict) -> VAESpec:
    """A copy of ``spec`` with its model (networks and their activation, prior, likelihood, KL weight)
    replaced by ``model``, a :meth:`VAEConfig.to_dict` (saved in a checkpoint)."""
    spec = copy.deepcopy(spec)
    spec.networks.hidden, spec.networks.z_dim = list(model["hidden"]), model["z_dim"]
    spec.networks.activation = model.get("activation", "relu")  # saved before the option: ReLU
    spec.networks.network = model.get("network", "mlp")  # saved before the option: the MLP
    spec.prior = ComponentSpec(model["prior"], dict(model["prior_options"]))
    spec.likelihood = ComponentSpec(model["likelihood"], dict(model["likelihood_options"]))
    spec.training.kl_weight = model["kl_weight"]
    return spec


#: what a checkpoint fixes that a user may also ask for: the setting, and the saved model's key
#: (a prior's or likelihood's own options, ``prior.components`` ..., are compared with its saved options)
CHECKPOINT_FIXES = {
    "prior.name": "prior",
    "likelihood.name": "likelihood",
    "networks.z_dim": "z_dim",
    "networks.hidden": "hidden",
    "networks.activation": "activation",
    "networks.network": "network",
    "training.kl_weight": "kl_weight",
}


def _saved_value(saved: dict, setting: str):
    """The checkpoint's value of ``setting`` (``_NOT_FIXED`` where the checkpoint does not fix it)."""
    if setting in CHECKPOINT_FIXES:
        return saved.get(CHECKPOINT_FIXES[setting], _NOT_FIXED)
    section, _, key = setting.partition(".")
    if section in ("prior", "likelihood"):
        return saved.get(f"{section}_options", {}).get(key, _NOT_FIXED)
    return _NOT_FIXED


_NOT_FIXED = object()


def _same(a, b) -> bool:
    return (list(a) == list(b)) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b


def spec_value(spec: VAESpec, setting: str):
    """The value of ``setting`` (``"networks.hidden"``, ``"prior.name"``, ``"prior.components"``) in ``spec``."""
    section, _, key = setting.partition(".")
    part = getattr(spec, section, None)
    if isinstance(part, ComponentSpec):
        return part.name if key == "name" else part.options.get(key)
    return getattr(part, key, None)


def spec_for_checkpoint(spec: VAESpec, path: str, asked: dict | None = None) -> VAESpec:
    """``spec`` with its model (networks and their activation, prior, likelihood, KL weight) replaced by
    the one saved in the checkpoint at ``path``, so that the data, the checks and the reports all
    describe the loaded model. ``asked``: settings the user gave explicitly ({"prior.name": "mog",
    "networks.hidden": [8]}); one the checkpoint fixes (:data:`CHECKPOINT_FIXES`, the prior's and
    likelihood's options) with another value is a :class:`~vae_pyro.errors.CheckpointError` naming
    the setting (one line, exit 2 from the command line, which names its flag): refused, not ignored."""
    saved = load_checkpoint(path)["model_config"]
    for setting, value in (asked or {}).items():
        have = _saved_value(saved, setting)
        if value is not None and have is not _NOT_FIXED and not _same(value, have):
            key = setting.partition(".")[2] if setting not in CHECKPOINT_FIXES else CHECKPOINT_FIXES[setting]
            raise CheckpointError(
                f"checkpoint {path} holds a model with {key} {have!r}, not {value!r}; "
                f"leave {setting} unset (the model's settings come from the checkpoint)"
            )
    spec = with_model(spec, saved)
    images, data = VAEConfig.from_dict(saved).image_shape, spec.model_config().image_shape
    if images != data:
        raise CheckpointError(
            f"checkpoint {path} holds a model of {'x'.join(map(str, images))} images; "
            f"this data has {'x'.join(map(str, data))}"
        )
    return spec
