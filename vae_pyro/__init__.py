"""vae-pyro: the VAE's ELBO, visible and checkable.

``vae_pyro.check_estimators(model, guide, *args)`` runs the estimator-agreement checks on any Pyro
model/guide pair (:mod:`vae_pyro.checks.any_model`, docs/check_any_model.md); everything else lives
in its module (:mod:`vae_pyro.api` for the commands' entry points)."""

from .checks.any_model import check_estimators

__all__ = ["check_estimators"]
