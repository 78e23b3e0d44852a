"""The validity matrix: for each prior x likelihood pair, which estimators have an exact KL, which a
Monte Carlo KL, and which do not apply, each with the reason, computed from the code itself (a VAE
is built for each pair and each estimator is asked, :meth:`Estimator.validity`), never typed by hand.

``vae-pyro estimators --all-pairs`` prints it; ``scripts/validity_matrix.py`` writes
``docs/validity.md`` from it.
"""

from __future__ import annotations

from ..estimators import estimator_names, validity_rows
from ..likelihoods import LIKELIHOODS
from ..model import VAE
from ..priors import PRIORS
from ..report import markdown_table

SHORT = {"exact_kl": "exact", "monte_carlo_kl": "MC", "invalid": "invalid"}


def pair_validity(prior: str, likelihood: str, prior_options: dict | None = None,
                  likelihood_options: dict | None = None, estimators=None) -> dict:
    """``{estimator: {"kind", "reason"}}`` for one pair. Validity depends on the distribution
    families, not on network sizes, so a tiny VAE (one hidden layer of 8, z_dim 2) is asked."""
    vae = VAE(hidden=(8,), z_dim=2, prior=prior, likelihood=likelihood,
              prior_options=prior_options or {}, likelihood_options=likelihood_options or {})
    return {name: v.to_dict() for name, v in validity_rows(vae, estimators).items()}


def all_pairs(estimators=None) -> list[dict]:
    """One record per prior x likelihood pair, in registry order."""
    return [{"prior": p, "likelihood": lk, "estimators": pair_validity(p, lk, estimators=estimators)}
            for p in PRIORS.names() for lk in LIKELIHOODS.names()]


def matrix_rows(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    names = list(records[0]["estimators"]) if records else estimator_names()
    rows = [[r["prior"], r["likelihood"], *(SHORT[r["estimators"][n]["kind"]] for n in names)] for r in records]
    return ["prior", "likelihood", *names], rows


def reasons(records: list[dict]) -> dict[tuple[str, str], list[str]]:
    """The distinct (estimator, kind) -> priors it holds for, with the reason, for the legend."""
    out: dict[tuple[str, str, str], list[str]] = {}
    for r in records:
        for name, v in r["estimators"].items():
            out.setdefault((name, v["kind"], v["reason"]), [])
            if r["prior"] not in out[(name, v["kind"], v["reason"])]:
                out[(name, v["kind"], v["reason"])].append(r["prior"])
    return out


def markdown(records: list[dict]) -> str:
    headers, rows = matrix_rows(records)
    lines = [markdown_table(headers, [[f"`{c}`" if i < 2 else c for i, c in enumerate(row)] for row in rows])]
    lines += ["", "Why, per estimator and prior (the likelihood never changes validity: every likelihood "
                  "has a hand-written closed-form log-density):", ""]
    for (name, kind, reason), priors in reasons(records).items():
        lines.append(f"- `{name}`, {SHORT[kind]} for {', '.join(f'`{p}`' for p in priors)}: {reason}")
    return "\n".join(lines) + "\n"
