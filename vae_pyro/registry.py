"""A tiny name -> class registry, the way ``torch.distributions.kl.register_kl`` keys KL functions:
adding a prior, likelihood or estimator is one decorated class, and every lookup of an unknown name
fails with the list of valid ones."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import SpecError, UnknownNameError  # noqa: F401  (UnknownNameError: re-exported)

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            obj.name = name  # type: ignore[attr-defined]
            return obj

        return decorator

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self._entries)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)


class Option:
    """One declared setting: a spec field (``training.epochs``), a registered class's option (a prior's
    ``components``) or a command's own option (``nll``'s ``k``): its type, default, bounds or allowed
    names and help, written once; validation, the command-line flag, ``vae-pyro spec show`` and the
    API keywords are derived from it.

    ``low`` is inclusive for ints and exclusive for floats (a scale must be > 0, a count >= 1);
    ``high`` is inclusive. ``choices``: the allowed values, or a callable returning them (a
    registry's names), with ``kind`` naming what they are ("estimator"). ``item``: the element type
    of a list. ``flag``: the command-line flag that sets it (None: only ``--set``); ``example``: a
    value as the command line writes it, for messages."""

    def __init__(
        self,
        type_: type,
        default,
        low=None,
        help: str = "",
        choices=None,
        item: type | None = None,
        high=None,
        flag: str | None = None,
        kind: str | None = None,
        example: str | None = None,
    ):
        self.type, self.default, self.low, self.high, self.help = type_, default, low, high, help
        self.choices, self.item, self.flag, self.kind, self.example = choices, item, flag, kind, example

    def allowed(self) -> list | None:
        return list(self.choices() if callable(self.choices) else self.choices) if self.choices else None

    def rule(self) -> str:
        """The bounds in words: "an integer >= 1", "a number > 0", "an integer in 0..4294967295"."""
        t = self.item if self.type is list else self.type
        name = _type_name(t or str)
        if self.low is not None and self.high is not None:
            return f"{name} in {self.low}..{self.high}"
        if self.low is not None:
            return f"{name} >= {self.low}" if t is int else f"{name} > {self.low:g}"
        return name

    def check(self, where: str, value):
        """``value`` converted to the option's type, or a :class:`~vae_pyro.errors.SpecError` naming
        ``where`` and the rule. None is the value of an option whose default is None (unset)."""
        if value is None and self.default is None:
            return None
        if self.type is list:
            if not isinstance(value, list):
                raise SpecError(f"{where} must be a list, got {value!r} ({_type_name(type(value))})")
            inner = Option(self.item or str, None, self.low, choices=self.choices, kind=self.kind)
            return [inner.check(f"{where}[{i}]", v) for i, v in enumerate(value)]
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # TOML writes 2 for 2.0; an int is an exact float here
        if not isinstance(value, self.type) or isinstance(value, bool) and self.type is not bool:
            raise SpecError(f"{where} must be {_type_name(self.type)}, got {value!r} ({_type_name(type(value))})")
        allowed = self.allowed()
        if allowed is not None and value not in allowed:
            raise SpecError(
                f"{where}: unknown {self.kind or 'value'} {value!r}; allowed: {', '.join(map(str, allowed))}"
            )
        if self.low is not None and (value < self.low if self.type is int else not value > self.low):
            bound = f">= {self.low}" if self.type is int else f"> {self.low:g}"
            raise SpecError(f"{where} must be {bound}, got {value!r}")
        if self.high is not None and value > self.high:
            raise SpecError(f"{where} must be <= {self.high}, got {value!r}")
        return value


def _type_name(t: type) -> str:
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }.get(t, t.__name__)


def resolve_options(kind: str, name: str, declared: dict[str, Option], given: dict) -> dict:
    """``given`` checked against ``declared`` and completed with the defaults. Unknown keys and wrong
    types raise :class:`~vae_pyro.errors.SpecError` with one line that names the key and the allowed ones."""
    unknown = [k for k in given if k not in declared]
    if unknown:
        allowed = ", ".join(declared) if declared else "none (it takes no options)"
        raise SpecError(f"unknown option {unknown[0]!r} for {kind} {name!r}; allowed: {allowed}")
    return {k: opt.check(f"{kind}.{k}", given.get(k, opt.default)) for k, opt in declared.items()}
