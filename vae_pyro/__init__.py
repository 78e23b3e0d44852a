"""vae-pyro: the VAE's ELBO, visible and checkable."""


def check_estimators(model, guide, *args, **kwargs):
    """Estimator-agreement checks for any Pyro model/guide pair; see :mod:`vae_pyro.anymodel` and
    docs/check_any_model.md. (Imported lazily so ``import vae_pyro`` stays light.)"""
    from .anymodel import check_estimators as run

    return run(model, guide, *args, **kwargs)
