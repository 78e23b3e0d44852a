"""The library entry points behind every command, for a Python user:

    from vae_pyro import api
    result = api.compare("mog-bernoulli", epochs=1, draws=20)   # a dict, the same as `compare --json`
    api.train(None, epochs=5, checkpoint="ck.pt")
    api.nll(None, checkpoint="ck.pt", k=500)                   # evaluates the saved model, no training
    api.check("beta-vae", epochs=1)
    api.reproduce("burda2015", out="runs/smoke", fast=True)      # trains every row; writes the run folder

Each takes a spec (a :class:`~vae_pyro.spec.VAESpec`, a shipped name, a path, or None for the built-in
defaults) and keyword settings (``epochs``, ``seed``, ``draws`` ... any field the command line sets,
:data:`SETTINGS`), runs the command and returns its result: a dict whose header (command, spec,
versions, device, seed, schema_version) is the same for every command (:func:`~vae_pyro.runs.result_header`).
``checkpoint`` on :func:`nll`, :func:`check` and :func:`compare` evaluates the model saved there
instead of training one.

``json``: also write the result there (atomically). Before any work each entry point checks its
outputs and the run's memory (:func:`~vae_pyro.runs.check_before_work`): an existing result
(``json``, :func:`train`'s ``checkpoint`` without ``resume``, :func:`experiment`'s ``out``) is refused
unless ``force=True``.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from . import distributed
from .estimators import build_estimator
from .runs import check_before_work, fit_run, prepare_run, result_header, spec_for_checkpoint, training_estimator
from .spec import VAESpec, load_spec

#: keyword setting -> spec field: what the entry points (and the command-line options) may set
SETTINGS = {
    "dataset": "data.dataset", "binarization": "data.binarization", "transform": "data.transform",
    "hidden": "networks.hidden", "z_dim": "networks.z_dim", "network": "networks.network",
    "device": "training.device", "seed": "training.seed", "epochs": "training.epochs",
    "batch_size": "training.batch_size", "lr": "training.lr", "estimator": "training.estimator",
    "particles": "checks.particles", "draws": "checks.draws", "grad_draws": "checks.grad_draws",
    "estimators": "checks.estimators",
}


def resolve_spec(spec, command: str, settings: dict | None = None, prior=None, likelihood=None,
                 overrides=()) -> VAESpec:
    """The spec a command runs: ``command``'s defaults < the spec < ``settings`` < ``prior``/
    ``likelihood`` < ``overrides`` (``--set``). A :class:`VAESpec` given as it is only takes ``settings``."""
    fields = {SETTINGS[k]: list(v) if isinstance(v, tuple) else v for k, v in (settings or {}).items()
              if v is not None}
    unknown = [k for k in (settings or {}) if k not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}; allowed: {', '.join(SETTINGS)}")
    if isinstance(spec, VAESpec):
        import copy

        spec = copy.deepcopy(spec)
        for key, value in fields.items():
            section, name = key.split(".")
            setattr(getattr(spec, section), name, value)
        return spec
    return load_spec(spec, overrides=list(overrides), prior=prior, likelihood=likelihood, fields=fields,
                     command=command)


def _loaded(spec, checkpoint, prior=None, z_dim=None):
    return spec if checkpoint is None else spec_for_checkpoint(spec, checkpoint, prior, z_dim)


def _written(result: dict, json) -> dict:
    if json is not None:
        from .report import write_json

        write_json(json, result)
    return result


def compare(spec=None, *, checkpoint: str | None = None, progress: bool = False, json=None, force: bool = False,
            **settings) -> dict:
    """Train briefly (or load ``checkpoint``), then run every agreement check for every estimator."""
    from .compare import CompareConfig, run_comparison

    spec = _loaded(resolve_spec(spec, "compare", settings), checkpoint)
    check_before_work(spec, json=json, force=force)
    cfg = CompareConfig.from_spec(spec, progress=progress)
    cfg.validate()
    return _written(run_comparison(cfg, prepare_run(spec, checkpoint=checkpoint), checkpoint), json)


def check(spec=None, *, toy: str | None = None, checkpoint: str | None = None, progress: bool = False,
          json=None, force: bool = False, **settings) -> dict:
    """Ground truth on a toy (``toy``), or the agreement and IWAE checks on the spec's MNIST VAE."""
    from .checks.ground_truth import CheckConfig, run_mnist, run_toy

    spec = _loaded(resolve_spec(spec, "check", settings), checkpoint)
    check_before_work(None if toy else spec, json=json, force=force)
    cfg = CheckConfig.from_spec(spec, progress=progress)
    if toy:
        cfg.toy, cfg.epochs = toy, settings.get("epochs")  # None: the toy's own fitting epochs
        return _written(run_toy(cfg), json)
    if checkpoint is None:
        return _written(run_mnist(cfg), json)
    dynamic = spec.resolved_data()[0] == "dynamic"
    return _written(run_mnist(cfg, prepare_run(spec, "static" if dynamic else None, checkpoint)), json)


def _header(command: str, run) -> dict:
    out = result_header(command, run.spec.source, run.device, run.spec.training.seed)
    out.update({"dataset": run.dataset.name, "binarization": run.binarization, "transform": run.transform,
                "model": run.spec.model_config().to_dict()})
    return out


