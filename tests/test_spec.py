"""VAE specs: the shipped ones load, resolve and round-trip; command-line options and ``--set`` override
them in the documented order; and each kind of bad spec is one clear line naming the bad value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vae_pyro.cli import main
from vae_pyro.spec import SpecError, load_spec, parse_toml, shipped_specs, validate

SHIPPED = {
    "default",
    "mog-bernoulli",
    "vamp-bernoulli",
    "laplace-cb",
    "studentt-beta",
    "diag-binomial",
    "normal-learned",
    "beta-vae",
    "burda2015",
    "best-nll",
}


def _run(*args):
    return subprocess.run([sys.executable, "-m", "vae_pyro.cli", *args], capture_output=True, text=True, timeout=120)


def _main_stderr(args, capsys) -> tuple[int, str]:
    """``main`` in this process (a subprocess per case costs seconds of imports): exit code, stderr."""
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    return code, capsys.readouterr().err


def test_shipped_specs_are_package_data_and_all_load():
    assert set(shipped_specs()) == SHIPPED
    for name in SHIPPED:
        spec = load_spec(name)
        assert spec.source == name and spec.description
        spec.resolved_data()
    # a spec with every default filled in
    mog = load_spec("mog-bernoulli")
    assert (mog.prior.name, mog.prior.options, mog.likelihood.name) == ("mog", {"components": 10}, "bernoulli")
    assert load_spec("beta-vae").training.kl_weight == 4.0
    assert load_spec("diag-binomial").resolved_data() == ("none", "counts")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_resolved_spec_round_trips_through_toml(name):
    spec = load_spec(name)
    again = validate(parse_toml(spec.to_toml(), "round trip"), "round trip")
    again.source = spec.source
    assert again == spec


def test_precedence_spec_then_fields_then_component_then_set():
    spec = load_spec(
        "mog-bernoulli",
        settings={"training.epochs": 3, "networks.hidden": [64]},
        overrides=["prior.components=4", "networks.z_dim=5", "training.lr=0.01"],
    )
    assert spec.training.epochs == 3 and spec.networks.hidden == [64] and spec.networks.z_dim == 5
    assert spec.prior.options == {"components": 4} and spec.training.lr == 0.01
    # --prior replaces the prior with its own defaults (mog's components do not leak into vamp)
    vamp = load_spec("mog-bernoulli", prior="vamp")
    assert vamp.prior.name == "vamp" and vamp.prior.options == {"components": 50}
    laplace = load_spec("mog-bernoulli", prior="laplace", overrides=["prior.scale=2"])
    assert laplace.prior.options == {"scale": 2.0}
    # --set prior.name=... keeps the spec's other prior keys, which must suit the new prior
    assert load_spec("mog-bernoulli", overrides=["prior.name=vamp"]).prior.options == {"components": 10}
    with pytest.raises(SpecError, match="unknown option 'components' for prior 'student_t'; allowed: df, scale"):
        load_spec("mog-bernoulli", overrides=["prior.name=student_t"])
    # --set on a prior the spec leaves out changes the default prior's options
    assert load_spec(None, overrides=["prior.name=mog", "prior.components=3"]).prior.options == {"components": 3}
    # a bare word is a string; TOML lists work
    spec = load_spec(None, overrides=['checks.estimators=["trace", "tmf"]', "likelihood.name=beta"])
    assert spec.checks.estimators == ["trace", "tmf"] and spec.likelihood.name == "beta"


def test_a_spec_is_parsed_never_executed(tmp_path):
    """Values that look like code stay strings and fail validation; nothing is evaluated."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.toml"
    path.write_text(f"[prior]\nname = \"__import__('os').system('touch {marker}')\"\n")
    with pytest.raises(SpecError, match="unknown value"):
        load_spec(str(path))
    with pytest.raises(SpecError):
        load_spec(None, overrides=[f"prior.components=__import__('os').system('touch {marker}')", "prior.name=mog"])
    assert not marker.exists()


