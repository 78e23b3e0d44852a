"""The validity matrix: for each prior x likelihood x guide, which estimators have an exact KL, which a
Monte Carlo KL, and which do not apply, each with the reason, computed from the code itself (a VAE
is built for each pair and each estimator is asked, :meth:`Estimator.validity`), never typed by hand.

``vae-pyro estimators --all-pairs`` prints it; ``scripts/validity_matrix.py`` writes
``docs/validity.md`` from it.
"""

from __future__ import annotations

from ..estimators import estimator_names, validity_rows
from ..guides import DEFAULT_GUIDE, GUIDES
from ..likelihoods import LIKELIHOODS
from ..model import VAE
from ..priors import PRIORS
from ..report import markdown_table

SHORT = {"exact_kl": "exact", "monte_carlo_kl": "MC", "invalid": "invalid"}


def pair_validity(
    prior: str,
    likelihood: str,
    prior_options: dict | None = None,
    likelihood_options: dict | None = None,
    estimators=None,
    guide: str = DEFAULT_GUIDE,
    guide_options: dict | None = None,
) -> dict:
    """``{estimator: {"kind", "reason"}}`` for one prior x likelihood x guide. Validity depends on the
    distribution families, not on network sizes, so a tiny VAE (one hidden layer of 8, z_dim 2) is asked."""
    vae = VAE(
        hidden=(8,),
        z_dim=2,
        prior=prior,
        likelihood=likelihood,
        guide=guide,
        prior_options=prior_options or {},
        likelihood_options=likelihood_options or {},
        guide_options=guide_options or {},
    )
    return {name: v.to_dict() for name, v in validity_rows(vae, estimators).items()}


def all_pairs(estimators=None, guides=None) -> list[dict]:
    """One record per prior x likelihood x guide, in registry order (guides: default every one)."""
    return [
        {"prior": p, "likelihood": lk, "guide": g, "estimators": pair_validity(p, lk, estimators=estimators, guide=g)}
        for g in (guides or GUIDES.names())
        for p in PRIORS.names()
        for lk in LIKELIHOODS.names()
    ]


def _guide(record: dict) -> str:
    return record.get("guide", DEFAULT_GUIDE)


def matrix_rows(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    names = list(records[0]["estimators"]) if records else estimator_names()
    rows = [
        [_guide(r), r["prior"], r["likelihood"], *(SHORT[r["estimators"][n]["kind"]] for n in names)] for r in records
    ]
    return ["guide", "prior", "likelihood", *names], rows


def reasons(records: list[dict]) -> dict[tuple[str, str, str], list[str]]:
    """The distinct (estimator, kind, reason) -> the "guide/prior" pairs it holds for, for the legend
    (the likelihood never changes validity)."""
    out: dict[tuple[str, str, str], list[str]] = {}
    for r in records:
        where = f"{_guide(r)}/{r['prior']}"
        for name, v in r["estimators"].items():
            seen = out.setdefault((name, v["kind"], v["reason"]), [])
            if where not in seen:
                seen.append(where)
    return out


def markdown(records: list[dict]) -> str:
    headers, rows = matrix_rows(records)
    lines = [markdown_table(headers, [[f"`{c}`" if i < 3 else c for i, c in enumerate(row)] for row in rows])]
    lines += [
        "",
        "Why, per estimator and guide/prior (the likelihood never changes validity: every likelihood "
        "has a hand-written closed-form log-density):",
        "",
    ]
    for (name, kind, reason), where in reasons(records).items():
        lines.append(f"- `{name}`, {SHORT[kind]} for {', '.join(f'`{p}`' for p in where)}: {reason}")
    return "\n".join(lines) + "\n"
