"""The model distribution ν of a linear tilting (Section 5 of Baptista, Stuart & Tran 2025)."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from clipmath.theory._checks import as_matrix, symmetric
from clipmath.theory.gaussian import GaussianPair
from clipmath.theory.lemmas import gaussian_kl


def tilted_model(
    pair: GaussianPair, A: np.ndarray, B_u: np.ndarray | None = None, B_v: np.ndarray | None = None
) -> GaussianPair:
    r"""The tilted law :math:`\nu \propto \rho\, \mu_u \otimes \mu_v` as a Gaussian pair.

    - Inner-product tilting, :math:`\rho = e^{u^\top A v}` (both B None): precision (40),
      :math:`\begin{bmatrix} C_{uu}^{-1} & -A \\ -A^\top & C_{vv}^{-1} \end{bmatrix}`; proper iff
      :math:`\|C_{uu}^{1/2} A C_{vv}^{1/2}\|_2 < 1`.
    - Quadratic tilting, :math:`\rho = e^{-|G u - H v|^2 / 2}` with :math:`A = G^\top H`,
      :math:`B_u = G^\top G`, :math:`B_v = H^\top H` (both B given): precision (47),
      :math:`\begin{bmatrix} B_u + C_{uu}^{-1} & -A \\ -A^\top & B_v + C_{vv}^{-1} \end{bmatrix}`.

    Its conditionals (41)/(48) and marginals (Corollary 5.7) are those of the returned pair.

    Args:
        pair: the data law µ (its marginals are tilted).
        A: (n_u, n_v) coupling.
        B_u: (n_u, n_u) symmetric, or None for the inner-product tilting.
        B_v: (n_v, n_v) symmetric, or None for the inner-product tilting.

    Returns:
        ν as a :class:`GaussianPair`.

    Raises:
        ValueError: for bad shapes, exactly one of B_u/B_v given, or an improper ν (precision not
            positive definite).
    """
    A = as_matrix("A", A, (pair.n_u, pair.n_v))
    if (B_u is None) != (B_v is None):
        raise ValueError(
            "B_u, B_v: the quadratic tilting needs both (B_u = GᵀG, B_v = HᵀH); pass neither for "
            f"the inner-product tilting, got B_u={'None' if B_u is None else 'a matrix'}, "
            f"B_v={'None' if B_v is None else 'a matrix'}"
        )
    precision_blocks = []
    for side, name, b, n in (("u", "B_u", B_u, pair.n_u), ("v", "B_v", B_v, pair.n_v)):
        lam, e = pair._eig[side]
        block = (e / lam) @ e.T
        if b is not None:
            block = block + symmetric(name, as_matrix(name, b, (n, n)))
        precision_blocks.append(block)
    precision = np.block([[precision_blocks[0], -A], [-A.T, precision_blocks[1]]])
    try:
        chol = scipy.linalg.cho_factor(precision, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        if B_u is None:
            norm = np.linalg.norm(pair._whiten(A), 2)
            reason = f"||C_uu^(1/2) A C_vv^(1/2)||_2 = {norm:.6g}, expected < 1"
        else:
            reason = "precision (47) [[B_u + C_uu^-1, -A], [-A^T, B_v + C_vv^-1]] is not positive definite"
        raise ValueError(f"A: the tilted model is improper (not normalisable): {reason}") from None
    cov = scipy.linalg.cho_solve(chol, np.eye(len(precision)), check_finite=False)
    return GaussianPair.from_joint(0.5 * (cov + cov.T), pair.n_u)


def alignment_model(pair: GaussianPair, alignment) -> GaussianPair:
    """ν of an :class:`~clipmath.theory.Alignment`.

    The quadratic tilting (both B = GᵀG, HᵀH) for a loss with the quadratic tilting (any
    ``quadratic_*``), the inner-product tilting otherwise.
    """
    if alignment.loss.startswith("quadratic"):
        return tilted_model(pair, alignment.A, alignment.G.T @ alignment.G, alignment.H.T @ alignment.H)
    return tilted_model(pair, alignment.A)


def model_gaps(pair: GaussianPair, model: GaussianPair) -> dict[str, float]:
    r"""What a model law ν matches of µ: relative Frobenius gaps and :math:`D_{KL}(\mu \| \nu)` (Lemma E.1).

    Returns:
        ``u_given_v_mean``, ``u_given_v_cov``, ``v_given_u_mean``, ``v_given_u_cov`` (the gaps
        :math:`\|X_\nu - X_\mu\|_F / \|X_\mu\|_F` of the conditional mean maps and covariances, eq. 37
        against ν's), ``u_marginal``, ``v_marginal`` (marginal covariances) and ``kl`` (nats).
    """
    out = {}
    for which in ("u_given_v", "v_given_u"):
        for name, got, want in zip(("mean", "cov"), model.conditional(which), pair.conditional(which), strict=True):
            out[f"{which}_{name}"] = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    for side in ("u", "v"):
        want = pair.marginal(side)
        out[f"{side}_marginal"] = float(np.linalg.norm(model.marginal(side) - want) / np.linalg.norm(want))
    zero = np.zeros(pair.n_u + pair.n_v)
    out["kl"] = gaussian_kl(zero, pair.joint_cov, zero, model.joint_cov)
    return out
