"""Checkpoints: atomic, weights-only, validated; resuming gives the same run as not stopping; a NaN
stops training with a clear message and leaves the last good checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from vae_pyro.checkpoint import CheckpointError, load_checkpoint, restore, save_checkpoint
from vae_pyro.data import prepare
from vae_pyro.estimators import AnalyticEstimator, build_estimator
from vae_pyro.model import VAE
from vae_pyro.train import TrainingError, seed_all, train


@pytest.fixture(scope="module")
def x_small(digits):
    return prepare(digits.train_x[:600], "static")


def _run(x, epochs, path=None, resume=False):
    generator = seed_all(3)
    vae = VAE(hidden=(32,), z_dim=4)
    history = train(
        vae,
        build_estimator("analytic"),
        x,
        epochs=epochs,
        batch_size=100,
        generator=generator,
        progress=False,
        checkpoint=path,
        resume=resume,
    )
    return vae, history


def test_resume_continues_exactly_where_training_stopped(x_small, tmp_path):
    path = tmp_path / "ck.pt"
    straight, h_straight = _run(x_small, 4)
    _run(x_small, 2, path)
    resumed, h_resumed = _run(x_small, 4, path, resume=True)
    assert [h.epoch for h in h_resumed] == [1, 2, 3, 4]
    for a, b in zip(h_straight, h_resumed):
        assert a.train_neg_elbo == pytest.approx(b.train_neg_elbo, rel=1e-6)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_checkpoint_is_plain_data_loaded_weights_only(x_small, tmp_path):
    path = tmp_path / "ck.pt"
    vae, _ = _run(x_small, 1, path)
    payload = torch.load(path, weights_only=True)  # would raise if it held any pickled object
    assert payload["format"] == "vae-pyro-checkpoint" and payload["epoch"] == 1
    fresh = VAE(hidden=(32,), z_dim=4)
    restore(load_checkpoint(path), fresh)
    for a, b in zip(vae.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)


def test_corrupt_missing_and_foreign_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"checkpoint .*bad.pt is corrupt or not a vae-pyro checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="is not a vae-pyro checkpoint"):
        load_checkpoint(foreign)


def test_mismatched_model_is_refused_with_the_difference(x_small, tmp_path):
    path = tmp_path / "ck.pt"
    _run(x_small, 1, path)
    other = VAE(hidden=(16,), z_dim=4)
    with pytest.raises(
        CheckpointError, match=r"saved for another model \(hidden: checkpoint \[32\] vs this run \[16\]\)"
    ):
        restore(load_checkpoint(path), other, path=path)


def test_failed_save_leaves_the_previous_checkpoint_intact(x_small, tmp_path):
    path = tmp_path / "ck.pt"
    vae, _ = _run(x_small, 1, path)
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint(path, vae=vae, epoch=2, estimator="analytic", extra={"bad": lambda: 0})  # unpicklable
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left behind


class NaNAfter(AnalyticEstimator):
    """The analytic loss, until call ``n`` returns NaN (a real training run that blows up)."""

    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0

    def differentiable_loss(self, vae, x):
        self.calls += 1
        loss = super().differentiable_loss(vae, x)
        return loss * math.nan if self.calls >= self.n else loss


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(x_small, tmp_path):
    path = tmp_path / "ck.pt"
    seed_all(0)
    vae = VAE(hidden=(32,), z_dim=4)
    est = NaNAfter(n=9)  # 6 steps per epoch: epoch 1 finishes, epoch 2 fails at its 3rd step
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, step 3 with estimator 'analytic'"):
        train(vae, est, x_small, epochs=3, batch_size=100, progress=False, checkpoint=path)
    payload = load_checkpoint(path)
    assert payload["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in payload["model_state"].values())
    # the bad step was never applied: the live model is still finite too
    assert all(torch.isfinite(p).all() for p in vae.parameters())
