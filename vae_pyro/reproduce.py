r"""``vae-pyro reproduce``: a published comparison, or a shipped recipe, trained and evaluated in one go.

Targets (:data:`TARGETS`):

* ``burda2015``: Burda, Grosse & Salakhutdinov 2015, Table 1 (MNIST, one stochastic layer): a model
  trained with the VAE's ELBO and with IWAE_k at k = 1, 5, 50, dynamic binarization, plus the same
  VAE with static binarization; every row from spec ``burda2015`` (784-200-200-50, tanh), the same
  seed and the same epochs. The paper reports the test NLL (IWAE, k = 5,000) 86.76 (VAE, k = 1, which
  is also IWAE k = 1), 85.54 (IWAE k = 5) and 84.78 (IWAE k = 50) on full MNIST.
* ``best-nll``: the spec ``best-nll``, the lowest test NLL we measured on the embedded split (its
  epochs were chosen on held-out digits, then it trains on all of them: ``selection.validation = 0``
  keeps the last checkpoint), with the test NLL of a refined proposal beside the amortized one
  (``refine_steps``, :mod:`vae_pyro.amortization`).

Per row: hold out ``selection.validation`` training digits (stratified, seeded), evaluate the
validation and test IWAE_k bounds (k = ``selection.k``) every ``selection.every`` epochs, keep the
checkpoint with the best *validation* bound (early stopping; the test bound is only recorded), then
estimate the test NLL at that checkpoint by IWAE with k = 5,000 and count the active units
(:mod:`vae_pyro.active_units`). The run folder holds ``results.json``, ``report.md``,
``curves.png`` (validation/test bound per row), ``nll_vs_k.png``, ``active_units.png`` and
``checkpoints/ROW.pt`` (the selected weights).

The paper's learning-rate schedule (``--lr-schedule burda``): 3^i passes at lr 1e-3 * 10^(-i/7) for
i = 0..7, 3,280 passes in all; with fewer ``--epochs`` the same stages are compressed in proportion.
Adam's eps is the paper's 1e-4. On full MNIST (``--dataset idx:FOLDER``) the paper's setting is the
default (:func:`apply_paper_setting`: 3,280 epochs, this schedule, batch 20), and
``--epochs`` is the budget; the first epoch of every row prints its time and the projected total.

The command line (``vae-pyro reproduce``, options in :mod:`vae_pyro.options`) calls
:func:`vae_pyro.api.reproduce`, which runs :func:`run_reproduce` (its options: :func:`plan`).
Every row is set up by :func:`vae_pyro.runs.prepare_run` (device, seed, VAE, data), its estimator is
checked by the training-estimator rule (:func:`vae_pyro.runs.training_estimator`) before any work,
and ``results.json`` starts with the header every command writes (:func:`vae_pyro.runs.result_header`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from tqdm.auto import tqdm

from . import memory, outputs, plots
from .active_units import active_units
from .amortization import refine_proposal
from .checkpoint import save_checkpoint
from .checks.stats import mean_se
from .data import load_dataset, prepare, validation_split
from .estimators import build_estimator
from .errors import SpecError
from .evaluation import iwae_bounds_at
from .model import VAE
from .report import atomic_write_text, fmt, markdown_table, table, write_json
from .runs import Run, prepare_run, result_header, training_estimator
from .spec import LR_SCHEDULES, command_options, load_spec  # noqa: F401  (LR_SCHEDULES: re-exported)
from .devices import resolve_device
from .train import make_optimizer, train

#: Adam's eps in Burda et al. 2015 (torch's default is 1e-8)
ADAM_EPS = 1e-4
#: the paper's stages: 3^i passes each, i = 0..7
BURDA_STAGES = tuple(3**i for i in range(8))


@dataclass(frozen=True)
class Row:
    """One trained model: ``overrides`` (``--set`` strings) on the target's spec."""

    name: str
    label: str
    overrides: tuple[str, ...] = ()
    #: the published test NLL (nats) for this row, None where the paper has none
    paper_nll: float | None = None


