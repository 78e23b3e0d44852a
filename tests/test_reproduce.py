"""The pieces of ``vae-pyro reproduce``: the tanh architecture option, the stratified validation split,
active units on a constructed case, the NLL-vs-k evaluation, the paper's lr schedule, checkpoint
selection, and (slow) the run folder of ``--fast``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import vae_pyro.estimators  # noqa: F401  (registers the estimators before iwae is imported)
from vae_pyro.active_units import ACTIVITY_THRESHOLD, active_units, posterior_mean_variance
from vae_pyro.cli import main
from vae_pyro.data import DataError, validation_split
from vae_pyro.evaluation import iwae_log_likelihood
from vae_pyro.model import VAE
from vae_pyro.evaluation import iwae_bounds_at
from vae_pyro.reproduce import BURDA_STAGES, TARGETS, burda_lr
from vae_pyro.spec import SpecError, load_spec

# --- architecture ----------------------------------------------------------------------------------


def test_tanh_option_builds_the_papers_network():
    spec = load_spec("burda2015")
    vae = VAE(spec.model_config())
    linear = [m for m in vae.encoder.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(784, 200), (200, 200), (200, 100)]
    assert sum(isinstance(m, nn.Tanh) for m in vae.modules()) == 4  # two per network
    assert not any(isinstance(m, nn.ReLU) for m in vae.modules())


def test_default_network_is_unchanged_relu():
    torch.manual_seed(0)
    vae = VAE()
    assert vae.config.activation == "relu" and load_spec(None).networks.activation == "relu"
    assert sum(isinstance(m, nn.ReLU) for m in vae.modules()) == 2
    assert not any(isinstance(m, nn.Tanh) for m in vae.modules())
    # same parameter layout as before the option existed (checkpoints keep loading)
    assert [k for k in vae.state_dict() if k.startswith(("encoder", "decoder"))] == [
        "encoder.body.0.weight",
        "encoder.body.0.bias",
        "encoder.head.weight",
        "encoder.head.bias",
        "decoder.net.0.weight",
        "decoder.net.0.bias",
        "decoder.net.2.weight",
        "decoder.net.2.bias",
    ]


def test_unknown_activation_is_one_spec_error():
    with pytest.raises(SpecError, match=r"networks.activation.*'sigmoid'.*relu, tanh"):
        load_spec(None, overrides=["networks.activation=sigmoid"])


# --- validation split ------------------------------------------------------------------------------


def test_validation_split_is_stratified_disjoint_and_seeded(digits):
    train_idx, val_idx = validation_split(digits.train_y, 500)
    assert len(val_idx) == 500 and len(train_idx) == len(digits.train_y) - 500
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(len(digits.train_y)))
    # 400 training digits of each class: 50 of each held out
    assert torch.bincount(digits.train_y[val_idx], minlength=10).tolist() == [50] * 10
    again = validation_split(digits.train_y, 500)
    assert torch.equal(again[1], val_idx)
    assert not torch.equal(validation_split(digits.train_y, 500, seed=7)[1], val_idx)


def test_validation_split_unequal_classes_sum_exactly():
    labels = torch.tensor([0] * 7 + [1] * 2 + [2] * 1)
    _, val = validation_split(labels, 5)
    counts = torch.bincount(labels[val], minlength=3).tolist()
    assert sum(counts) == 5 and counts[0] >= counts[1] >= counts[2]  # quotas 3.5, 1, 0.5
    with pytest.raises(DataError, match="between 1 and 9"):
        validation_split(labels, 10)


# --- active units ----------------------------------------------------------------------------------


def test_posterior_mean_variance_is_the_population_variance():
    means = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    # dim 0: values 0, 2, 4 -> mean 2, (4 + 0 + 4) / 3; dim 1 constant -> 0
    assert posterior_mean_variance(means).tolist() == pytest.approx([8 / 3, 0.0], abs=1e-12)


def test_active_units_on_a_constructed_encoder():
    """mu(x) = W h(x) + b with the head's weights chosen per dimension: dimensions whose weights are 0
    have the same mean for every x (variance exactly 0, inactive); the others get weights scaled so that
    Cov_x(mu_d) is a known multiple of the threshold, computed independently from the encoder's body."""
    torch.manual_seed(0)
    vae = VAE(hidden=(16,), z_dim=6).double()
    x = torch.bernoulli(torch.rand(300, 784, dtype=torch.float64))
    with torch.no_grad():
        h = vae.encoder.body(x)  # (N, 16), the head's input
        direction = torch.randn(16, dtype=torch.float64)
        base_var = (h @ direction).var(unbiased=False)  # Cov_x of h . direction
        targets = [0.0, 0.0, 0.5, 0.9, 1.1, 50.0]  # in units of the threshold
        head = vae.encoder.head
        head.weight.zero_()
        head.bias.uniform_(-1, 1)  # constants do not make a unit active
        for d, t in enumerate(targets):
            head.weight[d] = direction * math.sqrt(t * ACTIVITY_THRESHOLD / base_var)
    result = active_units(vae, x)
    assert result["active"] == 2 and result["z_dim"] == 6
    assert result["variances"] == pytest.approx([t * ACTIVITY_THRESHOLD for t in targets], rel=1e-9, abs=1e-15)