BAD_SPECS = [
    (
        "unknown prior",
        '[prior]\nname = "gaussian"\n',
        "prior.name: unknown value 'gaussian'; allowed: standard_normal, diag_normal, mog, vamp, laplace, student_t",
    ),
    (
        "unknown likelihood",
        '[likelihood]\nname = "poisson"\n',
        "likelihood.name: unknown value 'poisson'; allowed: bernoulli, continuous_bernoulli, normal, normal_learned, "
        "beta, binomial",
    ),
    ("wrong type", '[training]\nepochs = "ten"\n', "training.epochs must be an integer, got 'ten' (a string)"),
    ("wrong type in a list", '[networks]\nhidden = [400, "x"]\n', "networks.hidden[1] must be an integer, got 'x'"),
    ("wrong option type", '[prior]\nname = "mog"\ncomponents = 2.5\n', "prior.components must be an integer, got 2.5"),
    ("out of range", "[training]\nkl_weight = 0\n", "training.kl_weight must be > 0, got 0.0"),
    (
        "missing field",
        "[prior]\ncomponents = 10\n",
        "[prior] is missing its name; allowed: standard_normal, diag_normal, mog, vamp, laplace, student_t",
    ),
    ("unknown key", "[networks]\nz = 20\n", "unknown key 'z' in [networks]; allowed: hidden, z_dim"),
    (
        "unknown option",
        '[prior]\nname = "laplace"\ncomponents = 3\n',
        "unknown option 'components' for prior 'laplace'; allowed: scale",
    ),
    (
        "unknown section",
        "[model]\nz_dim = 2\n",
        "unknown section 'model'; allowed: description, data, networks, prior, likelihood, guide, training, checks",
    ),
    (
        "likelihood/data mismatch",
        '[likelihood]\nname = "binomial"\n[data]\nbinarization = "static"\n',
        "likelihood 'binomial' takes counts data (transform 'counts'): transform 'counts' takes the raw "
        "intensities, so binarization must be 'none' or 'auto', got 'static'",
    ),
    (
        "unknown estimator",
        '[checks]\nestimators = ["trace", "Trace_ELBO"]\n',
        "checks.estimators[1]: unknown estimator 'Trace_ELBO'; allowed: analytic, trace, tmf",
    ),
    ("not TOML", '[prior\nname = "mog"\n', "not valid TOML"),
]