@dataclass(frozen=True)
class Target:
    spec: str
    rows: tuple[Row, ...]
    fast_rows: tuple[str, ...]
    reference: str = ""
    #: default steps of test-time proposal refinement (:mod:`vae_pyro.amortization`; 0: none)
    refine_steps: int = 0


def _row(name, label, estimator, k, binarization, paper):
    return Row(
        name,
        label,
        (f"training.estimator={estimator}", f"training.particles={k}", f"data.binarization={binarization}"),
        paper,
    )


#: the targets ``vae-pyro reproduce`` knows, by name
TARGETS = {
    "burda2015": Target(
        "burda2015",
        (
            _row("vae", "VAE (analytic ELBO, k=1), dynamic", "analytic", 1, "dynamic", 86.76),
            _row("iwae-k1", "IWAE k=1, dynamic", "iwae", 1, "dynamic", 86.76),
            _row("iwae-k5", "IWAE k=5, dynamic", "iwae", 5, "dynamic", 85.54),
            _row("iwae-k50", "IWAE k=50, dynamic", "iwae", 50, "dynamic", 84.78),
            _row("vae-static", "VAE (analytic ELBO, k=1), static", "analytic", 1, "static", None),
        ),
        fast_rows=("vae", "iwae-k5", "vae-static"),
        reference="Burda, Grosse & Salakhutdinov 2015, Importance Weighted Autoencoders, Table 1 "
        "(MNIST, one stochastic layer, test NLL by IWAE k=5,000, full MNIST 60,000/10,000)",
    ),
    "best-nll": Target("best-nll", (Row("best-nll", "spec best-nll"),), fast_rows=("best-nll",), refine_steps=2000),
}


#: the ks of the NLL-vs-k plot (those <= k; all from the same k draws)
NLL_KS = (1, 5, 50, 500, 5000)


def plan(
    target: str = "burda2015",
    out: str = "runs/burda2015",
    options: dict | None = None,
    settings: dict | None = None,
    overrides=(),
    force: bool = False,
    progress: bool = True,
) -> SimpleNamespace:
    """What a run of ``target`` does: ``options`` (``reproduce``'s own, checked and completed from
    :data:`~vae_pyro.spec.COMMAND_OPTIONS`), ``settings`` ({"training.epochs": 3}: over the target's
    spec for every row, of ``data.dataset``, ``training.epochs``, ``training.device``,
    ``training.seed``) and ``overrides`` (``--set`` strings for every row), with what the target
    decides where they leave it unset (:func:`apply_target_defaults`, :func:`apply_fast`,
    :func:`apply_paper_setting` are applied by :func:`run_reproduce`)."""
    if target not in TARGETS:
        raise SpecError(f"unknown reproduce target {target!r}; allowed: {', '.join(TARGETS)}")
    o, t = command_options("reproduce", options or {}), settings or {}
    given = sorted(k for k, v in (options or {}).items() if v is not None)  # the options given explicitly
    return SimpleNamespace(
        given=given,
        target=target,
        out=out,
        dataset=t.get("data.dataset"),
        epochs=t.get("training.epochs"),
        k=o["k"],
        ks=NLL_KS,
        rows=tuple(o["rows"]) or None,
        lr_schedule=o["lr_schedule"],
        refine_steps=o["refine_steps"],
        device=t.get("training.device"),
        seed=t.get("training.seed"),
        overrides=tuple(overrides),
        fast=o["fast"],
        force=force,
        progress=progress,
    )


def apply_target_defaults(cfg: SimpleNamespace) -> None:
    """What the user leaves unset that the target decides: its proposal-refinement steps."""
    if cfg.refine_steps is None:
        cfg.refine_steps = TARGETS[cfg.target].refine_steps


def apply_paper_setting(cfg: SimpleNamespace) -> None:
    """On full MNIST (``idx:FOLDER``), what the user leaves unset is the paper's: 3,280 epochs, the
    3^i-pass schedule, batch 20 (a ``--set training.batch_size`` comes later and wins). The
    embedded digits keep the spec's CPU budget and a constant learning rate."""
    full = (cfg.dataset or "").startswith("idx:")
    if cfg.lr_schedule is None:
        cfg.lr_schedule = "burda" if full else "constant"
    if full:
        cfg.epochs = cfg.epochs or sum(BURDA_STAGES)
        cfg.overrides = ("training.batch_size=20", *cfg.overrides)


