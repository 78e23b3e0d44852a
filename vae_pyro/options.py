"""The command-line options, derived from the declared settings (:mod:`vae_pyro.spec`): each flag's
name, type parsing (errors are one line naming the bad value and the rule), choices and help text
(with the default, the command's own where it has one: :data:`~vae_pyro.spec.COMMAND_DEFAULTS`)
come from the setting's :class:`~vae_pyro.registry.Option`; the spec options (``--spec``,
``--prior``, ``--likelihood``, ``--set``) and the I/O ones (``--json``, ``--force`` ...) are written
here. :func:`spec_from_args` reads them back into a spec."""

from __future__ import annotations

import argparse

from .api import resolve_spec
from .checks.toys import TOYS
from .likelihoods import LIKELIHOODS
from .priors import PRIORS
from .registry import Option
from .reproduce import TARGETS
from .spec import COMMAND_OPTIONS, SpecError, command_default, keyword_of, setting_options, shipped_specs

#: the guide family and its settings (``--guide``, ``--guide-rank``, ``--guide-flows``)
GUIDE_FLAGS = ("guide.family", "guide.rank", "guide.flows")
#: the spec settings each command takes as flags (every other setting: ``--set`` or a spec file)
RUN_SETTINGS = (
    "data.dataset",
    "data.binarization",
    "data.transform",
    "networks.hidden",
    "networks.z_dim",
    "networks.network",
    "training.device",
    "training.seed",
    "training.epochs",
    "training.batch_size",
    "training.lr",
    "training.particles",
    "training.step",
    *GUIDE_FLAGS,
)
CHECK_SETTINGS = ("checks.particles", "checks.draws", "checks.grad_draws")
#: each command's declared settings that get a flag (beside the spec options every model command takes)
COMMAND_SETTINGS = {
    "compare": (*RUN_SETTINGS, *CHECK_SETTINGS, "checks.estimators"),
    "train": (*RUN_SETTINGS, "training.estimator"),
    "nll": RUN_SETTINGS,
    "experiment": RUN_SETTINGS,
    "check": (
        "training.device",
        "training.seed",
        "training.epochs",
        "training.particles",
        *CHECK_SETTINGS,
        *GUIDE_FLAGS,
    ),
    "estimators": GUIDE_FLAGS,
    "reproduce": ("data.dataset", "training.epochs", "training.device", "training.seed", "training.step"),
}
#: the flags that name a setting without being one of its declarations (a fresh component)
COMPONENT_FLAGS = {"prior.name": "--prior", "likelihood.name": "--likelihood"}


