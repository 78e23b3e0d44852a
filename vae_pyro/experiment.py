"""The training comparison behind ``vae-pyro experiment`` and ``scripts/compare_estimators.py``.

One model per estimator, each from the same seed (same initial weights, same data order), trained for
the same epochs with the same optimiser; after every epoch the test -ELBO is measured with the
*analytic* loss, so the curves compare models, not estimators' noise. The run folder holds:

    metrics.json   everything below, machine-readable (config, per-epoch logs, final numbers)
    metrics.csv    one row per (estimator, epoch)
    report.md      the numbers and the plots, for people
    curves.png  reconstructions.png  samples.png  variance.png  [latent.png when z_dim == 2]
    checkpoints/NAME.pt
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checks, outputs, plots
from .errors import SpecError
from .estimators import build_estimator
from .evaluation import iwae_log_likelihood
from .model import VAE
from .runs import Run, fit_run, prepare_run, result_header
from .report import atomic_write_text, fmt, markdown_table, table, write_json
from .train import seed_all


def experiment_binarization(spec) -> str:
    """The spec's resolved binarization, except that ``auto`` binary data is binarized *dynamically*
    here (training for many epochs is where Burda et al.'s fresh draws pay off)."""
    binarization = spec.resolved_data()[0]
    return "dynamic" if spec.data.binarization == "auto" and binarization == "static" else binarization


def _train_one(name: str, run: Run, out: Path, progress: bool) -> tuple[VAE, dict]:
    vae = run.restart()  # same initial weights and data order for every estimator
    ref = checks.reference_for(vae, particles=16, reference_particles=16)
    start = time.perf_counter()
    history, training = fit_run(
        run,
        name,
        None,
        progress,
        vae=vae,
        x_test=run.x_test,
        eval_estimator=build_estimator(ref.estimator, ref.particles),
        checkpoint=str(out / "checkpoints" / f"{name}.pt"),
    )
    record = {
        "name": name,
        "step": training["step"],
        "step_reason": training["step_reason"],
        "test_estimator": f"{ref.estimator} x{ref.particles}",
        "history": [asdict(h) for h in history],
        "train_seconds": time.perf_counter() - start,
        "final_test_neg_elbo": history[-1].test_neg_elbo,
    }
    return vae, record


def _variance(vae, x, names, draws, particles) -> dict:
    """Spread of each estimator at one trained model: sd of one draw of -ELBO/example and the summed
    per-element gradient variance for encoder and decoder parameters."""
    out = {}
    directions = checks.gradient_directions(vae, x[:256], num_random=1)
    for name in names:
        est = build_estimator(name, particles)
        values = checks.MCStats.of(name, checks.loss_draws(est, vae, x, draws), particles)
        grads = checks.gradient_draws(est, vae, x[:256], draws, directions)
        parts = {"encoder": 0.0, "decoder": 0.0}
        for pname, var in zip(grads.names, grads.var):
            part = pname.split(".")[0]
            if part in parts:
                parts[part] += float(var.sum())
        out[name] = {"value_sd": values.sd, "grad_var_encoder": parts["encoder"], "grad_var_decoder": parts["decoder"]}
    return out


def _train_all(run: Run, options: dict, out: Path, progress: bool) -> tuple[dict, list]:
    """One model per estimator, each ending with its test NLL (IWAE_k per digit, an upper bound on
    -log p(x) in expectation, tightening as k grows; Burda et al. 2015) where beta = 1."""
    models, records = {}, []
    nll_k = options["nll_k"]
    for name in tqdm(options["train_estimators"], desc="estimators", disable=not progress, leave=False):
        models[name], record = _train_one(name, run, out, progress)
        if nll_k and float(run.spec.training.kl_weight) == 1.0:
            torch.manual_seed(run.spec.training.seed)
            log_px = iwae_log_likelihood(
                models[name], run.x_test, k=nll_k, progress=progress, desc=f"test NLL [{name}]"
            )
            record["test_nll"] = float(-log_px.mean())
            record["test_nll_se"] = float(log_px.std() / len(log_px) ** 0.5)
        records.append(record)
    return models, records


def _pictures(spec, models: dict, records: list, x_test, test_y, transform: str, out: Path) -> dict:
    """Curves, reconstructions of the same test digits, samples from each prior, the latent space."""
    images = next(iter(models.values())).config  # every model is of the run's images
    scale = float(images.max_value) if transform == "counts" else 1.0  # show every likelihood's mean on [0, 1]

    def mean_image(vae, z):
        return (vae.likelihood.dist(vae.decoder(z)).mean / scale).clamp(0, 1)

    with torch.no_grad():
        seed_all(spec.training.seed)
        shown = x_test[:10]
        recon = {"data": shown / scale}
        samples = {}
        for name, vae in models.items():
            mu, _ = vae.encoder(shown)
            recon[name] = mean_image(vae, mu)
            samples[name] = mean_image(vae, vae.prior.dist((10,)).sample())
    files = {
        "curves": plots.training_curves({r["name"]: r["history"] for r in records}, out / "curves.png"),
        "reconstructions": plots.image_grid(
            recon,
            out / "reconstructions.png",
            "test digits (top) and each model's reconstruction (decoder mean at z = mu)",
            images.image_shape,
        ),
        "samples": plots.image_grid(
            samples, out / "samples.png", "samples from each model's prior (pixel probabilities)", images.image_shape
        ),
    }
    if spec.networks.z_dim == 2:
        with torch.no_grad():
            latents = {name: vae.encoder(x_test)[0] for name, vae in models.items()}
        files["latent"] = plots.latent_scatter(latents, test_y, out / "latent.png")
    return files


def _check_estimators(spec, names) -> None:
    """Every estimator to train with must apply to the spec's model: the rule of
    :func:`~vae_pyro.runs.training_estimator` for an estimator the user named."""
    probe = VAE(spec.model_config())
    for name in names:
        v = build_estimator(name).validity(probe)
        if not v.valid:
            raise SpecError(
                f"experiment train_estimators: estimator {name!r} is invalid for prior {spec.prior.name!r}: {v.reason}"
            )


def run_experiment(spec, options: dict, progress: bool = False, force: bool = False) -> dict:
    """Train, measure and write the run folder ``options["out"]``, set up by
    :func:`~vae_pyro.runs.prepare_run`. ``options``: the command's own (``out``, ``train_estimators``,
    ``variance_draws``, ``nll_k``; :data:`~vae_pyro.spec.COMMAND_OPTIONS`). The folder is built beside
    it and renamed into place when complete (:func:`vae_pyro.outputs.staged_folder`): an existing run
    is replaced whole, and only with ``force``; a failed run leaves the old folder as it was."""
    if not options["train_estimators"]:
        raise SpecError("experiment train_estimators must name at least one estimator")
    _check_estimators(spec, options["train_estimators"])
    outputs.check_run_folder(options["out"], force=force)
    run = prepare_run(spec, binarization=experiment_binarization(spec))
    run.vae.check_data(run.x_test)
    with outputs.staged_folder(options["out"]) as out:
        return _run_experiment(run, options, out, progress)


def _run_experiment(run: Run, options: dict, out: Path, progress: bool) -> dict:
    spec, x_test, ds, t = run.spec, run.x_test, run.dataset, run.spec.training
    names = options["train_estimators"]
    models, records = _train_all(run, options, out, progress)
    files = _pictures(spec, models, records, x_test, ds.test_y, run.transform, out)
    # Estimator spread, all measured at the same trained model (the first estimator's).
    variance = _variance(models[names[0]], x_test, names, options["variance_draws"], t.particles)
    files["variance"] = plots.estimator_variance(
        list(variance),
        [v["value_sd"] for v in variance.values()],
        {
            "encoder": [v["grad_var_encoder"] for v in variance.values()],
            "decoder": [v["grad_var_decoder"] for v in variance.values()],
        },
        out / "variance.png",
    )
    for record in records:
        record.update(variance[record["name"]])

    result = {
        **result_header("experiment", spec, run.device),
        "dataset": ds.name,
        "binarization": run.binarization,
        "transform": run.transform,
        "test_binarization": run.test_binarization,
        "particles": t.particles,
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "lr": t.lr,
        "model": spec.model_config().to_dict(),
        "variance_measured_at": names[0],
        "nll_k": options["nll_k"],
        "test_examples": int(len(x_test)),
        "estimators": records,
        "plots": {k: Path(v).name for k, v in files.items()},
    }
    write_json(out / "metrics.json", result)
    atomic_write_text(out / "metrics.csv", metrics_csv(records))
    atomic_write_text(out / "report.md", markdown_report(result))
    return result


def metrics_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["estimator", "epoch", "train_neg_elbo", "test_neg_elbo", "seconds", "wall_seconds"])
    for r in records:
        wall = 0.0
        for h in r["history"]:
            wall += h["seconds"]
            writer.writerow(
                [
                    r["name"],
                    h["epoch"],
                    f"{h['train_neg_elbo']:.6f}",
                    f"{h['test_neg_elbo']:.6f}",
                    f"{h['seconds']:.4f}",
                    f"{wall:.4f}",
                ]
            )
    return buf.getvalue()


