"""A VAE, declared: a TOML spec file, validated into dataclasses.

    [data]        dataset = "mnist5k"        binarization = "auto"   transform = "auto"
    [networks]    hidden = [400]             z_dim = 20              activation = "relu"
    [prior]       name = "mog"               components = 10         (the prior's own options)
    [likelihood]  name = "bernoulli"                                 (the likelihood's own options)
    [guide]       family = "diag_normal"     rank = 2                flows = 2
    [training]    epochs = 10   batch_size = 128   lr = 1e-3   seed = 0   estimator = "analytic"
                  kl_weight = 1.0   kl_anneal_epochs = 0   device = "auto"
    [checks]      particles = 1   draws = 100   grad_draws = 50   grad_batch = 256
                  reference_particles = 8   z_tol = 4.0   same_noise_tol = 1e-8   estimators = [...]
    [selection]   validation = 0   every = 5   k = 50   patience = 0
                  (checkpoint selection by the validation IWAE_k bound, used by ``vae-pyro reproduce``;
                  validation = 0: no held-out digits, the last epoch is kept)

Every section and key is optional except a ``[prior]`` or ``[likelihood]`` table's ``name``; omitted
ones take the defaults shown. Ready-made specs ship in ``vae_pyro/specs/*.toml`` and are named
without the suffix (``vae-pyro compare --spec mog-bernoulli``); anything else is a path.

A spec is *parsed, never executed*: ``tomllib`` reads data, and each value is checked against a
declared :class:`~vae_pyro.registry.Option` (type, lower bound, allowed names), so a spec cannot run
code and every mistake (an unknown section, key, prior or likelihood, a wrong type, a missing
``name``, data that the likelihood cannot take) is one :class:`SpecError` line naming the bad value
and the allowed ones. Overrides (``--set prior.components=10``) are parsed the same way, as TOML
values, and validated with the rest.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

from .data import BINARIZATION_CHOICES, DATA_KINDS, TRANSFORMS, resolve_data
from .checks.result import DRAWS, GRAD_DRAWS, REFERENCE_PARTICLES, SAME_NOISE_TOL, Z_TOL
from .datasets import DEFAULT_DATASET, dataset_class, dataset_names
from .devices import DEVICES, STEPS
from .errors import DataError, SpecError, VaePyroError
from .estimators import DEFAULT_ESTIMATORS, estimator_names
from .estimators.iwae import BURDA_K, NLL_CHUNK
from .guides import DEFAULT_GUIDE, GUIDE_SETTINGS, GUIDES
from .likelihoods import LIKELIHOODS
from .model import VAEConfig
from .networks import ACTIVATIONS, NETWORKS
from .priors import PRIORS
from .registry import Option, resolve_options

__all__ = ["SpecError", "VAESpec", "load_spec", "FIELDS", "COMMAND_DEFAULTS", "COMMAND_OPTIONS"]

#: NumPy's seeds are 32-bit
SEED_MAX = 2**32 - 1
#: ``reproduce``'s learning-rate schedules: constant, or the paper's 3^i-pass stages
LR_SCHEDULES = ("constant", "burda")


def setting(default, help: str = "", **declared):
    """One setting, declared once: a dataclass field whose default is ``default`` and whose metadata
    holds its :class:`~vae_pyro.registry.Option` (type from the default, bounds, choices, help, flag).
    Adding a setting to a section is one line."""
    option = Option(type(default), default, help=help, **declared)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"option": option})
    return field(default=default, metadata={"option": option})


@dataclass
class DataSpec:
    dataset: str = setting(
        DEFAULT_DATASET, "a registered dataset (vae_pyro.datasets): " + ", ".join(dataset_names()), flag="--dataset"
    )
    binarization: str = setting(
        "auto",
        "static: one fixed-seed Bernoulli draw; dynamic: a fresh draw per batch "
        "(Burda et al. 2015); threshold: pixel > 127; none: grey levels; auto: static for "
        "the Bernoulli likelihood, none for the others",
        choices=BINARIZATION_CHOICES,
        flag="--binarization",
    )
    transform: str = setting(
        "auto",
        "unit: [0, 1]; open_unit: clamped into (0, 1) (Beta); counts: raw 0..the "
        "dataset's max value (Binomial); auto: what the likelihood takes",
        choices=TRANSFORMS,
        flag="--transform",
    )


@dataclass
class NetworksSpec:
    hidden: list[int] = setting([400], "hidden layer sizes", low=1, item=int, flag="--hidden", example="400 or 512,256")
    z_dim: int = setting(20, "latent dimensions", low=1, flag="--z-dim")
    activation: str = setting("relu", "nonlinearity between layers", choices=tuple(ACTIVATIONS))
    network: str = setting("mlp", "encoder and decoder (vae_pyro.networks)", choices=NETWORKS.names, flag="--network")


@dataclass
class GuideSpec:
    """q(z|x)'s family (:mod:`vae_pyro.guides`) and the settings the families read."""

    family: str = setting(
        DEFAULT_GUIDE,
        "the guide family q(z|x) (vae_pyro.guides): " + ", ".join(GUIDES.names()),
        choices=GUIDES.names,
        kind="guide",
        flag="--guide",
    )
    rank: int = setting(
        GUIDE_SETTINGS["rank"].default,
        "rank of lowrank_normal's covariance factor W",
        low=GUIDE_SETTINGS["rank"].low,
        flag="--guide-rank",
    )
    flows: int = setting(
        GUIDE_SETTINGS["flows"].default,
        "number of iaf flow steps",
        low=GUIDE_SETTINGS["flows"].low,
        flag="--guide-flows",
    )


