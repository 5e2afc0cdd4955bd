"""Monte-Carlo estimates of the population losses from the per-sample losses.

The per-sample losses of Section 2 and 5 of Baptista, Stuart & Tran (2025) need expectations
over the product of marginals (the negatives); for linear encoders on Gaussian data these are
exact Gaussian integrals (Lemma E.2), so only the outer expectation over µ is sampled. The
estimate converges to :func:`clipmath.theory.population_loss` at rate :math:`N^{-1/2}` and
comes with its standard error; it is the sampling-side check of every closed-form loss.
"""

from __future__ import annotations

import numpy as np

from clipmath.theory._checks import Seed, positive_int
from clipmath.theory.gaussian import GaussianPair
from clipmath.theory.lemmas import log_quadratic_exponential_moment
from clipmath.theory.losses import check_loss_arguments
from clipmath.theory.model import tilted_model


def _log_mgf(cov: np.ndarray, B: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Log E exp(½ zᵀBz + cᵀz), z ~ N(0, cov), for a batch c (N, n) (Lemma E.2)."""
    return log_quadratic_exponential_moment(np.zeros(len(cov)), cov, B, c)


def _mean_and_se(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))


def monte_carlo_loss(
    pair: GaussianPair,
    loss: str,
    A: np.ndarray,
    B_u: np.ndarray | None = None,
    B_v: np.ndarray | None = None,
    *,
    n: int = 100_000,
    seed: Seed = None,
    bandwidth: float | None = None,
) -> tuple[float, float]:
    r"""Estimate the population loss by averaging the per-sample loss over n draws of µ.

    - ``conditional``: the two-sided CLIP term per pair (eqs. 10-11),
      :math:`-u^\top A v + \tfrac12 \log \mathbb E_{v'} e^{u^\top A v'} + \tfrac12 \log \mathbb E_{u'} e^{u'^\top A v}`.
    - ``joint`` (Problem 3.7): :math:`-\overline{u^\top A v} + \log \overline{\mathbb E_{v'} e^{u'^\top A v'}}`, the
      second average over an independent batch u' ~ µ_u; standard error by the delta method.
      The estimator has finite variance only when :math:`\|C_{uu}^{1/2} A C_{vv}^{1/2}\|_2^2 < 1/2`.
    - ``quadratic_u_given_v``:
      :math:`\tfrac12 u^\top B_u u - u^\top A v + \log \mathbb E_{u'} e^{-\frac12 u'^\top B_u u' + u'^\top A v}`;
      ``quadratic_v_given_u`` its mirror image; ``quadratic_conditional`` the mean of the two.
    - ``quadratic_joint``:
      :math:`\tfrac12 \overline{|Gu - Hv|^2} + \log \overline{\mathbb E_{v'} e^{-\frac12 |G u' - H v'|^2}}`
      (written in A, B_u, B_v), u' an independent batch; delta-method standard error.
    - ``mmd_conditional``: per pair, :math:`\tfrac12 k(y, y') - k(u, y)` with y, y' drawn from the model
      conditional :math:`\nu_{u|v} = \mathcal N(C_{uu} A v, C_{uu})` (eq. 41), plus the v|u mirror: every
      expectation sampled, none integrated, so it checks the Gaussian kernel integrals of
      :mod:`clipmath.theory.mmd`.
    - ``mmd_joint``: per draw, :math:`-2 k(z, y) + k(y, y')` with z ~ µ and y, y' ~ ν (precision (40)).

    Args:
        pair: the data law.
        loss: one of :data:`clipmath.theory.LOSSES`.
        A: (n_u, n_v) coupling.
        B_u: (n_u, n_u), for the losses that read it (as :func:`clipmath.theory.population_loss`).
        B_v: (n_v, n_v), likewise.
        n: number of pairs drawn (and of extra draws for ``joint``, ``quadratic_joint`` and the MMD losses).
        seed: seed of ``numpy.random.default_rng`` for the draws (int, None or a Generator).
        bandwidth: Gaussian kernel bandwidth of the MMD losses (default 1).

    Returns:
        ``(estimate, standard_error)`` in nats.

    Raises:
        ValueError: as :func:`clipmath.theory.population_loss`, or for n < 2.
    """
    A, B_u, B_v, bandwidth = check_loss_arguments(pair, loss, A, B_u, B_v, bandwidth)
    if positive_int("n", n) < 2:
        raise ValueError(f"n={n!r}: expected at least 2 draws for a standard error")
    rng = np.random.default_rng(seed)
    u, v = pair.sample(n, seed=rng)
    if loss in ("mmd_conditional", "mmd_joint"):
        return _mean_and_se(_mmd_per_sample(pair, loss, A, bandwidth, u, v, rng))
    positive = np.sum((u @ A) * v, axis=1)
    zero_u, zero_v = np.zeros((pair.n_u,) * 2), np.zeros((pair.n_v,) * 2)
    if loss == "conditional":
        normalisers = _log_mgf(pair.cov_vv, zero_v, u @ A) + _log_mgf(pair.cov_uu, zero_u, v @ A.T)
        per_sample = -positive + 0.5 * normalisers
        return _mean_and_se(per_sample)
    if loss in ("joint", "quadratic_joint"):
        negatives, _ = pair.sample(n, seed=rng)
        if loss == "joint":
            log_inner = _log_mgf(pair.cov_vv, zero_v, negatives @ A)
        else:
            positive = positive - 0.5 * (np.sum((u @ B_u) * u, axis=1) + np.sum((v @ B_v) * v, axis=1))
            log_inner = _log_mgf(pair.cov_vv, -B_v, negatives @ A) - 0.5 * np.sum((negatives @ B_u) * negatives, axis=1)
        shift = log_inner.max()
        inner = np.exp(log_inner - shift)  # the shift cancels in the ratio se/mean below
        mean_pos, se_pos = _mean_and_se(positive)
        mean_inner, se_inner = _mean_and_se(inner)
        return -mean_pos + shift + float(np.log(mean_inner)), float(np.hypot(se_pos, se_inner / mean_inner))
    one_sided = {
        "quadratic_u_given_v": lambda: (
            0.5 * np.sum((u @ B_u) * u, axis=1) - positive + _log_mgf(pair.cov_uu, -B_u, v @ A.T)
        ),
        "quadratic_v_given_u": lambda: (
            0.5 * np.sum((v @ B_v) * v, axis=1) - positive + _log_mgf(pair.cov_vv, -B_v, u @ A)
        ),
    }
    if loss == "quadratic_conditional":
        return _mean_and_se(0.5 * (one_sided["quadratic_u_given_v"]() + one_sided["quadratic_v_given_u"]()))
    return _mean_and_se(one_sided[loss]())


def _kernel(x: np.ndarray, y: np.ndarray, bandwidth: float) -> np.ndarray:
    return np.exp(-np.sum((x - y) ** 2, axis=1) / (2.0 * bandwidth**2))


def _draw(cov: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((n, len(cov))) @ np.linalg.cholesky(cov).T


def _mmd_per_sample(pair: GaussianPair, loss: str, A, bandwidth: float, u, v, rng) -> np.ndarray:
    """Per-draw MMD losses with every expectation sampled (see :func:`monte_carlo_loss`)."""
    n = len(u)
    if loss == "mmd_joint":
        model = tilted_model(pair, A).joint_cov
        z = np.concatenate([u, v], axis=1)
        y, y2 = _draw(model, n, rng), _draw(model, n, rng)
        return -2.0 * _kernel(z, y, bandwidth) + _kernel(y, y2, bandwidth)
    total = np.zeros(n)
    for x, given, cov_x, coupling in ((u, v, pair.cov_uu, A), (v, u, pair.cov_vv, A.T)):
        mean = given @ (cov_x @ coupling).T  # ν_{x|y} = N(C_xx A y, C_xx), eq. (41)
        y, y2 = mean + _draw(cov_x, n, rng), mean + _draw(cov_x, n, rng)
        total += 0.5 * _kernel(y, y2, bandwidth) - _kernel(x, y, bandwidth)
    return total