# --- evaluation and schedule -----------------------------------------------------------------------


def test_iwae_bounds_at_largest_k_equals_iwae_log_likelihood(small_vae, binary_test):
    x = binary_test[:30]
    torch.manual_seed(3)
    bounds = iwae_bounds_at(small_vae, x, [1, 10, 60], chunk=25, batch_size=10)
    torch.manual_seed(3)
    reference = iwae_log_likelihood(small_vae, x, k=60, chunk=25, batch_size=10, progress=False)
    assert torch.equal(bounds[60], reference)
    # IWAE_k of the first k of the same samples: log-mean-exp of a subset, so IWAE_1 is one log-weight
    # and no prefix mean can exceed the largest log-weight; on average the bound rises with k
    assert bounds[1].mean() < bounds[10].mean() < bounds[60].mean()


def test_burda_schedule_is_the_papers_at_full_length():
    total = sum(BURDA_STAGES)
    assert total == 3280
    # at 3,280 epochs, epoch e is pass e: stage i covers passes (sum_{j<i} 3^j, sum_{j<=i} 3^j]
    start = 0
    for i, passes in enumerate(BURDA_STAGES):
        for epoch in (start + 1, start + passes):
            assert burda_lr(epoch, total) == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-12)
        start += passes
    # compressed: the first epoch of a short run is at the stage that pass ceil(3280/E) is in
    assert burda_lr(1, 3280 // 3) == pytest.approx(1e-3 * 10 ** (-1 / 7))
    assert burda_lr(100, 100) == pytest.approx(1e-3 * 10 ** (-1))


def test_every_target_row_is_a_valid_spec():
    for row in TARGETS["burda2015"].rows:  # the paper's rows select their checkpoint on held-out digits
        assert load_spec("burda2015", overrides=list(row.overrides)).selection.validation > 0, row.name
    # the best recipe's epochs were chosen on held-out digits; it then trains on all of them (last checkpoint)
    best = load_spec("best-nll")
    assert (best.selection.validation, best.selection.patience, best.prior.name) == (0, 0, "vamp")
    est = {r.name: load_spec("burda2015", overrides=list(r.overrides)) for r in TARGETS["burda2015"].rows}
    assert [(s.training.estimator, s.training.particles, s.data.binarization) for s in est.values()] == [
        ("analytic", 1, "dynamic"),
        ("iwae", 1, "dynamic"),
        ("iwae", 5, "dynamic"),
        ("iwae", 50, "dynamic"),
        ("analytic", 1, "static"),
    ]


# --- the command -----------------------------------------------------------------------------------


def test_refuses_a_non_empty_out_before_any_work(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    code = main(["reproduce", "burda2015", "--out", str(tmp_path), "--fast", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "already holds files" in err and "--force" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reproduce", "nature2030"], "invalid choice: 'nature2030'"),
        (["reproduce", "burda2015", "--rows", "vae,bogus"], "unknown row 'bogus' for burda2015; allowed: vae, iwae-k1"),
        (["reproduce", "burda2015", "--set", "networks.activation=elu"], "networks.activation"),
        (["reproduce", "best-nll", "--refine-steps", "-1"], "expected a non-negative integer, got -1"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    try:
        code = main([*argv, "--out", str(tmp_path / "new"), "--no-progress"])
    except SystemExit as exc:  # argparse's own errors (an unknown target) exit from the parser
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "new").exists()


def test_api_reproduce_refuses_an_unknown_option_before_any_work(tmp_path):
    from vae_pyro import api

    with pytest.raises(
        ValueError, match="unknown reproduce option 'epoch'; allowed: dataset, epochs, device, seed, k,"
    ):
        api.reproduce("burda2015", out=tmp_path / "run", epoch=3)
    with pytest.raises(ValueError, match="unknown row 'vea' for burda2015"):
        api.reproduce("burda2015", out=tmp_path / "run", rows=["vea"])
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_fast_run_writes_the_folder_and_table(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", "burda2015", "--out", str(out), "--fast", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "NOT full MNIST" in printed
    for name in ("results.json", "report.md", "curves.png", "nll_vs_k.png", "active_units.png"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in result["rows"]]
    assert names == list(TARGETS["burda2015"].fast_rows)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == sorted(f"{n}.pt" for n in names)
    assert (result["train_digits"], result["validation_digits"], result["test_digits"]) == (3500, 500, 1000)
    paper = {r.name: r.paper_nll for r in TARGETS["burda2015"].rows}
    for r in result["rows"]:
        assert r["paper_nll"] == paper[r["name"]]
        assert [p["epoch"] for p in r["curve"]] == [1, 2]
        assert all(p["val_bound"] is not None and p["test_bound"] < 0 for p in r["curve"])
        # the selected epoch is the one with the best validation bound
        best = max(r["curve"], key=lambda p: p["val_bound"])
        assert r["selected_epoch"] == best["epoch"]
        assert r["test_nll"] == pytest.approx(r["nll_vs_k"]["20"]) and set(r["nll_vs_k"]) == {"1", "5", "20"}
        assert 0 <= r["active_units"] <= r["z_dim"] == 50
    assert result["comparisons"]["static_minus_dynamic"] == pytest.approx(
        result["rows"][2]["test_nll"] - result["rows"][0]["test_nll"]
    )
    report = (out / "report.md").read_text()
    assert "NOT full MNIST" in report and "| vae | analytic k=1 | dynamic |" in report and "86.76" in report
    # the paper's table is amortized: no refined proposal unless asked for
    assert all(r["test_nll_refined"] is None for r in result["rows"]) and "refined proposal" not in report
    # a second run into the same folder needs --force
    assert main(["reproduce", "burda2015", "--out", str(out), "--fast", "--no-progress"]) == 2


def test_checkpoint_saved_before_the_activation_option_still_loads(tmp_path):
    from vae_pyro.checkpoint import CheckpointError, load_checkpoint, restore, save_checkpoint

    vae = VAE(hidden=(16,), z_dim=3)
    path = tmp_path / "old.pt"
    save_checkpoint(path, vae=vae, epoch=1, estimator="analytic")
    payload = load_checkpoint(path)
    del payload["model_config"]["activation"]  # as written before the option existed: ReLU
    restore(payload, VAE(hidden=(16,), z_dim=3))
    with pytest.raises(CheckpointError, match="activation: checkpoint 'relu' vs this run 'tanh'"):
        restore(payload, VAE(hidden=(16,), z_dim=3, activation="tanh"))


def test_a_tanh_checkpoint_is_evaluated_as_tanh(tmp_path):
    """``nll/check/compare --checkpoint`` take the model from the checkpoint: its activation too."""
    from vae_pyro.checkpoint import save_checkpoint
    from vae_pyro.runs import prepare_run, spec_for_checkpoint

    spec = load_spec("burda2015", overrides=["networks.hidden=[16]", "networks.z_dim=3", "training.device='cpu'"])
    trained = prepare_run(spec).vae
    path = tmp_path / "tanh.pt"
    save_checkpoint(path, vae=trained, epoch=1, estimator="analytic")
    loaded_spec = spec_for_checkpoint(load_spec(None, overrides=["training.device='cpu'"]), str(path))
    assert loaded_spec.networks.activation == "tanh"
    loaded = prepare_run(loaded_spec, checkpoint=str(path)).vae
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()))


def test_full_mnist_defaults_to_the_papers_setting():
    from vae_pyro.reproduce import apply_paper_setting, plan

    full = plan(settings={"data.dataset": "idx:/data/mnist"}, overrides=("training.batch_size=64",))
    apply_paper_setting(full)
    assert (full.lr_schedule, full.epochs) == ("burda", 3280)
    # the paper's batch first, so the user's --set wins
    assert full.overrides == ("training.batch_size=20", "training.batch_size=64")
    budget = plan(
        options={"lr_schedule": "constant"}, settings={"data.dataset": "idx:/data/mnist", "training.epochs": 10}
    )
    apply_paper_setting(budget)
    assert (budget.lr_schedule, budget.epochs) == ("constant", 10)
    embedded = plan()
    apply_paper_setting(embedded)
    assert (embedded.lr_schedule, embedded.epochs, embedded.overrides) == ("constant", None, ())


def test_missing_idx_folder_is_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["reproduce", "burda2015", "--out", str(out), "--dataset", f"idx:{tmp_path}/nope", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nope does not exist" in err
    assert not out.exists()


def test_patience_stops_and_keeps_the_best_checkpoint(digits):
    """With lr = 0 the weights never change, and every evaluation uses the same noise (common random
    numbers), so every validation bound equals the first one exactly: the first checkpoint stays the
    best, and patience 2 (evaluations every epoch) stops the run after epoch 3."""
    from vae_pyro.reproduce import fit_row, plan, split_data
    from vae_pyro.runs import prepare_run

    spec = load_spec(
        "burda2015",
        overrides=[
            "networks.hidden=[16]",
            "networks.z_dim=4",
            "training.epochs=6",
            "selection.every=1",
            "selection.k=3",
            "selection.patience=2",
            "training.device='cpu'",
        ],
    )
    spec.training.lr = 0.0  # a spec refuses lr = 0 (it must be > 0); set here to freeze the weights
    run = prepare_run(spec)
    data = split_data(run)
    record = fit_row(run, data, plan(progress=False), "lr0")
    assert (record["epochs_run"], record["selected_epoch"]) == (3, 1)
    vals = [p["val_bound"] for p in record["curve"]]
    assert len(vals) == 3 and vals[0] == vals[1] == vals[2]
    assert len(data.x_train) == 3500 and len(data.x_val) == 500 and len(data.x_test) == 1000
    # dynamic training keeps grey levels to redraw; validation and test digits are one fixed 0/1 draw
    assert data.dynamic and not bool(((data.x_train == 0) | (data.x_train == 1)).all())
    assert bool(((data.x_val == 0) | (data.x_val == 1)).all()) and bool(((data.x_test == 0) | (data.x_test == 1)).all())


def test_best_nll_reports_the_refined_proposal_beside_the_amortized_estimate(tmp_path):
    from vae_pyro import api
    from vae_pyro.reproduce import REFINED_HEADER, text_table

    result = api.reproduce("best-nll", out=tmp_path / "run", fast=True)
    (row,) = result["rows"]
    assert row["refine_steps"] == 5 and row["refine_seconds"] > 0  # --fast: min(2,000, 5) steps
    assert row["test_nll_refined"] > 0 and row["test_nll_refined_se"] > 0
    assert REFINED_HEADER in text_table(result) and REFINED_HEADER in (tmp_path / "run" / "report.md").read_text()
    # the saved checkpoint is the model, not the refined proposal: its encoder gives the amortized number
    assert result["rows"][0]["test_nll"] == pytest.approx(row["nll_vs_k"]["20"])