@dataclass
class ComponentSpec:
    """A prior or likelihood: its registry name and its options (all of them, defaults filled in)."""

    name: str
    options: dict = field(default_factory=dict)


@dataclass
class TrainingSpec:
    epochs: int = setting(10, "training epochs", low=0, flag="--epochs")
    batch_size: int = setting(128, "training batch size", low=1, flag="--batch-size")
    lr: float = setting(1e-3, "Adam learning rate", low=0.0, flag="--lr")
    seed: int = setting(
        0, "seed for torch, Pyro, NumPy, the data order and every check's draws", low=0, high=SEED_MAX, flag="--seed"
    )
    estimator: str = setting(
        "analytic", "estimator to train with", choices=estimator_names, kind="estimator", flag="--estimator"
    )
    #: k of the training estimator (IWAE_k's importance samples; particles of an ELBO estimator)
    particles: int = setting(
        1, "samples of z per example in each training estimate, vectorised", low=1, flag="--particles"
    )
    kl_weight: float = setting(1.0, "beta: weight of KL(q || p), the same in every estimator", low=0.0)
    kl_anneal_epochs: int = setting(0, "linear warm-up of beta from ~0 over this many epochs", low=0)
    device: str = setting(
        "auto", "where tensors live: auto = CUDA when available, else CPU", choices=DEVICES, flag="--device"
    )
    step: str = setting(
        "auto",
        "how each full-size batch's step runs: eager, captured (one CUDA graph), fused "
        "(compiled by inductor), auto (the fastest that applies: vae_pyro.steps)",
        choices=STEPS,
        flag="--step",
    )


@dataclass
class ChecksSpec:
    particles: int = setting(1, "samples of z per estimate in the checks", low=1, flag="--check-particles")
    draws: int = setting(DRAWS, "independent draws per estimator for the Monte Carlo checks", low=2, flag="--draws")
    grad_draws: int = setting(GRAD_DRAWS, "independent gradient draws per estimator", low=2, flag="--grad-draws")
    grad_batch: int = setting(256, "test examples the gradient check uses", low=1)
    reference_particles: int = setting(
        REFERENCE_PARTICLES, "particles of the hand_mc reference where analytic is invalid", low=1
    )
    timing_steps: int = setting(20, "steps timed per estimator (ms/step)", low=1)
    z_tol: float = setting(Z_TOL, "|z| tolerance of the statistical checks", low=0.0)
    same_noise_tol: float = setting(SAME_NOISE_TOL, "nats allowed between estimators at shared noise", low=0.0)
    estimators: list[str] = setting(
        list(DEFAULT_ESTIMATORS),
        "estimators to compare",
        item=str,
        choices=estimator_names,
        kind="estimator",
        flag="--estimators",
    )


