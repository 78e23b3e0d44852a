"""Every bad input is one clear line (exit 2) or works correctly: resume options, empty hidden
layers, data outside a likelihood's support, malformed IDX files, damaged checkpoints, seeds, spec
and checkpoint paths."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from vae_pyro.checkpoint import CheckpointError, load_checkpoint, restore, save_checkpoint
from vae_pyro.cli import main
from vae_pyro.data import DataError, load_mnist_idx, prepare, read_idx, resolve_data, Batches
from vae_pyro.estimators import build_estimator
from vae_pyro.likelihoods import LIKELIHOODS
from vae_pyro.model import VAE
from vae_pyro.spec import SpecError, load_spec
from vae_pyro.train import seed_all, train


def _one_error_line(capsys, *needles):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]


# --- resume: the options given now apply ------------------------------------------------------


def test_lr_given_on_resume_applies(digits, tmp_path):
    x = prepare(digits.train_x[:400], "static")
    ck = tmp_path / "ck.pt"
    for epochs, lr, resume in ((1, 1e-3, False), (2, 1e-5, True)):
        train(
            VAE(hidden=(8,), z_dim=2),
            build_estimator("analytic"),
            x,
            epochs=epochs,
            batch_size=200,
            lr=lr,
            generator=seed_all(0),
            progress=False,
            checkpoint=str(ck),
            resume=resume,
        )
    groups = load_checkpoint(ck)["optimizer_state"]["param_groups"]
    assert [g["lr"] for g in groups] == [1e-5] * len(groups)


# --- empty hidden layers ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [",", "", "400,"])
def test_empty_hidden_size_is_refused(value, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--hidden", value])
    assert stop.value.code == 2
    _one_error_line(capsys, "--hidden", "400 or 512,256")


def test_empty_hidden_list_in_a_spec_is_refused():
    with pytest.raises(SpecError, match="networks.hidden must list at least one layer size"):
        load_spec(overrides=["networks.hidden=[]"])


# --- data outside a likelihood's support, whatever the options --------------------------------


@pytest.mark.parametrize(
    "likelihood, binarization, transform",
    [
        ("beta", "static", "auto"),
        ("beta", "threshold", "auto"),
        ("beta", "dynamic", "auto"),
        ("beta", "none", "unit"),
        ("bernoulli", "none", "auto"),
        ("bernoulli", "static", "open_unit"),
        ("bernoulli", "static", "counts"),
        ("binomial", "none", "unit"),
        ("normal", "none", "counts"),
        ("normal", "dynamic", "open_unit"),
    ],
)
def test_every_likelihood_refuses_data_outside_its_support(likelihood, binarization, transform):
    kind = LIKELIHOODS[likelihood].data_kind
    with pytest.raises(DataError, match="use binarization|binarization must be"):
        resolve_data(binarization, transform, kind)
    with pytest.raises(SpecError, match=f"likelihood '{likelihood}'"):  # after --set, too
        load_spec(likelihood=likelihood, overrides=[f"data.binarization={binarization}", f"data.transform={transform}"])


def test_beta_with_static_binarization_is_refused_on_the_command_line(capsys):
    assert main(["train", "--likelihood", "beta", "--binarization", "static", "--no-progress"]) == 2
    _one_error_line(capsys, "binarization 'none'", "transform 'open_unit'")


def test_every_likelihood_accepts_its_auto_data(digits):
    for name, cls in ((n, LIKELIHOODS[n]) for n in LIKELIHOODS.names()):
        binarization, transform = resolve_data("auto", "auto", cls.data_kind)
        VAE(likelihood=name).check_data(prepare(digits.test_x[:50], binarization, transform))


def test_nan_grey_levels_are_refused_for_dynamic_binarization():
    x = torch.full((4, 784), 0.5)
    x[1, 3] = float("nan")
    with pytest.raises(DataError, match="grey levels in \\[0, 1\\]"):
        train(
            VAE(hidden=(4,), z_dim=2),
            build_estimator("analytic"),
            x,
            epochs=1,
            batch_size=2,
            dynamic=True,
            progress=False,
        )
    with pytest.raises(DataError):
        Batches(x, 2, dynamic=True)


# --- IDX files ----------------------------------------------------------------------------------


def _idx(path, shape, ndim=None, data=None):
    ndim = len(shape) if ndim is None else ndim
    header = bytes([0, 0, 8, ndim]) + struct.pack(">" + "i" * len(shape), *shape)
    body = data if data is not None else bytes(max(int(np.prod(shape)), 0))
    path.write_bytes(header + body)
    return path


def _mnist_folder(folder, image_shape=(28, 28), n_train=6, n_test=3):
    folder.mkdir()
    _idx(folder / "train-images-idx3-ubyte", (n_train, *image_shape))
    _idx(folder / "train-labels-idx1-ubyte", (n_train,))
    _idx(folder / "t10k-images-idx3-ubyte", (n_test, *image_shape))
    _idx(folder / "t10k-labels-idx1-ubyte", (n_test,))
    return folder


def test_other_image_sizes_are_refused_naming_the_file(tmp_path):
    folder = _mnist_folder(tmp_path / "m", image_shape=(14, 14))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte holds 14x14 images; .* take 28x28"):
        load_mnist_idx(folder)


@pytest.mark.parametrize(
    "shape, ndim, needle",
    [
        ((0,), None, "holds no labels"),
        ((0, 28, 28), None, "holds no images"),
        ((-5, 28, 28), None, "negative size"),
        ((3,) * 255, None, "255 dimensions, expected 1 (labels) or 3 (images)"),
        ((2, 2), None, "2 dimensions"),
    ],
)
def test_malformed_idx_headers_are_one_short_line_naming_the_file(shape, ndim, needle, tmp_path):
    path = _idx(tmp_path / "x-idx-ubyte", shape, ndim, data=b"" if min(shape) <= 0 or len(shape) > 3 else None)
    with pytest.raises(DataError) as err:
        read_idx(path)
    message = str(err.value)
    assert needle in message and str(path) in message and "\n" not in message and len(message) < 300


def test_gzipped_empty_idx_is_named(tmp_path):
    path = tmp_path / "e-idx1-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + struct.pack(">i", 0))
    with pytest.raises(DataError, match=f"{path} holds no labels"):
        read_idx(path)


# --- damaged checkpoints ------------------------------------------------------------------------


def _good(tmp_path):
    vae = VAE(hidden=(8,), z_dim=2)
    opt = torch.optim.Adam(vae.parameters())
    (vae.decoder(torch.zeros(1, 2)).sum()).backward()
    opt.step()
    path = tmp_path / "good.pt"
    save_checkpoint(
        path,
        vae=vae,
        optimizer=opt,
        epoch=2,
        estimator="analytic",
        history=[{"epoch": 1, "train_neg_elbo": 5.0, "test_neg_elbo": None, "seconds": 0.1, "kl_weight": 1.0}],
    )
    return torch.load(path, weights_only=True)


def _first_weight(p):
    return next(iter(p["model_state"]))


DAMAGES = {
    "no model_config": (lambda p: p.pop("model_config"), "field 'model_config' is missing"),
    "string z_dim": (lambda p: p["model_config"].update(z_dim="2"), "model_config.z_dim is '2'"),
    "string epoch": (lambda p: p.update(epoch="2"), "field 'epoch' is not a valid epoch"),
    "bool epoch": (lambda p: p.update(epoch=True), "field 'epoch' is not a valid epoch"),
    "history not a list": (lambda p: p.update(history={"epoch": 1}), "field 'history'"),
    "history entry missing a key": (lambda p: p["history"][0].pop("seconds"), "field 'history'"),
    "history string number": (lambda p: p["history"][0].update(train_neg_elbo="5"), "field 'history'"),
    "rng not bytes": (lambda p: p.update(torch_rng=torch.zeros(3)), "field 'torch_rng'"),
    "state not tensors": (lambda p: p["model_state"].update({_first_weight(p): [1, 2]}), "field 'model_state'"),
    "missing tensor": (lambda p: p["model_state"].pop(_first_weight(p)), "is missing"),
    "wrong shape": (lambda p: p["model_state"].update({_first_weight(p): torch.zeros(3, 3)}), "has shape (3, 3)"),
    "extra tensor": (lambda p: p["model_state"].update({"decoder.extra": torch.zeros(1)}), "unexpected tensor"),
    "optimizer moments of another shape": (
        lambda p: next(iter(p["optimizer_state"]["state"].values())).update(exp_avg=torch.zeros(7)),
        "optimizer state does not fit",
    ),
    "optimizer state not a dict": (lambda p: p.update(optimizer_state=[1]), "field 'optimizer_state'"),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_damaged_checkpoints_are_one_line(damage, tmp_path):
    payload = _good(tmp_path)
    change, needle = DAMAGES[damage]
    change(payload)
    path = tmp_path / "damaged.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as err:
        vae = VAE(hidden=(8,), z_dim=2)
        restore(load_checkpoint(path), vae, torch.optim.Adam(vae.parameters()), path)
    message = str(err.value)
    assert needle in message and str(path) in message and "\n" not in message, message


def test_damaged_checkpoint_on_resume_is_one_line_before_any_work(tmp_path, capsys):
    payload = _good(tmp_path)
    payload.pop("history")
    path = tmp_path / "ck.pt"
    torch.save(payload, path)
    assert main(["train", "--checkpoint", str(path), "--resume", "--dataset", "idx:/no/such/folder"]) == 2
    _one_error_line(capsys, f"checkpoint {path} is damaged: field 'history' is missing")


# --- messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["-1", "1e20", str(2**32)])
def test_bad_seed_names_the_option_and_the_value(seed, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", f"--seed={seed}"])
    assert stop.value.code == 2
    _one_error_line(capsys, "--seed", "0..4294967295", seed if seed != str(2**32) else "4294967296")


@pytest.mark.parametrize("value", ["-1", "1e20", str(2**32)])
def test_bad_seed_in_a_spec_names_the_key(value):
    with pytest.raises(SpecError, match="training.seed"):
        load_spec(overrides=[f"training.seed={value}"])


def test_spec_folder_and_non_utf8_spec_are_named(tmp_path, capsys):
    assert main(["spec", "show", str(tmp_path)]) == 2
    _one_error_line(capsys, f"spec file {tmp_path} is a folder")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('description = "caf\xe9"\n'.encode("latin-1"))
    assert main(["spec", "show", str(bad)]) == 2
    _one_error_line(capsys, f"spec file {bad} is not UTF-8")


def test_checkpoint_folder_is_named(tmp_path, capsys):
    assert main(["train", "--checkpoint", str(tmp_path), "--resume", "--no-progress"]) == 2
    _one_error_line(capsys, f"checkpoint {tmp_path} is a folder")


def test_a_value_error_from_our_code_is_a_traceback_not_bad_input(monkeypatch):
    """Only the library's own errors (VaePyroError) are bad input, exit 2; a ValueError raised inside
    our code is a bug: it propagates (a traceback, exit 1), never printed as one line."""
    import vae_pyro.cli as cli

    def broken(*args, **kwargs):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(cli, "spec_from_args", broken)
    with pytest.raises(ValueError, match="a bug, not bad input"):
        main(["estimators"])


def test_library_errors_name_settings_and_the_cli_names_the_flag(capsys):
    from vae_pyro import api
    from vae_pyro.errors import VaePyroError

    with pytest.raises(VaePyroError, match=r"^training.estimator 'analytic' is invalid") as err:
        api.train(load_spec(None, prior="mog"), epochs=0, explicit_estimator=True, estimator="analytic")
    assert "--" not in str(err.value)
    assert main(["train", "--prior", "mog", "--estimator", "analytic", "--epochs", "0", "--no-progress"]) == 2
    _one_error_line(capsys, "--estimator 'analytic' is invalid", "e.g. --estimator 'tmf'")
