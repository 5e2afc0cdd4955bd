"""The tilted model ν: Corollaries 5.2, 5.4, 5.7, Section 5.4's example, properness."""

import numpy as np
import pytest
from scipy.linalg import sqrtm

from clipmath.theory import GaussianPair, h, optimal_alignment, random_gaussian_pair, tilted_model


@pytest.fixture
def pair_2d():
    return GaussianPair([[1.5]], [[1.0]], [[1.5]])


def quadratic_model(pair, result):
    """ν of a quadratic alignment, with both B's from the factor encoders."""
    return tilted_model(pair, result.A, result.G.T @ result.G, result.H.T @ result.H)


def min_eig(m):
    return np.linalg.eigvalsh(0.5 * (m + m.T))[0]


def test_two_dimensional_table(pair_2d):
    cond = tilted_model(pair_2d, optimal_alignment(pair_2d, "conditional").A)
    joint = tilted_model(pair_2d, optimal_alignment(pair_2d, "joint").A)
    quad = quadratic_model(pair_2d, optimal_alignment(pair_2d, "quadratic_u_given_v"))
    np.testing.assert_allclose(cond.joint_cov, [[2.7, 1.8], [1.8, 2.7]], rtol=1e-13)
    np.testing.assert_allclose(joint.joint_cov, [[2.0, 1.0], [1.0, 2.0]], rtol=1e-13)
    np.testing.assert_allclose(quad.joint_cov, [[7 / 6, 0.5], [0.5, 0.75]], rtol=1e-13)
    table = {  # (u|v coefficient, u|v variance, v|u coefficient, v|u variance), from the closed forms by hand
        "cond": (cond, 2 / 3, 1.5, 2 / 3, 1.5),
        "joint": (joint, 0.5, 1.5, 0.5, 1.5),
        "quad": (quad, 2 / 3, 5 / 6, 3 / 7, 15 / 28),
        "truth": (pair_2d, 2 / 3, 5 / 6, 2 / 3, 5 / 6),
    }
    for name, (model, m_uv, s_uv, m_vu, s_vu) in table.items():
        got = [x.item() for which in ("u_given_v", "v_given_u") for x in model.conditional(which)]
        np.testing.assert_allclose(got, [m_uv, s_uv, m_vu, s_vu], rtol=1e-13, err_msg=name)


@pytest.mark.parametrize("n_u,n_v", [(2, 2), (4, 3), (3, 5)])
def test_corollary_5_2_means_match_covariances_inflate(n_u, n_v):
    pair = random_gaussian_pair(n_u, n_v, seed=1)
    model = tilted_model(pair, optimal_alignment(pair, "conditional").A)
    for which, marginal in (("u_given_v", pair.cov_uu), ("v_given_u", pair.cov_vv)):
        true_mean, true_cov = pair.conditional(which)
        mean, cov = model.conditional(which)
        np.testing.assert_allclose(mean, true_mean, atol=1e-11)
        np.testing.assert_allclose(cov, marginal, atol=1e-11)  # eq. (41): frozen at the marginal
        gap = cov - true_cov
        assert min_eig(gap) > -1e-12 and np.linalg.norm(gap) > 1e-3  # ⪰ 0 and ≠ 0 since C_uv ≠ 0


def test_rank_r_conditional_mean_eq_69():
    pair = random_gaussian_pair(4, 3, seed=2)
    su, rv = np.real(sqrtm(pair.cov_uu)), np.real(sqrtm(np.linalg.inv(pair.cov_vv)))
    U, s, Vt = np.linalg.svd(np.linalg.inv(su) @ pair.cov_uv @ rv)
    for rank in (1, 2):
        mean, cov = tilted_model(pair, optimal_alignment(pair, "conditional", rank).A).conditional("u_given_v")
        np.testing.assert_allclose(mean, su @ (U[:, :rank] * s[:rank]) @ Vt[:rank] @ rv, atol=1e-11)
        np.testing.assert_allclose(cov, pair.cov_uu, atol=1e-11)


@pytest.mark.parametrize("n_u,n_v", [(2, 2), (4, 3), (3, 5)])
def test_corollary_5_4_quadratic_matches_the_true_conditional(n_u, n_v):
    pair = random_gaussian_pair(n_u, n_v, seed=3)
    for which, loss in (("u_given_v", "quadratic_u_given_v"), ("v_given_u", "quadratic_v_given_u")):
        model = quadratic_model(pair, optimal_alignment(pair, loss))
        for got, want in zip(model.conditional(which), pair.conditional(which), strict=False):
            np.testing.assert_allclose(got, want, atol=1e-10)


@pytest.mark.parametrize("n_u,n_v", [(2, 2), (2, 3), (3, 5)])
def test_corollary_5_7_marginals_and_loewner_order(n_u, n_v):
    pair = random_gaussian_pair(n_u, n_v, seed=4)
    su, rv = np.real(sqrtm(pair.cov_uu)), np.real(sqrtm(np.linalg.inv(pair.cov_vv)))
    U, s, _ = np.linalg.svd(np.linalg.inv(su) @ pair.cov_uv @ rv, full_matrices=False)
    marginals = {}
    for loss, d in (("conditional", s), ("joint", h(s))):
        got = tilted_model(pair, optimal_alignment(pair, loss).A).marginal("u")
        # (55a)/(55b): C_uu^{1/2} U (I − D²)^{-1} Uᵀ C_uu^{1/2}, with U square here (n_u <= n_v).
        np.testing.assert_allclose(got, su @ (U / (1 - d**2)) @ U.T @ su, atol=1e-10)
        marginals[loss] = got
    # C_uu ≺ ν_u(joint) ≺ ν_u(cond): strict since n_u <= n_v and every σ > 0.
    assert min_eig(marginals["joint"] - pair.cov_uu) > 1e-8
    assert min_eig(marginals["conditional"] - marginals["joint"]) > 1e-8


def test_joint_optimum_matches_the_cross_moment():
    # ν_A is an exponential family in A, so the L_joint optimum matches E_ν[u vᵀ] = C_uv.
    pair = random_gaussian_pair(4, 3, seed=5)
    model = tilted_model(pair, optimal_alignment(pair, "joint").A)
    np.testing.assert_allclose(model.cov_uv, pair.cov_uv, atol=1e-11)


def test_improper_and_bad_arguments_raise(pair_2d):
    with pytest.raises(ValueError, match=r"A: the tilted model is improper.*= 1\.5, expected < 1"):
        tilted_model(pair_2d, [[1.0]])  # ||C_uu^{1/2} A C_vv^{1/2}|| = 1.5
    with pytest.raises(ValueError, match=r"A: the tilted model is improper.*precision \(47\)"):
        tilted_model(pair_2d, [[2.0]], [[0.1]], [[0.1]])
    with pytest.raises(ValueError, match="B_u, B_v: the quadratic tilting needs both"):
        tilted_model(pair_2d, [[0.1]], B_u=[[1.0]])
    with pytest.raises(ValueError, match=r"A: expected shape \(1, 1\)"):
        tilted_model(pair_2d, [0.1])
    with pytest.raises(ValueError, match="B_v: contains NaN"):
        tilted_model(pair_2d, [[0.1]], [[1.0]], [[np.nan]])
