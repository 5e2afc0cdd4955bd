"""Population-optimal linear encoders in the Gaussian setting (Section 5 of Baptista, Stuart & Tran 2025).

With :math:`W = C_{uu}^{-1/2} C_{uv} C_{vv}^{-1/2} = U \\Sigma V^\\top` (canonical correlations
σ), every closed form of Section 5 is diagonal in the canonical bases
:math:`L_u = C_{uu}^{-1/2} U` and :math:`L_v = C_{vv}^{-1/2} V`:

- ``conditional``: :math:`A^* = L_u \\mathrm{diag}(\\sigma) L_v^\\top` (Theorem 5.1; the top r for rank r);
- ``joint``: :math:`A^* = L_u \\mathrm{diag}(h(\\sigma)) L_v^\\top` (Theorem 5.6, Definition 5.5);
- ``quadratic_u_given_v``: :math:`A^* = L_u \\mathrm{diag}(\\sigma / (1 - \\sigma^2)) L_v^\\top` and
  :math:`B_u^* = L_u \\mathrm{diag}(\\sigma^2 / (1 - \\sigma^2)) L_u^\\top` (Theorem 5.3).

For the quadratic loss these are :math:`A^* = C_{u|v}^{-1} C_{uv} C_{vv}^{-1}` and
:math:`B^* = C_{u|v}^{-1} - C_{uu}^{-1}` of Theorem 5.3 (Woodbury). The factor encoders
(Remark D.3) are read off the same diagonal: :math:`G = \\mathrm{diag}(g) L_u^\\top` and
:math:`H = \\mathrm{diag}(k) L_v^\\top`, with :math:`g_i k_i` the diagonal of :math:`A^*` (and
:math:`g_i^2` that of :math:`B_u^*`); n_e is the rank.

At rank r < min(n_u, n_v) the quadratic loss is solved as the paper prescribes, (50a) with B
from numerically minimising (50b). (Not in the paper: the minimiser found is always the top-r
truncation of the full-rank diagonal above, as Ky Fan's inequality suggests; the tests check it.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.optimize

from clipmath.theory._checks import Seed, positive_int
from clipmath.theory.gaussian import GaussianPair

logger = logging.getLogger(__name__)

#: The population losses with a Gaussian closed form, by name.
LOSSES = ("conditional", "joint", "quadratic_u_given_v", "quadratic_v_given_u")


@dataclass(frozen=True)
class Alignment:
    """Optimal (or fitted) linear encoders :math:`g_u(u) = G u`, :math:`g_v(v) = H v` (eq. 38).

    Attributes:
        loss: the loss minimised, one of :data:`LOSSES`.
        rank: the embedding dimension n_e (rank constraint on A).
        A: (n_u, n_v) :math:`A = G^\\top H`, the inner-product coupling of the tilting (39)/(46).
        G: (n_e, n_u) encoder of u.
        H: (n_e, n_v) encoder of v.
        B_u: (n_u, n_u) :math:`G^\\top G` where the loss determines it (``quadratic_u_given_v``), else None.
        B_v: (n_v, n_v) :math:`H^\\top H` where the loss determines it (``quadratic_v_given_u``), else None.
    """

    loss: str
    rank: int
    A: np.ndarray
    G: np.ndarray
    H: np.ndarray
    B_u: np.ndarray | None = None
    B_v: np.ndarray | None = None


def h(sigma: np.ndarray | float) -> np.ndarray | float:
    """The shrinkage of the joint loss, Definition 5.5.

    .. math::  h(\\sigma) = \\frac{\\sqrt{1 + 4\\sigma^2} - 1}{2\\sigma} = \\frac{2\\sigma}{1 + \\sqrt{1 + 4\\sigma^2}},

    the positive root of :math:`\\sigma D^2 + D - \\sigma = 0`. The second form is used: it has
    no cancellation for small σ and extends continuously to h(0) = 0.

    Args:
        sigma: a float or an array of any shape with entries in [0, 1] (canonical correlations).

    Returns:
        h applied elementwise, a float for a float input.

    Raises:
        ValueError: if an entry is outside [0, 1] or NaN.
    """
    s = np.asarray(sigma, dtype=np.float64)
    if not np.all((s >= 0.0) & (s <= 1.0)):
        raise ValueError(f"sigma={sigma!r}: expected values in [0, 1] (Definition 5.5)")
    value = 2.0 * s / (1.0 + np.sqrt(1.0 + 4.0 * s * s))
    return float(value) if value.ndim == 0 else value


def _check_rank(pair: GaussianPair, rank: int | None) -> int:
    k = min(pair.n_u, pair.n_v)
    if rank is None:
        return k
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= k:
        raise ValueError(f"rank={rank!r}: expected an int in 1..min(n_u, n_v) = 1..{k}, or None")
    return int(rank)


def check_loss(loss: str) -> str:
    """``loss`` if it is one of :data:`LOSSES`; otherwise a ValueError naming it."""
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r}: expected one of {', '.join(LOSSES)}")
    return loss


def _quadratic_core(sigma: np.ndarray, r: int, restarts: int, seed: Seed) -> tuple[np.ndarray, np.ndarray]:
    """Rank-r minimiser of (50b) (with the corrected −log det), in canonical coordinates.

    Write :math:`B = C_{uu}^{-1/2} Z^\\top Z C_{uu}^{-1/2}` with :math:`Z = Y U^\\top`, Y (r, k).
    Components of Z orthogonal to the columns of U leave the data term of (50b) unchanged
    and only raise :math:`\\mathrm{Tr}(Z^\\top Z) - \\log\\det(I + Z Z^\\top)`, so the optimum has
    this form. With :math:`N = \\Sigma^2 + \\Sigma Y^\\top Y \\Sigma` (k, k), (50b) equals
    :math:`2 f(Y)` + const, where

    .. math::  f(Y) = \\tfrac12 \\mathrm{Tr}(Y Y^\\top) - \\tfrac12 \\log\\det(I_r + Y Y^\\top)
               - \\tfrac12 \\textstyle\\sum_{i \\le r} \\lambda_i(N),

    the last sum being :math:`\\|(P_B^{1/2} C_{uv} C_{vv}^{-1/2})_r\\|_F^2`; its gradient is
    :math:`Y - (I + Y Y^\\top)^{-1} Y - Y \\Sigma Q_r Q_r^\\top \\Sigma` with :math:`Q_r` the top-r
    eigenvectors of N. BFGS from ``restarts`` random starts; the lowest value wins. Then
    (50a) gives the coupling :math:`D = (I + Y^\\top Y) \\Sigma Q_r Q_r^\\top` (so
    :math:`A = L_u D L_v^\\top`), and the v-side core X solves :math:`Y^\\top X = D`.

    Args:
        sigma: (k,) canonical correlations, descending.
        r: rank, 1 <= r < k.
        restarts: number of random starts.
        seed: seed of ``numpy.random.default_rng`` for the starts (int, None or a Generator).

    Returns:
        ``(Y, X)``, both (r, k): :math:`G = Y L_u^\\top` and :math:`H = X L_v^\\top`.
    """
    k = len(sigma)
    sigma_sq = sigma**2

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        y = flat.reshape(r, k)
        ys = y * sigma
        lam, q = np.linalg.eigh(np.diag(sigma_sq) + ys.T @ ys)
        top = q[:, k - r :]
        inner = np.eye(r) + y @ y.T
        value = 0.5 * (np.sum(y * y) - np.linalg.slogdet(inner)[1] - np.sum(lam[k - r :]))
        grad = y - np.linalg.solve(inner, y) - (ys @ top) @ (top.T * sigma)
        return value, grad.ravel()

    rng = np.random.default_rng(seed)
    best = None
    for _ in range(restarts):
        fit = scipy.optimize.minimize(
            objective, rng.standard_normal(r * k), jac=True, method="BFGS",
            options={"gtol": 1e-11, "maxiter": 20_000},
        )
        if best is None or fit.fun < best.fun:
            best = fit
    y = best.x.reshape(r, k)
    grad_norm = np.linalg.norm(objective(best.x)[1])
    if grad_norm > 1e-8:
        logger.warning("rank-%d quadratic alignment: (50b) gradient norm %.2g after BFGS", r, grad_norm)
    ys = y * sigma
    top = np.linalg.eigh(np.diag(sigma_sq) + ys.T @ ys)[1][:, k - r :]
    coupling = (np.eye(k) + y.T @ y) @ ((sigma[:, None] * top) @ top.T)
    x = np.linalg.lstsq(y.T, coupling, rcond=None)[0]
    return y, x


def _in_basis(core: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``core @ basis.T`` for a (r, k) core; a (r,) core is a diagonal, applied by row scaling."""
    return core[:, None] * basis.T if core.ndim == 1 else core @ basis.T


