"""The library entry points behind every command, for a Python user:

    from vae_pyro import api
    result = api.compare("mog-bernoulli", epochs=1, draws=20)   # a dict, the same as `compare --json`
    api.train(None, epochs=5, checkpoint="ck.pt")
    api.nll(None, checkpoint="ck.pt", k=500)                   # evaluates the saved model, no training
    api.check("beta-vae", epochs=1)
    api.reproduce("burda2015", out="runs/smoke", fast=True)      # trains every row; writes the run folder

Each takes a spec (a :class:`~vae_pyro.spec.VAESpec`, a shipped name, a path, or None for the built-in
defaults) and keyword settings (``epochs``, ``seed``, ``draws`` ... any field the command line sets,
:func:`vae_pyro.spec.keywords`), runs the command and returns its result: a dict whose header (command, spec,
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

from . import distributed, outputs, tblog
from .captured_step import captured_loss_fn
from .checks.ground_truth import run_mnist, run_toy
from .compare import run_comparison
from .errors import SpecError
from .estimators import build_estimator
from .evaluation import iwae_log_likelihood
from .experiment import run_experiment
from .model import VAE
from .report import write_json
from .reproduce import run_reproduce
from .runs import check_before_work, fit_run, prepare_run, result_header, spec_for_checkpoint, training_estimator
from .spec import COMMAND_OPTIONS, VAESpec, command_options, keywords, load_spec


def resolve_spec(
    spec, command: str | None, settings: dict | None = None, prior=None, likelihood=None, overrides=()
) -> VAESpec:
    """The spec a command runs: ``command``'s defaults < the spec < ``settings`` (API keywords, see
    :func:`~vae_pyro.spec.keywords`) < ``prior``/``likelihood`` < ``overrides`` (``--set``), validated
    once. A :class:`VAESpec` given as it is takes ``settings`` and is validated again."""
    names = keywords()
    unknown = [k for k in (settings or {}) if k not in names]
    if unknown:
        raise SpecError(f"unknown setting {unknown[0]!r}; allowed: {', '.join(names)}")
    given = {names[k]: list(v) if isinstance(v, tuple) else v for k, v in (settings or {}).items() if v is not None}
    return load_spec(
        spec, overrides=list(overrides), prior=prior, likelihood=likelihood, settings=given, command=command
    )


def _split(command: str, settings: dict) -> tuple[dict, dict]:
    """(spec settings, ``command``'s own options, checked and with their defaults) of the keywords."""
    own = COMMAND_OPTIONS.get(command, {})
    return (
        {k: v for k, v in settings.items() if k not in own},
        command_options(command, {k: v for k, v in settings.items() if k in own and v is not None}),
    )


def _loaded(spec, checkpoint, settings: dict | None = None):
    """``spec`` with the model of ``checkpoint``; the keyword ``settings`` given are explicit, so one
    that contradicts the checkpoint is refused (:func:`~vae_pyro.runs.spec_for_checkpoint`)."""
    if checkpoint is None:
        return spec
    names = keywords()
    asked = {names[k]: v for k, v in (settings or {}).items() if k in names and v is not None}
    return spec_for_checkpoint(spec, checkpoint, asked)


def _written(result: dict, json, log_dir=None) -> dict:
    if json is not None:
        write_json(json, result)
    tblog.write(log_dir, result, result.get("command", "check"))
    return result


@outputs.releasing_claims
def compare(
    spec=None, *, checkpoint: str | None = None, progress: bool = False, json=None, force: bool = False, **settings
) -> dict:
    """Train briefly (or load ``checkpoint``), then run every agreement check for every estimator;
    ``log_dir``: also as TensorBoard scalars (:mod:`vae_pyro.tblog`)."""
    settings, o = _split("compare", settings)
    tblog.require(o["log_dir"])
    spec = _loaded(resolve_spec(spec, "compare", settings), checkpoint, settings)
    check_before_work(spec, json=json, force=force, command="compare", trains=checkpoint is None)
    result = run_comparison(spec, prepare_run(spec, checkpoint=checkpoint), checkpoint, progress)
    return _written(result, json, o["log_dir"])


@outputs.releasing_claims
def check(
    spec=None,
    *,
    toy: str | None = None,
    checkpoint: str | None = None,
    progress: bool = False,
    json=None,
    force: bool = False,
    **settings,
) -> dict:
    """Ground truth on a toy (``toy``), or the agreement and IWAE checks on the spec's MNIST VAE;
    ``log_dir``: also as TensorBoard scalars (:mod:`vae_pyro.tblog`)."""
    settings, o = _split("check", settings)
    tblog.require(o["log_dir"])
    spec = _loaded(resolve_spec(spec, "check", settings), checkpoint, settings)
    check_before_work(spec, json=json, force=force, command="check", trains=checkpoint is None, toy=bool(toy))
    if toy:  # epochs unset: the toy's own fitting epochs
        return _written(run_toy(spec, toy, settings.get("epochs"), progress), json, o["log_dir"])
    if checkpoint is None:
        return _written(run_mnist(spec, progress=progress), json, o["log_dir"])
    dynamic = spec.resolved_data()[0] == "dynamic"
    run = prepare_run(spec, "static" if dynamic else None, checkpoint)
    return _written(run_mnist(spec, run, progress), json, o["log_dir"])


def _header(command: str, run) -> dict:
    out = result_header(command, run.spec, run.device)
    out.update(
        {
            "dataset": run.dataset.name,
            "binarization": run.binarization,
            "transform": run.transform,
            "model": run.spec.model_config().to_dict(),
        }
    )
    return out


@outputs.releasing_claims
def nll(
    spec=None, *, checkpoint: str | None = None, progress: bool = False, json=None, force: bool = False, **settings
) -> dict:
    """Test-set negative log-likelihood by IWAE_k (Burda et al. 2015), after training (or of the
    model saved in ``checkpoint``); ``k``, ``examples``, ``chunk``: :data:`~vae_pyro.spec.COMMAND_OPTIONS`."""
    started = time.perf_counter()
    settings, o = _split("nll", settings)
    tblog.require(o["log_dir"])
    spec = _loaded(resolve_spec(spec, "nll", settings), checkpoint, settings)
    check_before_work(
        spec, json=json, force=force, k=o["k"], chunk=o["chunk"], command="nll", options=o, trains=checkpoint is None
    )
    run = prepare_run(spec, checkpoint=checkpoint)
    x_test = run.x_test[:: max(len(run.x_test) // o["examples"], 1)][: o["examples"]]
    run.vae.check_data(x_test)
    if checkpoint is None:
        _, training = fit_run(run, *training_estimator(run.vae, spec.training.estimator), progress)
    else:
        training = {"checkpoint": str(checkpoint), "epochs": 0, "estimator": None, "estimator_note": None}
    log_px = iwae_log_likelihood(run.vae, x_test, k=o["k"], chunk=o["chunk"], progress=progress)
    out = _header("nll", run)
    out.update(
        {
            "test_binarization": (
                "static (dynamic training; a fixed draw of the test set)" if run.dynamic else run.binarization
            ),
            "k": o["k"],
            "examples": len(log_px),
            "epochs": training["epochs"],
            "training": training,
            "nll": float(-log_px.mean()),
            "nll_se": float(log_px.std() / len(log_px) ** 0.5),
            "seconds": time.perf_counter() - started,
        }
    )
    return _written(out, json, o["log_dir"])


@outputs.releasing_claims
def train(
    spec=None,
    *,
    eval_estimator: str | None = None,
    checkpoint: str | None = None,
    resume: bool = False,
    progress: bool = False,
    explicit_estimator: bool = False,
    capture_step: bool = False,
    json=None,
    force: bool = False,
    **settings,
) -> dict:
    """Train with the spec's estimator; per-epoch train/test -ELBO (test by ``eval_estimator``, default
    the training one). ``checkpoint``: saved there after every epoch (an existing one is refused
    unless ``resume``, which continues from it, or ``force``, which starts over in its place).
    ``capture_step``: the older spelling of ``step="captured"`` (each full-size batch's whole step as one
    :class:`~vae_pyro.captured_step.CapturedTrainStep`; a CUDA graph on CUDA); ``step`` (a setting,
    ``--step``) chooses between eager, captured, fused and auto (:func:`vae_pyro.steps.choose_step`).
    ``log_dir``: the per-epoch losses as TensorBoard scalars (:mod:`vae_pyro.tblog`)."""
    settings, o = _split("train", settings)
    tblog.require(o["log_dir"])
    if capture_step:  # the older spelling of training.step = "captured"
        settings = {**settings, "step": "captured"}
    spec = resolve_spec(spec, "train", settings)
    check_before_work(spec, json=json, checkpoint=checkpoint, resume=resume, force=force, command="train")
    probe = VAE(spec.model_config())  # asked before the run is seeded: asking may draw random numbers
    trainer, note = training_estimator(probe, spec.training.estimator, explicit_estimator)
    if eval_estimator is not None:
        training_estimator(probe, eval_estimator, explicit=True)
    if capture_step:
        captured_loss_fn(build_estimator(trainer))  # an error naming the allowed ones, before any work
        distributed.refuse_in_several_processes("--capture-step")  # its captured step reduces no gradients
    run = prepare_run(spec)
    run.vae.check_data(run.x_test)
    eval_est = build_estimator(eval_estimator or trainer, spec.training.particles)
    history, training = fit_run(
        run, trainer, note, progress, x_test=run.x_test, eval_estimator=eval_est, checkpoint=checkpoint, resume=resume
    )
    out = _header("train", run)
    out.update(
        {
            "particles": spec.training.particles,
            "estimator": training["estimator"],
            "eval_estimator": eval_est.name,
            "training": training,
            "kl_weight": spec.training.kl_weight,
            "kl_anneal_epochs": spec.training.kl_anneal_epochs,
            "checkpoint": checkpoint,
            "history": [asdict(h) for h in history],
            "test_neg_elbo": history[-1].test_neg_elbo if history else None,
        }
    )
    return _written(out, json, o["log_dir"])


@outputs.releasing_claims
def experiment(spec=None, *, progress: bool = False, json=None, force: bool = False, **settings) -> dict:
    """One model per estimator (``train_estimators``): curves, plots, report and metrics in ``out``
    (an earlier run there is replaced, whole and atomically, only with ``force``); the command's own
    options (``out``, ``train_estimators``, ``variance_draws``, ``nll_k``): :data:`~vae_pyro.spec.COMMAND_OPTIONS`."""
    settings, o = _split("experiment", settings)
    tblog.require(o["log_dir"])
    spec = resolve_spec(spec, "experiment", settings)
    check_before_work(spec, json=json, out=o["out"], force=force, k=o["nll_k"] or None, command="experiment", options=o)
    return _written(run_experiment(spec, o, progress=progress, force=force), json, o["log_dir"])


@outputs.releasing_claims
def reproduce(
    target: str = "burda2015",
    *,
    out: str = "runs/burda2015",
    overrides=(),
    force: bool = False,
    progress: bool = True,
    **settings,
) -> dict:
    """Train and evaluate every row of a published comparison (``burda2015``) or the shipped recipe
    (``best-nll``); writes the run folder ``out``. ``settings``: ``dataset``, ``epochs``, ``device``,
    ``seed`` (over the target's spec) and the command's own options (``k``, ``rows``, ``fast`` ...:
    :data:`~vae_pyro.spec.COMMAND_OPTIONS`); ``overrides``: ``--set`` strings for every row."""
    own = COMMAND_OPTIONS["reproduce"]
    given_options = {k: v for k, v in settings.items() if k in own and v is not None}  # --fast keeps them
    settings, o = _split("reproduce", settings)
    tblog.require(o["log_dir"])
    names = keywords()
    allowed = ("dataset", "epochs", "device", "seed")
    unknown = [k for k in settings if k not in allowed]
    if unknown:
        raise SpecError(f"unknown reproduce option {unknown[0]!r}; allowed: {', '.join((*allowed, *o))}")
    given = {names[k]: v for k, v in settings.items() if v is not None}
    result = run_reproduce(target, str(out), given_options, given, tuple(overrides), force=force, progress=progress)
    tblog.write(o["log_dir"], result, "reproduce")
    return result
