"""Two Gloo processes on localhost (torch.multiprocessing spawn) against one process: training steps,
the agreement checks' statistics and the IWAE NLL are the same numbers; a failing process ends the
run with a message naming it. Kept tiny (784-16-2 VAE, a few steps and draws): every spawn costs two
interpreters importing torch and Pyro."""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from vae_pyro import distributed
from vae_pyro.checks.agreement import AgreementSetup, run_agreement
from vae_pyro.data import Batches
from vae_pyro.estimators import build_estimator
from vae_pyro.evaluation import iwae_log_likelihood
from vae_pyro.model import VAE
from vae_pyro.train import make_optimizer, seed_all, train

WORLD = 2
EPOCH_STEPS, BATCH = 3, 8  # training: 3 global batches of 8, 4 examples per process
DRAWS, GRAD_DRAWS = 7, 5  # odd totals: the processes get unequal shares
IWAE_EXAMPLES, IWAE_BATCH, IWAE_K = 10, 3, 6


def _setup(seed: int = 0):
    """The same VAE (random weights) and binary data in every process."""
    gen = seed_all(seed)
    vae = VAE(hidden=(16,), z_dim=2)
    x = torch.bernoulli(torch.rand(EPOCH_STEPS * BATCH, 784, generator=torch.Generator().manual_seed(1)))
    return gen, vae, x


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD)
    )
    torch.set_num_threads(1)
    distributed.init("cpu", timeout=60)


def _agreement(vae, x):
    setup = AgreementSetup(vae, x, x[:6], x[:4], draws=DRAWS, grad_draws=GRAD_DRAWS, checks=("monte_carlo", "gradient"))
    agreement = run_agreement(setup, ["analytic", "tmf"], progress=False)
    return {
        name: {
            "draws_mean": mc.mean,
            "se": mc.se,
            "results": [(r.name, r.value, r.verdict, r.details.get("per_tensor")) for r in results],
        }
        for name, (_, _, mc, results) in agreement.estimators.items()
    } | {"reference": (agreement.reference_mc.mean, agreement.reference_mc.se)}


def _worker(rank: int, port: int, out: str) -> None:
    _join(rank, port)
    gen, vae, x = _setup()
    checkpoint = os.path.join(out, "ddp.pt")
    train(
        vae,
        build_estimator("analytic"),
        x,
        epochs=1,
        batch_size=BATCH,
        generator=gen,
        progress=False,
        checkpoint=checkpoint,
    )
    weights = {k: v.clone() for k, v in vae.state_dict().items()}
    stats = _agreement(vae, x)
    seed_all(0)  # the NLL run's seed, as in the one-process run
    log_px = iwae_log_likelihood(vae, x[:IWAE_EXAMPLES], k=IWAE_K, chunk=4, batch_size=IWAE_BATCH, progress=False)
    torch.save({"weights": weights, "stats": stats, "log_px": log_px}, os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def _one_process_training(gen, vae, x):
    """One process on the same global batches: each shard's loss over the global batch size, with
    the noise stream its process would use (distributed.epoch_seed), gradients summed by backward."""
    optimizer = make_optimizer(vae)
    streams = []
    for r in range(WORLD):
        torch.manual_seed(distributed.epoch_seed(gen.initial_seed(), 1, r))
        streams.append(torch.get_rng_state())
    est = build_estimator("analytic")
    for batch in Batches(x, BATCH, generator=gen):
        optimizer.zero_grad()
        for r, shard in enumerate(batch.tensor_split(WORLD)):
            torch.set_rng_state(streams[r])
            (est.differentiable_loss(vae, shard) / batch.shape[0]).backward()
            streams[r] = torch.get_rng_state()
        optimizer.step()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("distributed"))
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    return out, [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=False) for r in range(WORLD)]