def _shown(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def flag_type(opt: Option, where: str):
    """argparse ``type`` for ``opt``: the text read as the option's type (a list: comma-separated),
    then :meth:`Option.check`; a bad value is one line naming it and the rule."""

    def convert(text: str):
        item = opt.item if opt.type is list else opt.type
        parts = [p.strip() for p in text.split(",")] if opt.type is list else [text]
        if opt.type is list and (not parts or any(not p for p in parts)) and item is not str:
            raise argparse.ArgumentTypeError(f"expected {_expected(opt)}, got {text!r}")
        parts = [p for p in parts if p]
        try:
            values = [item(p) for p in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {_expected(opt)}, got {text!r}") from None
        try:
            return opt.check(where, values if opt.type is list else values[0])
        except SpecError as err:
            if opt.allowed() is not None:  # an unknown name: the message lists the allowed ones
                raise argparse.ArgumentTypeError(str(err).partition(": ")[2]) from None
            raise argparse.ArgumentTypeError(f"expected {_expected(opt)}, got {text}") from None

    return convert


def _expected(opt: Option) -> str:
    words = {1: "a positive integer", 0: "a non-negative integer"}
    inner = words.get(opt.low, opt.rule()) if (opt.item or opt.type) is int and opt.high is None else opt.rule()
    inner = "a positive number" if opt.type is float and opt.low == 0 else inner
    if opt.type is list:
        return f"comma-separated {opt.rule().replace('an integer', 'integers')} like {opt.example or '1,2'}"
    return inner


def add_option(g, opt: Option, dest: str, default_shown, where: str) -> None:
    """One declared setting or command option as a flag."""
    help_text = f"{opt.help} (default: {_shown(default_shown)})"
    if opt.type is bool:
        g.add_argument(opt.flag, action="store_true", default=None, dest=dest, help=opt.help)
    elif opt.choices is not None and not callable(opt.choices) and opt.type is str:
        g.add_argument(opt.flag, choices=opt.allowed(), default=None, dest=dest, help=help_text)
    else:
        metavar = "LIST" if opt.type is list else ("NAME" if opt.choices else {int: "N", float: "X"}.get(opt.type))
        g.add_argument(opt.flag, type=flag_type(opt, where), default=None, dest=dest, metavar=metavar, help=help_text)


def add_settings(p: argparse.ArgumentParser, command: str) -> None:
    """``command``'s setting flags (:data:`COMMAND_SETTINGS`) and its own options
    (:data:`~vae_pyro.spec.COMMAND_OPTIONS`), with the defaults it runs under."""
    declared = setting_options()
    g = p.add_argument_group("settings (each one a spec field; --set SECTION.KEY=VALUE sets any)")
    for path in COMMAND_SETTINGS[command]:
        add_option(g, declared[path], keyword_of(path), command_default(command, path), path)
    own = p.add_argument_group(f"{command} options")
    for name, opt in COMMAND_OPTIONS.get(command, {}).items():
        add_option(own, opt, name, opt.default if opt.default is not None else "unset", f"{command} {name}")


def given_settings(args) -> dict:
    """Setting path -> flag, for the settings given on this command line, and the command's own
    options given (``"nll k"`` -> ``--k``): the CLI names those flags in the library's errors, which
    name settings."""
    given = {
        path: declared.flag
        for path, declared in setting_options().items()
        if declared.flag
        and path in COMMAND_SETTINGS.get(args.command, ())
        and getattr(args, keyword_of(path), None) is not None
    }
    given.update(
        {path: flag for path, flag in COMPONENT_FLAGS.items() if getattr(args, path.split(".")[0], None) is not None}
    )
    given.update(
        {
            f"{args.command} {name}": opt.flag
            for name, opt in COMMAND_OPTIONS.get(args.command, {}).items()
            if opt.flag and getattr(args, name, None) not in (None, False)
        }
    )  # a command's own: "nll k"
    return given


def explicit_settings(args) -> list[str]:
    """The setting paths this command line gave explicitly: its setting flags, ``--prior`` /
    ``--likelihood`` and every ``--set SECTION.KEY=...`` (a spec file's values are not explicit)."""
    paths = list(given_settings(args))
    for text in getattr(args, "overrides", None) or ():
        key = text.partition("=")[0].strip()
        if key.count(".") == 1 and key not in paths:
            paths.append(key)
    return paths


def settings_from_args(args) -> dict:
    """The setting flags a command was given, as API keywords (None: not given, keep the spec's)."""
    return {
        keyword_of(path): getattr(args, keyword_of(path))
        for path in COMMAND_SETTINGS.get(args.command, ())
        if getattr(args, keyword_of(path), None) is not None
    }


def options_from_args(args) -> dict:
    """The command's own options it was given (None: not given, the declared default)."""
    return {
        name: getattr(args, name)
        for name in COMMAND_OPTIONS.get(args.command, {})
        if getattr(args, name, None) is not None
    }


def registry_name(registry):
    def parse(text: str) -> str:
        if text not in registry:
            raise argparse.ArgumentTypeError(
                f"unknown {registry.kind} {text!r}; allowed: {', '.join(registry.names())}"
            )
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
    g.add_argument(
        "--spec",
        metavar="NAME|PATH",
        help=f"a TOML VAE spec: a shipped name ({', '.join(shipped_specs())}) or a path "
        "(default: built-in defaults; see 'vae-pyro spec show NAME')",
    )
    g.add_argument(
        "--prior",
        type=registry_name(PRIORS),
        metavar="NAME",
        help=f"the prior p(z), with its default options: {', '.join(PRIORS.names())} "
        "(default: the spec's, else standard_normal)",
    )
    g.add_argument(
        "--likelihood",
        type=registry_name(LIKELIHOODS),
        metavar="NAME",
        help=f"the likelihood p(x|z), with its default options: {', '.join(LIKELIHOODS.names())} "
        "(default: the spec's, else bernoulli)",
    )
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="overrides",
        help="override one spec field, value as TOML (repeatable), e.g. --set prior.components=10 "
        "--set training.kl_weight=4",
    )


def spec_from_args(args):
    """The :class:`~vae_pyro.spec.VAESpec` the options of a command describe. Precedence, lowest
    first: the command's own defaults, the spec, the setting flags, ``--prior``/``--likelihood``,
    ``--set`` (:func:`vae_pyro.api.resolve_spec`)."""
    return resolve_spec(
        getattr(args, "spec", None),
        getattr(args, "command", None),
        settings_from_args(args),
        getattr(args, "prior", None),
        getattr(args, "likelihood", None),
        getattr(args, "overrides", []),
    )


def add_run_options(p: argparse.ArgumentParser, command: str) -> None:
    add_spec_options(p)
    add_settings(p, command)
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")
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
    p = _training_command(
        sub,
        "compare",
        "train briefly, then check every estimator against the analytic ELBO",
        "Train the VAE briefly, then for every estimator: -ELBO (mean ± s.e.), "
        "same-noise identity, Monte Carlo z-score, gradient agreement, device "
        "agreement and ms/step, as a table (and JSON with --json). --particles is the "
        "training estimator's, --check-particles the checked estimates'. Exits 1 if a check fails.",
    )
    add_checkpoint_option(p)

    p = _training_command(
        sub,
        "train",
        "train with one estimator and report the test -ELBO",
        "Train the VAE with any estimator; prints per-epoch train/test -ELBO in "
        "nats per example (test -ELBO by the analytic loss unless --eval-estimator).",
    )
    p.add_argument(
        "--eval-estimator",
        type=flag_type(setting_options()["training.estimator"], "--eval-estimator"),
        default=None,
        metavar="NAME",
        help="estimator for the test -ELBO (default: the training estimator)",
    )
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="save model and optimizer here after every epoch (atomically; a NaN leaves the last good one)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from --checkpoint up to --epochs (the model options must match it; --lr, "
        "--batch-size, --estimator given now apply from there on)",
    )
    p.add_argument(
        "--capture-step",
        action="store_true",
        help="the older spelling of --step captured: each full-size batch's whole step (loss, backward, "
        "Adam) as one captured step, a CUDA-graph replay on CUDA (analytic, trace, tmf, *_graph)",
    )