@dataclass
class SelectionSpec:
    """Checkpoint selection (early stopping): hold out ``validation`` training digits (stratified,
    seeded: :func:`vae_pyro.data.validation_split`), evaluate their IWAE_``k`` bound every ``every``
    epochs, keep the best; stop after ``patience`` evaluations without improvement (0: never)."""

    validation: int = setting(0, "training digits held out for validation (0: none)", low=0)
    every: int = setting(5, "epochs between validation evaluations", low=1)
    k: int = setting(50, "importance samples of the validation IWAE_k bound", low=1)
    patience: int = setting(0, "stop after this many evaluations without improvement (0: never)", low=0)


#: the plain sections, each a dataclass of declared settings; [prior] and [likelihood] take ``name``
#: plus the options the named class declares
SECTION_TYPES = {
    "data": DataSpec,
    "networks": NetworksSpec,
    "guide": GuideSpec,
    "training": TrainingSpec,
    "checks": ChecksSpec,
    "selection": SelectionSpec,
}
#: section -> key -> its :class:`Option`, read from the declarations above
FIELDS: dict[str, dict[str, Option]] = {
    name: {f.name: f.metadata["option"] for f in fields(cls)} for name, cls in SECTION_TYPES.items()
}
COMPONENTS = {"prior": (PRIORS, "standard_normal"), "likelihood": (LIKELIHOODS, "bernoulli")}
SECTIONS = ("description", "data", "networks", "prior", "likelihood", "guide", "training", "checks", "selection")


@dataclass
class VAESpec:
    data: DataSpec = field(default_factory=DataSpec)
    networks: NetworksSpec = field(default_factory=NetworksSpec)
    prior: ComponentSpec = field(default_factory=lambda: ComponentSpec("standard_normal"))
    likelihood: ComponentSpec = field(default_factory=lambda: ComponentSpec("bernoulli"))
    guide: GuideSpec = field(default_factory=GuideSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    checks: ChecksSpec = field(default_factory=ChecksSpec)
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    description: str = ""
    #: where it came from (a shipped name or a path), for messages and reports
    source: str = "defaults"

    def to_dict(self) -> dict:
        return asdict(self)

    def to_raw(self) -> dict:
        """The spec as the parsed TOML it reads back from (:func:`validate`)."""
        raw = {name: asdict(getattr(self, name)) for name in SECTION_TYPES}
        raw.update(
            {
                name: {"name": c.name, **c.options}
                for name, c in (("prior", self.prior), ("likelihood", self.likelihood))
            }
        )
        return {**raw, "description": self.description}

    def to_toml(self) -> str:
        """The resolved spec as TOML (every field, defaults filled in); reads back to the same spec."""
        lines = [f"# resolved spec: {self.source}"]
        if self.description:
            lines.append(f"description = {_toml_value(self.description)}")
        for section in SECTIONS[1:]:
            lines += ["", f"[{section}]"]
            value = getattr(self, section)
            items = {"name": value.name, **value.options} if isinstance(value, ComponentSpec) else asdict(value)
            lines += [f"{k} = {_toml_value(v)}" for k, v in items.items()]
        return "\n".join(lines) + "\n"

    # --- what the rest of the package consumes -------------------------------------------------

    def model_config(self) -> VAEConfig:
        images = dataset_class(self.data.dataset)[0]
        return VAEConfig(
            hidden=tuple(self.networks.hidden),
            z_dim=self.networks.z_dim,
            prior=self.prior.name,
            likelihood=self.likelihood.name,
            prior_options=dict(self.prior.options),
            likelihood_options=dict(self.likelihood.options),
            kl_weight=self.training.kl_weight,
            activation=self.networks.activation,
            network=self.networks.network,
            image_shape=images.image_shape,
            max_value=images.max_value,
            guide=self.guide.family,
            guide_options={"rank": self.guide.rank, "flows": self.guide.flows},
        )

    def resolved_data(self) -> tuple[str, str]:
        """(binarization, transform) with ``auto`` replaced by what the likelihood takes."""
        return resolve_data(self.data.binarization, self.data.transform, LIKELIHOODS[self.likelihood.name].data_kind)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


# ----------------------------------------------------------------------------------------------
# Finding and reading specs


def _specs_dir():
    return resources.files("vae_pyro") / "specs"


def shipped_specs() -> list[str]:
    return sorted(p.name[:-5] for p in _specs_dir().iterdir() if p.name.endswith(".toml"))


def read_spec_text(name_or_path: str) -> tuple[str, str]:
    """``(text, source)`` of a shipped spec name or a path to a TOML file."""
    if name_or_path in shipped_specs():
        return (_specs_dir() / f"{name_or_path}.toml").read_text(), name_or_path
    path = Path(name_or_path)
    if path.is_dir():
        raise SpecError(f"spec file {name_or_path} is a folder; give a .toml file")
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError as err:
            raise SpecError(
                f"spec file {name_or_path} is not UTF-8 text (byte {err.start}); TOML files are UTF-8"
            ) from None
        except OSError as err:
            raise SpecError(f"spec file {name_or_path} cannot be read ({err.strerror or err})") from None
    if path.suffix == ".toml" or "/" in name_or_path:
        raise SpecError(f"spec file {name_or_path} does not exist")
    raise SpecError(f"unknown spec {name_or_path!r}; allowed: {', '.join(shipped_specs())} or a path to a .toml file")


def parse_toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"spec {source}: not valid TOML: {err}") from None