def test_training_steps_equal_one_process(two_processes):
    """Tolerance 1e-6 absolute on weights of size ~0.1: the two processes' gradients are added in
    float32 in both runs, but the all-reduce and backward's accumulation may round differently (one
    ulp, 6e-8 relative); over 3 Adam steps of lr 1e-3 that moves a weight by far less than 1e-6,
    while a wrong reduction (a mean instead of a sum, a lost shard) moves it by ~1e-3."""
    out, ranks = two_processes
    gen, vae, x = _setup()
    _one_process_training(gen, vae, x)
    for r in range(WORLD):
        for name, value in vae.state_dict().items():
            torch.testing.assert_close(ranks[r]["weights"][name], value, rtol=0, atol=1e-6)
    # the distributed run's checkpoint (written by process 0 only) resumes in one process
    gen, resumed, _ = _setup()
    history = train(
        resumed,
        build_estimator("analytic"),
        x,
        epochs=2,
        batch_size=BATCH,
        generator=gen,
        progress=False,
        checkpoint=os.path.join(out, "ddp.pt"),
        resume=True,
    )
    assert [h.epoch for h in history] == [1, 2]


def test_sharded_check_statistics_equal_one_process(two_processes):
    """The union of the processes' draws is the one-process set of draws (per-draw seeds), so the
    Monte Carlo means and s.e. and the gradient z-scores are the same numbers: the values and the
    projections are gathered exactly (sums with zeros). Only the per-tensor ``rel_err`` comes from
    float64 sums added in another order (relative 1e-12)."""
    _, ranks = two_processes
    gen, vae, x = _setup()
    vae.load_state_dict(ranks[0]["weights"])
    expected = _agreement(vae, x)
    for r in range(WORLD):
        got = copy.deepcopy(ranks[r]["stats"])
        assert got["reference"] == expected["reference"]
        for name in ("analytic", "tmf"):
            assert (got[name]["draws_mean"], got[name]["se"]) == (expected[name]["draws_mean"], expected[name]["se"])
            for (check, value, verdict, per_tensor), want in zip(got[name]["results"], expected[name]["results"]):
                assert (check, value, verdict) == want[:3]
                for tensor, d in (per_tensor or {}).items():
                    assert d["z"] == want[3][tensor]["z"]
                    assert d["rel_err"] == pytest.approx(want[3][tensor]["rel_err"], rel=1e-9, abs=1e-12)


def test_sharded_nll_equals_one_process(two_processes):
    """Each batch of test digits is seeded by its index: the gathered log p(x) is the one-process
    tensor (the same float operations on the same inputs, so equal to the bit)."""
    _, ranks = two_processes
    _, vae, x = _setup()
    vae.load_state_dict(ranks[0]["weights"])
    seed_all(0)
    expected = iwae_log_likelihood(vae, x[:IWAE_EXAMPLES], k=IWAE_K, chunk=4, batch_size=IWAE_BATCH, progress=False)
    for r in range(WORLD):
        assert torch.equal(ranks[r]["log_px"], expected)


def _failing_main(argv) -> int:
    if distributed.rank() == 1:
        raise ValueError("injected failure")
    distributed.sum_across(torch.ones(3))  # process 0 waits on process 1, which has died
    return 0


def _failing_worker(rank: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        **{distributed.TIMEOUT_ENV: "30"},
    )
    distributed.launch(_failing_main, ["--device", "cpu"])


def test_a_failing_process_ends_the_run_with_its_message(capfd):
    """Process 1 raises; launch prints one line naming it and exits; process 0, blocked in an
    all-reduce, gets an error from Gloo (peer gone, or at the latest the 30 s timeout) instead of
    hanging, and says a collective failed."""
    with pytest.raises(mp.ProcessExitedException):
        mp.spawn(_failing_worker, args=(_free_port(),), nprocs=WORLD, join=True)
    err = capfd.readouterr().err
    assert "vae-pyro: error on process 1 of 2: ValueError: injected failure" in err


@pytest.mark.slow
def test_torchrun_compare_passes_and_says_two_processes_ran(tmp_path):
    """The command line under torchrun (2 Gloo processes): the verdict, the processes line, the JSON."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "compare.json"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "vae_pyro",
        "compare",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--z-dim",
        "2",
        "--draws",
        "6",
        "--grad-draws",
        "4",
        "--estimators",
        "analytic,tmf",
        "--no-progress",
        "--json",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 processes ran (torch.distributed, gloo backend)" in done.stdout
    assert done.stdout.count("overall: PASS") == 1  # process 1 printed nothing
    result = json.loads(out.read_text())
    assert result["processes"] == 2 and result["verdict"] == "pass" and result["draws"] == 6
