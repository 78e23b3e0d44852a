"""vae-pyro: the VAE's ELBO, visible and checkable."""


def check_estimators(model, guide, *args, **kwargs):
    """Estimator-agreement checks for any Pyro model/guide pair; see :mod:`vae_pyro.checks.any_model` and
    docs/check_any_model.md. (Imported lazily so ``import vae_pyro`` stays light.)"""
    from .checks.any_model import check_estimators as run

    return run(model, guide, *args, **kwargs)
