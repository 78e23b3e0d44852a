"""The dataset and network seams: digits8x8 (scikit-learn's 8x8 digits, counts of 16 trials), the conv
network on 28x28 and 8x8 images, and checkpoints saved before images had a shape."""

from __future__ import annotations

import json

import pytest
import torch

from vae_pyro.cli import main
from vae_pyro.checkpoint import load_checkpoint, restore, save_checkpoint
from vae_pyro.data import prepare, resolve_data
from vae_pyro.datasets import DataError, dataset_class, dataset_names, load_dataset
from vae_pyro.model import VAE, VAEConfig
from vae_pyro.networks import NetworkError, build_network


@pytest.fixture(scope="module")
def digits8x8():
    return load_dataset("digits8x8")


def test_digits8x8_shape_values_and_split(digits8x8):
    assert digits8x8.image_shape == (1, 8, 8) and digits8x8.max_value == 16
    assert digits8x8.train_x.shape == (1497, 64) and digits8x8.test_x.shape == (300, 64)
    assert digits8x8.train_x.dtype == torch.uint8
    both = torch.cat([digits8x8.train_x, digits8x8.test_x])
    assert int(both.min()) == 0 and int(both.max()) == 16
    # stratified: every digit gives its share of the 300 test images (about 30 each)
    assert all(28 <= n <= 32 for n in torch.bincount(digits8x8.test_y, minlength=10).tolist())
    again = load_dataset("digits8x8")
    assert torch.equal(again.test_x, digits8x8.test_x)  # a fixed seed: the same split every time


def test_digits8x8_counts_are_16_trials(digits8x8):
    binarization, transform = resolve_data("auto", "auto", "counts")
    x = prepare(digits8x8.test_x, binarization, transform, digits8x8.max_value)
    vae = VAE(likelihood="binomial", image_shape=digits8x8.image_shape, max_value=digits8x8.max_value)
    assert vae.likelihood.total_count == 16 and vae.encoder.input_scale == 1 / 16
    vae.check_data(x)
    grey = prepare(digits8x8.test_x, "none", "unit", digits8x8.max_value)
    assert float(grey.max()) == 1.0 and torch.equal(grey, digits8x8.test_x.float() / 16)


def test_dataset_names_and_errors():
    assert dataset_names() == ["mnist5k", "idx:FOLDER", "digits8x8"]
    assert dataset_class("idx:/x")[1] == "/x"
    for bad in ("cifar", "idx", "idx:", "digits8x8:x"):
        with pytest.raises(DataError, match=f"unknown dataset '{bad}'; allowed: 'mnist5k', 'idx:FOLDER', 'digits8x8'"):
            dataset_class(bad)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8)])
@pytest.mark.parametrize("out_per_pixel", [1, 2])
def test_conv_network_shapes(shape, out_per_pixel):
    net = build_network("conv", shape, z_dim=3, hidden=(16,))
    enc, dec = net.encoder(1.0), net.decoder(out_per_pixel)
    x = torch.rand(5, net.x_dim)
    mu, logvar = enc(x)
    assert mu.shape == logvar.shape == (5, 3)
    z = torch.randn(4, 5, 3)  # particles x batch
    out = dec(z)
    assert out.shape == ((4, 5, net.x_dim) if out_per_pixel == 1 else (4, 5, out_per_pixel, net.x_dim))
    assert net.parameter_count(out_per_pixel) == sum(p.numel() for m in (enc, dec) for p in m.parameters())


def test_conv_refuses_a_shape_it_cannot_halve():
    with pytest.raises(NetworkError, match=r"network 'conv' takes images .* multiples of 4 .* got \(1, 14, 10\)"):
        build_network("conv", (1, 14, 10), z_dim=2)


def test_mlp_is_todays_network_bit_for_bit():
    """The default VAE's seeded initial weights do not depend on going through the registry."""
    torch.manual_seed(0)
    vae = VAE(hidden=(16,), z_dim=2)
    kept = [k for k in vae.state_dict() if "_anchor" not in k]
    assert kept == [
        "encoder.body.0.weight",
        "encoder.body.0.bias",
        "encoder.head.weight",
        "encoder.head.bias",
        "decoder.net.0.weight",
        "decoder.net.0.bias",
        "decoder.net.2.weight",
        "decoder.net.2.bias",
    ]
    torch.manual_seed(0)
    first = torch.nn.Linear(784, 16)
    assert torch.equal(vae.encoder.body[0].weight, first.weight)


def test_old_checkpoint_without_image_shape_loads_as_mlp_on_28x28(tmp_path):
    vae = VAE(hidden=(8,), z_dim=2)
    path = tmp_path / "old.pt"
    save_checkpoint(path, vae=vae, epoch=0, estimator="analytic")
    payload = torch.load(path, weights_only=True)
    for key in ("network", "image_shape", "max_value"):  # what a checkpoint saved before them lacks
        del payload["model_config"][key]
    torch.save(payload, path)
    loaded = load_checkpoint(path)
    config = VAEConfig.from_dict(loaded["model_config"])
    assert config.network == "mlp" and config.image_shape == (1, 28, 28) and config.x_dim == 784
    fresh = VAE(config)
    restore(loaded, fresh, path=path)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), vae.state_dict().values()))


def _compare(tmp_path, *flags) -> dict:
    """``vae-pyro compare`` at small sizes (1 epoch, 20 value draws, 10 gradient draws: the checks'
    Student-t tolerances are set for those draw counts), its JSON read back."""
    out = tmp_path / "compare.json"
    code = main(
        [
            "compare",
            *flags,
            "--epochs",
            "1",
            "--draws",
            "20",
            "--grad-draws",
            "10",
            "--set",
            "checks.timing_steps=2",
            "--no-progress",
            "--json",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert code == 0 and result["verdict"] == "pass", result["verdict"]
    return result


@pytest.mark.slow  # ~10 s: the 8x8 digits are small
def test_compare_passes_on_digits8x8_as_a_16_trial_count_model(tmp_path):
    result = _compare(tmp_path, "--dataset", "digits8x8", "--likelihood", "binomial")
    m = result["model"]
    assert result["dataset"] == "digits8x8" and m["image_shape"] == [1, 8, 8] and m["max_value"] == 16
    assert m["likelihood"] == "binomial" and result["transform"] == "counts"


@pytest.mark.slow  # ~1 min on 2 cores: convolutions over 28x28 digits, a narrow dense layer to keep it short
def test_compare_passes_with_the_conv_network(tmp_path):
    result = _compare(tmp_path, "--network", "conv", "--hidden", "64", "--estimators", "analytic,trace,tmf")
    assert result["model"]["network"] == "conv" and result["model"]["image_shape"] == [1, 28, 28]
