"""Output safety: results are never overwritten or mixed without --force, every output path is
checked before any work (one line, exit 2), temporaries of killed runs are cleaned up, and results
get the user's file mode."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from vae_pyro import outputs
from vae_pyro.checkpoint import save_checkpoint
from vae_pyro.cli import main
from vae_pyro.model import VAE

TINY = ["--epochs", "1", "--hidden", "8", "--z-dim", "2", "--batch-size", "1000", "--no-progress"]
#: a data set that cannot load: a command that reaches data loading fails with *its* message, so an
#: output error proves the outputs were checked first
NO_DATA = ["--dataset", "idx:/no/such/folder"]


def _one_error_line(capsys, *needles):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


# --- data loss -------------------------------------------------------------------------------


def test_experiment_refuses_an_existing_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "metrics.json").write_text("{}\n")
    code = main(["experiment", *TINY, *NO_DATA, "--out", str(out)])
    assert code == 2
    _one_error_line(capsys, f"--out {out} already holds files", "--force", "new folder")
    assert (out / "metrics.json").read_text() == "{}\n"


def test_experiment_force_replaces_the_whole_folder(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "old_estimator.pt").write_bytes(b"an earlier run")
    (out / "old_plot.png").write_bytes(b"an earlier plot")
    (out / "metrics.json").write_text("{}\n")
    code = main(
        [
            "experiment",
            *TINY,
            "--train-estimators",
            "analytic",
            "--nll-k",
            "0",
            "--variance-draws",
            "2",
            "--out",
            str(out),
            "--force",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["analytic.pt"]  # no mix of two runs
    assert not (out / "old_plot.png").exists() and (out / "metrics.json").read_text() != "{}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left beside it
    umask = os.umask(0)
    os.umask(umask)
    for name in ("metrics.json", "metrics.csv", "report.md", "curves.png", "checkpoints/analytic.pt"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask, name  # the user's mode


def test_force_never_deletes_a_folder_of_other_files(tmp_path, capsys):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work\n")
    (out / "metrics.json").write_text("{}\n")
    assert main(["experiment", *TINY, *NO_DATA, "--out", str(out), "--force"]) == 2
    _one_error_line(capsys, "not a vae-pyro run", "'thesis.tex'")
    assert (out / "thesis.tex").read_text() == "years of work\n"


def test_a_failed_run_leaves_the_old_folder_whole(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}\n")
    with pytest.raises(RuntimeError):
        with outputs.staged_folder(out) as stage:
            (stage / "metrics.json").write_text('{"new": 1}\n')
            raise RuntimeError("training failed")
    assert (out / "metrics.json").read_text() == "{}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_train_refuses_to_overwrite_a_checkpoint_without_resume_or_force(tmp_path, capsys):
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"epoch 2 of an earlier run")
    assert main(["train", *TINY, *NO_DATA, "--checkpoint", str(ck)]) == 2
    _one_error_line(capsys, f"--checkpoint {ck} already exists", "--force", "--resume", "new path")
    assert ck.read_bytes() == b"epoch 2 of an earlier run"


def test_existing_json_needs_force(tmp_path, capsys):
    js = tmp_path / "r.json"
    js.write_text('{"keep": true}\n')
    assert main(["train", *TINY, *NO_DATA, "--json", str(js)]) == 2
    _one_error_line(capsys, f"--json {js} already exists", "--force")
    assert js.read_text() == '{"keep": true}\n'
    assert main(["train", *TINY, *NO_DATA, "--json", str(js), "--force"]) == 2  # now the data error
    _one_error_line(capsys, "MNIST folder /no/such/folder does not exist")


# --- output paths fail early, as one line -----------------------------------------------------


def _paths(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    a_folder = tmp_path / "a_folder"
    a_folder.mkdir()
    return a_file, a_folder


@pytest.mark.parametrize(
    "make_args, needle",
    [
        (lambda f, d: ["experiment", "--out", str(f)], "is a file; give a folder path"),
        (lambda f, d: ["train", "--json", str(d)], "is a folder; give a file path"),
        (lambda f, d: ["train", "--checkpoint", str(f / "ck.pt")], "is a file, not a folder"),
        (lambda f, d: ["train", "--json", str(f / "sub" / "r.json")], "is a file, not a folder"),
        (lambda f, d: ["experiment", "--out", str(f / "run")], "is a file, not a folder"),
        (lambda f, d: ["nll", "--json", "/proc/no-such-dir/r.json"], "cannot write in folder /proc/no-such-dir"),
        (lambda f, d: ["compare", "--json", str(d)], "is a folder; give a file path"),
    ],
)
def test_bad_output_paths_are_one_line_before_any_work(make_args, needle, tmp_path, capsys):
    a_file, a_folder = _paths(tmp_path)
    assert main([*make_args(a_file, a_folder), *TINY, *NO_DATA]) == 2
    _one_error_line(capsys, needle)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize(
    "command, option, name",
    [("train", "--json", "r.json"), ("train", "--checkpoint", "ck.pt"), ("experiment", "--out", "run")],
)
def test_read_only_folder_is_one_line(command, option, name, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main([command, option, str(ro / name), *TINY, *NO_DATA]) == 2
        _one_error_line(capsys, f"cannot write in folder {ro}")
    finally:
        ro.chmod(0o755)


# --- temporaries and file modes ---------------------------------------------------------------


def test_stale_temporaries_of_killed_runs_are_removed_on_the_next_save(tmp_path):
    ck = tmp_path / "ck.pt"
    legacy = tmp_path / ".ck.pt.a1b2c3d4"  # what mkstemp left before
    dead = tmp_path / ".ck.pt.tmp-999999999-ab12"  # above Linux's pid_max: that process is gone
    live = tmp_path / f".ck.pt.tmp-{os.getppid()}-cd34"  # a running process's write in progress
    other = tmp_path / ".other.pt.a1b2c3d4"
    users_own = tmp_path / ".ck.pt.mybackup"  # a name like mkstemp's, but not a torch archive
    for p in (dead, live, other):
        p.write_bytes(b"partial")
    legacy.write_bytes(b"PK\x03\x04partial zip")  # torch.save writes a zip archive
    users_own.write_text("my notes\n")
    save_checkpoint(ck, vae=VAE(hidden=(4,), z_dim=2), epoch=1, estimator="analytic")
    assert not legacy.exists() and not dead.exists()
    assert live.exists() and other.exists() and users_own.exists() and ck.is_file()


def test_a_killed_runs_staging_folder_is_removed_and_a_moved_aside_run_restored(tmp_path):
    run = tmp_path / "run"
    staging = tmp_path / ".run.tmp-999999999-ab12"
    (staging / "checkpoints").mkdir(parents=True)
    aside = tmp_path / ".run.old-999999999-cd34"  # killed between replace_folder's two renames
    aside.mkdir()
    (aside / "metrics.json").write_text('{"old": 1}\n')
    outputs.clean_stale_temporaries(run)
    assert not staging.exists() and not aside.exists()
    assert (run / "metrics.json").read_text() == '{"old": 1}\n'


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_results_get_the_users_file_mode(umask, tmp_path):
    before = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "ck.pt", vae=VAE(hidden=(4,), z_dim=2), epoch=1, estimator="analytic")
        outputs.atomic_write_text(tmp_path / "r.json", "{}\n")
    finally:
        os.umask(before)
    for name in ("ck.pt", "r.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_checkpoint_written_through_a_file_object_loads(tmp_path):
    vae = VAE(hidden=(4,), z_dim=2)
    save_checkpoint(tmp_path / "ck.pt", vae=vae, epoch=3, estimator="analytic")
    payload = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert payload["epoch"] == 3


def test_resume_and_force_together_are_refused(tmp_path, capsys):
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"a checkpoint")
    assert main(["train", *TINY, *NO_DATA, "--checkpoint", str(ck), "--resume", "--force"]) == 2
    _one_error_line(capsys, "--resume", "--force", "give one of them")
    assert ck.read_bytes() == b"a checkpoint"


# --- the library path: a Python user is protected the same way ------------------------------


def test_api_refuses_existing_results_before_any_work(tmp_path):
    from vae_pyro import api

    ck, js = tmp_path / "ck.pt", tmp_path / "r.json"
    ck.write_bytes(b"an earlier checkpoint")
    js.write_text("{}\n")
    with pytest.raises(outputs.OutputError, match=f"--checkpoint {ck} already exists.*--resume"):
        api.train(None, checkpoint=str(ck), dataset="idx:/no/such/folder", epochs=1)
    with pytest.raises(outputs.OutputError, match=f"--json {js} already exists; pass --force"):
        api.compare(None, json=str(js), dataset="idx:/no/such/folder")
    with pytest.raises(outputs.OutputError, match=f"--out {tmp_path} already holds files"):
        api.experiment(None, out=str(tmp_path), dataset="idx:/no/such/folder")
    assert ck.read_bytes() == b"an earlier checkpoint" and js.read_text() == "{}\n"


def test_api_refuses_a_run_that_cannot_fit_in_memory_before_allocating():
    from vae_pyro import api
    from vae_pyro.memory import MemoryBoundError

    # 10^9 samples for each of 100 digits at once: petabytes, on any machine
    with pytest.raises(MemoryBoundError, match="lower nll chunk "):  # the library names the option, not its flag
        api.nll(None, k=10**9, chunk=10**9, epochs=0, dataset="idx:/no/such/folder", hidden=[8], z_dim=2)


def test_api_writes_json_where_asked_and_replaces_it_only_with_force(tmp_path):
    from vae_pyro import api

    js = tmp_path / "sub" / "r.json"
    small = dict(hidden=[8], z_dim=2, epochs=0, k=2, examples=10, chunk=2)
    result = api.nll(None, json=str(js), **small)
    assert js.is_file() and '"nll"' in js.read_text() and result["k"] == 2
    with pytest.raises(outputs.OutputError, match="already exists"):
        api.nll(None, json=str(js), **small)
    api.nll(None, json=str(js), force=True, **small)


def test_a_checkpoint_to_evaluate_is_an_input_not_an_output(tmp_path, capsys):
    """`nll/compare/check --checkpoint` read a saved model: its existence is required, not refused."""
    from vae_pyro.model import VAEConfig

    ck = tmp_path / "ck.pt"
    save_checkpoint(ck, vae=VAE(VAEConfig(hidden=(8,), z_dim=2)), epoch=0, estimator="analytic", history=[])
    before = ck.read_bytes()
    assert main(["nll", "--checkpoint", str(ck), "--k", "2", "--examples", "10", "--chunk", "2", "--no-progress"]) == 0
    assert ck.read_bytes() == before