def apply_fast(cfg: SimpleNamespace) -> None:
    """``fast``: 2 epochs, evaluated every epoch with k = 5, test NLL k = 20, a subset of rows; each
    only where the user left it unset (an explicit ``k``, ``refine_steps``, ``epochs``, ``rows`` or
    ``--set`` wins)."""
    cfg.epochs = cfg.epochs or 2
    if "k" not in cfg.given:
        cfg.k = min(cfg.k, 20)
    if "refine_steps" not in cfg.given:
        cfg.refine_steps = min(cfg.refine_steps, 5)
    cfg.rows = cfg.rows or TARGETS[cfg.target].fast_rows
    cfg.overrides = ("selection.every=1", "selection.k=5", *cfg.overrides)


# ----------------------------------------------------------------------------------------------
# The pieces


def burda_lr(epoch: int, epochs: int, lr: float = 1e-3) -> float:
    """The paper's schedule compressed into ``epochs``: epoch e (1-based) stands for pass
    p = ceil(e * 3280 / epochs) of the paper's 3,280, which lies in stage i (3^i passes, lr 1e-3 * 10^(-i/7))."""
    p = math.ceil(epoch * sum(BURDA_STAGES) / epochs)
    end = 0
    for i, passes in enumerate(BURDA_STAGES):
        end += passes
        if p <= end:
            return lr * 10 ** (-i / 7)
    return lr * 10 ** (-(len(BURDA_STAGES) - 1) / 7)


def mean_bound(vae, x: torch.Tensor, k: int, seed: int) -> float:
    """Mean IWAE_k over ``x`` with common random numbers (the same seed at every checkpoint, so two
    checkpoints differ by their weights, not their noise), without touching the training RNG."""
    devices = [x.device] if x.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return float(iwae_bounds_at(vae, x, [k])[k].mean())


@dataclass
class Data:
    name: str
    x_train: torch.Tensor
    x_val: torch.Tensor | None
    x_test: torch.Tensor
    dynamic: bool
    binarization: str


def split_data(run: Run) -> Data:
    """The run's training digits (grey levels when dynamic) less the held-out validation digits, those
    validation digits, and the test digits (a fixed static draw of validation and test digits when
    training is dynamic, so every checkpoint and row sees the same)."""
    x_train, x_val = run.x_train, None
    validation = run.spec.selection.validation
    if validation:
        train_idx, val_idx = validation_split(run.dataset.train_y, validation)
        # static draws are made over all the training digits, then indexed: the same draw every row
        x_fixed = (
            prepare(run.dataset.train_x, "static", run.transform, run.dataset.max_value).to(run.device)
            if run.dynamic
            else x_train
        )
        x_train, x_val = x_train[train_idx.to(run.device)], x_fixed[val_idx.to(run.device)]
    return Data(run.dataset.name, x_train, x_val, run.x_test, run.dynamic, run.binarization)


# ----------------------------------------------------------------------------------------------
# One row