def summary_rows(result: dict) -> list[list[str]]:
    rows = []
    for r in result["estimators"]:
        rows.append(
            [
                r["name"],
                fmt(r["final_test_neg_elbo"], ".2f"),
                f"{r['test_nll']:.2f} ± {r['test_nll_se']:.2f}" if r.get("test_nll") is not None else "-",
                fmt(r["train_seconds"], ".1f"),
                fmt(r["value_sd"], ".3f"),
                fmt(r["grad_var_encoder"], ".3g"),
                fmt(r["grad_var_decoder"], ".3g"),
            ]
        )
    return rows


SUMMARY_HEADERS = ["estimator", "test -ELBO", "test NLL", "train s", "sd/draw", "grad var enc", "grad var dec"]


def markdown_report(result: dict) -> str:
    rows = summary_rows(result)
    md_table = markdown_table(SUMMARY_HEADERS, rows)
    m = result["model"]
    lines = [
        "# vae-pyro experiment",
        "",
        f"One VAE ({m['x_dim']}-{'-'.join(map(str, m['hidden']))}-{m['z_dim']}, prior {m['prior']}, "
        f"likelihood {m['likelihood']}) per estimator, same seed ({result['seed']}), "
        f"{result['epochs']} epochs of Adam (lr {result['lr']}, batch {result['batch_size']}) on "
        f"{result['dataset']} with {result['binarization']} binarization; test digits binarized "
        f"{result['test_binarization']}. Device {result['device']}, torch {result['torch_version']}, "
        f"pyro {result['pyro_version']}.",
        "",
        f"Test -ELBO: {result['estimators'][0]['test_estimator']} on the {result['test_examples']} test digits, "
        "in nats per example, whatever the estimator trained with. Test NLL: IWAE with "
        f"k = {result['nll_k']} importance samples per digit (Burda et al. 2015), ± its standard error. "
        "sd/draw and gradient variances are measured for every estimator at the same trained model "
        f"(the `{result['variance_measured_at']}` run).",
        "",
        md_table,
        "",
        "## Test -ELBO during training",
        "",
        f"![curves]({result['plots']['curves']})",
        "",
        "## Reconstructions",
        "",
        f"![reconstructions]({result['plots']['reconstructions']})",
        "",
        "## Samples from the prior",
        "",
        f"![samples]({result['plots']['samples']})",
        "",
        "## Estimator variance",
        "",
        f"![variance]({result['plots']['variance']})",
    ]
    if "latent" in result["plots"]:
        lines += ["", "## The latent space", "", f"![latent]({result['plots']['latent']})"]
    return "\n".join(lines) + "\n"


def experiment_table(result: dict) -> str:
    return table(SUMMARY_HEADERS, summary_rows(result))
