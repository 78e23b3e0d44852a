"""The command line: the table and JSON of ``compare``, ``train``, and one-line errors for bad input
that never touch saved results."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from vae_pyro.cli import main

FAST = ["--epochs", "1", "--draws", "12", "--grad-draws", "12", "--hidden", "64", "--z-dim", "8", "--no-progress"]
JSON_TOP = {"device", "dataset", "seed", "particles", "torch_version", "pyro_version", "estimators"}
JSON_EST = {
    "name",
    "neg_elbo_mean",
    "neg_elbo_se",
    "kl",
    "z_vs_analytic",
    "same_noise_max_abs_diff",
    "grad_agreement",
    "ms_per_step",
    "verdict",
}


def _run(*args):
    return subprocess.run([sys.executable, "-m", "vae_pyro.cli", *args], capture_output=True, text=True, timeout=300)


def test_compare_prints_the_table_and_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "r" / "compare.json"
    code = main(["compare", *FAST, "--estimators", "analytic,trace,tmf,jit_tmf", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    result = json.loads(out.read_text())
    assert JSON_TOP <= set(result)
    assert result["dataset"] == "mnist5k" and result["device"] == "cpu" and result["seed"] == 0
    names = [e["name"] for e in result["estimators"]]
    assert names == ["analytic", "trace", "tmf", "jit_tmf"]
    for e in result["estimators"]:
        assert JSON_EST <= set(e)
        assert e["verdict"] == "pass"
        assert e["kl"] in ("exact_kl", "monte_carlo_kl")
        assert math.isfinite(e["neg_elbo_mean"]) and e["neg_elbo_se"] > 0 and e["ms_per_step"] > 0
        # every number in the table row comes from the JSON
        assert e["name"] in printed and f"{e['neg_elbo_mean']:.3f} ± {e['neg_elbo_se']:.3f}" in printed
    by = {e["name"]: e for e in result["estimators"]}
    assert by["trace"]["kl"] == "monte_carlo_kl" and by["tmf"]["kl"] == "exact_kl"
    assert by["analytic"]["same_noise_max_abs_diff"] is None
    assert by["tmf"]["same_noise_max_abs_diff"] < 1e-10
    assert "overall: PASS" in printed


def test_compare_exits_1_when_a_check_fails(capsys):
    code = main(["compare", *FAST, "--estimators", "jit_trace_pyro"])
    printed = capsys.readouterr().out
    assert code == 1 and "FAIL" in printed


def test_train_reports_the_test_elbo(tmp_path, capsys):
    out = tmp_path / "train.json"
    code = main(
        [
            "train",
            "--estimator",
            "tmf",
            "--epochs",
            "2",
            "--hidden",
            "64",
            "--z-dim",
            "8",
            "--no-progress",
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    result = json.loads(out.read_text())
    assert result["estimator"] == "tmf" and len(result["history"]) == 2
    first, last = result["history"]
    # two epochs on real digits: from ~540 nats at initialisation to ~235 (a model that only learnt
    # the mean image would sit near 205-210 after many epochs; an untrained one stays above 500)
    assert last["train_neg_elbo"] < first["train_neg_elbo"] < 540
    assert result["test_neg_elbo"] < 300
    assert f"test -ELBO: {result['test_neg_elbo']:.3f} nats/example" in printed


@pytest.mark.parametrize(
    "args, needle",
    [
        (["compare", "--estimators", "trace,nope"], "unknown estimator 'nope'; allowed: analytic, trace, tmf"),
        (["train", "--estimator", "Trace_ELBO"], "unknown estimator 'Trace_ELBO'; allowed:"),
        (["compare", "--binarization", "none", "--epochs", "0"], "binary data cannot come from binarization 'none'"),
        (["train", "--dataset", "idx:/no/such/folder"], "MNIST folder /no/such/folder does not exist"),
        (["train", "--dataset", "cifar"], "unknown dataset 'cifar'; allowed: 'mnist5k', 'idx:FOLDER'"),
        (["compare", "--particles", "0"], "expected a positive integer, got 0"),
        (["compare", "--device", "tpu"], "invalid choice: 'tpu' (choose from 'auto', 'cpu', 'cuda')"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args, needle, tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"keep": true}\n')
    # --force: replacing is allowed, yet a bad input must not
    proc = _run(*args, "--json", str(good), "--force", "--no-progress")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0] and needle in lines[0], proc.stderr
    assert good.read_text() == '{"keep": true}\n'  # saved results untouched


def test_missing_idx_file_is_named(tmp_path):
    proc = _run("train", "--dataset", f"idx:{tmp_path}", "--no-progress")
    assert proc.returncode == 2
    assert f"missing data file {tmp_path}/train-images-idx3-ubyte[.gz]" in proc.stderr


def test_cuda_request_without_cuda_is_an_error_not_a_fallback():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _run("compare", "--device", "cuda")
    assert proc.returncode == 2 and "CUDA is not available" in proc.stderr


def test_estimators_command_lists_the_registry(capsys):
    assert main(["estimators"]) == 0
    printed = capsys.readouterr().out
    for name in ("analytic", "trace", "tmf", "jit_trace", "jit_tmf", "jit_tmf_pyro", "jit_trace_pyro"):
        assert name in printed


def test_help_explains_every_option():
    proc = _run("compare", "--help")
    for option in ("--device", "--seed", "--epochs", "--particles", "--batch-size", "--json", "--estimators"):
        assert option in proc.stdout


@pytest.mark.slow
def test_the_readme_compare_command_passes_every_check(tmp_path):
    """The README's main job with its defaults: every check of every default estimator passes."""
    out = tmp_path / "compare.json"
    proc = _run("compare", "--no-progress", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["verdict"] == "pass"
    assert all(e["verdict"] == "pass" for e in result["estimators"])
    assert result["training"]["test_neg_elbo"] < 150  # 10 epochs on 4,000 digits: ~138 nats


def test_train_checkpoint_and_resume_end_to_end(tmp_path, capsys):
    """`vae-pyro train --checkpoint` for 1 epoch, then `--resume` to 2, reproduces a straight 2-epoch
    run: same history (training and test -ELBO; float32 rounding only, rel 1e-6) through the CLI's
    own option handling, the file written in between."""
    small = ["--hidden", "16", "--z-dim", "2", "--no-progress"]
    ck = tmp_path / "ck.pt"
    assert main(["train", *small, "--epochs", "2", "--json", str(tmp_path / "straight.json")]) == 0
    assert (
        main(["train", *small, "--epochs", "1", "--checkpoint", str(ck), "--json", str(tmp_path / "first.json")]) == 0
    )
    assert ck.is_file()
    assert (
        main(
            [
                "train",
                *small,
                "--epochs",
                "2",
                "--checkpoint",
                str(ck),
                "--resume",
                "--json",
                str(tmp_path / "resumed.json"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    straight, resumed = (json.loads((tmp_path / f"{n}.json").read_text())["history"] for n in ("straight", "resumed"))
    assert [h["epoch"] for h in resumed] == [1, 2]
    # epoch 1 is the checkpoint's record, wall time included, not a re-run (a run that ignored
    # --resume would retrain epoch 1 from the same seed: the same losses, but a new wall time)
    assert resumed[0] == json.loads((tmp_path / "first.json").read_text())["history"][0]
    for a, b in zip(straight, resumed):
        assert b["train_neg_elbo"] == pytest.approx(a["train_neg_elbo"], rel=1e-6)
        assert b["test_neg_elbo"] == pytest.approx(a["test_neg_elbo"], rel=1e-6)