def fit_row(run: Run, data: Data, cfg: SimpleNamespace, label: str) -> dict:
    """Train ``run.vae`` as its spec says, evaluating every ``selection.every`` epochs; leaves it at the
    checkpoint with the best validation bound (the last one without validation digits) and returns
    its record."""
    t, sel, vae = run.spec.training, run.spec.selection, run.vae
    estimator = build_estimator(t.estimator, t.particles)
    optimizer = make_optimizer(vae, t.lr, eps=ADAM_EPS)
    curve, seconds, best = [], [], {"score": -math.inf, "epoch": 0, "state": None}
    bar = tqdm(range(1, t.epochs + 1), desc=label, unit="epoch", disable=not cfg.progress, leave=False)
    for epoch in bar:
        lr = burda_lr(epoch, t.epochs, t.lr) if cfg.lr_schedule == "burda" else t.lr
        for group in optimizer.param_groups:
            group["lr"] = lr
        log = train(
            vae,
            estimator,
            data.x_train,
            epochs=1,
            batch_size=t.batch_size,
            optimizer=optimizer,
            dynamic=data.dynamic,
            generator=run.generator,
            progress=False,
        )[0]
        seconds.append(log.seconds)
        if epoch == 1:
            tqdm.write(
                f"{label}: {log.seconds:.2f} s/epoch on {run.device}; {t.epochs} epochs ~ "
                f"{log.seconds * t.epochs / 60:.1f} min of training"
            )
        if epoch % sel.every and epoch != t.epochs:
            continue
        point = {
            "epoch": epoch,
            "lr": lr,
            "train_neg_bound": log.train_neg_elbo,
            "test_bound": mean_bound(vae, data.x_test, sel.k, t.seed),
            "val_bound": mean_bound(vae, data.x_val, sel.k, t.seed) if data.x_val is not None else None,
        }
        curve.append(point)
        score = point["val_bound"] if data.x_val is not None else epoch  # no validation: the last
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "state": copy.deepcopy(vae.state_dict())}
        bar.set_postfix(val=fmt(point["val_bound"], ".2f"), test=f"{point['test_bound']:.2f}", best_epoch=best["epoch"])
        if sel.patience and (epoch - best["epoch"]) >= sel.patience * sel.every:
            break
    bar.close()
    vae.load_state_dict(best["state"])
    return {
        "curve": curve,
        "epochs_run": len(seconds),
        "selected_epoch": best["epoch"],
        "train_seconds": sum(seconds),
        "seconds_per_epoch": sum(seconds) / max(len(seconds), 1),
    }


def evaluate_row(vae, data: Data, cfg: SimpleNamespace, seed: int) -> dict:
    """Test NLL by IWAE with k = ``cfg.k`` (and the smaller ks of the plot from the same draws), the
    active units on the test digits; with ``cfg.refine_steps``, also the test NLL with a proposal
    refined on the test digits (:func:`refined_nll`)."""
    ks = sorted({k for k in cfg.ks if k < cfg.k} | {cfg.k})
    start = time.perf_counter()
    torch.manual_seed(seed)
    bounds = iwae_bounds_at(vae, data.x_test, ks, progress=cfg.progress, desc=f"test NLL, k={cfg.k}")
    log_px = bounds[cfg.k]
    units = active_units(vae, data.x_test)
    nll, se = mean_se(-log_px)
    out = {
        "test_nll": nll,
        "test_nll_se": se,
        "nll_vs_k": {str(k): float(-v.mean()) for k, v in bounds.items()},
        "active_units": units["active"],
        "z_dim": units["z_dim"],
        "unit_variances": units["variances"],
    }
    out.update(refined_nll(vae, data, cfg, seed) if cfg.refine_steps else {"test_nll_refined": None})
    out["eval_seconds"] = time.perf_counter() - start
    return out


def refined_nll(vae, data: Data, cfg: SimpleNamespace, seed: int) -> dict:
    """The test NLL by IWAE_k with the encoder refined as a proposal on the test digits
    (:func:`vae_pyro.amortization.refine_proposal`, IWAE_5, ``cfg.refine_steps`` steps; the model is
    unchanged), drawn with the same seed as the amortized estimate, so the two differ by their
    proposal only; their difference estimates the amortization gap."""
    start = time.perf_counter()
    proposal = refine_proposal(vae, data.x_test, cfg.refine_steps, seed=seed + 1)
    torch.manual_seed(seed)
    log_px = iwae_bounds_at(
        vae,
        data.x_test,
        [cfg.k],
        progress=cfg.progress,
        proposal=proposal,
        desc=f"test NLL, refined proposal, k={cfg.k}",
    )[cfg.k]
    nll, se = mean_se(-log_px)
    return {
        "test_nll_refined": nll,
        "test_nll_refined_se": se,
        "refine_steps": cfg.refine_steps,
        "refine_seconds": time.perf_counter() - start,
    }