def nll(spec=None, *, k: int = 5000, examples: int = 1000, chunk: int = 500, checkpoint: str | None = None,
        progress: bool = False, json=None, force: bool = False, **settings) -> dict:
    """Test-set negative log-likelihood by IWAE_k (Burda et al. 2015), after training (or of the
    model saved in ``checkpoint``)."""
    from .estimators.iwae import iwae_log_likelihood

    started = time.perf_counter()
    spec = _loaded(resolve_spec(spec, "nll", settings), checkpoint)
    check_before_work(spec, json=json, force=force, k=k, chunk=chunk)
    run = prepare_run(spec, checkpoint=checkpoint)
    x_test = run.x_test[:: max(len(run.x_test) // examples, 1)][:examples]
    run.vae.check_data(x_test)
    if checkpoint is None:
        _, training = fit_run(run, *training_estimator(run.vae, spec.training.estimator), progress)
    else:
        training = {"checkpoint": str(checkpoint), "epochs": 0, "estimator": None, "estimator_note": None}
    log_px = iwae_log_likelihood(run.vae, x_test, k=k, chunk=chunk, progress=progress)
    out = _header("nll", run)
    out.update({"test_binarization": ("static (dynamic training; a fixed draw of the test set)" if run.dynamic
                                      else run.binarization),
                "k": k, "examples": len(log_px), "epochs": training["epochs"], "training": training,
                "nll": float(-log_px.mean()), "nll_se": float(log_px.std() / len(log_px) ** 0.5),
                "seconds": time.perf_counter() - started})
    return _written(out, json)


def train(spec=None, *, eval_estimator: str | None = None, checkpoint: str | None = None, resume: bool = False,
          progress: bool = False, explicit_estimator: bool = False, capture_step: bool = False,
          json=None, force: bool = False, **settings) -> dict:
    """Train with the spec's estimator; per-epoch train/test -ELBO (test by ``eval_estimator``, default
    the training one). ``checkpoint``: saved there after every epoch (an existing one is refused
    unless ``resume``, which continues from it, or ``force``, which starts over in its place).
    ``capture_step``: each full-size batch's whole step replayed as one captured step
    (:class:`~vae_pyro.captured_step.CapturedTrainStep`; a CUDA graph on CUDA)."""
    if resume and not checkpoint:
        raise ValueError("--resume needs --checkpoint PATH")
    from .model import VAE

    spec = resolve_spec(spec, "train", settings)
    check_before_work(spec, json=json, checkpoint=checkpoint, resume=resume, force=force)
    probe = VAE(spec.model_config())  # asked before the run is seeded: asking may draw random numbers
    trainer, note = training_estimator(probe, spec.training.estimator, explicit_estimator)
    if eval_estimator is not None:
        training_estimator(probe, eval_estimator, explicit=True)
    if capture_step:
        from .captured_step import captured_loss_fn

        captured_loss_fn(build_estimator(trainer))  # a ValueError naming the allowed ones, before any work
        distributed.refuse_in_several_processes("--capture-step")  # its captured step reduces no gradients
    run = prepare_run(spec)
    run.vae.check_data(run.x_test)
    eval_est = build_estimator(eval_estimator or trainer, spec.checks.particles)
    history, training = fit_run(run, trainer, note, progress, x_test=run.x_test, eval_estimator=eval_est,
                             checkpoint=checkpoint, resume=resume, capture=capture_step)
    out = _header("train", run)
    out.update({"particles": spec.checks.particles, "estimator": training["estimator"],
                "eval_estimator": eval_est.name, "training": training, "kl_weight": spec.training.kl_weight,
                "kl_anneal_epochs": spec.training.kl_anneal_epochs, "checkpoint": checkpoint,
                "history": [asdict(h) for h in history],
                "test_neg_elbo": history[-1].test_neg_elbo if history else None})
    return _written(out, json)


def experiment(spec=None, *, out: str = "runs/experiment", estimators=None, variance_draws: int = 50,
               nll_k: int = 1000, progress: bool = False, json=None, force: bool = False, **settings) -> dict:
    """One model per estimator: curves, plots, report and metrics in ``out`` (an earlier run there is
    replaced, whole and atomically, only with ``force``)."""
    from .experiment import ExperimentConfig, run_experiment

    spec = resolve_spec(spec, "experiment", settings)
    check_before_work(spec, json=json, out=out, force=force)
    cfg = ExperimentConfig.from_spec(spec, out=out, estimators=estimators, variance_draws=max(variance_draws, 2),
                                     nll_k=nll_k, progress=progress, force=force)
    return _written(run_experiment(cfg), json)


def reproduce(target: str = "burda2015", *, out: str = "runs/burda2015", progress: bool = False, **options) -> dict:
    """Train and evaluate every row of a published comparison (``burda2015``) or the shipped recipe
    (``best-nll``); writes the run folder ``out``. ``options``: the fields of
    :class:`~vae_pyro.reproduce.ReproduceConfig` (``epochs``, ``k``, ``rows``, ``fast``, ``overrides`` ...)."""
    from dataclasses import fields

    from .reproduce import ReproduceConfig, run_reproduce

    allowed = [f.name for f in fields(ReproduceConfig) if f.name not in ("target", "out", "progress")]
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise ValueError(f"unknown reproduce option {unknown[0]!r}; allowed: {', '.join(allowed)}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return run_reproduce(ReproduceConfig(target=target, out=str(out), progress=progress, **options))
