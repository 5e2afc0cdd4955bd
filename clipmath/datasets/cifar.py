"""CIFAR-10 and CIFAR-100 from a user's folder in the standard python-pickle format.

The two datasets of the GCA paper's standard and noisy settings (Chen et al. 2024, the CIFAR-10
and CIFAR-100 results on its poster) are not shipped by any package here, so they are read from
a folder the user downloaded once, in the format of the "python version" archives of Krizhevsky (2009):

* CIFAR-10, ``cifar-10-batches-py/``: ``data_batch_1`` ... ``data_batch_5`` (10,000 images
  each) and ``test_batch``, plus ``batches.meta`` (``label_names``);
* CIFAR-100, ``cifar-100-python/``: ``train`` (50,000) and ``test`` (10,000), plus ``meta``
  (``fine_label_names``, ``coarse_label_names``).

Each file is a pickled dict (written by Python 2, so its keys are bytes) holding ``data``, a
uint8 array (N, 3072) whose rows are the 1024 red, then green, then blue pixels of a 32x32
image in row-major order, and ``labels`` (CIFAR-10) or ``fine_labels`` and ``coarse_labels``
(CIFAR-100), lists of N ints.

Unpickling runs code named by the file, so the files are read by a restricted unpickler that
resolves only the few NumPy names an array needs (:class:`_ArrayUnpickler`); anything else is
refused with a ``ValueError`` naming the file. The data are never downloaded at run time.

* :func:`load_cifar`: images uint8 (N, 3, 32, 32) and labels int64 (N,) of one split;
* :func:`cifar_label_names`: the class names from the meta file;
* :func:`find_cifar_folder`: the folder holding the batch files, given it or its parent.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

#: Files of each split, per dataset.
_FILES = {
    "cifar10": {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    "cifar100": {"train": ("train",), "test": ("test",)},
}
_META = {"cifar10": "batches.meta", "cifar100": "meta"}
#: The folder each archive unpacks to.
_SUBFOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
#: Classes per dataset and label kind.
N_CLASSES = {("cifar10", "fine"): 10, ("cifar100", "fine"): 100, ("cifar100", "coarse"): 20}
SPLITS = ("train", "test")
SIDE = 32
_PIXELS = 3 * SIDE * SIDE

# The globals a pickled NumPy array refers to (NumPy 2 moved numpy.core to numpy._core), and
# the codec that protocol-2 pickles written by Python 3 use for bytes (a pure function).
_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, strings, bytes, numbers and NumPy arrays, nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """The dict in one CIFAR file, its keys as str.

    Raises:
        ValueError: naming the file when it is missing, not a pickle, refers to other globals,
            or does not hold a dict.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{str(path)!r}: file missing; expected the CIFAR python-pickle files there") from None
    except OSError as err:
        raise ValueError(f"{str(path)!r}: cannot read ({err.strerror})") from None
    try:
        value = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:  # any unpickling failure means a file in another format
        raise ValueError(f"{str(path)!r}: not a CIFAR python-pickle file ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{str(path)!r}: holds a {type(value).__name__}; expected a dict")
    return {key.decode("latin-1") if isinstance(key, bytes) else key: item for key, item in value.items()}


def _check_kind(kind: str, label: str) -> None:
    if kind not in _FILES:
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(_FILES)}")
    if (kind, label) not in N_CLASSES:
        allowed = [lab for k, lab in N_CLASSES if k == kind]
        raise ValueError(f"label={label!r}: expected one of {', '.join(allowed)} for kind={kind!r}")


def find_cifar_folder(folder: str | os.PathLike, kind: str) -> Path:
    """The folder holding the CIFAR files: ``folder`` itself, or its archive subfolder.

    Args:
        folder: the unpacked archive's folder (``cifar-10-batches-py``, ``cifar-100-python``) or
            the folder the archive was unpacked in.
        kind: ``cifar10`` or ``cifar100``.

    Raises:
        ValueError: if neither holds the first file of the test split.
    """
    _check_kind(kind, "fine")
    folder = Path(folder)
    for candidate in (folder, folder / _SUBFOLDER[kind]):
        if (candidate / _FILES[kind]["test"][0]).is_file():
            return candidate
    raise ValueError(
        f"folder={str(folder)!r}: no {kind} files ({_FILES[kind]['test'][0]!r}) there or in {_SUBFOLDER[kind]}/; "
        "expected the python-pickle version of the dataset"
    )


def load_cifar(
    folder: str | os.PathLike, split: str = "train", *, kind: str = "cifar10", label: str = "fine"
) -> tuple[np.ndarray, np.ndarray]:
    """One split of CIFAR-10 or CIFAR-100 from a python-pickle folder.

    Args:
        folder: see :func:`find_cifar_folder`.
        split: ``train`` (50,000 images) or ``test`` (10,000).
        kind: ``cifar10`` or ``cifar100``.
        label: ``fine`` (the 10 or 100 classes) or, for CIFAR-100, ``coarse`` (its 20 superclasses).

    Returns:
        (images uint8 (N, 3, 32, 32), labels int64 (N,)), in file order.

    Raises:
        ValueError: for a bad argument, a missing or malformed file (naming it), data that are not
            uint8 rows of 3072 pixels, or labels that are not N integers in [0, classes).
    """
    _check_kind(kind, label)
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    root = find_cifar_folder(folder, kind)
    key = "labels" if kind == "cifar10" else f"{label}_labels"
    n_classes = N_CLASSES[(kind, label)]
    images, labels = [], []
    for name in _FILES[kind][split]:
        path = root / name
        batch = _unpickle(path)
        if "data" not in batch or key not in batch:
            raise ValueError(f"{str(path)!r}: keys {sorted(batch)}; expected 'data' and {key!r}")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
            raise ValueError(f"{str(path)!r}: data is {data.dtype} {data.shape}; expected uint8 (N, {_PIXELS})")
        lab = np.asarray(batch[key])
        integers = lab.shape == (len(data),) and lab.dtype.kind in "iu"
        if not integers or (lab.size and not 0 <= lab.min() <= lab.max() < n_classes):
            raise ValueError(
                f"{str(path)!r}: {key} has shape {lab.shape} and dtype {lab.dtype}; expected {len(data)} integers "
                f"in [0, {n_classes})"
            )
        images.append(data.reshape(-1, 3, SIDE, SIDE))
        labels.append(lab.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def cifar_label_names(folder: str | os.PathLike, *, kind: str = "cifar10", label: str = "fine") -> list[str]:
    """The class names of the meta file, in label order.

    Raises:
        ValueError: for a bad argument or a missing or malformed meta file.
    """
    _check_kind(kind, label)
    path = find_cifar_folder(folder, kind) / _META[kind]
    meta = _unpickle(path)
    key = "label_names" if kind == "cifar10" else f"{label}_label_names"
    if key not in meta:
        raise ValueError(f"{str(path)!r}: keys {sorted(meta)}; expected {key!r}")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[key]]
