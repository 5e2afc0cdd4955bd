"""Direct numerical minimisation of the population losses over linear encoders (G, H).

The independent check of every closed form in :mod:`clipmath.theory.alignment`: the loss of
:func:`clipmath.theory.population_loss` is minimised over :math:`G \\in \\mathbb R^{n_e \\times n_u}`,
:math:`H \\in \\mathbb R^{n_e \\times n_v}` (eq. 38) with BFGS and exact gradients (chain rule
through :math:`A = G^\\top H`, :math:`B_u = G^\\top G`, :math:`B_v = H^\\top H`), from several
random starts, as Section 7.5 of the digest does.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.optimize

from clipmath.theory._checks import Seed, positive_int
from clipmath.theory.alignment import Alignment, _check_rank, check_loss
from clipmath.theory.gaussian import GaussianPair
from clipmath.theory.losses import population_loss_gradient

logger = logging.getLogger(__name__)


def numerical_alignment(
    pair: GaussianPair,
    loss: str,
    rank: int | None = None,
    *,
    restarts: int = 4,
    seed: Seed = 0,
    gtol: float = 1e-12,
) -> Alignment:
    """Minimise ``population_loss(pair, loss, GᵀH, ...)`` over (G, H) with ``rank`` rows each.

    Starts are drawn inside the domain of every loss: G and H have Gaussian entries scaled so
    that :math:`E\\|C_{uu}^{1/2} G^\\top\\|_F^2 = E\\|C_{vv}^{1/2} H^\\top\\|_F^2 = 1/4`, hence
    :math:`\\|C_{uu}^{1/2} A C_{vv}^{1/2}\\|_2 < 1` typically (halved until the loss is finite).
    The lowest of the ``restarts`` BFGS minima wins.

    Args:
        pair: the data law.
        loss: one of :data:`clipmath.theory.LOSSES`.
        rank: embedding dimension n_e in 1..min(n_u, n_v); None for full rank.
        restarts: number of random starts (>= 1).
        seed: seed of ``numpy.random.default_rng`` for the starts (int, None or a Generator).
        gtol: BFGS tolerance on the gradient norm.

    Returns:
        An :class:`~clipmath.theory.Alignment` holding the fitted G, H and the A, B_u, B_v they give.
    """
    check_loss(loss)
    r = _check_rank(pair, rank)
    positive_int("restarts", restarts)
    n_u, n_v = pair.n_u, pair.n_v

    def unpack(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        g, h = flat[: r * n_u].reshape(r, n_u), flat[r * n_u :].reshape(r, n_v)
        tilts = {
            "B_u": g.T @ g if loss == "quadratic_u_given_v" else None,
            "B_v": h.T @ h if loss == "quadratic_v_given_u" else None,
        }
        return g, h, tilts

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        g, h, tilts = unpack(flat)
        value, (d_a, d_bu, d_bv) = population_loss_gradient(pair, loss, g.T @ h, **tilts)
        d_g, d_h = h @ d_a.T, g @ d_a
        if d_bu is not None:
            d_g = d_g + 2.0 * g @ d_bu
        if d_bv is not None:
            d_h = d_h + 2.0 * h @ d_bv
        return value, np.concatenate([d_g.ravel(), d_h.ravel()])

    rng = np.random.default_rng(seed)
    scale = np.concatenate([
        np.full(r * n_u, 0.5 / np.sqrt(r * np.trace(pair.cov_uu))),
        np.full(r * n_v, 0.5 / np.sqrt(r * np.trace(pair.cov_vv))),
    ])
    best = None
    for _ in range(restarts):
        start = rng.standard_normal(len(scale)) * scale
        while not np.isfinite(objective(start)[0]):
            start = 0.5 * start
        fit = scipy.optimize.minimize(
            objective, start, jac=True, method="BFGS", options={"gtol": gtol, "maxiter": 50_000}
        )
        if best is None or fit.fun < best.fun:
            best = fit
    logger.debug("numerical %s rank %d: loss %.12g, %s", loss, r, best.fun, best.message)
    g, h, tilts = unpack(best.x)
    return Alignment(loss=loss, rank=r, A=g.T @ h, G=g, H=h, **tilts)
