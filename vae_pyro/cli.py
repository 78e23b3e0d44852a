"""``vae-pyro``: compare, check and train the VAE's ELBO estimators from the command line.

    vae-pyro compare [--json PATH]          train briefly, run every check for every estimator
    vae-pyro train --estimator NAME         train with any estimator, report the test -ELBO
    vae-pyro nll [--checkpoint PATH]        test NLL by IWAE_k (of a saved model with --checkpoint)
    vae-pyro check [--toy NAME]             ground truth on a toy, or the checks on the MNIST VAE
    vae-pyro experiment --out DIR           one model per estimator: curves, plots, report
    vae-pyro estimators [--all-pairs]       the estimators, and which are exact / Monte Carlo / invalid
    vae-pyro spec list | show NAME          the shipped VAE specs, and one resolved
    vae-pyro reproduce burda2015 --out DIR  a published comparison (or best-nll), trained and evaluated

This module parses (:mod:`vae_pyro.options`) and dispatches; the work is done by the library entry
points of :mod:`vae_pyro.api`, which a Python user can call the same way. Every command that builds
a VAE takes ``--spec NAME|PATH``, ``--prior NAME``, ``--likelihood NAME`` and ``--set
SECTION.KEY=VALUE``. Precedence, lowest first: the command's own defaults, the spec, the plain options
(``--epochs`` ...), ``--prior``/``--likelihood`` (each with its own default options), ``--set``.

Errors in the input (unknown names, bad numbers, missing files, non-binary data, bad specs, a
checkpoint of another model) end the program with one line on stderr that names the bad value and
the allowed ones, and exit status 2: the library raises them as :class:`~vae_pyro.errors.VaePyroError`
naming settings (``training.estimator``), and this module names the flag where one was given
(``--estimator``). Anything else is a bug in our code: a traceback, exit status 1. Outputs
(``--json``, ``train --checkpoint``, ``experiment --out``) and the run's memory are checked by the
library before any work; an existing result is refused unless ``--force``
(:func:`vae_pyro.runs.check_before_work`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Sequence

from . import api, distributed, outputs, report
from .checkpoint import load_checkpoint
from .checks import validity
from .checks.ground_truth import check_table
from .errors import SpecError, VaePyroError
from .estimators import DEFAULT_ESTIMATORS, ESTIMATORS, estimator_names
from .experiment import experiment_table
from .options import build_parser, explicit_settings, given_settings, options_from_args, spec_from_args
from .reproduce import data_label, text_table
from .runs import spec_for_checkpoint, spec_value
from .spec import load_spec, shipped_specs


def _outputs(args) -> dict:
    """The outputs the library writes and checks before any work (--json, --force)."""
    return {"json": args.json, "force": args.force}


def _wrote_json(args) -> None:
    if args.json:
        print(f"wrote {args.json}")


def _evaluated_spec(args, command: str):
    """The spec of a command that may evaluate a checkpoint: the checkpoint's model, where given (an
    explicit option that contradicts it, --prior, --likelihood, --hidden, --z-dim, a --set of the
    model, is one clear error: refused, not ignored)."""
    spec = spec_from_args(args)
    if getattr(args, "checkpoint", None):
        asked = {path: spec_value(spec, path) for path in explicit_settings(args)}
        spec = spec_for_checkpoint(spec, args.checkpoint, asked)
    return spec


def cmd_compare(args) -> int:
    result = api.compare(
        _evaluated_spec(args, "compare"),
        checkpoint=args.checkpoint,
        progress=not args.no_progress,
        **options_from_args(args),
        **_outputs(args),
    )
    print(report.compare_table(result))
    _wrote_json(args)
    return 0 if result["verdict"] != "fail" else 1


def cmd_check(args) -> int:
    if args.toy and (args.spec or args.prior or args.likelihood or args.overrides or args.checkpoint):
        raise SpecError(
            "--toy models have their own prior and likelihood; drop --spec/--prior/--likelihood/--set/"
            "--checkpoint, or drop --toy to check the MNIST VAE they describe"
        )
    if args.toy:
        result = api.check(
            spec_from_args(args),
            toy=args.toy,
            progress=not args.no_progress,
            epochs=args.epochs,
            **options_from_args(args),
            **_outputs(args),
        )
    else:
        result = api.check(
            _evaluated_spec(args, "check"),
            checkpoint=args.checkpoint,
            progress=not args.no_progress,
            **options_from_args(args),
            **_outputs(args),
        )
    print(check_table(result))
    _wrote_json(args)
    return 1 if result["verdict"] == "fail" else 0


def cmd_nll(args) -> int:
    result = api.nll(
        _evaluated_spec(args, "nll"),
        checkpoint=args.checkpoint,
        progress=not args.no_progress,
        **options_from_args(args),
        **_outputs(args),
    )
    print(report.nll_lines(result))
    _wrote_json(args)
    return 0


def cmd_train(args) -> int:
    result = api.train(
        spec_from_args(args),
        eval_estimator=args.eval_estimator,
        checkpoint=args.checkpoint,
        resume=args.resume,
        progress=not args.no_progress,
        capture_step=args.capture_step,
        explicit_estimator=args.estimator is not None,
        **options_from_args(args),
        **_outputs(args),
    )
    print(report.train_lines(result))
    _wrote_json(args)
    return 0


def cmd_experiment(args) -> int:
    options = options_from_args(args)
    result = api.experiment(spec_from_args(args), progress=not args.no_progress, **options, **_outputs(args))
    print(experiment_table(result))
    print(
        f"wrote {args.out or 'runs/experiment'}/report.md, metrics.json, metrics.csv and {len(result['plots'])} plots"
    )
    return 0


def _all_pairs(args) -> int:
    if args.spec or args.prior or args.likelihood or args.overrides:
        raise SpecError("--all-pairs covers every prior and likelihood; drop --spec, --prior, --likelihood, --set")
    records = validity.all_pairs()
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    headers, rows = validity.matrix_rows(records)
    print(
        "validity of each estimator for each guide x prior x likelihood: exact = exact KL, "
        "MC = Monte Carlo KL, invalid = does not apply"
    )
    print(report.table(headers, rows, align="l" * len(headers)))
    print()
    for (name, kind, reason), where in validity.reasons(records).items():
        print(f"{name}, {validity.SHORT[kind]} for {', '.join(where)}: {reason}")
    return 0


def cmd_estimators(args) -> int:
    if args.all_pairs:
        return _all_pairs(args)
    spec = spec_from_args(args)
    opts = dict(
        prior_options=spec.prior.options,
        likelihood_options=spec.likelihood.options,
        guide=spec.guide.family,
        guide_options={"rank": spec.guide.rank, "flows": spec.guide.flows},
    )
    table = validity.pair_validity(spec.prior.name, spec.likelihood.name, **opts)
    if args.json:
        print(
            json.dumps(
                {
                    "spec": spec.source,
                    "prior": spec.prior.name,
                    "likelihood": spec.likelihood.name,
                    "guide": spec.guide.family,
                    "estimators": {
                        n: {**v, "description": ESTIMATORS[n].description, "default": n in DEFAULT_ESTIMATORS}
                        for n, v in table.items()
                    },
                },
                indent=2,
            )
        )
        return 0
    rows = [
        [
            name,
            ESTIMATORS[name].description,
            "yes" if name in DEFAULT_ESTIMATORS else "no",
            report.VALIDITY_LABELS[table[name]["kind"]],
        ]
        for name in estimator_names()
    ]
    print(f"prior {spec.prior.name}, likelihood {spec.likelihood.name}, guide {spec.guide.family} (spec {spec.source})")
    print(report.table(["estimator", "what", "in compare by default", "validity"], rows, align="llll"))
    print()
    for name in estimator_names():
        print(f"{name}: {table[name]['reason']}")
    return 0


def cmd_spec(args) -> int:
    if args.spec_command == "list":
        rows = [
            [name, s.prior.name, s.likelihood.name, s.description]
            for name, s in ((n, load_spec(n)) for n in shipped_specs())
        ]
        print(report.table(["spec", "prior", "likelihood", "description"], rows, align="llll"))
        return 0
    spec = load_spec(args.name, overrides=args.overrides, prior=args.prior, likelihood=args.likelihood)
    print(spec.to_toml(), end="")
    return 0


def cmd_reproduce(args) -> int:
    result = api.reproduce(
        args.target,
        out=args.out,
        overrides=tuple(args.overrides),
        force=args.force,
        progress=not args.no_progress,
        **{k: v for k, v in vars(args).items() if k in ("dataset", "epochs", "device", "seed")},
        **options_from_args(args),
    )
    print(f"vae-pyro reproduce {args.target}: {data_label(result)}; test NLL by IWAE k={result['k']:,}")
    print(text_table(result))
    print(f"wrote {args.out}/report.md, results.json, {len(result['plots'])} plots and checkpoints/")
    return 0


COMMANDS = {
    "compare": cmd_compare,
    "train": cmd_train,
    "experiment": cmd_experiment,
    "estimators": cmd_estimators,
    "spec": cmd_spec,
    "check": cmd_check,
    "nll": cmd_nll,
    "reproduce": cmd_reproduce,
}


#: the library's names of the entry points' keyword options, and their flags (always on the command line)
KEYWORD_FLAGS = {"resume=True": "--resume", "force=True": "--force", "checkpoint=PATH": "--checkpoint PATH"}


def in_flags(message: str, given: dict[str, str]) -> str:
    """``message`` (the library's, naming settings) with each setting the user gave as a flag named
    by that flag: "training.estimator 'x' ..." -> "--estimator 'x' ..."; a keyword option
    (:data:`KEYWORD_FLAGS`) by its flag: "resume=True needs checkpoint=PATH" -> "--resume needs --checkpoint PATH"."""
    for path, flag in {**given, **KEYWORD_FLAGS}.items():
        message = re.sub(rf"(?<![\w.]){re.escape(path)}(?![\w.])", flag, message)
    return message


def installed_version() -> str:
    """The installed distribution's version (setup.cfg's, through the package metadata)."""
    try:
        return version("vae-pyro")
    except PackageNotFoundError:  # run from a checkout on PYTHONPATH (scripts/gpu_check.sh), not installed
        return "(not installed)"


def interrupted(args, written_before: int) -> str:
    """The one line a Ctrl-C ends a command with: what is on disk. Temporaries were removed on the way
    out (:func:`vae_pyro.outputs.atomic_write`, :func:`~vae_pyro.outputs.staged_folder`), and so
    were this run's locks."""
    checkpoint = getattr(args, "checkpoint", None)
    if args.command == "train" and checkpoint and os.path.isfile(checkpoint):
        try:
            epoch = load_checkpoint(checkpoint)["epoch"]
        except VaePyroError:
            epoch = None
        if epoch is not None:
            return f"interrupted; the last checkpoint at epoch {epoch} is intact ({checkpoint})"
    written = [p for p in dict.fromkeys(outputs.WRITTEN[written_before:]) if p.exists()]  # a stage's went with it
    if not written:
        return "interrupted; nothing was written"
    return f"interrupted; written before the interruption, whole: {', '.join(map(str, written))}"


def main(argv: Sequence[str] | None = None) -> int:
    if distributed.launched() and not distributed.active():  # under torchrun: start the process group first
        return distributed.launch(main, argv)
    parser = build_parser()
    parser.add_argument("--version", action="version", version=f"vae-pyro {installed_version()}")
    args = parser.parse_args(argv)
    written_before = len(outputs.WRITTEN)
    try:
        return COMMANDS[args.command](args)
    except VaePyroError as err:  # bad input only: a bug (ValueError, TypeError ...) is a traceback, exit 1
        print(f"vae-pyro: error: {in_flags(str(err), given_settings(args))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line saying what is on disk, the shell's 128 + SIGINT
        print(f"vae-pyro: {interrupted(args, written_before)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
