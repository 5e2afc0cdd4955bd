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


def _log_mgf(cov: np.ndarray, B: np.ndarray, c: np.ndarray) -> np.ndarray:
    """log E exp(½ zᵀBz + cᵀz), z ~ N(0, cov), for a batch c (N, n) (Lemma E.2)."""
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
) -> tuple[float, float]:
    """Estimate the population loss by averaging the per-sample loss over n draws of µ.

    - ``conditional``: the two-sided CLIP term per pair (eqs. 10-11),
      :math:`-u^\\top A v + \\tfrac12 \\log \\mathbb E_{v'} e^{u^\\top A v'} + \\tfrac12 \\log \\mathbb E_{u'} e^{u'^\\top A v}`.
    - ``joint`` (Problem 3.7): :math:`-\\overline{u^\\top A v} + \\log \\overline{\\mathbb E_{v'} e^{u'^\\top A v'}}`, the
      second average over an independent batch u' ~ µ_u; standard error by the delta method.
      The estimator has finite variance only when :math:`\\|C_{uu}^{1/2} A C_{vv}^{1/2}\\|_2^2 < 1/2`.
    - ``quadratic_u_given_v``: :math:`\\tfrac12 u^\\top B_u u - u^\\top A v + \\log \\mathbb E_{u'} e^{-\\frac12 u'^\\top B_u u' + u'^\\top A v}`;
      ``quadratic_v_given_u`` its mirror image.

    Args:
        pair: the data law.
        loss: one of :data:`clipmath.theory.LOSSES`.
        A: (n_u, n_v) coupling.
        B_u: (n_u, n_u), for ``quadratic_u_given_v`` only.
        B_v: (n_v, n_v), for ``quadratic_v_given_u`` only.
        n: number of pairs drawn (and of extra u' draws for ``joint``).
        seed: seed of ``numpy.random.default_rng`` for the draws (int, None or a Generator).

    Returns:
        ``(estimate, standard_error)`` in nats.

    Raises:
        ValueError: as :func:`clipmath.theory.population_loss`, or for n < 2.
    """
    A, B_u, B_v = check_loss_arguments(pair, loss, A, B_u, B_v)
    if positive_int("n", n) < 2:
        raise ValueError(f"n={n!r}: expected at least 2 draws for a standard error")
    rng = np.random.default_rng(seed)
    u, v = pair.sample(n, seed=rng)
    positive = np.sum((u @ A) * v, axis=1)
    zero_u, zero_v = np.zeros((pair.n_u,) * 2), np.zeros((pair.n_v,) * 2)
    if loss == "conditional":
        normalisers = _log_mgf(pair.cov_vv, zero_v, u @ A) + _log_mgf(pair.cov_uu, zero_u, v @ A.T)
        per_sample = -positive + 0.5 * normalisers
        return _mean_and_se(per_sample)
    if loss == "joint":
        negatives, _ = pair.sample(n, seed=rng)
        log_inner = _log_mgf(pair.cov_vv, zero_v, negatives @ A)
        shift = log_inner.max()
        inner = np.exp(log_inner - shift)  # the shift cancels in the ratio se/mean below
        mean_pos, se_pos = _mean_and_se(positive)
        mean_inner, se_inner = _mean_and_se(inner)
        return -mean_pos + shift + float(np.log(mean_inner)), float(np.hypot(se_pos, se_inner / mean_inner))
    if loss == "quadratic_u_given_v":
        x, cov_x, tilt, coupled = u, pair.cov_uu, B_u, v @ A.T
    else:
        x, cov_x, tilt, coupled = v, pair.cov_vv, B_v, u @ A
    per_sample = 0.5 * np.sum((x @ tilt) * x, axis=1) - positive + _log_mgf(cov_x, -tilt, coupled)
    return _mean_and_se(per_sample)
