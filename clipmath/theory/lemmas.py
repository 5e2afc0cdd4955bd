"""Gaussian integrals of Appendix E of Baptista, Stuart & Tran (2025)."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from clipmath.theory._checks import as_batch, as_matrix, symmetric


def _cholesky(name: str, matrix: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a symmetric positive definite ``matrix``.

    Raises:
        ValueError: naming ``name`` if the matrix is not positive definite.
    """
    try:
        return scipy.linalg.cholesky(matrix, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        raise ValueError(f"{name}: expected a positive definite matrix") from None


def gaussian_kl(m1: np.ndarray, C1: np.ndarray, m2: np.ndarray, C2: np.ndarray) -> float:
    r"""Kullback-Leibler divergence between two Gaussians (Lemma E.1).

    .. math::
        D_{KL}(\mathcal N(m_1, C_1) \| \mathcal N(m_2, C_2)) = \tfrac12 \big[\mathrm{Tr}(C_2^{-1} C_1) - d
        + \log \tfrac{|C_2|}{|C_1|} + (m_2 - m_1)^\top C_2^{-1} (m_2 - m_1)\big].

    Args:
        m1: (d,) mean of the first law.
        C1: (d, d) covariance of the first law, symmetric positive definite.
        m2: (d,) mean of the second law.
        C2: (d, d) covariance of the second law, symmetric positive definite.

    Returns:
        The divergence in nats.

    Raises:
        ValueError: naming the argument with a wrong shape, NaN/Inf, or a covariance that is not
            symmetric positive definite.
    """
    m1 = as_matrix("m1", m1, (None,))
    d = len(m1)
    m2 = as_matrix("m2", m2, (d,))
    l1 = _cholesky("C1", symmetric("C1", as_matrix("C1", C1, (d, d))))
    l2 = _cholesky("C2", symmetric("C2", as_matrix("C2", C2, (d, d))))
    # C2^{-1} C1 enters only through L2^{-1} L1, so no inverse is formed.
    ratio = scipy.linalg.solve_triangular(l2, l1, lower=True, check_finite=False)
    shift = scipy.linalg.solve_triangular(l2, m2 - m1, lower=True, check_finite=False)
    log_det_ratio = 2.0 * (np.sum(np.log(np.diag(l2))) - np.sum(np.log(np.diag(l1))))
    return float(0.5 * (np.sum(ratio**2) - d + log_det_ratio + shift @ shift))


def quadratic_exponential_moment(m: np.ndarray, Lam: np.ndarray, B: np.ndarray, c: np.ndarray) -> np.ndarray | float:
    r"""Exponential moment of a quadratic form of a Gaussian (Lemma E.2).

    For :math:`z \sim \mathcal N(m, \Lambda)`,

    .. math::
        \mathbb E \exp(\tfrac12 z^\top B z + c^\top z) = |I - \Lambda B|^{-1/2}
        \exp\big(\tfrac12 (c + \Lambda^{-1} m)^\top (\Lambda^{-1} - B)^{-1} (c + \Lambda^{-1} m)
        - \tfrac12 m^\top \Lambda^{-1} m\big),

    finite exactly when :math:`\Lambda^{-1} - B \succ 0`; otherwise the integral diverges and
    ``inf`` is returned. With :math:`\Lambda = L L^\top` (Cholesky) it is evaluated as
    :math:`|R|^{-1/2} \exp(\tfrac12 w^\top R^{-1} w - \tfrac12 |L^{-1} m|^2)`, where
    :math:`R = I - L^\top B L` and :math:`w = L^\top c + L^{-1} m`, which needs no inverse.

    Args:
        m: (..., n) mean; leading dimensions broadcast against those of ``c``.
        Lam: (n, n) covariance Λ, symmetric positive definite.
        B: (n, n) symmetric matrix of the quadratic form.
        c: (..., n) linear coefficient.

    Returns:
        The expectation, a float, or an array over the broadcast leading dimensions.

    Raises:
        ValueError: naming the argument with a wrong shape, NaN/Inf, an asymmetric ``B`` or a
            ``Lam`` that is not symmetric positive definite.
    """
    m, chol, B, c = _check_moment_arguments(m, Lam, B, c)
    value = np.exp(_log_moment(m, chol, B, c))
    return value if m.ndim > 1 else float(value)


def log_quadratic_exponential_moment(
    m: np.ndarray, Lam: np.ndarray, B: np.ndarray, c: np.ndarray
) -> np.ndarray | float:
    r"""The logarithm of :func:`quadratic_exponential_moment` (Lemma E.2), computed without overflow.

    Args:
        m: (..., n) mean; leading dimensions broadcast against those of ``c``.
        Lam: (n, n) covariance Λ, symmetric positive definite.
        B: (n, n) symmetric matrix of the quadratic form.
        c: (..., n) linear coefficient.

    Returns:
        :math:`\log \mathbb E \exp(\tfrac12 z^\top B z + c^\top z)` (``inf`` where it diverges).

    Raises:
        ValueError: as :func:`quadratic_exponential_moment`.
    """
    m, chol, B, c = _check_moment_arguments(m, Lam, B, c)
    value = _log_moment(m, chol, B, c)
    return value if m.ndim > 1 else float(value)


def _log_moment(m: np.ndarray, chol: np.ndarray, B: np.ndarray, c: np.ndarray) -> np.ndarray:
    n = len(chol)
    r = np.eye(n) - chol.T @ B @ chol
    try:
        r_chol = scipy.linalg.cho_factor(r, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return np.full(m.shape[:-1], np.inf)
    whitened_mean = scipy.linalg.solve_triangular(chol, m.reshape(-1, n).T, lower=True, check_finite=False)
    w = (c.reshape(-1, n) @ chol).T + whitened_mean
    log_det_r = 2.0 * np.sum(np.log(np.diag(r_chol[0])))
    exponent = 0.5 * np.sum(w * scipy.linalg.cho_solve(r_chol, w, check_finite=False), axis=0)
    exponent -= 0.5 * np.sum(whitened_mean**2, axis=0) + 0.5 * log_det_r
    return exponent.reshape(m.shape[:-1])


def _check_moment_arguments(m, Lam, B, c) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated (m, Cholesky factor of Λ, B, c), m and c broadcast to a common shape (..., n)."""
    m = as_batch("m", m, None)
    n = m.shape[-1]
    c = as_batch("c", c, n)
    chol = _cholesky("Lam", symmetric("Lam", as_matrix("Lam", Lam, (n, n))))
    B = symmetric("B", as_matrix("B", B, (n, n)))
    try:
        m, c = np.broadcast_arrays(m, c)
    except ValueError:
        raise ValueError(f"m and c: leading dimensions {m.shape[:-1]} and {c.shape[:-1]} do not broadcast") from None
    return m, chol, B, c