def parse_override(text: str) -> tuple[list[str], object]:
    """``"prior.components=10"`` -> (["prior", "components"], 10). The value is read as a TOML value
    (10, 0.5, true, [512, 256], "x"); a bare word that is not TOML (``mog``) is taken as a string."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise SpecError(f"--set expects SECTION.KEY=VALUE (e.g. prior.components=10), got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        if len(path) == 1 and path[0] == "description":
            raw["description"] = value
            continue
        if len(path) != 2:
            raise SpecError(
                f"--set {text!r}: the key must be SECTION.KEY with SECTION one of "
                f"{', '.join(s for s in SECTIONS if s != 'description')}"
            )
        section, key = path
        if section not in SECTIONS or section == "description":
            raise SpecError(
                f"--set {text!r}: unknown section {section!r}; allowed: "
                f"{', '.join(s for s in SECTIONS if s != 'description')}"
            )
        # a prior/likelihood the spec leaves out is the default one, whose options --set may change
        table = raw.setdefault(section, {"name": COMPONENTS[section][1]} if section in COMPONENTS else {})
        if not isinstance(table, dict):
            raise SpecError(f"--set {text!r}: [{section}] is not a table in the spec")
        # --set prior.name=X keeps the other keys (they must then suit X: a clear error if not);
        # --prior X is the way to switch to X with X's own defaults
        table[key] = value
    return raw


def replace_component(raw: dict, section: str, name: str) -> dict:
    """``--prior NAME`` / ``--likelihood NAME``: that component, with its own default options."""
    raw = copy.deepcopy(raw)
    raw[section] = {"name": name}
    return raw


# ----------------------------------------------------------------------------------------------
# Validation


def validate(raw: dict, source: str = "<spec>") -> VAESpec:
    """A :class:`VAESpec` from the parsed TOML ``raw``, or one :class:`SpecError`."""
    try:
        return _validate(raw)
    except VaePyroError as err:  # the bad value's own message, with the spec it came from
        raise SpecError(f"spec {source}: {err}") from None


def _validate(raw: dict) -> VAESpec:
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise SpecError(f"unknown section {unknown[0]!r}; allowed: {', '.join(SECTIONS)}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise SpecError(f"description must be a string, got {description!r}")
    out = {}
    for section, declared in FIELDS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise SpecError(f"[{section}] must be a table, got {table!r}")
        for key in table:
            if key not in declared:
                raise SpecError(f"unknown key {key!r} in [{section}]; allowed: {', '.join(declared)}")
        out[section] = {
            k: opt.check(f"{section}.{k}", table.get(k, copy.deepcopy(opt.default))) for k, opt in declared.items()
        }
    if not out["networks"]["hidden"]:
        raise SpecError("networks.hidden must list at least one layer size, e.g. [400] or [512, 256]")
    try:
        images = dataset_class(out["data"]["dataset"])[0]
    except DataError as err:
        raise SpecError(f"data.dataset: {err}") from None
    NETWORKS[out["networks"]["network"]].check_image_shape(images.image_shape)
    components = {}
    for section, (registry, default) in COMPONENTS.items():
        table = raw.get(section)
        if table is None:
            table = {"name": default}
        if not isinstance(table, dict):
            raise SpecError(f"[{section}] must be a table, got {table!r}")
        if "name" not in table:
            raise SpecError(f"[{section}] is missing its name; allowed: {', '.join(registry.names())}")
        name = Option(str, None, choices=registry.names).check(f"{section}.name", table["name"])
        options = resolve_options(
            section, name, registry[name].options, {k: v for k, v in table.items() if k != "name"}
        )
        components[section] = ComponentSpec(name, options)
    spec = VAESpec(
        **{name: cls(**out[name]) for name, cls in SECTION_TYPES.items()}, **components, description=description
    )
    try:
        spec.resolved_data()  # data the likelihood cannot take is a spec error, found before any work
    except DataError as err:
        kind = LIKELIHOODS[spec.likelihood.name].data_kind
        raise SpecError(
            f"likelihood {spec.likelihood.name!r} takes {kind} data (transform {DATA_KINDS[kind]!r}): {err}"
        ) from None
    return spec


#: Each command's own defaults, beneath the spec file (a spec that sets the key wins over them):
#: ``check`` trains briefly and draws less than ``compare``; ``experiment`` trains longer.
COMMAND_DEFAULTS = {
    "check": {"training.epochs": 3, "checks.draws": 40, "checks.grad_draws": 40},
    "experiment": {"training.epochs": 20},
}

#: ``--log-dir``: an output every command that measures takes (:mod:`vae_pyro.tblog`)
LOG_DIR = Option(
    str,
    None,
    flag="--log-dir",
    help="also write the results as TensorBoard scalars (per-epoch "
    "losses and bounds, every estimator's values and checks) into this folder; needs the "
    "[tensorboard] extra",
)

#: Each command's own options, the settings that are not the VAE's (so not in a spec): declared
#: once, like the spec's; the command line's flags and the API's keywords come from here
#: (:func:`command_options`).
COMMAND_OPTIONS: dict[str, dict[str, Option]] = {
    "compare": {"log_dir": LOG_DIR},
    "check": {"log_dir": LOG_DIR},
    "train": {"log_dir": LOG_DIR},
    "nll": {
        "k": Option(int, BURDA_K, low=1, flag="--k", help="importance samples per test digit (Burda et al. 2015)"),
        "examples": Option(
            int,
            1000,
            low=1,
            flag="--examples",
            help="test digits to evaluate, every (1000 / N)-th so all classes appear",
        ),
        "chunk": Option(int, NLL_CHUNK, low=1, flag="--chunk", help="samples per example held in memory at once"),
        "log_dir": LOG_DIR,
    },
    "experiment": {
        "out": Option(str, "runs/experiment", flag="--out", help="run folder"),
        "train_estimators": Option(
            list,
            ["analytic", "trace", "tmf"],
            item=str,
            choices=estimator_names,
            kind="estimator",
            flag="--train-estimators",
            help="the estimators to train one model each with (each must apply to the prior)",
        ),
        "variance_draws": Option(
            int, 50, low=2, flag="--variance-draws", help="draws per estimator for the variance plot"
        ),
        "nll_k": Option(
            int,
            1000,
            low=0,
            flag="--nll-k",
            help="importance samples per test digit for the final test NLL (IWAE_k; 0 skips it; "
            f"`vae-pyro nll` uses Burda et al.'s {BURDA_K})",
        ),
        "log_dir": LOG_DIR,
    },
    "reproduce": {
        "k": Option(int, BURDA_K, low=1, flag="--k", help="importance samples per test digit"),
        "rows": Option(list, [], item=str, flag="--rows", help="comma-separated subset of the rows (empty: all)"),
        "lr_schedule": Option(
            str,
            None,
            choices=LR_SCHEDULES,
            flag="--lr-schedule",
            help="constant, or the paper's 3^i-pass stages compressed into the epochs (unset: "
            "burda with --dataset idx:FOLDER, else constant)",
        ),
        "refine_steps": Option(
            int,
            None,
            low=0,
            flag="--refine-steps",
            help="Adam steps refining the encoder as a proposal on the test digits before a "
            "second test NLL (the amortization gap; the model is unchanged; 0: none; "
            "unset: the target's, best-nll 2000, burda2015 0)",
        ),
        "fast": Option(
            bool, False, flag="--fast", help="a smoke run: 2 epochs, validation k=5, test k=20, the target's fast rows"
        ),
        "log_dir": LOG_DIR,
    },
}


def command_options(command: str, given: dict) -> dict:
    """``command``'s own options: ``given`` checked against :data:`COMMAND_OPTIONS` (one
    :class:`SpecError` naming the option and the allowed ones) and completed with the defaults."""
    declared = COMMAND_OPTIONS.get(command, {})
    unknown = [k for k in given if k not in declared]
    if unknown:
        raise SpecError(f"unknown {command} option {unknown[0]!r}; allowed: {', '.join(declared) or 'none'}")
    return {
        k: opt.check(
            f"{command} {k}",
            list(given[k]) if isinstance(given.get(k), tuple) else given.get(k, copy.deepcopy(opt.default)),
        )
        for k, opt in declared.items()
    }


def setting_options() -> dict[str, Option]:
    """Every declared spec setting by its path (``"training.epochs"``)."""
    return {f"{section}.{key}": opt for section, opts in FIELDS.items() for key, opt in opts.items()}


def keyword_of(path: str) -> str:
    """The API keyword (and argparse dest) of a setting with a flag: the flag's name (``--z-dim`` ->
    ``z_dim``, ``--check-particles`` -> ``check_particles``)."""
    return setting_options()[path].flag.lstrip("-").replace("-", "_")


def keywords() -> dict[str, str]:
    """API keyword -> setting path, for every setting that has a flag: what the entry points (and
    the command-line options) may set by name (anything else: ``--set`` / a spec file)."""
    return {keyword_of(path): path for path, opt in setting_options().items() if opt.flag}


def command_default(command: str | None, path: str):
    """The default of the setting ``path`` under ``command``: its overlay's, else the declared one."""
    section, key = path.split(".")
    return COMMAND_DEFAULTS.get(command, {}).get(path, FIELDS[section][key].default)


