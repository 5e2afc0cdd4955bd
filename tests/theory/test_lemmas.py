"""Lemmas E.1 (Gaussian KL) and E.2 (exponential moment of a quadratic form) against Monte-Carlo."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from clipmath.theory import gaussian_kl, log_quadratic_exponential_moment, quadratic_exponential_moment

N_MC = 200_000


def random_spd(rng, n, floor=0.3):
    x = rng.standard_normal((n, n))
    return x @ x.T / n + floor * np.eye(n)


def test_gaussian_kl_against_monte_carlo():
    rng = np.random.default_rng(0)
    m1, m2 = rng.standard_normal(3), rng.standard_normal(3)
    c1, c2 = random_spd(rng, 3), random_spd(rng, 3)
    x = rng.multivariate_normal(m1, c1, size=N_MC)
    log_ratio = multivariate_normal(m1, c1).logpdf(x) - multivariate_normal(m2, c2).logpdf(x)
    se = log_ratio.std(ddof=1) / np.sqrt(N_MC)
    assert abs(log_ratio.mean() - gaussian_kl(m1, c1, m2, c2)) <= 4 * se


def test_gaussian_kl_exact_cases():
    assert gaussian_kl(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2)) == 0.0
    # 1-D: log(s2/s1) + (s1² + (m1 − m2)²)/(2 s2²) − ½.
    expected = np.log(2.0 / 0.5) + (0.25 + 9.0) / 8.0 - 0.5
    assert gaussian_kl([1.0], [[0.25]], [4.0], [[4.0]]) == pytest.approx(expected, rel=1e-14)


def test_quadratic_exponential_moment_against_monte_carlo():
    rng = np.random.default_rng(1)
    n = 3
    m, c = 0.3 * rng.standard_normal(n), 0.3 * rng.standard_normal(n)
    lam = random_spd(rng, n)
    b = rng.standard_normal((n, n))
    b = 0.1 * (b + b.T)
    # Finite variance needs Λ^{-1} − 2B ≻ 0.
    assert np.linalg.eigvalsh(np.linalg.inv(lam) - 2 * b)[0] > 0
    z = rng.multivariate_normal(m, lam, size=N_MC)
    values = np.exp(0.5 * np.sum((z @ b) * z, axis=1) + z @ c)
    se = values.std(ddof=1) / np.sqrt(N_MC)
    assert abs(values.mean() - quadratic_exponential_moment(m, lam, b, c)) <= 4 * se


def test_quadratic_exponential_moment_exact_cases_and_batches():
    # B = 0: the Gaussian moment generating function exp(cᵀm + ½ cᵀΛc).
    lam = np.array([[2.0, 0.5], [0.5, 1.0]])
    m, c = np.array([0.3, -0.2]), np.array([[0.5, 1.0], [0.0, 0.0], [-1.0, 0.2]])
    expected = np.exp(c @ m + 0.5 * np.sum((c @ lam) * c, axis=1))
    got = quadratic_exponential_moment(m, lam, np.zeros((2, 2)), c)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    # 1-D, c = m = 0: E exp(b z²/2) = (1 − b λ)^{-1/2}, infinite once b λ >= 1.
    assert quadratic_exponential_moment([0.0], [[2.0]], [[0.3]], [0.0]) == pytest.approx(0.4**-0.5, rel=1e-14)
    assert quadratic_exponential_moment([0.0], [[2.0]], [[0.5]], [0.0]) == np.inf
    assert quadratic_exponential_moment(np.zeros((4, 1)), [[2.0]], [[0.5]], [0.0]).tolist() == [np.inf] * 4


def test_log_moment_is_the_log_and_does_not_overflow():
    lam, b = np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([[0.1, 0.0], [0.0, -0.3]])
    c = np.array([[0.5, 1.0], [-1.0, 0.2]])
    value = quadratic_exponential_moment(np.zeros(2), lam, b, c)
    np.testing.assert_allclose(log_quadratic_exponential_moment(np.zeros(2), lam, b, c), np.log(value), rtol=1e-14)
    # B = 0, c = 40: log E e^{40 z}, z ~ N(0, 1), is 800; its exponential overflows float64.
    assert log_quadratic_exponential_moment([0.0], [[1.0]], [[0.0]], [40.0]) == pytest.approx(800.0, rel=1e-15)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="C2: expected a positive definite"):
        gaussian_kl(np.zeros(2), np.eye(2), np.zeros(2), -np.eye(2))
    with pytest.raises(ValueError, match=r"m2: expected shape \(2\)"):
        gaussian_kl(np.zeros(2), np.eye(2), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="C1: expected a symmetric"):
        gaussian_kl(np.zeros(2), [[1.0, 0.5], [0.0, 1.0]], np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="Lam: expected a positive definite"):
        quadratic_exponential_moment(np.zeros(1), [[-1.0]], [[0.0]], [0.0])
    with pytest.raises(ValueError, match=r"c: expected shape \(any, 2\)"):
        quadratic_exponential_moment(np.zeros(2), np.eye(2), np.zeros((2, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="m: expected shape"):
        quadratic_exponential_moment(0.0, np.eye(1), np.zeros((1, 1)), [0.0])
    with pytest.raises(ValueError, match="m and c: leading dimensions"):
        quadratic_exponential_moment(np.zeros((2, 1)), np.eye(1), np.zeros((1, 1)), np.zeros((3, 1)))
