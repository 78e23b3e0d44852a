"""Shared fixtures: real digits and a small VAE trained briefly on them, so checks run at a trained
point (at random weights every estimator agrees trivially well)."""

from __future__ import annotations

import pyro
import pytest
import torch

from vae_pyro.checks import torch_threads
from vae_pyro.data import load_mnist5k, prepare
from vae_pyro.estimators import build_estimator
from vae_pyro.model import VAE
from vae_pyro.train import seed_all, train


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="CUDA is not available on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def seed_every_test():
    """Every test starts from the same random state (torch, NumPy, Python; Pyro samples from torch's),
    so a draw a test does not seed itself cannot depend on which tests ran before it."""
    pyro.set_rng_seed(0)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The test models are small (784-16..64-3..8): with torch's default two threads on a shared
    2-core machine, thread hand-offs cost more than the arithmetic (measured: a small compare took
    50 s with 2 threads and 6.5 s with 1 while other processes ran), so every test runs
    single-threaded (the one thread-count fixture of the suite)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def digits():
    return load_mnist5k()


@pytest.fixture(scope="session")
def binary_test(digits):
    return prepare(digits.test_x, "static")


@pytest.fixture(scope="session")
def small_vae(digits):
    """784-64-8 VAE, 2 epochs of the analytic loss on the 4,000 training digits (about a second)."""
    generator = seed_all(0)
    vae = VAE(hidden=(64,), z_dim=8)
    train(
        vae,
        build_estimator("analytic"),
        prepare(digits.train_x, "static"),
        epochs=2,
        batch_size=100,
        generator=generator,
        progress=False,
    )
    return vae
