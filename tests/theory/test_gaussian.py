"""GaussianPair: validation, conditionals (eq. 37), canonical correlations, sampling, Remark D.2."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
from sklearn.cross_decomposition import CCA

from clipmath.theory import GaussianPair, optimal_alignment, population_loss_gradient, random_gaussian_pair

DIMS = [(1, 1), (2, 3), (4, 3), (3, 5)]


@pytest.fixture
def pair_2d():
    return GaussianPair([[1.5]], [[1.0]], [[1.5]])


def test_import_does_not_load_torch():
    code = "import sys, clipmath.theory; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_properties_and_joint_round_trip():
    pair = random_gaussian_pair(4, 3, seed=0)
    assert (pair.n_u, pair.n_v) == (4, 3)
    again = GaussianPair.from_joint(pair.joint_cov, 4)
    np.testing.assert_array_equal(again.joint_cov, pair.joint_cov)
    np.testing.assert_array_equal(pair.marginal("u"), pair.cov_uu)
    np.testing.assert_array_equal(pair.marginal("v"), pair.cov_vv)


@pytest.mark.parametrize("n_u,n_v", DIMS)
def test_canonical_correlations_solve_the_generalised_eigenproblem(n_u, n_v):
    # Independent route: σ² are the eigenvalues of C_uu^{-1} C_uv C_vv^{-1} C_vu.
    pair = random_gaussian_pair(n_u, n_v, seed=n_u + 10 * n_v)
    k = min(n_u, n_v)
    if n_u <= n_v:
        lhs = pair.cov_uv @ np.linalg.solve(pair.cov_vv, pair.cov_uv.T)
        sq = scipy.linalg.eigh(lhs, pair.cov_uu, eigvals_only=True)
    else:
        lhs = pair.cov_uv.T @ np.linalg.solve(pair.cov_uu, pair.cov_uv)
        sq = scipy.linalg.eigh(lhs, pair.cov_vv, eigvals_only=True)
    sigma = pair.canonical_correlations()
    assert sigma.shape == (k,)
    assert np.all(np.diff(sigma) <= 0)
    np.testing.assert_allclose(sigma, np.sqrt(np.sort(sq)[::-1]), rtol=0, atol=1e-12)


def test_canonical_correlations_match_sklearn_cca():
    pair = random_gaussian_pair(4, 3, seed=2)
    u, v = pair.sample(3000, seed=1)
    u, v = u - u.mean(0), v - v.mean(0)
    cca = CCA(n_components=3, max_iter=10_000, tol=1e-14).fit(u, v)
    scores_u, scores_v = cca.transform(u, v)
    sk = [np.corrcoef(scores_u[:, i], scores_v[:, i])[0, 1] for i in range(3)]
    # NIPALS stops at tol=1e-14 on the weights; the correlations then agree to ~1e-9 (measured 1e-12).
    np.testing.assert_allclose(GaussianPair.from_samples(u, v).canonical_correlations(), sk, atol=1e-8)


def test_conditionals_and_mutual_information_2d(pair_2d):
    mean_map, cov = pair_2d.conditional("u_given_v")
    np.testing.assert_allclose(mean_map, [[2 / 3]], rtol=1e-15)
    np.testing.assert_allclose(cov, [[1.5 - 1 / 1.5]], rtol=1e-15)
    mean_map, cov = pair_2d.conditional("v_given_u")
    np.testing.assert_allclose([mean_map[0, 0], cov[0, 0]], [2 / 3, 5 / 6], rtol=1e-15)
    # sigma is a singular value of C_uu^{-1/2} C_uv C_vv^{-1/2}, each factor from LAPACK (eigh, SVD):
    # a few ulps each, not the 4.5 ulps rtol=1e-15 allowed (1.5 ulps measured here). The mutual
    # information -log(1 - sigma^2)/2 amplifies sigma's relative error by 2 sigma^2 / ((1 - sigma^2) MI) = 2.7.
    np.testing.assert_allclose(pair_2d.canonical_correlations(), [2 / 3], rtol=1e-14)
    assert pair_2d.mutual_information() == pytest.approx(-0.5 * np.log(1 - 4 / 9), rel=1e-13)


@pytest.mark.parametrize("n_u,n_v", DIMS)
def test_conditional_against_schur_complement(n_u, n_v):
    pair = random_gaussian_pair(n_u, n_v, seed=7)
    mean_map, cov = pair.conditional("u_given_v")
    np.testing.assert_allclose(mean_map, pair.cov_uv @ np.linalg.inv(pair.cov_vv), atol=1e-12)
    # The conditional covariance is the inverse of the u-block of the joint precision.
    precision = np.linalg.inv(pair.joint_cov)
    np.testing.assert_allclose(cov, np.linalg.inv(precision[:n_u, :n_u]), atol=1e-11)
    mean_map, cov = pair.conditional("v_given_u")
    assert mean_map.shape == (n_v, n_u)
    np.testing.assert_allclose(cov, np.linalg.inv(precision[n_u:, n_u:]), atol=1e-11)


def test_mutual_information_equals_entropy_formula():
    pair = random_gaussian_pair(3, 2, seed=4)
    logdet = lambda m: np.linalg.slogdet(m)[1]  # noqa: E731
    expected = 0.5 * (logdet(pair.cov_uu) + logdet(pair.cov_vv) - logdet(pair.joint_cov))
    assert pair.mutual_information() == pytest.approx(expected, abs=1e-12)


def test_sample_moments_within_four_standard_errors():
    pair = random_gaussian_pair(2, 3, seed=5)
    n = 100_000
    u, v = pair.sample(n, seed=11)
    assert u.shape == (n, 2) and v.shape == (n, 3)
    z = np.hstack([u, v])
    c = pair.joint_cov
    # Var of z_i z_j for a centred Gaussian is C_ii C_jj + C_ij².
    se = np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / n)
    assert np.all(np.abs(z.T @ z / n - c) <= 4 * se)
    np.testing.assert_array_equal(pair.sample(5, seed=3)[0], pair.sample(5, seed=3)[0])


def test_from_samples_uses_uncentred_second_moments_and_gives_the_empirical_optimum():
    pair = random_gaussian_pair(3, 2, seed=6)
    u, v = pair.sample(500, seed=2)
    empirical = GaussianPair.from_samples(u, v)
    np.testing.assert_allclose(empirical.cov_uu, u.T @ u / 500, rtol=1e-15)
    np.testing.assert_allclose(empirical.cov_uv, u.T @ v / 500, rtol=1e-15)
    # Remark D.2: the closed form with empirical moments is stationary for the empirical loss.
    for loss in ("conditional", "joint"):
        A = optimal_alignment(empirical, loss).A
        _, (grad, _, _) = population_loss_gradient(empirical, loss, A)
        np.testing.assert_allclose(grad, 0.0, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(cov_uu=[[1.0, 0.0]], cov_uv=[[0.0]], cov_vv=[[1.0]]), "cov_uu: expected a square"),
        (dict(cov_uu=[[np.nan]], cov_uv=[[0.0]], cov_vv=[[1.0]]), "cov_uu: contains NaN"),
        (dict(cov_uu=[[1.0]], cov_uv=[[0.0, 0.0]], cov_vv=[[1.0]]), r"cov_uv: expected shape \(1, 1\)"),
        (dict(cov_uu=[[1.0, 0.5], [0.4, 1.0]], cov_uv=[[0.0], [0.0]], cov_vv=[[1.0]]), "cov_uu: expected a symmetric"),
        (dict(cov_uu=[[-1.0]], cov_uv=[[0.0]], cov_vv=[[1.0]]), "cov_uu: expected positive definite"),
        (dict(cov_uu=[[1.0]], cov_uv=[[0.0]], cov_vv=[[0.0]]), "cov_vv: expected positive definite"),
        (dict(cov_uu=[[1.0]], cov_uv=[[1.0]], cov_vv=[[1.0]]), "cov_uv: joint covariance .* not positive definite"),
        (dict(cov_uu=np.zeros((0, 0)), cov_uv=np.zeros((0, 1)), cov_vv=[[1.0]]), "non-empty"),
    ],
)
def test_bad_covariances_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianPair(**kwargs)


def test_bad_arguments_raise(pair_2d):
    with pytest.raises(ValueError, match="n_u=2"):
        GaussianPair.from_joint(np.eye(2), 2)
    with pytest.raises(ValueError, match="^C: cov_uv"):
        GaussianPair.from_joint([[1.0, 2.0], [2.0, 1.0]], 1)
    with pytest.raises(ValueError, match="which='u|v'"):
        pair_2d.conditional("u|v")
    with pytest.raises(ValueError, match="modality='w'"):
        pair_2d.marginal("w")
    with pytest.raises(ValueError, match="n=0"):
        pair_2d.sample(0)
    with pytest.raises(ValueError, match="u, v: 2 samples"):
        GaussianPair.from_samples(np.ones((2, 2)), np.ones((2, 1)))
    with pytest.raises(ValueError, match="u and v: expected the same number"):
        GaussianPair.from_samples(np.ones((5, 1)), np.ones((4, 1)))
    with pytest.raises(ValueError, match="n_v=0"):
        random_gaussian_pair(1, 0)