def _training_command(sub, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    """A command that trains a VAE: its parser, with the spec options, its settings and its own options."""
    p = sub.add_parser(name, help=help_text, description=description)
    add_run_options(p, name)
    return p


def _add_experiment(sub) -> None:
    _training_command(
        sub,
        "experiment",
        "train one model per estimator; write metrics, plots and a report",
        "Train one VAE per estimator (--train-estimators) from the same seed, log per-epoch "
        "train/test -ELBO and wall time, and write metrics.json, metrics.csv, plots and "
        "report.md into --out.",
    )


def _add_estimators_and_spec(sub) -> None:
    p = sub.add_parser(
        "estimators",
        help="the estimators, and which are exact, Monte Carlo or invalid here",
        description="Every registered estimator and, for the spec's prior and likelihood, "
        "whether its KL term is exact, Monte Carlo (TraceMeanField_ELBO's silent "
        "fallback included) or it does not apply, and why.",
    )
    add_spec_options(p)
    add_settings(p, "estimators")
    p.add_argument(
        "--all-pairs",
        action="store_true",
        help="the validity matrix for every prior x likelihood x guide (as in docs/validity.md)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser(
        "spec",
        help="the shipped VAE specs: list them, or show one resolved",
        description="'spec list': the shipped specs; 'spec show NAME|PATH': the spec with "
        "every default filled in, as TOML (accepts --prior, --likelihood, --set).",
    )
    spec_sub = p.add_subparsers(dest="spec_command", required=True, metavar="ACTION", parser_class=Parser)
    spec_sub.add_parser("list", help="the shipped specs and their descriptions")
    show = spec_sub.add_parser("show", help="one spec, resolved, as TOML")
    show.add_argument("name", metavar="NAME|PATH", help="a shipped spec name or a path to a TOML file")
    show.add_argument("--prior", type=registry_name(PRIORS), metavar="NAME", help="replace the prior")
    show.add_argument("--likelihood", type=registry_name(LIKELIHOODS), metavar="NAME", help="replace the likelihood")
    show.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="overrides",
        help="override one field (repeatable)",
    )


