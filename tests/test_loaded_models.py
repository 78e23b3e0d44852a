"""A model is checked when it is loaded, and explicit options win (issue 22): a checkpoint with a
NaN or an inf anywhere, or tensors its config does not build, is one line naming the file and the
tensor (exit 2, ``--resume`` included, before any work); an explicit option that contradicts the
checkpoint's model is refused, not ignored; a resume that would train nothing is refused; ``--fast``
lowers only what was not given. Each case here gave a ``nan`` result, a tensor dump, or silently did
something else on the code before the issue."""

from __future__ import annotations

import math

import pytest
import torch

from vae_pyro import api
from vae_pyro.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vae_pyro.cli import main
from vae_pyro.model import VAE
from vae_pyro.reproduce import apply_fast, apply_target_defaults, plan
from vae_pyro.train import make_optimizer

NO_DATA = ["--set", "data.dataset='idx:/no/such/folder'", "--no-progress"]
DATA_ERROR = "MNIST folder /no/such/folder does not exist"


def _one_error_line(capsys, *needles):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def _saved(path, damage=None, optimizer=False, epoch=1):
    vae = VAE(hidden=(8,), z_dim=2)
    opt = make_optimizer(vae) if optimizer else None
    if opt is not None:  # one step, so Adam has its moments
        vae.encoder.parameters().__next__().sum().backward()
        opt.step()
    if damage is not None:
        with torch.no_grad():
            damage(vae, opt)
    save_checkpoint(path, vae=vae, optimizer=opt, epoch=epoch, estimator="analytic")
    return path


def _decoder_bias(vae) -> str:
    return next(n for n, _ in vae.named_parameters() if n.startswith("decoder") and n.endswith("bias"))


def _nan_bias(vae, opt):
    dict(vae.named_parameters())[_decoder_bias(vae)][0] = math.nan


def _all_inf(vae, opt):
    for p in vae.parameters():
        p.fill_(math.inf)


def _nan_moment(vae, opt):
    next(iter(opt.state.values()))["exp_avg"].fill_(math.nan)


@pytest.mark.parametrize(
    "damage, needle", [(_nan_bias, "non-finite value(s) (nan)"), (_all_inf, "non-finite value(s) (inf)")]
)
@pytest.mark.parametrize("command", [["nll", "--k", "5"], ["compare"], ["check"]])
def test_a_non_finite_checkpoint_is_one_line_naming_file_and_tensor(damage, needle, command, tmp_path, capsys):
    ck = _saved(tmp_path / "ck.pt", damage)
    assert main([*command, "--checkpoint", str(ck), *NO_DATA]) == 2
    line = _one_error_line(capsys, f"checkpoint {ck} is damaged: tensor '", needle)
    if damage is _nan_bias:
        assert "decoder" in line and "bias" in line and "has 1 non-finite" in line


def test_resume_refuses_a_non_finite_checkpoint_before_any_work(tmp_path, capsys):
    ck = _saved(tmp_path / "ck.pt", _nan_bias, optimizer=True)
    before = ck.read_bytes()
    assert (
        main(["train", "--hidden", "8", "--z-dim", "2", "--epochs", "3", "--checkpoint", str(ck), "--resume", *NO_DATA])
        == 2
    )
    _one_error_line(capsys, f"checkpoint {ck} is damaged", "non-finite")
    assert ck.read_bytes() == before


def test_a_non_finite_optimizer_state_is_refused(tmp_path):
    ck = _saved(tmp_path / "ck.pt", _nan_moment, optimizer=True)
    with pytest.raises(CheckpointError, match=r"optimizer_state\.state\.0\.exp_avg' has \d+ non-finite"):
        load_checkpoint(ck)


def test_tensors_that_the_config_does_not_build_are_refused(tmp_path):
    ck = _saved(tmp_path / "ck.pt")
    payload = torch.load(ck, weights_only=True)
    payload["model_config"]["z_dim"] = 3  # the tensors are of z_dim 2
    torch.save(payload, ck)
    with pytest.raises(CheckpointError, match=r"is damaged: tensor '.*' has shape .*; its model_config builds"):
        load_checkpoint(ck)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--likelihood", "beta"], "likelihood 'bernoulli', not 'beta'"),
        (["--hidden", "16"], "hidden [8], not [16]; leave --hidden unset"),
        (["--z-dim", "3"], "z_dim 2, not 3; leave --z-dim unset"),
        (["--prior", "mog"], "prior 'standard_normal', not 'mog'; leave --prior unset"),
        (["--set", "networks.activation=tanh"], "activation 'relu', not 'tanh'; leave networks.activation unset"),
        (["--set", "training.kl_weight=2.0"], "kl_weight 1.0, not 2.0"),
    ],
)
@pytest.mark.parametrize("command", ["nll", "compare"])
def test_options_that_contradict_the_checkpoint_are_refused(args, needle, command, tmp_path, capsys):
    ck = _saved(tmp_path / "ck.pt")
    assert main([command, "--checkpoint", str(ck), *args, *NO_DATA]) == 2
    _one_error_line(capsys, f"checkpoint {ck} holds a model with {needle}")


def test_options_that_agree_with_the_checkpoint_are_accepted(tmp_path, capsys):
    ck = _saved(tmp_path / "ck.pt")
    assert (
        main(["nll", "--checkpoint", str(ck), "--hidden", "8", "--z-dim", "2", "--likelihood", "bernoulli", *NO_DATA])
        == 2
    )
    _one_error_line(capsys, DATA_ERROR)  # past the checkpoint, at the data


def test_the_api_refuses_a_keyword_that_contradicts_the_checkpoint(tmp_path):
    ck = _saved(tmp_path / "ck.pt")
    with pytest.raises(CheckpointError, match=r"hidden \[8\], not \[16\]; leave networks.hidden unset"):
        api.nll(None, checkpoint=str(ck), hidden=[16], dataset="idx:/no/such/folder")


@pytest.mark.parametrize("epochs", ["3", "2"])
def test_a_resume_that_would_train_nothing_is_refused(epochs, tmp_path, capsys):
    ck = _saved(tmp_path / "ck.pt", optimizer=True, epoch=3)
    before = ck.read_bytes()
    assert (
        main(
            [
                "train",
                "--hidden",
                "8",
                "--z-dim",
                "2",
                "--epochs",
                epochs,
                "--checkpoint",
                str(ck),
                "--resume",
                *NO_DATA,
            ]
        )
        == 2
    )
    _one_error_line(capsys, f"--epochs {epochs}: checkpoint {ck} is at epoch 3 already", "train nothing")
    assert ck.read_bytes() == before
    assert (
        main(["train", "--hidden", "8", "--z-dim", "2", "--epochs", "4", "--checkpoint", str(ck), "--resume", *NO_DATA])
        == 2
    )
    _one_error_line(capsys, DATA_ERROR)


@pytest.mark.parametrize("target", ["best-nll", "burda2015"])
def test_fast_lowers_only_what_was_not_given(target):
    def fast(**options):
        cfg = plan(target, options={"fast": True, **options})
        apply_target_defaults(cfg)
        apply_fast(cfg)
        return cfg

    assert (fast().k, fast().refine_steps) == (20, min(5, 2000 if target == "best-nll" else 0))
    explicit = fast(k=300, refine_steps=40, rows=["best-nll" if target == "best-nll" else "vae"])
    assert (explicit.k, explicit.refine_steps, explicit.rows) == (300, 40, explicit.rows)
    assert fast(k=5000).k == 5000  # the default's value, given explicitly: still kept
