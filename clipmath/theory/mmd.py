r"""Population MMD losses of linear encoders on Gaussian data.

Appendix B and Problem 3.11 of Baptista, Stuart & Tran (2025).

Inner-product tilting :math:`\rho \propto e^{u^\top A v}` and the Gaussian kernel
:math:`k(x, y) = \exp(-|x - y|^2 / (2h^2))` with one bandwidth h for u, v and (u, v) (the
product kernel :math:`k_u k_v` of the joint loss is the Gaussian kernel on the pair), as the
trained losses of :mod:`clipmath.multimodal.losses.mmd`, whose batch estimators converge to
these values. Every expectation is a Gaussian integral (Lemma E.2): for independent
:math:`x \sim \mathcal N(m_1, S_1)`, :math:`y \sim \mathcal N(m_2, S_2)`,

.. math::
    \mathbb E\, k(x, y) = \det(I + (S_1 + S_2)/h^2)^{-1/2}
    \exp\big(-\tfrac12 (m_1 - m_2)^\top (h^2 I + S_1 + S_2)^{-1} (m_1 - m_2)\big),

and :math:`\mathbb E_v \exp(-\tfrac12 v^\top Q v) = \det(I + C_{vv} Q)^{-1/2}`.

- ``mmd_conditional`` (weights (1, 1), the trained default ``two_sided``):
  :math:`L = L(1, 0) + L(0, 1)` with
  :math:`L(1, 0) = \tfrac12 \mathbb E_v \mathbb E_{\nu_{u|v} \otimes \nu_{u|v}} k
  - \mathbb E_v \mathbb E_{\mu_{u|v} \otimes \nu_{u|v}} k`.
  With :math:`\nu_{u|v} = \mathcal N(C_{uu} A v, C_{uu})` (eq. 41) and
  :math:`\mu_{u|v} = \mathcal N(M v, S)` (eq. 37), :math:`E = M - C_{uu} A`, :math:`K = h^2 I + S + C_{uu}`:

  .. math::
      L(1, 0) = \tfrac12 \det(I + 2 C_{uu}/h^2)^{-1/2}
      - \det(I + (S + C_{uu})/h^2)^{-1/2} \det(I + C_{vv} E^\top K^{-1} E)^{-1/2},

  :math:`L(0, 1)` the mirror image (:math:`A^\top`). Gradient:
  :math:`\partial_A L(1, 0) = -c\,\varphi\, C_{uu} K^{-1} E (C_{vv}^{-1} + E^\top K^{-1} E)^{-1}`, with c and φ the
  two determinant factors.
- ``mmd_joint``: :math:`L = -2\,\mathbb E_{\mu \otimes \nu} k + \mathbb E_{\nu \otimes \nu} k
  = -2 \det(I + (\mathcal C + \mathcal C_\nu)/h^2)^{-1/2} + \det(I + 2 \mathcal C_\nu/h^2)^{-1/2}`, ν the
  tilted Gaussian of precision (40); ``+inf`` where ν is improper
  (:math:`\|C_{uu}^{1/2} A C_{vv}^{1/2}\|_2 \ge 1`). Gradient
  :math:`\partial_A = 2 (\mathcal C_\nu N \mathcal C_\nu)_{uv}`,
  :math:`N = \varphi_1 K_1^{-1} - \varphi_2 K_2^{-1}`, :math:`K_1 = h^2 I + \mathcal C + \mathcal C_\nu`,
  :math:`K_2 = h^2 I + 2 \mathcal C_\nu`, φ the two determinants.

Derivations: ``docs/theory/mmd.md``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from clipmath.theory.gaussian import GaussianPair


def _chol(matrix: np.ndarray) -> np.ndarray:
    return scipy.linalg.cholesky(matrix, lower=True, check_finite=False)


def _kernel_mean(cov: np.ndarray, h2: float) -> float:
    r""":math:`\det(I + Y/h^2)^{-1/2}`: the mean of the Gaussian kernel at a centred difference of covariance Y."""
    return float(np.exp(-np.sum(np.log(np.diag(_chol(np.eye(len(cov)) + cov / h2))))))


def _conditional_term(
    cov_xx: np.ndarray,
    cov_yy: np.ndarray,
    mean_map: np.ndarray,
    cond_cov: np.ndarray,
    coupling: np.ndarray,
    h2: float,
    grad: bool,
):
    """:math:`L(1, 0)` of x given y (x = u for the u|v term) and its gradient in ``coupling`` (n_x, n_y)."""
    n_x = len(cov_xx)
    gap = mean_map - cov_xx @ coupling  # E = M − C_xx A
    k_mat = h2 * np.eye(n_x) + cond_cov + cov_xx
    l_k, l_y = _chol(k_mat), _chol(cov_yy)
    z = scipy.linalg.solve_triangular(l_k, gap @ l_y, lower=True, check_finite=False)
    inner = _chol(np.eye(len(cov_yy)) + z.T @ z)
    phi = float(np.exp(-np.sum(np.log(np.diag(inner)))))
    c = _kernel_mean(cond_cov + cov_xx, h2)
    value = 0.5 * _kernel_mean(2.0 * cov_xx, h2) - c * phi
    if not grad:
        return value, None
    # R = (C_yy^{-1} + EᵀK^{-1}E)^{-1} = L_y (I + ZᵀZ)^{-1} L_yᵀ.
    w = scipy.linalg.solve_triangular(inner, l_y.T, lower=True, check_finite=False)
    r_mat = w.T @ w
    k_inv_gap = scipy.linalg.cho_solve((l_k, True), gap, check_finite=False)
    return value, -c * phi * cov_xx @ k_inv_gap @ r_mat


def mmd_conditional(pair: GaussianPair, A: np.ndarray, bandwidth: float, grad: bool):
    """Population ``mmd_conditional`` (two-sided) of the module docstring, and its gradient in A if ``grad``."""
    h2 = bandwidth**2
    m_u, s_u = pair.conditional("u_given_v")
    m_v, s_v = pair.conditional("v_given_u")
    value_u, g_u = _conditional_term(pair.cov_uu, pair.cov_vv, m_u, s_u, A, h2, grad)
    value_v, g_v = _conditional_term(pair.cov_vv, pair.cov_uu, m_v, s_v, A.T, h2, grad)
    return value_u + value_v, ((g_u + g_v.T) if grad else None)


def inner_model_covariance(pair: GaussianPair, A: np.ndarray) -> np.ndarray | None:
    """Joint covariance of the inner-product tilted model (precision (40)), or None where it is improper."""
    if np.linalg.svd(pair._whiten(A), compute_uv=False)[0] >= 1.0:
        return None
    (lam_u, e_u), (lam_v, e_v) = pair._eig["u"], pair._eig["v"]
    precision = np.block([[(e_u / lam_u) @ e_u.T, -A], [-A.T, (e_v / lam_v) @ e_v.T]])
    try:
        chol = scipy.linalg.cho_factor(precision, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None  # at the boundary to round-off
    cov = scipy.linalg.cho_solve(chol, np.eye(len(precision)), check_finite=False)
    return 0.5 * (cov + cov.T)


def mmd_joint(pair: GaussianPair, A: np.ndarray, bandwidth: float, grad: bool):
    """Population ``mmd_joint`` of the module docstring (``inf`` where ν is improper), and its gradient."""
    model = inner_model_covariance(pair, A)
    if model is None:
        return np.inf, (np.full_like(A, np.nan) if grad else None)
    h2, truth, n = bandwidth**2, pair.joint_cov, pair.n_u + pair.n_v
    phi_1, phi_2 = _kernel_mean(truth + model, h2), _kernel_mean(2.0 * model, h2)
    value = -2.0 * phi_1 + phi_2
    if not grad:
        return value, None
    eye = np.eye(n)
    n_mat = phi_1 * np.linalg.inv(h2 * eye + truth + model) - phi_2 * np.linalg.inv(h2 * eye + 2.0 * model)
    return value, 2.0 * (model @ n_mat @ model)[: pair.n_u, pair.n_u :]