def run_row(row: Row, spec, cfg: SimpleNamespace, out: Path) -> tuple[dict, Data]:
    """One row: set up (:func:`~vae_pyro.runs.prepare_run`), train with checkpoint selection, evaluate,
    save the selected weights to ``out/checkpoints/ROW.pt``."""
    run = prepare_run(spec)
    data = split_data(run)
    record = fit_row(run, data, cfg, row.name)
    record.update(evaluate_row(run.vae, data, cfg, spec.training.seed))
    record.update(
        name=row.name,
        label=row.label,
        paper_nll=row.paper_nll,
        estimator=spec.training.estimator,
        particles=spec.training.particles,
        binarization=data.binarization,
        spec=spec.to_dict(),
    )
    save_checkpoint(
        out / "checkpoints" / f"{row.name}.pt",
        vae=run.vae,
        epoch=record["selected_epoch"],
        estimator=spec.training.estimator,
    )
    refined = f" ({record['test_nll_refined']:.2f} with the refined proposal)" if record["test_nll_refined"] else ""
    tqdm.write(
        f"{row.name}: test NLL {record['test_nll']:.2f}{refined} (IWAE k={cfg.k}) at epoch "
        f"{record['selected_epoch']}/{record['epochs_run']}, {record['active_units']} active units, "
        f"{record['train_seconds']:.0f} s training"
    )
    return record, data


# ----------------------------------------------------------------------------------------------
# The run


def row_spec(target: Target, row: Row, cfg: SimpleNamespace):
    """``row``'s resolved spec, refused (one line) when it cannot give a bound on log p(x) or its
    estimator does not apply to its model (the training-estimator rule, the row naming its estimator)."""
    fields = {
        key: value
        for key, value in (
            ("data.dataset", cfg.dataset),
            ("training.epochs", cfg.epochs),
            ("training.device", cfg.device),
            ("training.seed", cfg.seed),
        )
        if value is not None
    }
    spec = load_spec(target.spec, overrides=[*row.overrides, *cfg.overrides], settings=fields)
    if spec.training.kl_weight != 1.0 or spec.training.kl_anneal_epochs:
        raise SpecError(
            "reproduce compares bounds on log p(x): training.kl_weight must be 1 and training.kl_anneal_epochs 0"
        )
    memory.check_fits(
        spec,
        resolve_device(spec.training.device),
        k=cfg.k,
        command="reproduce",
        options={"k": cfg.k, "refine_steps": cfg.refine_steps},
    )  # before the probe below is built
    training_estimator(VAE(spec.model_config()), spec.training.estimator, explicit=True)
    return spec


def row_specs(cfg: SimpleNamespace) -> list[tuple[Row, object]]:
    """Every row's resolved spec, validated before any work (a bad --set fails here, once)."""
    target = TARGETS[cfg.target]
    names = [r.name for r in target.rows]
    unknown = [n for n in (cfg.rows or ()) if n not in names]
    if unknown:
        raise SpecError(f"reproduce rows: unknown row {unknown[0]!r} for {cfg.target}; allowed: {', '.join(names)}")
    return [(row, row_spec(target, row, cfg)) for row in target.rows if not cfg.rows or row.name in cfg.rows]


