"""Every size that multiplies work or memory is bounded before work, for every command (issue 22):
one memory estimate and one time estimate (a lower bound: :data:`vae_pyro.memory.CALL_FLOOR_S` per
call, an optimistic multiply-add rate), one line naming the setting that would actually help (the
flag where one was given), exit 2. Each case here was accepted on the code before the issue and then
ran for days or died in the allocator with a traceback after training."""

from __future__ import annotations

import pytest
import torch

from vae_pyro import memory
from vae_pyro.cli import main
from vae_pyro.errors import MemoryBoundError
from vae_pyro.reproduce import apply_fast, apply_paper_setting, apply_target_defaults, check_sizes, plan, row_specs
from vae_pyro.spec import load_spec

HUGE = "1000000000"
CPU = ["--device", "cpu", "--no-progress"]


@pytest.mark.parametrize(
    "args, option",
    [
        (["compare", "--draws", HUGE], "--draws"),
        (["check", "--draws", HUGE], "--draws"),
        (["compare", "--set", f"checks.timing_steps={HUGE}"], "checks.timing_steps"),
        (["check", "--grad-draws", HUGE], "--grad-draws"),
        (["check", "--toy", "linear_gaussian", "--draws", HUGE], "--draws"),
        (["check", "--toy", "linear_gaussian", "--grad-draws", HUGE], "--grad-draws"),
        (["compare", "--grad-draws", HUGE], "--grad-draws"),
        (["compare", "--check-particles", HUGE], "--check-particles"),
        (["train", "--epochs", HUGE], "--epochs"),
        (["train", "--z-dim", "100000000"], "--z-dim"),  # not --batch-size, which would not help
        (["nll", "--z-dim", "100000000"], "--z-dim"),
        (["train", "--hidden", "100000000"], "--hidden"),
        (["experiment", "--variance-draws", HUGE], "--variance-draws"),
        (["experiment", "--nll-k", HUGE], "--nll-k"),
        (["reproduce", "burda2015", "--k", HUGE], "--k"),
        (["reproduce", "best-nll", "--refine-steps", HUGE], "--refine-steps"),
        (["reproduce", "burda2015", "--set", "networks.hidden=[100000000]"], "networks.hidden"),
        (["reproduce", "burda2015", "--set", f"selection.k={HUGE}"], "selection.k"),
        (["reproduce", "burda2015", "--fast", "--k", HUGE], "--k"),  # --fast lowers only what was not given
    ],
)
def test_sizes_that_cannot_fit_or_end_are_one_line_naming_the_setting(args, option, tmp_path, capsys):
    out = ["--out", str(tmp_path / "run")] if args[0] in ("experiment", "reproduce") else []
    assert (
        main(
            [*args, *out, *CPU, "--epochs", "1"]
            if args[0] == "reproduce" and "--epochs" not in args
            else [*args, *out, *CPU]
        )
        == 2
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and f"lower {option} " in err[0], err
    assert ("free" in err[0]) or ("would take at least" in err[0]), err
    assert not (tmp_path / "run").exists()


def test_the_time_bound_names_the_longest_loop_and_the_limit():
    spec = load_spec(overrides=[f"checks.timing_steps={HUGE}"], command="compare")  # no memory: time alone
    with pytest.raises(
        MemoryBoundError,
        match=r"would take at least [\d,]+ hours on device cpu .* over the limit "
        r"of 24 hours; lower checks.timing_steps \(it accounts for",
    ):
        memory.check_fits(spec, torch.device("cpu"), command="compare")


def test_an_evaluated_checkpoint_trains_nothing():
    spec = load_spec(overrides=[f"training.epochs={HUGE}"])
    assert "training.epochs" in memory.time_estimate(spec, "nll", {"k": 10})
    assert "training.epochs" not in memory.time_estimate(spec, "nll", {"k": 10}, trains=False)


@pytest.mark.parametrize(
    "command, options",
    [
        ("compare", {}),
        ("check", {}),
        ("train", {}),
        ("nll", {"k": 5000, "chunk": 500, "examples": 1000}),
        ("experiment", {"train_estimators": ["analytic", "trace", "tmf"], "variance_draws": 50, "nll_k": 1000}),
    ],
)
def test_every_commands_defaults_are_accepted(command, options):
    spec = load_spec(command=command)
    memory.check_fits(
        spec,
        torch.device("cpu"),
        k=options.get("k") or options.get("nll_k"),
        chunk=options.get("chunk"),
        command=command,
        options=options,
    )


@pytest.mark.parametrize("target, fast", [("burda2015", False), ("best-nll", False), ("burda2015", True)])
def test_the_reproduce_targets_are_accepted(target, fast):
    cfg = plan(target, options={"fast": fast})
    apply_target_defaults(cfg)
    if fast:
        apply_fast(cfg)
    apply_paper_setting(cfg)
    check_sizes(row_specs(cfg), cfg)


def test_the_papers_full_mnist_setting_fits_a_day_on_cuda():
    """3,280 epochs of five rows on full MNIST: accepted on a GPU (its lower bound is under two hours)."""
    cfg = plan("burda2015", settings={"data.dataset": "idx:/data/mnist"})
    apply_target_defaults(cfg)
    apply_paper_setting(cfg)
    loops: dict = {}
    for _, spec in row_specs(cfg):
        for name, (calls, flops) in memory.time_estimate(spec, "reproduce", {"k": cfg.k}).items():
            loops[name] = (loops.get(name, (0, 0))[0] + calls, loops.get(name, (0, 0))[1] + flops)
    memory.check_time(loops, torch.device("cuda"))
