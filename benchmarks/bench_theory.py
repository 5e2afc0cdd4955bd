"""``optimal_alignment`` at n_u = n_v = 1000 against the linear algebra it cannot avoid.

Anchor: two symmetric eigendecompositions of the 1000 x 1000 diagonal blocks and one SVD of
the whitened cross-covariance W (the same LAPACK calls the library makes: ``scipy.linalg.eigh``
with the divide-and-conquer driver, ``scipy.linalg.svd`` with gesdd). Ours: build the
``GaussianPair`` (validation included) and compute the alignment, so nothing is cached
between repeats. Goal: ratio <= 1.5; <= 1.3 for the rank-r quadratic losses, which are now a
closed form (the top-r truncation of Theorem 5.3, docs/theory/rank_r_quadratic.md) where they
used to need a numerical minimisation of (50b).

Beside the table: the time per problem of the certified numerical oracles
(``numerical_quadratic_alignment``, the (50b) route, and ``numerical_alignment`` over (G, H))
and of the numerical optima without a closed form (``optimal_alignment`` for ``mmd_joint``
and ``mmd_conditional`` below full rank, issue 11) on a small problem, the size theory-check
and the tests use; and of the finite-batch floor (``finite_batch.batch_optimum``) at the size
``gaussian-process`` uses (n_u = 12, n_v = 5, B = 512, 2^17 pairs).

On a shared machine run it single-threaded (``OPENBLAS_NUM_THREADS=1``): oversubscribed BLAS
threads slow LAPACK calls by orders of magnitude and drown the ratio in noise.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg

from clipmath.datasets import GaussianProcessSource
from clipmath.theory import (
    GaussianPair,
    numerical_alignment,
    numerical_quadratic_alignment,
    optimal_alignment,
    random_gaussian_pair,
)
from clipmath.theory.finite_batch import batch_optimum, gaussian_batches

from common import compare, print_table

N = 1000
#: (loss, rank or None for full, goal on the ratio)
CASES = [
    ("conditional", None, 1.5),
    ("conditional", 50, 1.5),
    ("joint", None, 1.5),
    ("joint", 50, 1.5),
    ("quadratic_u_given_v", None, 1.5),
    ("quadratic_u_given_v", 50, 1.3),
    ("quadratic_v_given_u", 50, 1.3),
    ("quadratic_conditional", 50, 1.5),
    ("quadratic_joint", 50, 1.5),
    ("mmd_conditional", None, 1.5),
]


def setup(n: int = N):
    """The covariance blocks of a random pair and the anchor (2 eigh + 1 SVD) on them."""
    pair = random_gaussian_pair(n, n, seed=0)
    cov_uu, cov_uv, cov_vv = (np.array(m) for m in (pair.cov_uu, pair.cov_uv, pair.cov_vv))
    inv_sqrt = [e / np.sqrt(lam) @ e.T for lam, e in map(np.linalg.eigh, (cov_uu, cov_vv))]
    w = inv_sqrt[0] @ cov_uv @ inv_sqrt[1]

    def anchor() -> None:
        scipy.linalg.eigh(cov_uu, check_finite=False, driver="evd")
        scipy.linalg.eigh(cov_vv, check_finite=False, driver="evd")
        scipy.linalg.svd(w, full_matrices=False, check_finite=False)

    return (cov_uu, cov_uv, cov_vv), anchor


def time_case(blocks, anchor, loss: str, rank: int | None) -> tuple[float, float]:
    """Median seconds of (GaussianPair + optimal_alignment, anchor)."""

    def ours() -> None:
        optimal_alignment(GaussianPair(*blocks), loss, rank)

    return compare(ours, anchor, warmup=1)


def oracle_times(repeat: int = 3) -> list[tuple[str, float]]:
    """Seconds per problem of the certified numerical oracles at n_u = n_v = 6, rank 3."""
    pair = random_gaussian_pair(6, 6, seed=1)
    runs = [
        (
            "numerical_quadratic_alignment (50b), rank 3",
            lambda: numerical_quadratic_alignment(pair, "quadratic_u_given_v", 3),
        ),
        (
            "numerical_alignment quadratic_u_given_v, rank 3",
            lambda: numerical_alignment(pair, "quadratic_u_given_v", 3, restarts=3),
        ),
        ("numerical_alignment conditional, rank 3", lambda: numerical_alignment(pair, "conditional", 3, restarts=3)),
        (
            "numerical_alignment quadratic_conditional, rank 3",
            lambda: numerical_alignment(pair, "quadratic_conditional", 3, restarts=3),
        ),
        (
            "numerical_alignment quadratic_joint, rank 3",
            lambda: numerical_alignment(pair, "quadratic_joint", 3, restarts=3),
        ),
        (
            "optimal_alignment mmd_conditional (numerical), rank 3",
            lambda: optimal_alignment(pair, "mmd_conditional", 3),
        ),
        ("optimal_alignment mmd_joint (numerical), full rank", lambda: optimal_alignment(pair, "mmd_joint")),
    ]
    out = []
    for name, run in runs:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        out.append((name, float(np.median(times))))
    return out


def batch_floor_time() -> float:
    """Seconds of one finite-batch floor at the gaussian-process size (B = 512, 2^17 pairs)."""
    pair = GaussianProcessSource().pair()
    batches = gaussian_batches(pair, 512, 2**17 // 512, seed=0)
    start = time.perf_counter()
    batch_optimum(pair, *batches)
    return time.perf_counter() - start


def main() -> None:
    blocks, anchor = setup()
    rows = []
    for loss, rank, goal in CASES:
        t_ours, t_anchor = time_case(blocks, anchor, loss, rank)
        rows.append((f"{loss}, rank {rank or 'full'}", t_ours, t_anchor, f"<= {goal}"))
    print_table(f"theory: optimal_alignment, n_u = n_v = {N} (anchor: 2 eigh + 1 SVD)", rows)
    print("\n| numerical oracle (n_u = n_v = 6) | s per problem |\n|---|---|")
    for name, seconds in oracle_times():
        print(f"| {name} | {seconds:.3g} |")
    print(f"| finite_batch.batch_optimum, n_u = 12, n_v = 5, B = 512, 2^17 pairs | {batch_floor_time():.3g} |")


if __name__ == "__main__":
    main()