def optimal_alignment(
    pair: GaussianPair, loss: str, rank: int | None = None, *, restarts: int = 4, seed: Seed = 0
) -> Alignment:
    """The population minimiser of ``loss`` over linear encoders with embedding dimension ``rank``.

    - ``conditional``: inner-product tilting, two-sided conditional loss (42), Theorem 5.1:
      :math:`A^*(r) = C_{uu}^{-1/2} (W)_r C_{vv}^{-1/2}`.
    - ``joint``: inner-product tilting, joint loss (52), Theorem 5.6:
      :math:`A^*(r) = C_{uu}^{-1/2} (U h(\\Sigma) V^\\top)_r C_{vv}^{-1/2}`.
    - ``quadratic_u_given_v``: quadratic tilting, one-sided u|v loss, Theorem 5.3:
      :math:`A^* = C_{u|v}^{-1} C_{uv} C_{vv}^{-1}`, :math:`B_u^* = C_{u|v}^{-1} - C_{uu}^{-1}` at full
      rank; for rank r < min(n_u, n_v), A from (50a) with :math:`B_u` from numerically
      minimising (50b) (−log det, see :func:`_quadratic_core`), over PSD rank-r :math:`B_u = G^\\top G`.
    - ``quadratic_v_given_u``: the mirror image, roles of u and v swapped (B_v = HᵀH).

    Args:
        pair: the data law.
        loss: one of :data:`LOSSES`.
        rank: embedding dimension n_e in 1..min(n_u, n_v); None for min(n_u, n_v) (full rank).
        restarts: random starts of the numerical (50b) minimisation (quadratic losses at
            rank < min(n_u, n_v) only).
        seed: seed of ``numpy.random.default_rng`` for those starts (int, None or a Generator).

    Returns:
        An :class:`Alignment` with :math:`G^\\top H = A` (Remark D.3); G and H have ``rank`` rows.

    Raises:
        ValueError: for an unknown ``loss`` or a ``rank`` outside 1..min(n_u, n_v).
    """
    check_loss(loss)
    r = _check_rank(pair, rank)
    sigma = pair.canonical_correlations()
    if loss.startswith("quadratic") and r < len(sigma):
        positive_int("restarts", restarts)
        # Cores in canonical coordinates: `tilted` carries B, `other` completes A (50a).
        tilted, other = _quadratic_core(sigma, r, restarts, seed)
        l_u, l_v = pair._whitening_bases(len(sigma))
    else:
        sigma = sigma[:r]
        if loss == "conditional":
            tilted = other = np.sqrt(sigma)
        elif loss == "joint":
            tilted = other = np.sqrt(h(sigma))
        else:
            # Theorem 5.3 in canonical form: σ/√(1-σ²) carries B = σ²/(1-σ²), 1/√(1-σ²) completes A.
            tilted = sigma / np.sqrt(1.0 - sigma**2)
            other = 1.0 / np.sqrt(1.0 - sigma**2)
        l_u, l_v = pair._whitening_bases(r)
    # The v|u loss is the u|v loss with the roles swapped; W has the same σ both ways.
    g_core, h_core = (other, tilted) if loss == "quadratic_v_given_u" else (tilted, other)
    G, H = _in_basis(g_core, l_u), _in_basis(h_core, l_v)
    return Alignment(
        loss=loss, rank=r, A=G.T @ H, G=G, H=H,
        B_u=G.T @ G if loss == "quadratic_u_given_v" else None,
        B_v=H.T @ H if loss == "quadratic_v_given_u" else None,
    )