@pytest.mark.parametrize("what, text, needle", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_specs_are_one_clear_error(what, text, needle, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_spec(str(path))
    message = str(err.value)
    assert message.startswith(f"spec {path}: ") and needle in message and "\n" not in message


@pytest.mark.parametrize(
    "args, needle",
    [
        (["compare", "--spec", "nope"], "unknown spec 'nope'; allowed: best-nll, beta-vae, burda2015, default"),
        (["compare", "--spec", "/no/such.toml"], "spec file /no/such.toml does not exist"),
        (["compare", "--prior", "gauss"], "unknown prior 'gauss'; allowed: standard_normal, diag_normal, mog"),
        (
            ["train", "--likelihood", "poisson"],
            "unknown likelihood 'poisson'; allowed: bernoulli, continuous_bernoulli",
        ),
        (["train", "--set", "prior.components"], "--set expects SECTION.KEY=VALUE (e.g. prior.components=10)"),
        (
            ["train", "--set", "prior.components=3"],
            "unknown option 'components' for prior 'standard_normal'; allowed: none",
        ),
        (["compare", "--set", "model.z_dim=3"], "unknown section 'model'; allowed: data, networks, prior"),
        (
            ["compare", "--spec", "mog-bernoulli", "--set", "prior.components=-1"],
            "prior.components must be >= 1, got -1",
        ),
        (
            ["train", "--prior", "mog", "--estimator", "analytic", "--epochs", "0"],
            "estimator 'analytic' is invalid for prior 'mog': the analytic loss has no closed-form KL for prior 'mog'",
        ),
        (["estimators", "--prior", "vamp", "--set", "prior.components=zero"], "prior.components must be an integer"),
        (["spec", "show", "nope"], "unknown spec 'nope'"),
        (
            ["train", "--likelihood", "beta", "--transform", "unit", "--epochs", "0"],
            "open unit interval data cannot come from binarization 'none' with transform 'unit'",
        ),
    ],
)
def test_bad_spec_input_on_the_command_line_is_one_line_and_exit_2(args, needle, capsys):
    code, err = _main_stderr([*args, *(["--no-progress"] if args[0] in ("train", "compare") else [])], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err


def test_one_bad_spec_through_a_real_process(tmp_path):
    """The same one-line error from the installed entry point (stderr, exit 2, nothing else)."""
    path = tmp_path / "bad.toml"
    path.write_text('[prior]\nname = "gaussian"\n')
    proc = _run("estimators", "--spec", str(path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"vae-pyro: error: spec {path}: prior.name: unknown value 'gaussian'; allowed: standard_normal, "
        "diag_normal, mog, vamp, laplace, student_t"
    ]


def test_spec_show_prints_the_resolved_spec(capsys):
    assert main(["spec", "show", "mog-bernoulli", "--set", "prior.components=7"]) == 0
    out = capsys.readouterr().out
    assert 'name = "mog"\ncomponents = 7\n' in out and "kl_weight = 1.0" in out and "z_dim = 20" in out
    assert main(["spec", "list"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert name in out


def test_spec_file_by_path_with_comments(tmp_path, capsys):
    path = tmp_path / "mine.toml"
    path.write_text('# my VAE\n[prior]\nname = "laplace" # heavy tails\nscale = 0.5\n[networks]\nz_dim = 4\n')
    spec = load_spec(str(path))
    assert spec.prior.options == {"scale": 0.5} and spec.networks.z_dim == 4 and spec.source == str(path)


SPEC_COMMANDS = ["compare", "train", "nll", "experiment", "check", "estimators"]


def _resolved(argv):
    """The spec a command resolves from ``argv``, through the function every command uses
    (:func:`vae_pyro.options.spec_from_args` -> :func:`vae_pyro.api.resolve_spec`)."""
    from vae_pyro.options import build_parser, spec_from_args

    return spec_from_args(build_parser().parse_args(argv))


@pytest.mark.parametrize("command", SPEC_COMMANDS)
def test_precedence_at_every_level_for_every_command(command, tmp_path):
    """The same keys set at every level, then the top level removed one at a time: spec file < plain
    option (--epochs) < --prior/--likelihood < --set, for each command that takes a spec (those
    without --epochs skip that level)."""
    path = tmp_path / "levels.toml"
    path.write_text('[prior]\nname = "mog"\ncomponents = 7\n[likelihood]\nname = "normal"\n[training]\nepochs = 1\n')
    has_epochs = command != "estimators"
    spec_level = [command, "--spec", str(path)]
    plain = spec_level + (["--epochs", "2"] if has_epochs else [])
    component = plain + ["--prior", "laplace", "--likelihood", "beta"]
    top = component + [
        "--set",
        "training.epochs=3",
        "--set",
        "prior.name=student_t",
        "--set",
        "likelihood.name=binomial",
    ]
    want = [  # (argv, epochs, prior, likelihood)
        (top, 3, "student_t", "binomial"),
        (component, 2 if has_epochs else 1, "laplace", "beta"),
        (plain, 2 if has_epochs else 1, "mog", "normal"),
        (spec_level, 1, "mog", "normal"),
    ]
    for argv, epochs, prior, likelihood in want:
        spec = _resolved(argv)
        assert (spec.training.epochs, spec.prior.name, spec.likelihood.name) == (epochs, prior, likelihood), argv
    if command == "check":  # check's run reads its epochs from the same resolution
        from vae_pyro.checks.ground_truth import checks_of

        assert [checks_of(_resolved(a)).epochs for a in (top, plain)] == [3, 2]
    assert _resolved(plain).prior.options == {"components": 7}  # the spec's own option survives ...
    assert _resolved(component).prior.options == {"scale": 1.0}  # ... until --prior brings its defaults
