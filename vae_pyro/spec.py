"""A VAE, declared: a TOML spec file, validated into dataclasses.

    [data]        dataset = "mnist5k"        binarization = "auto"   transform = "auto"
    [networks]    hidden = [400]             z_dim = 20              activation = "relu"
    [prior]       name = "mog"               components = 10         (the prior's own options)
    [likelihood]  name = "bernoulli"                                 (the likelihood's own options)
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
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from .data import BINARIZATION_CHOICES, DATA_KINDS, TRANSFORMS, DataError, resolve_data
from .datasets import dataset_class, dataset_names
from .estimators import DEFAULT_ESTIMATORS, estimator_names
from .likelihoods import LIKELIHOODS
from .networks import ACTIVATIONS, NETWORKS
from .priors import PRIORS
from .registry import Option, resolve_options
from .train import DEVICES


#: NumPy's seeds are 32-bit
SEED_MAX = 2**32 - 1


class SpecError(ValueError):
    """A bad spec; ``str()`` is one line naming the spec, the bad key or value and the allowed ones."""


#: the plain sections and their fields; [prior] and [likelihood] take ``name`` plus the options the
#: named class declares
FIELDS: dict[str, dict[str, Option]] = {
    "data": {
        "dataset": Option(str, "mnist5k", help="one of " + ", ".join(dataset_names())),
        "binarization": Option(str, "auto", choices=BINARIZATION_CHOICES),
        "transform": Option(str, "auto", choices=TRANSFORMS),
    },
    "networks": {
        "hidden": Option(list, [400], low=1, item=int, help="hidden layer sizes"),
        "z_dim": Option(int, 20, low=1, help="latent dimensions"),
        "activation": Option(str, "relu", choices=tuple(ACTIVATIONS), help="nonlinearity between layers"),
        "network": Option(str, "mlp", choices=NETWORKS.names, help="encoder and decoder (vae_pyro.networks)"),
    },
    "training": {
        "epochs": Option(int, 10, low=0),
        "batch_size": Option(int, 128, low=1),
        "lr": Option(float, 1e-3, low=0.0),
        "seed": Option(int, 0, low=0, high=SEED_MAX),
        "estimator": Option(str, "analytic", choices=estimator_names),
        "kl_weight": Option(float, 1.0, low=0.0, help="beta: weight of KL(q || p), the same in every estimator"),
        "kl_anneal_epochs": Option(int, 0, low=0, help="linear warm-up of beta from ~0 over this many epochs"),
        "device": Option(str, "auto", choices=DEVICES),
    },
    "checks": {
        "particles": Option(int, 1, low=1),
        "draws": Option(int, 100, low=2),
        "grad_draws": Option(int, 50, low=2),
        "grad_batch": Option(int, 256, low=1),
        "reference_particles": Option(int, 8, low=1, help="particles of the hand_mc reference where analytic is invalid"),
        "timing_steps": Option(int, 20, low=1),
        "z_tol": Option(float, 4.0, low=0.0),
        "same_noise_tol": Option(float, 1e-8, low=0.0),
        "estimators": Option(list, list(DEFAULT_ESTIMATORS), item=str, choices=estimator_names),
    },
    "selection": {
        "validation": Option(int, 0, low=0, help="training digits held out for validation (0: none)"),
        "every": Option(int, 5, low=1, help="epochs between validation evaluations"),
        "k": Option(int, 50, low=1, help="importance samples of the validation IWAE_k bound"),
        "patience": Option(int, 0, low=0, help="stop after this many evaluations without improvement (0: never)"),
    },
}
COMPONENTS = {"prior": (PRIORS, "standard_normal"), "likelihood": (LIKELIHOODS, "bernoulli")}
SECTIONS = ("description", "data", "networks", "prior", "likelihood", "training", "checks", "selection")


@dataclass
class DataSpec:
    dataset: str = "mnist5k"
    binarization: str = "auto"
    transform: str = "auto"


@dataclass
class NetworksSpec:
    hidden: list[int] = field(default_factory=lambda: [400])
    z_dim: int = 20
    activation: str = "relu"
    network: str = "mlp"


@dataclass
class ComponentSpec:
    """A prior or likelihood: its registry name and its options (all of them, defaults filled in)."""

    name: str
    options: dict = field(default_factory=dict)


@dataclass
class TrainingSpec:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    estimator: str = "analytic"
    kl_weight: float = 1.0
    kl_anneal_epochs: int = 0
    device: str = "auto"


@dataclass
class ChecksSpec:
    particles: int = 1
    draws: int = 100
    grad_draws: int = 50
    grad_batch: int = 256
    reference_particles: int = 8
    timing_steps: int = 20
    z_tol: float = 4.0
    same_noise_tol: float = 1e-8
    estimators: list[str] = field(default_factory=lambda: list(DEFAULT_ESTIMATORS))


@dataclass
class SelectionSpec:
    """Checkpoint selection (early stopping): hold out ``validation`` training digits (stratified,
    seeded: :func:`vae_pyro.data.validation_split`), evaluate their IWAE_``k`` bound every ``every``
    epochs, keep the best; stop after ``patience`` evaluations without improvement (0: never)."""

    validation: int = 0
    every: int = 5
    k: int = 50
    patience: int = 0


@dataclass
class VAESpec:
    data: DataSpec = field(default_factory=DataSpec)
    networks: NetworksSpec = field(default_factory=NetworksSpec)
    prior: ComponentSpec = field(default_factory=lambda: ComponentSpec("standard_normal"))
    likelihood: ComponentSpec = field(default_factory=lambda: ComponentSpec("bernoulli"))
    training: TrainingSpec = field(default_factory=TrainingSpec)
    checks: ChecksSpec = field(default_factory=ChecksSpec)
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    description: str = ""
    #: where it came from (a shipped name or a path), for messages and reports
    source: str = "defaults"

    def to_dict(self) -> dict:
        return asdict(self)

    def to_toml(self) -> str:
        """The resolved spec as TOML (every field, defaults filled in); reads back to the same spec."""
        lines = [f"# resolved spec: {self.source}"]
        if self.description:
            lines.append(f"description = {_toml_value(self.description)}")
        for section in ("data", "networks", "prior", "likelihood", "training", "checks", "selection"):
            lines += ["", f"[{section}]"]
            value = getattr(self, section)
            items = ({"name": value.name, **value.options} if isinstance(value, ComponentSpec) else asdict(value))
            lines += [f"{k} = {_toml_value(v)}" for k, v in items.items()]
        return "\n".join(lines) + "\n"

    # --- what the rest of the package consumes -------------------------------------------------

    def model_config(self):
        from .model import VAEConfig

        images = dataset_class(self.data.dataset)[0]
        return VAEConfig(hidden=tuple(self.networks.hidden), z_dim=self.networks.z_dim,
                         prior=self.prior.name, likelihood=self.likelihood.name,
                         prior_options=dict(self.prior.options), likelihood_options=dict(self.likelihood.options),
                         kl_weight=self.training.kl_weight, activation=self.networks.activation,
                         network=self.networks.network, image_shape=images.image_shape, max_value=images.max_value)

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
            raise SpecError(f"spec file {name_or_path} is not UTF-8 text (byte {err.start}); TOML files are UTF-8") from None
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
            raise SpecError(f"--set {text!r}: the key must be SECTION.KEY with SECTION one of "
                            f"{', '.join(s for s in SECTIONS if s != 'description')}")
        section, key = path
        if section not in SECTIONS or section == "description":
            raise SpecError(f"--set {text!r}: unknown section {section!r}; allowed: "
                            f"{', '.join(s for s in SECTIONS if s != 'description')}")
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
    except (ValueError, KeyError) as err:
        raise SpecError(f"spec {source}: {err}") from None


def _validate(raw: dict) -> VAESpec:
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section {unknown[0]!r}; allowed: {', '.join(SECTIONS)}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"description must be a string, got {description!r}")
    out = {}
    for section, fields in FIELDS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise ValueError(f"[{section}] must be a table, got {table!r}")
        for key in table:
            if key not in fields:
                raise ValueError(f"unknown key {key!r} in [{section}]; allowed: {', '.join(fields)}")
        out[section] = {k: opt.check(f"{section}.{k}", table.get(k, copy.deepcopy(opt.default)))
                        for k, opt in fields.items()}
    if not out["networks"]["hidden"]:
        raise ValueError("networks.hidden must list at least one layer size, e.g. [400] or [512, 256]")
    try:
        images = dataset_class(out["data"]["dataset"])[0]
    except DataError as err:
        raise ValueError(f"data.dataset: {err}") from None
    NETWORKS[out["networks"]["network"]].check_image_shape(images.image_shape)
    components = {}
    for section, (registry, default) in COMPONENTS.items():
        table = raw.get(section)
        if table is None:
            table = {"name": default}
        if not isinstance(table, dict):
            raise ValueError(f"[{section}] must be a table, got {table!r}")
        if "name" not in table:
            raise ValueError(f"[{section}] is missing its name; allowed: {', '.join(registry.names())}")
        name = Option(str, None, choices=registry.names).check(f"{section}.name", table["name"])
        options = resolve_options(section, name, registry[name].options,
                                  {k: v for k, v in table.items() if k != "name"})
        components[section] = ComponentSpec(name, options)
    spec = VAESpec(
        data=DataSpec(**out["data"]), networks=NetworksSpec(**out["networks"]),
        prior=components["prior"], likelihood=components["likelihood"],
        training=TrainingSpec(**out["training"]), checks=ChecksSpec(**out["checks"]),
        selection=SelectionSpec(**out["selection"]), description=description,
    )
    try:
        spec.resolved_data()  # data the likelihood cannot take is a spec error, found before any work
    except DataError as err:
        kind = LIKELIHOODS[spec.likelihood.name].data_kind
        raise ValueError(f"likelihood {spec.likelihood.name!r} takes {kind} data "
                         f"(transform {DATA_KINDS[kind]!r}): {err}") from None
    return spec


#: Each command's own defaults, beneath the spec file (a spec that sets the key wins over them):
#: ``check`` trains briefly and draws less than ``compare``; ``experiment`` trains longer.
COMMAND_DEFAULTS = {
    "check": {"training.epochs": 3, "checks.draws": 40, "checks.grad_draws": 40},
    "experiment": {"training.epochs": 20},
}


def load_spec(name_or_path: str | None = None, overrides: list[str] = (), prior: str | None = None,
              likelihood: str | None = None, fields: dict | None = None, command: str | None = None) -> VAESpec:
    """``command``'s defaults (:data:`COMMAND_DEFAULTS`), then the spec ``name_or_path`` (None: the
    built-in defaults), then ``fields`` ({"training.epochs": 1}, from command-line options), then
    ``prior``/``likelihood`` (fresh, with their default options), then ``overrides`` (``--set``),
    validated once at the end."""
    if name_or_path is None:
        raw, source = {}, "defaults"
    else:
        text, source = read_spec_text(name_or_path)
        raw = parse_toml(text, source)
    for key, value in COMMAND_DEFAULTS.get(command, {}).items():
        section, name = key.split(".")
        if isinstance(raw.setdefault(section, {}), dict):
            raw[section].setdefault(name, value)
    for key, value in (fields or {}).items():
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