def _add_check_and_nll(sub) -> None:
    """``check`` (ground truth and agreement) and ``nll`` (IWAE test log-likelihood)."""
    p = sub.add_parser(
        "check",
        help="verify every bound against ground truth; exit 1 if a check fails",
        description="With --toy: fit a small model whose log p(x) is exact, then check every "
        "estimator's bound against it (ELBO <= log p(x), ELBO = log p(x) - KL, IWAE_k "
        "non-decreasing and within 0.05 nats at k=5000, ...); --epochs unset: the "
        "toy's own (linear_gaussian 10, bernoulli_* 15). Without --toy: the "
        "agreement checks and IWAE >= ELBO on the MNIST VAE. Prints a report (check, "
        "value, tolerance, verdict); exits 1 if any check fails.",
    )
    p.add_argument(
        "--toy",
        choices=TOYS,
        default=None,
        help="built-in model with exact log p(x) (default: none = the MNIST VAE of --spec, --prior, --likelihood)",
    )
    add_spec_options(p)
    add_settings(p, "check")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    add_force_option(p)
    add_checkpoint_option(p)

    p = _training_command(
        sub,
        "nll",
        "test-set negative log-likelihood by IWAE with k samples (Burda et al. 2015)",
        "Train the VAE, then estimate -log p(x) on the test digits with IWAE_k "
        "(k = 5,000 by default, as in Burda et al. 2015), in batches, with a progress bar. "
        "Reports the binarization: static and dynamic differ by a few nats.",
    )
    add_checkpoint_option(p)


def add_force_option(p: argparse.ArgumentParser) -> None:
    """``--force``: on every command that writes results (``--json``, ``--checkpoint``, ``--out``)."""
    p.add_argument(
        "--force",
        action="store_true",
        help="replace existing results (--json, --checkpoint, --out: the whole run folder, atomically); "
        "without it an existing one is refused",
    )


def add_checkpoint_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="evaluate the model saved by `vae-pyro train --checkpoint PATH` instead of training one "
        "(its prior, likelihood and sizes come from the checkpoint)",
    )


def _add_reproduce(sub) -> None:
    """``reproduce``: a published comparison (or the shipped best recipe), trained and evaluated."""
    p = sub.add_parser(
        "reproduce",
        help="train and evaluate a published comparison (burda2015) or the best-nll recipe",
        description="Train every row of a target (burda2015: VAE vs IWAE k=1,5,50, dynamic vs static; best-nll: "
        "the shipped recipe) with checkpoint selection on validation digits; test NLL by IWAE "
        "k=5,000, active units, curves; writes a run folder. Unset settings are the target spec's "
        "(--epochs: burda2015 100, best-nll 300; 3,280 as in the paper with --dataset idx:FOLDER, "
        "where batch 20 is the default too).",
    )
    p.add_argument(
        "target",
        choices=tuple(TARGETS),
        help="burda2015: the IWAE paper's Table 1 rows; best-nll: the shipped best recipe",
    )
    p.add_argument("--out", required=True, help="run folder (refused when not empty, unless --force)")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    add_settings(p, "reproduce")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="overrides",
        help="override a field of the target's spec for every row (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")
