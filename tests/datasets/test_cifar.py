"""The CIFAR-10/100 python-pickle loader on tiny folders written here in the archives' format."""

import os
import pickle

import numpy as np
import pytest

from clipmath.datasets.cifar import cifar_label_names, find_cifar_folder, load_cifar


def _rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) HWC pixels as the archives store them: (N, 3072), all red, then green, then blue."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _dump(path, value):
    # Protocol 2 with bytes keys, as the Python 2 cPickle files of the archives.
    with open(path, "wb") as handle:
        pickle.dump(value, handle, protocol=2)


def _images(rng, n):
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture
def cifar10(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    truth = {"train": ([], []), "test": ([], [])}
    for name, split in [*[(f"data_batch_{i}", "train") for i in range(1, 6)], ("test_batch", "test")]:
        images, labels = _images(rng, 3), [int(x) for x in rng.integers(0, 10, 3)]
        _dump(root / name, {b"batch_label": b"x", b"data": _rows(images), b"labels": labels, b"filenames": [b"a"] * 3})
        truth[split][0].append(images)
        truth[split][1].extend(labels)
    _dump(root / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072})
    return tmp_path, {s: (np.concatenate(im), np.array(lab)) for s, (im, lab) in truth.items()}


@pytest.fixture
def cifar100(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    truth = {}
    for split, n in (("train", 5), ("test", 4)):
        images = _images(rng, n)
        fine, coarse = rng.integers(0, 100, n).tolist(), rng.integers(0, 20, n).tolist()
        _dump(root / split, {b"data": _rows(images), b"fine_labels": fine, b"coarse_labels": coarse})
        truth[split] = (images, np.array(fine), np.array(coarse))
    _dump(
        root / "meta",
        {
            b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"c{i}".encode() for i in range(20)],
        },
    )
    return root, truth


def test_cifar10_images_are_chw_and_labels_in_file_order(cifar10):
    parent, truth = cifar10
    for split, n in (("train", 15), ("test", 3)):
        images, labels = load_cifar(parent, split, kind="cifar10")
        assert images.shape == (n, 3, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64
        # Channel c of pixel (y, x) is the stored row's entry c * 1024 + y * 32 + x.
        assert np.array_equal(images.transpose(0, 2, 3, 1), truth[split][0])
        assert np.array_equal(labels, truth[split][1])
    assert cifar_label_names(parent / "cifar-10-batches-py") == [f"class{i}" for i in range(10)]


def test_cifar100_fine_and_coarse_labels(cifar100):
    root, truth = cifar100
    images, fine = load_cifar(root, "train", kind="cifar100")
    _, coarse = load_cifar(root, "train", kind="cifar100", label="coarse")
    assert np.array_equal(images.transpose(0, 2, 3, 1), truth["train"][0])
    assert np.array_equal(fine, truth["train"][1]) and np.array_equal(coarse, truth["train"][2])
    assert load_cifar(root.parent, "test", kind="cifar100")[0].shape == (4, 3, 32, 32)
    assert cifar_label_names(root, kind="cifar100", label="coarse")[19] == "c19"


def test_bad_folders_and_arguments_are_named(cifar10, tmp_path):
    parent, _ = cifar10
    with pytest.raises(ValueError, match="no cifar100 files"):
        load_cifar(parent, kind="cifar100")
    with pytest.raises(ValueError, match="split='val'"):
        load_cifar(parent, "val")
    with pytest.raises(ValueError, match="label='coarse'"):
        load_cifar(parent, kind="cifar10", label="coarse")
    with pytest.raises(ValueError, match="kind='svhn'"):
        load_cifar(parent, kind="svhn")
    root = parent / "cifar-10-batches-py"
    os.remove(root / "data_batch_3")
    with pytest.raises(ValueError, match="data_batch_3.*file missing"):
        load_cifar(parent, "train")


def test_malformed_files_are_refused_naming_the_file(cifar10):
    parent, _ = cifar10
    root = parent / "cifar-10-batches-py"
    _dump(root / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(ValueError, match=r"test_batch.*expected uint8 \(N, 3072\)"):
        load_cifar(parent, "test")
    _dump(root / "test_batch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
    with pytest.raises(ValueError, match=r"test_batch.*in \[0, 10\)"):
        load_cifar(parent, "test")
    (root / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a CIFAR python-pickle file"):
        load_cifar(parent, "test")


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


def test_a_pickle_that_names_other_globals_is_refused(cifar10):
    parent, _ = cifar10
    _dump(parent / "cifar-10-batches-py" / "test_batch", {b"data": _Payload(), b"labels": []})
    with pytest.raises(ValueError, match="is not allowed"):
        load_cifar(parent, "test")
    assert find_cifar_folder(parent, "cifar10").name == "cifar-10-batches-py"
