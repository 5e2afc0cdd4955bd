"""Samples of a centred Gaussian pair (Section 5 of Baptista, Stuart & Tran (2025)) as shard samples."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from clipmath.datasets.checks import check_int


class PairSampler(Protocol):
    """Anything that draws pairs: a ``GaussianPair`` or a ``GaussianProcessSource``."""

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(u, v)`` with shapes (n, n_u) and (n, n_v)."""


def gaussian_samples(pair: PairSampler, n: int, seed: int) -> Iterator[dict]:
    r"""The pairs ``(u_i, v_i) = pair.sample(n, seed)[:, i]`` as sample dicts for :func:`write_shards`.

    For a ``GaussianPair`` the pairs are draws of :math:`\mathcal N(0, \mathcal C)` (eq. 36);
    for a ``GaussianProcessSource`` they are the Section 6.1 data (eq. 57).

    Args:
        pair: the sampler; ``pair.sample(n, seed)`` returns u (n, n_u) and v (n, n_v).
        n: number of samples (>= 1).
        seed: seed handed to ``pair.sample`` (>= 0).

    Yields:
        ``{"__key__": "sample-0000000", "u": (n_u,) float32, "v": (n_v,) float32}``, keys
        numbered from 0 and zero-padded to at least 7 digits, so they sort in sample order.
        Values are stored as float32, the precision the stream delivers.
    """
    check_int("n", n, 1)
    check_int("seed", seed, 0)
    u, v = pair.sample(n, seed)
    u, v = np.asarray(u, dtype=np.float32), np.asarray(v, dtype=np.float32)
    width = max(7, len(str(n - 1)))
    for i in range(n):
        yield {"__key__": f"sample-{i:0{width}d}", "u": u[i], "v": v[i]}