def load_spec(
    name_or_path: str | None = None,
    overrides: list[str] = (),
    prior: str | None = None,
    likelihood: str | None = None,
    settings: dict | None = None,
    command: str | None = None,
) -> VAESpec:
    """``command``'s defaults (:data:`COMMAND_DEFAULTS`), then the spec ``name_or_path`` (None: the
    built-in defaults; a :class:`VAESpec`: that one), then ``settings`` ({"training.epochs": 1}, from
    command-line options or API keywords), then
    ``prior``/``likelihood`` (fresh, with their default options), then ``overrides`` (``--set``),
    validated once at the end."""
    if isinstance(name_or_path, VAESpec):
        raw, source = name_or_path.to_raw(), name_or_path.source
    elif name_or_path is None:
        raw, source = {}, "defaults"
    else:
        text, source = read_spec_text(name_or_path)
        raw = parse_toml(text, source)
    for key, value in COMMAND_DEFAULTS.get(command, {}).items():
        section, name = key.split(".")
        if isinstance(raw.setdefault(section, {}), dict):
            raw[section].setdefault(name, value)
    for key, value in (settings or {}).items():
        section, name = key.split(".")
        if not isinstance(raw.setdefault(section, {}), dict):
            raise SpecError(f"spec {source}: [{section}] must be a table, got {raw[section]!r}")
        raw[section][name] = value
    if prior is not None:
        raw = replace_component(raw, "prior", prior)
    if likelihood is not None:
        raw = replace_component(raw, "likelihood", likelihood)
    raw = apply_overrides(raw, list(overrides))
    spec = validate(raw, source)
    spec.source = source
    return spec
