"""Data loading, binarization and batching (vae_pyro.data)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_pyro.data import (
    BINARIZATIONS,
    Batches,
    DataError,
    check_binary,
    load_dataset,
    load_mnist5k,
    load_mnist_idx,
    prepare,
    read_idx,
)


@pytest.fixture(scope="module")
def mnist5k():
    return load_mnist5k()


# ----------------------------------------------------------------------------------------------
# The embedded 5,000 digits


def test_mnist5k_shapes_and_dtypes(mnist5k):
    assert mnist5k.name == "mnist5k"
    assert mnist5k.train_x.shape == (4000, 784)
    assert mnist5k.test_x.shape == (1000, 784)
    assert mnist5k.train_x.dtype == torch.uint8
    assert mnist5k.test_x.dtype == torch.uint8
    assert mnist5k.train_y.shape == (4000,)
    assert mnist5k.test_y.shape == (1000,)
    assert mnist5k.num_pixels == 784
    # real digits: grey levels span the full range, and most pixels are background
    assert int(mnist5k.train_x.min()) == 0 and int(mnist5k.train_x.max()) == 255
    assert 0.05 < mnist5k.train_x.float().mean().item() / 255 < 0.25


def test_mnist5k_labels_balanced(mnist5k):
    assert torch.bincount(mnist5k.train_y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(mnist5k.test_y, minlength=10).tolist() == [100] * 10
    assert int(mnist5k.train_y.min()) == 0 and int(mnist5k.train_y.max()) == 9


def test_mnist5k_split_is_deterministic(mnist5k):
    again = load_mnist5k()
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(mnist5k, field), getattr(again, field)), field


def test_mnist5k_train_test_disjoint(mnist5k):
    train_rows = {bytes(row) for row in mnist5k.train_x.numpy()}
    test_rows = [bytes(row) for row in mnist5k.test_x.numpy()]
    assert len(test_rows) == 1000
    assert not any(row in train_rows for row in test_rows)
    # together they are the 5,000 distinct images of the file (nothing dropped or duplicated)
    assert len(train_rows | set(test_rows)) == 5000


def test_load_dataset_default_is_mnist5k(mnist5k):
    d = load_dataset()
    assert d.name == "mnist5k"
    assert torch.equal(d.train_x, mnist5k.train_x)


def test_unknown_dataset_name():
    with pytest.raises(DataError) as err:
        load_dataset("cifar10")
    msg = str(err.value)
    assert "cifar10" in msg
    assert "mnist5k" in msg


# ----------------------------------------------------------------------------------------------
# Binarization


def test_static_binarization(mnist5k):
    x = mnist5k.train_x
    a, b = prepare(x, "static"), prepare(x, "static")
    assert a.shape == x.shape
    assert a.dtype.is_floating_point
    assert torch.equal(a, b)  # fixed seed: the same binary digits every call
    assert bool(((a == 0) | (a == 1)).all())
    # E[bernoulli(x/255)] = x/255; with 3.1M pixels the s.e. of the mean is < 3e-4, so 0.01 is ~30 s.e.
    grey_mean = (x.double() / 255).mean().item()
    assert abs(a.double().mean().item() - grey_mean) < 0.01
    # it is a random draw, not a threshold: some dark-ish pixels are on, some bright-ish are off
    assert not torch.equal(a, (x > 127).float())
    # and it does not copy the grey levels' zeros wrongly: black pixels (p = 0) are always 0 ...
    assert bool((a[x == 0] == 0).all())
    # ... and white pixels (p = 1) always 1
    assert bool((a[x == 255] == 1).all())


def test_threshold_binarization(mnist5k):
    x = mnist5k.test_x
    t = prepare(x, "threshold")
    assert t.dtype.is_floating_point
    assert torch.equal(t, (x > 127).float())


@pytest.mark.parametrize("binarization", ["none", "dynamic"])
def test_grey_levels(mnist5k, binarization):
    x = mnist5k.test_x
    g = prepare(x, binarization)
    assert g.dtype.is_floating_point
    assert float(g.min()) >= 0.0 and float(g.max()) <= 1.0
    assert float(g.max()) == 1.0
    assert torch.equal(g, x.float() / 255.0)
    # not binary: there are grey levels strictly between 0 and 1
    assert bool(((g > 0) & (g < 1)).any())


def test_unknown_binarization():
    x = torch.zeros(2, 784, dtype=torch.uint8)
    with pytest.raises(DataError) as err:
        prepare(x, "otsu")
    msg = str(err.value)
    assert "'otsu'" in msg
    for allowed in BINARIZATIONS:
        assert allowed in msg


def test_check_binary_accepts_binary():
    check_binary(torch.tensor([[0.0, 1.0, 1.0, 0.0]]))  # no exception


def test_check_binary_rejects_grey():
    x = torch.tensor([[0.0, 1.0, 0.5, 1.0]])
    with pytest.raises(DataError) as err:
        check_binary(x, "my data")
    msg = str(err.value)
    assert "0.5" in msg
    assert "binarization" in msg
    assert "my data" in msg


# ----------------------------------------------------------------------------------------------
# Batches


def test_dynamic_batches_redraw():
    grey = torch.full((64, 784), 0.5)
    batches = Batches(grey, 16, shuffle=False, dynamic=True)
    first, second = list(batches), list(batches)
    assert len(first) == len(second) == 4
    for b in first + second:
        assert b.shape == (16, 784)
        assert bool(((b == 0) | (b == 1)).all())
    # p = 0.5 per pixel: two passes agreeing on all 50k pixels has probability 2^-50176
    assert not torch.equal(torch.cat(first), torch.cat(second))
    # and each draw is a fair coin: mean 0.5 with s.e. 0.5/sqrt(50176) ~ 0.0022
    assert abs(torch.cat(first).mean().item() - 0.5) < 0.02


def test_dynamic_batches_follow_grey_levels(mnist5k):
    grey = prepare(mnist5k.test_x[:200], "dynamic")
    out = torch.cat(list(Batches(grey, 50, shuffle=False, dynamic=True)))
    assert bool((out[grey == 0] == 0).all())
    assert bool((out[grey == 1] == 1).all())


def test_static_batches_are_not_redrawn():
    x = torch.rand(10, 3)
    out = torch.cat(list(Batches(x, 5, shuffle=False)))
    assert torch.equal(out, x)


@pytest.mark.parametrize(
    "n, batch_size, drop_last, lengths",
    [
        (10, 3, True, [3, 3, 3]),
        (10, 3, False, [3, 3, 3, 1]),
        (9, 3, True, [3, 3, 3]),
        (9, 3, False, [3, 3, 3]),
        (2, 3, True, []),
        (2, 3, False, [2]),
    ],
)
def test_batch_lengths(n, batch_size, drop_last, lengths):
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    batches = Batches(x, batch_size, drop_last=drop_last, generator=torch.Generator().manual_seed(0))
    assert len(batches) == len(lengths)
    got = list(batches)
    assert [len(b) for b in got] == lengths
    if not drop_last:
        # every row served exactly once
        assert sorted(torch.cat(got).flatten().tolist()) == list(range(n))


def test_shuffle_is_a_permutation_and_seeded():
    x = torch.arange(100, dtype=torch.float32).unsqueeze(1)
    a = torch.cat(list(Batches(x, 10, generator=torch.Generator().manual_seed(1)))).flatten()
    b = torch.cat(list(Batches(x, 10, generator=torch.Generator().manual_seed(1)))).flatten()
    assert sorted(a.tolist()) == list(range(100))
    assert torch.equal(a, b)
    assert not torch.equal(a, x.flatten())  # actually shuffled


def test_bad_batch_size():
    with pytest.raises(DataError, match="batch size"):
        Batches(torch.zeros(4, 2), 0)


def _check_device(device):
    grey = torch.full((8, 5), 0.5, device=device)
    for dynamic in (False, True):
        for b in Batches(grey, 4, dynamic=dynamic, generator=torch.Generator().manual_seed(0)):
            assert b.device == grey.device
    x = torch.randint(0, 256, (6, 5), dtype=torch.uint8, device=device)
    for binarization in BINARIZATIONS:
        assert prepare(x, binarization).device == x.device


def test_batches_stay_on_cpu():
    _check_device(torch.device("cpu"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_stay_on_cuda():
    _check_device(torch.device("cuda"))
    # the static draw is made on the CPU, so it is the same on every device
    x = torch.randint(0, 256, (6, 5), dtype=torch.uint8)
    assert torch.equal(prepare(x.cuda(), "static").cpu(), prepare(x, "static"))


# ----------------------------------------------------------------------------------------------
# IDX files


def _idx_bytes(array: np.ndarray, dtype_code: int = 0x08) -> bytes:
    header = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(">" + "i" * array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def _fake_mnist(n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, (n_train,), dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, (n_test,), dtype=np.uint8),
    }


def _write_folder(folder: Path, arrays: dict, gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        _write(folder / stem, _idx_bytes(array), gz)
    return folder


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_round_trip(tmp_path, gz):
    arrays = _fake_mnist()
    folder = _write_folder(tmp_path / "mnist", arrays, gz)
    for d in (load_mnist_idx(folder), load_dataset(f"idx:{folder}")):
        assert d.train_x.shape == (12, 784) and d.test_x.shape == (5, 784)
        assert d.train_x.dtype == torch.uint8 and d.test_x.dtype == torch.uint8
        assert d.train_y.dtype == torch.int64 and d.test_y.dtype == torch.int64
        assert d.num_pixels == 784
        np.testing.assert_array_equal(d.train_x.numpy(), arrays["train-images-idx3-ubyte"].reshape(12, 784))
        np.testing.assert_array_equal(d.test_x.numpy(), arrays["t10k-images-idx3-ubyte"].reshape(5, 784))
        np.testing.assert_array_equal(d.train_y.numpy(), arrays["train-labels-idx1-ubyte"])
        np.testing.assert_array_equal(d.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])
        # the loaded tensors are writable copies, not views of a read-only buffer
        d.train_x[0, 0] = 7


def test_idx_label_shape(tmp_path):
    folder = _write_folder(tmp_path / "mnist", _fake_mnist(), gz=False)
    d = load_mnist_idx(folder)
    assert d.train_y.shape == (12,)
    assert d.test_y.shape == (5,)


def test_idx_mixed_plain_and_gz(tmp_path):
    arrays = _fake_mnist(seed=3)
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, (stem, array) in enumerate(arrays.items()):
        _write(folder / stem, _idx_bytes(array), gz=bool(i % 2))
    d = load_mnist_idx(folder)
    np.testing.assert_array_equal(d.train_y.numpy(), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(d.test_x.numpy(), arrays["t10k-images-idx3-ubyte"].reshape(5, 784))


def test_read_idx_exact_values(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = _write(tmp_path / "a-idx3-ubyte", _idx_bytes(a), gz=False)
    np.testing.assert_array_equal(read_idx(p), a)


@pytest.mark.parametrize("missing", ["train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"])
def test_idx_missing_file(tmp_path, missing):
    arrays = _fake_mnist()
    del arrays[missing]
    folder = _write_folder(tmp_path / "m", arrays, gz=False)
    with pytest.raises(DataError) as err:
        load_mnist_idx(folder)
    assert missing in str(err.value)
    assert "missing" in str(err.value)


def test_idx_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"idx:{tmp_path / 'nowhere'}")


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError) as err:
        read_idx(tmp_path / "absent-idx1-ubyte")
    assert "absent-idx1-ubyte" in str(err.value)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_bad_magic(tmp_path, gz):
    data = b"\x01\x02" + _idx_bytes(np.zeros(3, np.uint8))[2:]
    p = _write(tmp_path / "bad-idx1-ubyte", data, gz)
    with pytest.raises(DataError) as err:
        read_idx(p)
    assert "bad magic" in str(err.value)
    assert p.name in str(err.value)


def test_idx_wrong_dtype(tmp_path):
    p = _write(tmp_path / "f-idx1-ubyte", _idx_bytes(np.zeros(3, np.uint8), dtype_code=0x0D), gz=False)
    with pytest.raises(DataError) as err:
        read_idx(p)
    msg = str(err.value)
    assert "0x0d" in msg
    assert "0x08" in msg


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_truncated_data(tmp_path, gz):
    data = _idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-10]
    p = _write(tmp_path / "t-idx3-ubyte", data, gz)
    with pytest.raises(DataError) as err:
        read_idx(p)
    msg = str(err.value)
    assert "3136 bytes" in msg  # the header's 4*28*28
    assert "file has 3126" in msg


def test_idx_truncated_header(tmp_path):
    p = _write(tmp_path / "h-idx3-ubyte", bytes([0, 0, 8, 3]) + struct.pack(">i", 4), gz=False)
    with pytest.raises(DataError, match="truncated header"):
        read_idx(p)


def test_idx_extra_data(tmp_path):
    p = _write(tmp_path / "x-idx1-ubyte", _idx_bytes(np.zeros(3, np.uint8)) + b"\x00", gz=False)
    with pytest.raises(DataError, match="3 bytes, file has 4"):
        read_idx(p)


def test_idx_corrupt_gzip(tmp_path):
    p = tmp_path / "c-idx1-ubyte.gz"
    p.write_bytes(b"this is not gzip data")
    with pytest.raises(DataError, match="malformed IDX file"):
        read_idx(p)


def test_idx_count_mismatch(tmp_path):
    arrays = _fake_mnist()
    arrays["t10k-labels-idx1-ubyte"] = arrays["t10k-labels-idx1-ubyte"][:4]  # 5 images, 4 labels
    folder = _write_folder(tmp_path / "m", arrays, gz=True)
    with pytest.raises(DataError) as err:
        load_mnist_idx(folder)
    msg = str(err.value)
    assert "test" in msg
    assert "(5, 28, 28)" in msg and "(4,)" in msg


def test_idx_images_wrong_rank(tmp_path):
    arrays = _fake_mnist()
    arrays["train-images-idx3-ubyte"] = arrays["train-images-idx3-ubyte"].reshape(12, 784)
    folder = _write_folder(tmp_path / "m", arrays, gz=False)
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte: 2 dimensions, expected 1 \(labels\) or 3 \(images\)"
    ):
        load_mnist_idx(folder)


def test_idx_train_test_image_sizes_must_agree(tmp_path):
    arrays = _fake_mnist()
    arrays["t10k-images-idx3-ubyte"] = arrays["t10k-images-idx3-ubyte"][:, :20, :20].copy()
    folder = _write_folder(tmp_path / "mnist", arrays, gz=False)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte holds 20x20 images"):
        load_mnist_idx(folder)


def test_empty_idx_folder_name_is_rejected():
    with pytest.raises(DataError, match="unknown dataset 'idx:'"):
        load_dataset("idx:")


def test_dynamic_batches_reject_raw_intensities():
    with pytest.raises(DataError, match="grey levels in \\[0, 1\\]"):
        Batches(torch.full((4, 3), 200, dtype=torch.uint8), 2, dynamic=True)
