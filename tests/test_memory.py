"""Sizes that cannot fit in memory are refused before any allocation, naming the option to lower;
the estimate's parameter count is the real model's."""

from __future__ import annotations

import pytest
import torch

from vae_pyro.cli import main
from vae_pyro.memory import MemoryBoundError, available_bytes, check_fits, estimate, parameter_counts
from vae_pyro.model import VAE
from vae_pyro.spec import load_spec

HUGE = "1000000000"


@pytest.mark.parametrize(
    "prior, likelihood",
    [("standard_normal", "bernoulli"), ("mog", "beta"), ("vamp", "binomial"), ("laplace", "normal")],
)
def test_parameter_count_is_the_real_models(prior, likelihood):
    spec = load_spec(prior=prior, likelihood=likelihood, overrides=["networks.hidden=[16, 8]", "networks.z_dim=3"])
    vae = VAE(spec.model_config())
    networks, components = parameter_counts(spec)
    assert networks == sum(p.numel() for m in (vae.encoder, vae.decoder) for p in m.parameters())
    if prior in ("mog", "vamp"):
        assert components == sum(p.numel() for p in vae.prior.parameters())


@pytest.mark.parametrize(
    "args, option",
    [
        (["nll", "--k", HUGE, "--chunk", HUGE], "--chunk"),
        (["nll", "--k", HUGE], "--k"),
        (["train", "--particles", HUGE], "--particles"),
        (["compare", "--particles", HUGE], "--particles"),
        (["train", "--hidden", HUGE], "--hidden"),
        (["train", "--batch-size", HUGE], "--batch-size"),
        (["train", "--prior", "mog", "--estimator", "trace", "--set", f"prior.components={HUGE}"], "prior.components"),
        (
            ["experiment", "--prior", "vamp", "--train-estimators", "trace", "--set", f"prior.components={HUGE}"],
            "prior.components",
        ),
    ],
)
def test_runs_that_cannot_fit_are_one_line_naming_the_option(args, option, tmp_path, capsys):
    if args[0] == "experiment":
        args = [*args, "--out", str(tmp_path / "run")]
    assert main([*args, "--device", "cpu", "--no-progress", "--dataset", "idx:/no/such/folder"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and f"lower {option} " in err[0] and "free" in err[0], err


def test_the_default_runs_fit():
    spec = load_spec()
    check_fits(spec, torch.device("cpu"), k=5000, chunk=500)  # the README's nll command
    free = available_bytes(torch.device("cpu"))
    assert free is None or sum(estimate(spec, k=5000, chunk=500).values()) < free


def test_refusal_is_a_value_error_with_the_biggest_part():
    spec = load_spec(overrides=[f"training.particles={HUGE}"])
    with pytest.raises(MemoryBoundError, match="lower training.particles "):  # the library names settings
        check_fits(spec, torch.device("cpu"))
