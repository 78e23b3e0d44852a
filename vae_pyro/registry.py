"""A tiny name -> class registry, the way ``torch.distributions.kl.register_kl`` keys KL functions:
adding a prior, likelihood or estimator is one decorated class, and every lookup of an unknown name
fails with the list of valid ones."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown registry name; ``str()`` is a one-line message listing the allowed names."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


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
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; allowed: {', '.join(self._entries)}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)


class Option:
    """One declared option of a registered class (a prior's ``components``, a likelihood's ``scale``):
    its type, default and lower bound, so a spec file is validated against the class itself and
    ``vae-pyro spec show`` can print every option with its value.

    ``low`` is inclusive for ints and exclusive for floats (a scale must be > 0, a count >= 1)."""

    def __init__(self, type_: type, default, low=None, help: str = "", choices=None, item: type | None = None,
                 high=None):
        self.type, self.default, self.low, self.help = type_, default, low, help
        #: inclusive upper bound (a seed fits in 32 bits)
        self.high = high
        #: allowed values (a str option), or a callable returning them (a registry's names)
        self.choices = choices
        #: element type of a list option
        self.item = item

    def allowed(self) -> list | None:
        return list(self.choices() if callable(self.choices) else self.choices) if self.choices else None

    def check(self, where: str, value):
        """``value`` converted to the option's type, or ``ValueError`` naming ``where`` and the rule."""
        if self.type is list:
            if not isinstance(value, list):
                raise ValueError(f"{where} must be a list, got {value!r} ({_type_name(type(value))})")
            inner = Option(self.item or str, None, self.low, choices=self.choices)
            return [inner.check(f"{where}[{i}]", v) for i, v in enumerate(value)]
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # TOML writes 2 for 2.0; an int is an exact float here
        if not isinstance(value, self.type) or isinstance(value, bool) and self.type is not bool:
            raise ValueError(f"{where} must be {_type_name(self.type)}, got {value!r} ({_type_name(type(value))})")
        allowed = self.allowed()
        if allowed is not None and value not in allowed:
            raise ValueError(f"{where}: unknown value {value!r}; allowed: {', '.join(map(str, allowed))}")
        if self.low is not None:
            bad = value < self.low if self.type is int else not value > self.low
            if bad:
                rule = f">= {self.low}" if self.type is int else f"> {self.low:g}"
                raise ValueError(f"{where} must be {rule}, got {value!r}")
        if self.high is not None and value > self.high:
            raise ValueError(f"{where} must be <= {self.high}, got {value!r}")
        return value


def _type_name(t: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            list: "a list", dict: "a table"}.get(t, t.__name__)


def resolve_options(kind: str, name: str, declared: dict[str, Option], given: dict) -> dict:
    """``given`` checked against ``declared`` and completed with the defaults. Unknown keys and wrong
    types raise ``ValueError`` with one line that names the key and the allowed ones."""
    unknown = [k for k in given if k not in declared]
    if unknown:
        allowed = ", ".join(declared) if declared else "none (it takes no options)"
        raise ValueError(f"unknown option {unknown[0]!r} for {kind} {name!r}; allowed: {allowed}")
    return {k: opt.check(f"{kind}.{k}", given.get(k, opt.default)) for k, opt in declared.items()}
