"""The library's errors for bad input: every one derives from :class:`VaePyroError`, and its
``str()`` is one line naming the bad value (a setting as ``section.key``, a file, a name) and the
allowed ones. The command line prints exactly these as one line with exit 2 (naming the flag for a
setting it has one for); anything else raised from our code, ``ValueError`` and ``TypeError``
included, is a bug: a traceback, exit 1.

Each concrete type also keeps the built-in base it had before this module existed (``ValueError``,
``KeyError``, ``RuntimeError``, ``NotImplementedError``), so a user's ``except ValueError`` around a
library call goes on catching what it caught.
"""

from __future__ import annotations


class VaePyroError(Exception):
    """Bad input to the library (a setting, a file, a name, data); never a bug in it."""


class SpecError(VaePyroError, ValueError):
    """A bad spec or setting; names the spec, the ``section.key`` or option and the allowed values."""


class DataError(VaePyroError, ValueError):
    """Bad or missing data; the message names the file or value and says what was expected."""


class CheckpointError(VaePyroError, ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


class OutputError(VaePyroError, ValueError):
    """An output path that cannot be used; ``str()`` is one line naming the option and the path."""


class MemoryBoundError(VaePyroError, ValueError):
    """A run that cannot fit in the device's memory; the message names the setting to lower."""


class NetworkError(VaePyroError, ValueError):
    """A network that cannot be built for the images asked (the message names the shape and the rule)."""


class DeviceError(VaePyroError, ValueError):
    """A device that is not there (``cuda`` without CUDA)."""


class TrainingError(VaePyroError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says where and what to try."""


class NoClosedFormError(VaePyroError, NotImplementedError):
    """The analytic loss was asked for a KL that has no closed form; the message names the prior and
    says which estimators to use instead."""


class UnknownNameError(VaePyroError, KeyError):
    """An unknown registry name; ``str()`` is a one-line message listing the allowed names."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]
