"""Boundary checks shared by the theory modules: every failure is a ValueError naming the argument."""

from __future__ import annotations

import numpy as np

#: A seed for ``numpy.random.default_rng``: an int, None (fresh entropy) or a Generator to draw from.
Seed = int | np.random.Generator | None

#: The two conditionals, named by direction (DESIGN.md), never by a λ-pair.
DIRECTIONS = ("u_given_v", "v_given_u")


def as_matrix(name: str, value: object, shape: tuple[int | None, ...]) -> np.ndarray:
    """``value`` as a finite float64 array of the given shape (``None`` matches any size).

    Args:
        name: argument name used in the error message.
        value: array-like input.
        shape: expected shape, e.g. ``(n_u, None)``.

    Raises:
        ValueError: if the number of dimensions or a fixed size differs, or a value is NaN/Inf.
    """
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape, strict=False)):
        expected = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {expected}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or Inf")
    return array


def symmetric(name: str, matrix: np.ndarray) -> np.ndarray:
    """The symmetric part of a square ``matrix`` that is symmetric up to round-off.

    Round-off tolerance: ``max|M - Mᵀ| <= 1e-10 * max|M|`` (sample second moments computed by
    a matrix product are symmetric only to a few ulps).

    Raises:
        ValueError: if ``matrix`` is not square or is visibly asymmetric.
    """
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name}: expected a square matrix, got shape {matrix.shape}")
    gap = np.max(np.abs(matrix - matrix.T), initial=0.0)
    if gap > 1e-10 * max(np.max(np.abs(matrix), initial=0.0), 1e-300):
        raise ValueError(f"{name}: expected a symmetric matrix, max |M - M^T| = {gap:.3g}")
    return 0.5 * (matrix + matrix.T)


def direction(name: str, value: object) -> str:
    """``value`` if it is ``'u_given_v'`` or ``'v_given_u'``.

    Raises:
        ValueError: for any other value.
    """
    if value not in DIRECTIONS:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(DIRECTIONS)}")
    return value  # type: ignore[return-value]


def check_modality(name: str, value: object) -> str:
    """``value`` if it is ``'u'`` or ``'v'``; otherwise a ValueError naming ``name``."""
    if value not in ("u", "v"):
        raise ValueError(f"{name}={value!r}: expected 'u' or 'v'")
    return value  # type: ignore[return-value]


def positive_int(name: str, value: object) -> int:
    """``value`` if it is an int >= 1 (bools excluded).

    Raises:
        ValueError: otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r}: expected a positive int")
    return int(value)


def as_batch(name: str, value: object, n: int | None) -> np.ndarray:
    """``value`` as a finite float64 array of shape (..., n): a vector or a batch of vectors.

    Raises:
        ValueError: if it has no dimension, its last size is not ``n`` (when given), or NaN/Inf.
    """
    ndim = np.ndim(value)
    if ndim == 0:
        raise ValueError(f"{name}: expected shape (..., {'n' if n is None else n}), got a scalar")
    return as_matrix(name, value, (None,) * (ndim - 1) + (n,))
