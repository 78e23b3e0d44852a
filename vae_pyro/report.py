"""Results for people (aligned text tables) and for machines (JSON, written atomically so a crash
or a bad option never leaves a half-written file over a good one)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from .outputs import atomic_write_text  # noqa: F401  (re-exported: results are written through it)


def fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return format(value, spec)
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A plain-text table; ``align`` has one 'l' or 'r' per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(
            str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(cells, widths, align)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


VALIDITY_LABELS = {"exact_kl": "exact KL", "monte_carlo_kl": "Monte Carlo KL", "invalid": "invalid"}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (the report files and the generated docs): one header row,
    the separator, one line per row; cells as given."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def validity_table(rows: dict) -> str:
    """``{estimator: {"kind", "reason"}}`` as a table."""
    return table(
        ["estimator", "validity", "why"],
        [[name, VALIDITY_LABELS[v["kind"]], v["reason"]] for name, v in rows.items()],
        align="lll",
    )


def compare_table(result: dict) -> str:
    ref = result["reference"]
    ref_label = ref["estimator"] + (f" x{ref['particles']}" if ref["estimator"] != "analytic" else "")
    headers = [
        "estimator",
        "-ELBO/example",
        "validity",
        f"z vs {ref_label}",
        "same-noise max diff",
        "grad max|z|",
        "ms/step",
        "verdict",
    ]
    rows = []
    for r in result["estimators"]:
        same = fmt(r["same_noise_max_abs_diff"], ".1e")
        same_check = next((c for c in r["checks"] if c["name"] == "same_noise"), None)
        if same_check and same_check["verdict"] == "fail":
            same += f" (grad rel {same_check['details'].get('grad_max_rel_diff', float('nan')):.1e})"
        neg = "-" if r["neg_elbo_mean"] is None else f"{r['neg_elbo_mean']:.3f} ± {r['neg_elbo_se']:.3f}"
        rows.append(
            [
                r["name"],
                neg,
                VALIDITY_LABELS[r["validity"]["kind"]],
                fmt(r["z_vs_reference"], "+.2f"),
                same,
                fmt(r["grad_agreement"], ".2f"),
                fmt(r["ms_per_step"], ".1f"),
                r["verdict"].upper(),
            ]
        )
    tol = result["tolerances"]
    model = result["model"]
    head = (
        f"vae-pyro compare: spec {result['spec']}: prior {model['prior']}, likelihood {model['likelihood']}"
        + (f", KL weight {result['kl_weight']:g}" if result["kl_weight"] != 1 else "")
        + "\n"
        f"{result['dataset']} ({result['binarization']} binarization, {result['transform']} transform, "
        f"{result['eval_examples']} test digits), device {result['device']} ({result['device_name']}), "
        f"seed {result['seed']}, {result['particles']} particle(s), torch {result['torch_version']}, "
        f"pyro {result['pyro_version']}"
    )
    trained = result["training"]
    how = (
        f"loaded from {trained['checkpoint']}"
        if trained.get("checkpoint")
        else f"trained {trained['epochs']} epochs with '{trained['estimator']}'"
    )
    train_line = how + (
        f": test -ELBO {trained['test_neg_elbo']:.2f} nats/example" if trained["test_neg_elbo"] is not None else ""
    )
    legend = (
        f"pass when |z| <= {tol['z']:.3g} ({result['draws']} draws each), same-noise diff <= "
        f"{tol['same_noise']:g} nats/example (float64, value and gradient), grad max|z| <= "
        f"{tol['grad_z']:.3g} ({result['grad_draws']} draws, 4 projections per tensor; both Student-t "
        f"tolerances with the false-alarm rate of a normal |z| <= {tol.get('z_normal', 4):g}); ms/step at batch "
        f"{result['timing_batch_size']}. '-' = does not apply."
    )
    skipped = sorted(
        {
            c["details"].get("reason", "")
            for r in result["estimators"]
            for c in r["checks"]
            if c["name"] == "device"
            and c["verdict"] == "skip"
            and r["validity"]["kind"] != "invalid"
            and r.get("bound", "elbo") == "elbo"
        }
    )
    lines = [head, train_line]
    if trained.get("estimator_note") and not trained.get("checkpoint"):
        lines.append(trained["estimator_note"])
    lines += [f"reference: {ref['why']}", "", table(headers, rows), "", legend]
    for r in result["estimators"]:
        if r["validity"]["kind"] == "invalid":
            lines.append(f"{r['name']} skipped: {r['validity']['reason']}")
    if skipped:
        lines.append(f"device check skipped: {'; '.join(skipped)}")
    other_bounds = [r for r in result["estimators"] if r.get("bound", "elbo") != "elbo"]
    if other_bounds:  # IWAE_k (and Renyi-bound) estimators are listed, not judged against the ELBO
        kinds = " or ".join(
            dict.fromkeys(
                {"iwae": "IWAE_k", "renyi": "Renyi L_alpha,k"}.get(r["bound"], r["bound"]) for r in other_bounds
            )
        )
        lines.append(
            f"not judged against the ELBO (their value is the tighter {kinds} bound; see `vae-pyro check`): "
            f"{', '.join(r['name'] for r in other_bounds)}"
        )
    lines.append(f"overall: {result['verdict'].upper()} in {result['seconds']:.0f} s")
    return "\n".join(lines)


def finite_or_none(obj):
    """JSON has no NaN or infinity: such numbers become null (strict parsers reject them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def to_json(result: dict) -> str:
    return json.dumps(finite_or_none(result), indent=2, allow_nan=False, default=_jsonable) + "\n"


def write_json(path: str | os.PathLike, result: dict) -> None:
    atomic_write_text(path, to_json(result))


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def train_lines(result: dict) -> str:
    """``vae-pyro train``'s report: the run, one row per epoch, the final test -ELBO."""
    t = result["training"]
    rows = [
        [
            h["epoch"],
            f"{h['train_neg_elbo']:.2f}",
            f"{h['test_neg_elbo']:.2f}",
            f"{h['kl_weight']:g}",
            f"{h['seconds']:.1f}",
        ]
        for h in result["history"]
    ]
    m = result["model"]
    lines = [
        f"vae-pyro train: spec {result['spec']}, prior {m['prior']}, likelihood {m['likelihood']}, "
        f"estimator {result['estimator']}, {result['dataset']} ({result['binarization']}, {result['transform']}), "
        f"device {result['device']}, seed {result['seed']}, {result['particles']} particle(s)"
    ]
    if t.get("estimator_note"):
        lines.append(t["estimator_note"])
    if t.get("step"):
        lines.append(f"step: {t['step']} ({t['step_reason']})")
    lines.append(
        table(["epoch", "train -ELBO", f"test -ELBO ({result['eval_estimator']})", "KL weight", "seconds"], rows)
    )
    if result["test_neg_elbo"] is not None:
        lines.append(f"test -ELBO: {result['test_neg_elbo']:.3f} nats/example")
    return "\n".join(lines)


def nll_lines(result: dict) -> str:
    """``vae-pyro nll``'s report: how the model was obtained, and the test NLL."""
    t, m = result["training"], result["model"]
    how = (
        f"loaded from {t['checkpoint']}"
        if t.get("checkpoint")
        else f"trained {t['epochs']} epochs with '{t['estimator']}' and {result['binarization']} binarization"
    )
    lines = [
        f"vae-pyro nll: {result['dataset']}, prior {m['prior']}, likelihood {m['likelihood']}, {how}, "
        f"test binarization {result['test_binarization']}, device {result['device']}, seed {result['seed']}"
    ]
    if t.get("estimator_note"):
        lines.append(t["estimator_note"])
    lines.append(
        f"test NLL (IWAE, k={result['k']}) = {result['nll']:.3f} ± {result['nll_se']:.3f} nats/example over "
        f"{result['examples']} test digits (an upper bound on the true NLL in expectation)"
    )
    return "\n".join(lines)