def run_reproduce(
    target: str,
    out: str,
    options: dict | None = None,
    settings: dict | None = None,
    overrides=(),
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Train and evaluate every row of ``target`` (:func:`plan`); write the run folder; return the results."""
    cfg = plan(target, out, options, settings, overrides, force, progress)
    apply_target_defaults(cfg)
    if cfg.fast:
        apply_fast(cfg)
    apply_paper_setting(cfg)
    rows = row_specs(cfg)
    check_sizes(rows, cfg)
    outputs.check_run_folder(cfg.out, force=cfg.force)
    with outputs.staged_folder(cfg.out) as out:  # built beside, renamed into place whole when complete
        return _run_rows(cfg, rows, out)


def check_sizes(rows: list, cfg: SimpleNamespace) -> None:
    """All the rows together fit in a day (:func:`vae_pyro.memory.check_time`; each row's memory and
    time are checked by :func:`row_spec`), before any work: the training, the validation bounds, the
    test NLL's k and the proposal refinement."""
    options, loops = {"k": cfg.k, "refine_steps": cfg.refine_steps}, {}
    for _, spec in rows:  # each row's memory and time: checked by row_spec
        for name, (calls, flops) in memory.time_estimate(spec, "reproduce", options).items():
            loops[name] = (loops.get(name, (0, 0))[0] + calls, loops.get(name, (0, 0))[1] + flops)
    memory.check_time(loops, resolve_device(rows[0][1].training.device))


def _run_rows(cfg: SimpleNamespace, rows: list, out: Path) -> dict:
    first = rows[0][1]  # the rows differ in estimator, k and binarization only: data and device are shared
    ds, device, t = load_dataset(first.data.dataset), resolve_device(first.training.device), first.training
    print(
        f"reproduce {cfg.target}: {len(rows)} row(s) on {ds.name}, {t.epochs} epochs each, batch {t.batch_size}, "
        f"Adam lr {t.lr:g} (eps {ADAM_EPS:g}, {cfg.lr_schedule} schedule), seed {t.seed}, device {device}; "
        f"test NLL by IWAE k={cfg.k:,}"
    )
    records, started = [], time.perf_counter()
    for row, spec in tqdm(rows, desc=cfg.target, unit="row", disable=not cfg.progress, leave=False):
        record, data = run_row(row, spec, cfg, out)
        records.append(record)
    result = result_header("reproduce", first, device, settings=False)  # each row: its spec
    result.update(
        {
            "target": cfg.target,
            "reference": TARGETS[cfg.target].reference,
            "dataset": data.name,
            "embedded_split": data.name == "mnist5k",
            "train_digits": int(len(data.x_train)),
            "validation_digits": int(len(data.x_val)) if data.x_val is not None else 0,
            "test_digits": int(len(data.x_test)),
            "k": cfg.k,
            "lr_schedule": cfg.lr_schedule,
            "adam_eps": ADAM_EPS,
            "fast": cfg.fast,
            "seconds": time.perf_counter() - started,
            "config": vars(cfg),
            "rows": records,
            "comparisons": comparisons(records),
        }
    )
    write_outputs(out, result)
    return result


def comparisons(records: list[dict]) -> dict:
    """The paper's two directions, where both rows ran: IWAE k=50 below VAE, dynamic below static
    (positive = the paper's direction, in nats)."""
    nll = {r["name"]: r["test_nll"] for r in records}
    out = {}
    if "vae" in nll and "iwae-k50" in nll:
        out["vae_minus_iwae_k50"] = nll["vae"] - nll["iwae-k50"]
    if "vae" in nll and "vae-static" in nll:
        out["static_minus_dynamic"] = nll["vae-static"] - nll["vae"]
    return out


# ----------------------------------------------------------------------------------------------
# Outputs


def data_label(result: dict) -> str:
    if result["embedded_split"]:
        return (
            f"embedded mnist5k split ({result['train_digits']:,} train / {result['validation_digits']:,} "
            f"validation / {result['test_digits']:,} test digits): NOT full MNIST"
        )
    return (
        f"{result['dataset']} ({result['train_digits']:,} train / {result['validation_digits']:,} validation / "
        f"{result['test_digits']:,} test digits)"
    )


TABLE_HEADERS = [
    "row",
    "trained with",
    "binarization",
    "selected epoch",
    "test NLL (ours)",
    "paper (full MNIST)",
    "active units",
    "train s",
    "s/epoch",
]
#: the extra column where a row refined its proposal (:mod:`vae_pyro.amortization`)
REFINED_HEADER = "test NLL, refined proposal"


def _refined(result: dict) -> bool:
    return any(r.get("test_nll_refined") is not None for r in result["rows"])


def table_headers(result: dict) -> list[str]:
    return TABLE_HEADERS[:5] + [REFINED_HEADER] + TABLE_HEADERS[5:] if _refined(result) else TABLE_HEADERS


def table_rows(result: dict) -> list[list[str]]:
    rows = []
    for r in result["rows"]:
        row = [
            r["name"],
            f"{r['estimator']} k={r['particles']}",
            r["binarization"],
            f"{r['selected_epoch']}/{r['epochs_run']}",
            f"{r['test_nll']:.2f} ± {r['test_nll_se']:.2f}",
            fmt(r["paper_nll"], ".2f"),
            f"{r['active_units']}/{r['z_dim']}",
            f"{r['train_seconds']:.0f}",
            f"{r['seconds_per_epoch']:.2f}",
        ]
        if _refined(result):
            refined = r.get("test_nll_refined")
            row.insert(5, "-" if refined is None else f"{refined:.2f} ± {r['test_nll_refined_se']:.2f}")
        rows.append(row)
    return rows


def text_table(result: dict) -> str:
    return table(table_headers(result), table_rows(result))


def markdown_report(result: dict, plot_files: dict) -> str:
    sel = result["rows"][0]["spec"]["selection"]
    lines = [
        f"# vae-pyro reproduce {result['target']}",
        "",
        f"Reference: {result['reference'] or 'the shipped spec ' + result['target']}.",
        "",
        f"**Our numbers are on the {data_label(result)}.** The paper's column is full MNIST (60,000 training "
        "digits, 3,280 passes); the two columns share the recipe, not the data, so compare the *shape* "
        "(the order of the rows and the size of the gaps), not the values."
        if result["embedded_split"]
        else f"Our numbers are on {data_label(result)}.",
        "",
        f"Test NLL: -mean IWAE_k over the test digits, k = {result['k']:,} (± its standard error). Every row: "
        f"same seed, same epochs, Adam (eps {result['adam_eps']:g}), lr schedule {result['lr_schedule']}; "
        f"checkpoint selected by the validation IWAE_{sel['k']} bound, evaluated every {sel['every']} epochs "
        "(selected epoch / epochs run). Active units: latent dimensions with Cov_x(E_q[z_d|x]) > 0.01 on the "
        f"test digits (Burda et al. 2015, §5.2). Device {result['device']}, torch {result['torch_version']}, "
        f"pyro {result['pyro_version']}{', --fast (a smoke run, not a result)' if result['fast'] else ''}.",
        "",
        markdown_table(table_headers(result), table_rows(result)),
        "",
    ]
    if _refined(result):
        lines += [
            f"{REFINED_HEADER}: the same IWAE_k estimate (same k, same seed) with the encoder, as the "
            f"proposal only, refined on the test digits by {result['rows'][0]['refine_steps']:,} Adam steps "
            "on their IWAE_5 bound; the model p(x|z) p(z) is unchanged, so it bounds the same log p(x). "
            "The difference is the amortization gap (Cremer, Li & Duvenaud 2018): how much of the "
            "amortized number is the encoder's, not the model's. The paper's column is amortized.",
            "",
        ]
    c = result["comparisons"]
    if "vae_minus_iwae_k50" in c:
        lines.append(f"- VAE - IWAE k=50: {c['vae_minus_iwae_k50']:+.2f} nats (paper: +1.98; positive = IWAE better)")
    if "static_minus_dynamic" in c:
        lines.append(
            f"- static - dynamic binarization (VAE): {c['static_minus_dynamic']:+.2f} nats (positive = dynamic better)"
        )
    lines += ["", f"Total {result['seconds']:.0f} s.", ""]
    for title, key in (
        ("Validation and test bounds during training", "curves"),
        ("Test NLL against k", "nll_vs_k"),
        ("Active units", "active_units"),
    ):
        lines += [f"## {title}", "", f"![{key}]({plot_files[key]})", ""]
    return "\n".join(lines)


def write_outputs(out: Path, result: dict) -> None:
    rows = result["rows"]
    files = {
        "curves": plots.bound_curves({r["name"]: r["curve"] for r in rows}, out / "curves.png"),
        "nll_vs_k": plots.nll_vs_k({r["name"]: r["nll_vs_k"] for r in rows}, out / "nll_vs_k.png"),
        "active_units": plots.active_units_bars(
            {r["name"]: (r["active_units"], r["z_dim"]) for r in rows}, out / "active_units.png"
        ),
    }
    result["plots"] = {k: Path(v).name for k, v in files.items()}
    write_json(out / "results.json", result)
    atomic_write_text(out / "report.md", markdown_report(result, result["plots"]))
