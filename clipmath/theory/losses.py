"""Exact population losses of the Gaussian setting (Section 5 and Appendix D of Baptista, Stuart & Tran 2025).

Each loss is the expectation itself, with every constant kept, so that the Monte-Carlo
average of the per-sample loss converges to it. The inner expectations over the product of
marginals are Gaussian integrals (Lemma E.2). Where such an integral diverges the loss is
``+inf`` (its true value), never an error: optimisers can then treat the boundary of the
domain as a barrier.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from clipmath.theory._checks import as_matrix, symmetric
from clipmath.theory._optimise import x_minus_log1p
from clipmath.theory.alignment import TILTS, check_bandwidth, check_loss
from clipmath.theory.gaussian import GaussianPair
from clipmath.theory.lemmas import gaussian_kl
from clipmath.theory.mmd import mmd_conditional, mmd_joint

_Grad = tuple[np.ndarray, "np.ndarray | None", "np.ndarray | None"]


def check_loss_arguments(pair: GaussianPair, loss: str, A, B_u, B_v, bandwidth=None):
    """Validated (A, B_u, B_v, bandwidth) for ``loss``.

    Each B is taken only for a loss that reads it (:data:`~clipmath.theory.alignment.TILTS`),
    the bandwidth only for an MMD loss (default 1).
    """
    check_loss(loss)
    A = as_matrix("A", A, (pair.n_u, pair.n_v))
    needs = TILTS.get(loss, ())
    checked = {}
    for name, value, n in (("B_u", B_u, pair.n_u), ("B_v", B_v, pair.n_v)):
        if (value is not None) != (name in needs):
            wanted = "a (n, n) symmetric matrix" if name in needs else "None (this loss does not use it)"
            raise ValueError(f"{name}: loss {loss!r} expects {wanted}, got {'None' if value is None else 'a matrix'}")
        checked[name] = None if value is None else symmetric(name, as_matrix(name, value, (n, n)))
    return A, checked["B_u"], checked["B_v"], check_bandwidth(loss, bandwidth)


def _conditional(pair: GaussianPair, A: np.ndarray, grad: bool):
    # Eq. (42) in closed form: E_u log E_v' e^{uᵀAv'} = ½ Tr(A C_vv Aᵀ C_uu) by Lemma E.2, and the
    # same for the other side, each weighted ½.
    cuu_a = pair.cov_uu @ A
    value = -np.sum(A * pair.cov_uv) + 0.5 * np.sum(cuu_a * (A @ pair.cov_vv))
    return value, ((cuu_a @ pair.cov_vv - pair.cov_uv, None, None) if grad else None)


def _joint(pair: GaussianPair, A: np.ndarray, grad: bool):
    # log E_{μu⊗μv} e^{uᵀAv} = -½ Σ log(1 - s_i²), s the singular values of C_uu^{1/2} A C_vv^{1/2};
    # the integral diverges once s_1 >= 1.
    s = np.linalg.svd(pair._whiten(A), compute_uv=False)
    if s[0] >= 1.0:
        return np.inf, ((np.full_like(A, np.nan), None, None) if grad else None)
    value = -np.sum(A * pair.cov_uv) - 0.5 * np.sum(np.log1p(-(s**2)))
    if not grad:
        return value, None
    lam_v, e_v = pair._eig["v"]
    cuu_a = pair.cov_uu @ A
    # ∂/∂A of -½ log det(I - C_vv Aᵀ C_uu A) is C_uu A (C_vv^{-1} - Aᵀ C_uu A)^{-1}.
    schur = (e_v / lam_v) @ e_v.T - A.T @ cuu_a
    return value, (scipy.linalg.solve(schur, cuu_a.T, assume_a="pos").T - pair.cov_uv, None, None)


def _quadratic(
    eig_x, cov_xx: np.ndarray, cov_yy: np.ndarray, cov_xy: np.ndarray, A: np.ndarray, B: np.ndarray, grad: bool
):
    r"""The one-sided quadratic loss of x given y, with x the tilted side (u for ``u_given_v``).

    With :math:`F = E_x \Lambda_x^{1/2}` (so :math:`F F^\top = C_{xx}`) and
    :math:`B' = F^\top B F = Q \mathrm{diag}(\beta) Q^\top`,
    :math:`P_B^{-1} = (C_{xx}^{-1} + B)^{-1} = F (I + B')^{-1} F^\top`,
    :math:`\tfrac12 \mathrm{Tr}(B C_{xx}) - \tfrac12 \log\det(I + C_{xx} B)`
    :math:`= \tfrac12 \sum_i (\beta_i - \log(1 + \beta_i))`
    and :math:`C_{xx} - P_B^{-1} = F (I + B')^{-1} B' F^\top`. Written so, neither the value nor the
    gradient in B cancels O(1) terms down to O(‖B‖²) (weak correlations make B small).
    """
    lam, e = eig_x
    f = e * np.sqrt(lam)
    beta, q = np.linalg.eigh(f.T @ B @ f)
    if beta[0] <= -1.0:
        # E_x exp(-½ xᵀBx + ...) diverges when C_xx^{-1} + B is not positive definite.
        return np.inf, ((np.full_like(A, np.nan), np.full_like(B, np.nan)) if grad else None)
    fq = f @ q
    z = fq.T @ A
    p_inv_a = fq @ (z / (1.0 + beta)[:, None])
    a_cyy = A @ cov_yy
    value = 0.5 * np.sum(x_minus_log1p(beta)) - np.sum(A * cov_xy) + 0.5 * np.sum(p_inv_a * a_cyy)
    if not grad:
        return value, None
    gap = (fq * (beta / (1.0 + beta))) @ fq.T  # C_xx − P_B^{-1}
    grad_b = 0.5 * (gap - p_inv_a @ cov_yy @ p_inv_a.T)
    return value, (p_inv_a @ cov_yy - cov_xy, 0.5 * (grad_b + grad_b.T))


def _quadratic_u(pair: GaussianPair, A, B_u, grad: bool):
    return _quadratic(pair._eig["u"], pair.cov_uu, pair.cov_vv, pair.cov_uv, A, B_u, grad)


def _quadratic_v(pair: GaussianPair, A, B_v, grad: bool):
    value, g = _quadratic(pair._eig["v"], pair.cov_vv, pair.cov_uu, pair.cov_uv.T, A.T, B_v, grad)
    return value, ((g[0].T, g[1]) if grad else None)


def _quadratic_conditional(pair: GaussianPair, A, B_u, B_v, grad: bool):
    # λ = (1, 1): the mean of the two one-sided losses, each of which is the (2, 0) or (0, 2) loss.
    # docs/theory/quadratic_conditional.md.
    value_u, g_u = _quadratic_u(pair, A, B_u, grad)
    value_v, g_v = _quadratic_v(pair, A, B_v, grad)
    value = 0.5 * (value_u + value_v)
    return value, ((0.5 * (g_u[0] + g_v[0]), 0.5 * g_u[1], 0.5 * g_v[1]) if grad else None)


def _quadratic_joint(pair: GaussianPair, A, B_u, B_v, grad: bool):
    r"""Problem 3.7 with the quadratic tilting; docs/theory/quadratic_joint.md.

    With :math:`X = [[B_u, -A], [-A^\top, B_v]]` (so that :math:`|Gu - Hv|^2 = z^\top X z`),
    :math:`D_0 = \mathrm{diag}(C_{uu}, C_{vv}) = F F^\top` and :math:`\beta` the eigenvalues of
    :math:`F^\top X F`: :math:`L = \tfrac12 \mathrm{Tr}(X \mathcal C) - \tfrac12 \log\det(I + D_0 X)
    = -\mathrm{Tr}(A^\top C_{uv}) + \tfrac12 \sum (\beta - \log(1 + \beta))` (Lemma E.2), ``+inf``
    once :math:`\beta_{min} \le -1`. Gradient :math:`\tfrac12 (\mathcal C - \mathcal C_\nu)` in X, with
    :math:`D_0 - \mathcal C_\nu = F Q \mathrm{diag}(\beta / (1 + \beta)) Q^\top F^\top` (no cancellation).
    """
    n_u = pair.n_u
    f = scipy.linalg.block_diag(*(e * np.sqrt(lam) for lam, e in (pair._eig["u"], pair._eig["v"])))
    x = np.block([[B_u, -A], [-A.T, B_v]])
    beta, q = np.linalg.eigh(f.T @ x @ f)
    if beta[0] <= -1.0:
        return np.inf, (
            (np.full_like(A, np.nan), np.full_like(B_u, np.nan), np.full_like(B_v, np.nan)) if grad else None
        )
    value = -np.sum(A * pair.cov_uv) + 0.5 * np.sum(x_minus_log1p(beta))
    if not grad:
        return value, None
    fq = f @ q
    gap = (fq * (beta / (1.0 + beta))) @ fq.T  # D_0 − C_ν
    return value, (-gap[:n_u, n_u:] - pair.cov_uv, 0.5 * gap[:n_u, :n_u], 0.5 * gap[n_u:, n_u:])


def _evaluate(pair: GaussianPair, loss: str, A, B_u, B_v, bandwidth, grad: bool):
    A, B_u, B_v, bandwidth = check_loss_arguments(pair, loss, A, B_u, B_v, bandwidth)
    if loss == "conditional":
        return _conditional(pair, A, grad)
    if loss == "joint":
        return _joint(pair, A, grad)
    if loss == "quadratic_u_given_v":
        value, g = _quadratic_u(pair, A, B_u, grad)
        return value, ((g[0], g[1], None) if grad else None)
    if loss == "quadratic_v_given_u":
        value, g = _quadratic_v(pair, A, B_v, grad)
        return value, ((g[0], None, g[1]) if grad else None)
    if loss == "quadratic_conditional":
        return _quadratic_conditional(pair, A, B_u, B_v, grad)
    if loss == "quadratic_joint":
        return _quadratic_joint(pair, A, B_u, B_v, grad)
    value, d_a = (mmd_conditional if loss == "mmd_conditional" else mmd_joint)(pair, A, bandwidth, grad)
    return value, ((d_a, None, None) if grad else None)


def population_loss(
    pair: GaussianPair,
    loss: str,
    A: np.ndarray,
    B_u: np.ndarray | None = None,
    B_v: np.ndarray | None = None,
    *,
    bandwidth: float | None = None,
) -> float:
    r"""The exact population loss of linear encoders in their products A, B_u and B_v.

    The encoders :math:`u \mapsto Gu`, :math:`v \mapsto Hv` give
    :math:`A = G^\top H`, :math:`B_u = G^\top G`, :math:`B_v = H^\top H`.

    - ``conditional`` (inner-product tilting, two-sided, :math:`(\lambda_u, \lambda_v) = (1, 1)`, eq. 42):
      :math:`L_{cond}(A) = -\mathrm{Tr}(A C_{vu}) + \tfrac12 \mathrm{Tr}(A^\top C_{uu} A C_{vv})`.
      (Remark D.1 writes twice this; the argmin is the same, ``docs/math/typos.md``.)
    - ``joint`` (inner-product tilting, eq. 52):
      :math:`L_{joint}(A) = -\mathrm{Tr}(A C_{vu}) - \tfrac12 \log\det(I - C_{vv} A^\top C_{uu} A)`,
      ``+inf`` when :math:`\|C_{uu}^{1/2} A C_{vv}^{1/2}\|_2 \ge 1` (the normaliser diverges).
    - ``quadratic_u_given_v`` (quadratic tilting, one-sided, :math:`L(A, B; 2, 0)` of Section 5.2):
      :math:`\tfrac12 \mathrm{Tr}(B_u C_{uu}) - \mathrm{Tr}(A C_{vu}) - \tfrac12 \log\det(I + C_{uu} B_u)
      + \tfrac12 \mathrm{Tr}(A^\top (C_{uu}^{-1} + B_u)^{-1} A C_{vv})`, ``+inf`` when
      :math:`C_{uu}^{-1} + B_u` is not positive definite.
    - ``quadratic_v_given_u``: the mirror image, with :math:`B_v` and the roles of u and v swapped.
    - ``quadratic_conditional`` (quadratic tilting, two-sided, :math:`(\lambda_u, \lambda_v) = (1, 1)`,
      Problem 3.13): the mean of the two one-sided losses, coupled through (G, H)
      (``docs/theory/quadratic_conditional.md``).
    - ``quadratic_joint`` (quadratic tilting, Problem 3.7): with :math:`X = [[B_u, -A], [-A^\top, B_v]]`,
      :math:`-\mathrm{Tr}(A^\top C_{uv}) + \tfrac12 \mathrm{Tr}(X D_0) - \tfrac12 \log\det(I + D_0 X)`,
      :math:`D_0 = \mathrm{diag}(C_{uu}, C_{vv})`; ``+inf`` when :math:`D_0^{-1} + X` is not positive
      definite (``docs/theory/quadratic_joint.md``).
    - ``mmd_conditional``, ``mmd_joint`` (inner-product tilting, Gaussian kernel of ``bandwidth`` h,
      Appendix B and Problem 3.11): the population limits of the trained losses of
      :mod:`clipmath.multimodal.losses.mmd` (``docs/theory/mmd.md``, :mod:`clipmath.theory.mmd`).

    Args:
        pair: the data law.
        loss: one of :data:`clipmath.theory.LOSSES`.
        A: (n_u, n_v) coupling matrix.
        B_u: (n_u, n_u) symmetric; required for ``quadratic_u_given_v``, ``quadratic_conditional``
            and ``quadratic_joint``, else None.
        B_v: (n_v, n_v) symmetric; required for ``quadratic_v_given_u``, ``quadratic_conditional``
            and ``quadratic_joint``, else None.
        bandwidth: Gaussian kernel bandwidth h > 0 of the MMD losses (default 1, the trained
            losses' default); None for the others.

    Returns:
        The loss in nats (possibly ``inf``).

    Raises:
        ValueError: for an unknown loss, a wrong shape or NaN, a B given to a loss that does
            not use it (or missing where it is needed), or a bandwidth for a loss without a kernel.
    """
    return float(_evaluate(pair, loss, A, B_u, B_v, bandwidth, grad=False)[0])


def population_loss_gradient(
    pair: GaussianPair,
    loss: str,
    A: np.ndarray,
    B_u: np.ndarray | None = None,
    B_v: np.ndarray | None = None,
    *,
    bandwidth: float | None = None,
) -> tuple[float, _Grad]:
    r""":func:`population_loss` and its gradient with respect to (A, B_u, B_v).

    The gradients (Frobenius inner product) are

    - ``conditional``: :math:`\partial_A = C_{uu} A C_{vv} - C_{uv}`;
    - ``joint``: :math:`\partial_A = C_{uu} A (C_{vv}^{-1} - A^\top C_{uu} A)^{-1} - C_{uv}`;
    - ``quadratic_u_given_v``, with :math:`P = C_{uu}^{-1} + B_u`:
      :math:`\partial_A = P^{-1} A C_{vv} - C_{uv}`,
      :math:`\partial_{B_u} = \tfrac12 (C_{uu} - P^{-1} - P^{-1} A C_{vv} A^\top P^{-1})`;
      the v|u mirror likewise; ``quadratic_conditional`` the mean of the two;
    - ``quadratic_joint``: :math:`\tfrac12 (\mathcal C - \mathcal C_\nu)` in X (moment matching), so
      :math:`\partial_A = (\mathcal C_\nu)_{uv} - C_{uv}`,
      :math:`\partial_{B_u} = \tfrac12 (C_{uu} - (\mathcal C_\nu)_{uu})`,
      :math:`\partial_{B_v} = \tfrac12 (C_{vv} - (\mathcal C_\nu)_{vv})`;
    - ``mmd_conditional``, ``mmd_joint``: see :mod:`clipmath.theory.mmd`.

    Args: as :func:`population_loss`.

    Returns:
        ``(value, (dA, dB_u, dB_v))``: dA (n_u, n_v); dB_u (n_u, n_u) or None; dB_v (n_v, n_v)
        or None, matching which B the loss takes. Entries are NaN where the value is ``inf``.
    """
    value, grads = _evaluate(pair, loss, A, B_u, B_v, bandwidth, grad=True)
    return float(value), grads


def conditional_kl_objective(pair: GaussianPair, A: np.ndarray) -> float:
    r""":math:`J_{cond}(A)` of Optimisation Problem 3.1 for the inner-product tilting, from Gaussian KLs.

    .. math::
        J_{cond} = \tfrac12 \mathbb E_v D_{KL}(\mu_{u|v} \| \nu_{u|v})
                 + \tfrac12 \mathbb E_u D_{KL}(\mu_{v|u} \| \nu_{v|u}),

    with :math:`\mu_{u|v} = \mathcal N(M v, S)` (eq. 37) and :math:`\nu_{u|v} = \mathcal N(C_{uu} A v, C_{uu})`
    (eq. 41). By Lemma E.1 each expected KL is the KL between the zero-mean laws plus
    :math:`\tfrac12 \mathbb E_v |D v|^2_{C_{uu}} = \tfrac12 \mathrm{Tr}(D^\top C_{uu}^{-1} D C_{vv})`,
    :math:`D = M - C_{uu} A`. Theorem 3.2: :math:`J_{cond} - L_{cond} = I(u; v)`.

    Args:
        pair: the data law.
        A: (n_u, n_v) coupling matrix; the model needs no properness here (only its conditionals).

    Returns:
        :math:`J_{cond}(A)` in nats.
    """
    A = as_matrix("A", A, (pair.n_u, pair.n_v))
    total = 0.0
    for which, own, given, coupling in (
        ("u_given_v", "u", "v", A),
        ("v_given_u", "v", "u", A.T),
    ):
        mean_map, cov = pair.conditional(which)
        lam, e = pair._eig[own]
        model_cov = pair.marginal(own)
        gap = mean_map - model_cov @ coupling
        white_gap = (e.T @ gap) / np.sqrt(lam)[:, None]
        zero = np.zeros(len(lam))
        mean_term = 0.5 * np.sum(white_gap * (white_gap @ pair.marginal(given)))
        expected_kl = gaussian_kl(zero, cov, zero, model_cov) + mean_term
        total += 0.5 * expected_kl
    return total
