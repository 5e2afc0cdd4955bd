"""Optimal alignments: Section 5.4's example, Definition 5.5, Theorems 5.1/5.3/5.6 against numerical minimisation."""

import numpy as np
import pytest
from scipy.linalg import sqrtm

from clipmath.theory import LOSSES, GaussianPair, h, numerical_alignment, optimal_alignment, random_gaussian_pair
from clipmath.theory.alignment import MMD_LOSSES

# The certified numerics (BFGS, then Newton to a relative step 1e-10) agree with the closed
# forms to ~1e-14 on these cases (measured); the bar this package sets is 1e-6.
REL_TOL = 1e-6
CASES = [(n_u, n_v, seed) for n_u, n_v in [(1, 1), (2, 2), (4, 3), (3, 5)] for seed in (0, 1)]


def rel_err(x, y):
    return np.linalg.norm(x - y) / np.linalg.norm(y)


@pytest.fixture
def pair_2d():
    return GaussianPair([[1.5]], [[1.0]], [[1.5]])


def test_h_values():
    assert h(1.0) == pytest.approx((np.sqrt(5) - 1) / 2, rel=1e-15)
    assert h(2 / 3) == pytest.approx(0.5, rel=1e-15)
    assert h(0.0) == 0.0
    assert h(1e-9) / 1e-9 == pytest.approx(1.0, rel=1e-15)
    sigma = np.linspace(0.01, 1.0, 50)
    value = h(sigma)
    # σD² + D − σ = 0, evaluated in float64: three terms of size <= 1, each a few ulps off, and
    # an error δ in D moves the residual by (2σD + 1)δ <= 3δ; so a few 1e-16 (1.1e-16 measured),
    # which 1e-15 bounds only just.
    np.testing.assert_allclose(sigma * value**2 + value - sigma, 0.0, atol=1e-14)
    assert np.all((value >= 0) & (value < sigma))


@pytest.mark.parametrize("bad", [-0.1, 1.5, np.nan, [0.5, 2.0]])
def test_h_rejects_values_outside_unit_interval(bad):
    with pytest.raises(ValueError, match="sigma="):
        h(bad)


def test_two_dimensional_table(pair_2d):
    cond = optimal_alignment(pair_2d, "conditional")
    joint = optimal_alignment(pair_2d, "joint")
    quad = optimal_alignment(pair_2d, "quadratic_u_given_v")
    assert cond.A[0, 0] == pytest.approx(4 / 9, rel=1e-14)
    assert joint.A[0, 0] == pytest.approx(1 / 3, rel=1e-14)
    assert quad.A[0, 0] == pytest.approx(0.8, rel=1e-14)
    assert quad.B_u[0, 0] == pytest.approx(8 / 15, rel=1e-14)
    assert (quad.H**2)[0, 0] == pytest.approx(1.2, rel=1e-14)  # C = A²/B at n_e = 1
    assert cond.B_u is None and cond.B_v is None and quad.B_v is None
    mirror = optimal_alignment(pair_2d, "quadratic_v_given_u")
    assert mirror.A[0, 0] == pytest.approx(0.8, rel=1e-14)
    assert mirror.B_v[0, 0] == pytest.approx(8 / 15, rel=1e-14) and mirror.B_u is None


# The MMD optima are numerical on both sides here (multi-start consistency, ~10 s a case):
# slow; tests/theory/test_new_losses.py checks them on one small case by default.
@pytest.mark.parametrize(
    "loss", [pytest.param(loss, marks=pytest.mark.slow) if loss in MMD_LOSSES else loss for loss in LOSSES]
)
@pytest.mark.parametrize("n_u,n_v,seed", CASES)
def test_closed_form_matches_numerical_minimisation_at_every_rank(loss, n_u, n_v, seed):
    pair = random_gaussian_pair(n_u, n_v, seed=seed)
    for rank in range(1, min(n_u, n_v) + 1):
        closed = optimal_alignment(pair, loss, rank)
        fitted = numerical_alignment(pair, loss, rank, restarts=3, seed=seed)
        assert rel_err(fitted.A, closed.A) <= REL_TOL, (loss, rank)
        for name in ("B_u", "B_v"):
            if getattr(closed, name) is not None:
                assert rel_err(getattr(fitted, name), getattr(closed, name)) <= REL_TOL, (loss, rank, name)


@pytest.mark.parametrize("loss", LOSSES)
def test_factor_encoders(loss):
    pair = random_gaussian_pair(4, 3, seed=3)
    for rank in (1, 2, 3):
        result = optimal_alignment(pair, loss, rank)
        assert result.G.shape == (rank, 4) and result.H.shape == (rank, 3) and result.rank == rank
        np.testing.assert_allclose(result.G.T @ result.H, result.A, atol=1e-12)  # Remark D.3
        assert np.linalg.matrix_rank(result.A) == rank
        if result.B_u is not None:
            np.testing.assert_allclose(result.G.T @ result.G, result.B_u, atol=1e-12)
        if result.B_v is not None:
            np.testing.assert_allclose(result.H.T @ result.H, result.B_v, atol=1e-12)


def test_literal_theorem_formulas():
    pair = random_gaussian_pair(4, 3, seed=8)
    cuu, cuv, cvv = pair.cov_uu, pair.cov_uv, pair.cov_vv
    inv = np.linalg.inv
    # Theorem 5.1, unconstrained.
    np.testing.assert_allclose(optimal_alignment(pair, "conditional").A, inv(cuu) @ cuv @ inv(cvv), atol=1e-11)
    # Theorems 5.1 and 5.6 at rank 2, through sqrtm and an SVD of W.
    ru, rv = np.real(sqrtm(inv(cuu))), np.real(sqrtm(inv(cvv)))
    U, s, Vt = np.linalg.svd(ru @ cuv @ rv)
    cond_r = ru @ (U[:, :2] * s[:2]) @ Vt[:2] @ rv
    joint_r = ru @ (U[:, :2] * h(s[:2])) @ Vt[:2] @ rv
    np.testing.assert_allclose(optimal_alignment(pair, "conditional", 2).A, cond_r, atol=1e-11)
    np.testing.assert_allclose(optimal_alignment(pair, "joint", 2).A, joint_r, atol=1e-11)
    # Theorem 5.3 and its mirror.
    c_u_v = cuu - cuv @ inv(cvv) @ cuv.T
    c_v_u = cvv - cuv.T @ inv(cuu) @ cuv
    quad = optimal_alignment(pair, "quadratic_u_given_v")
    np.testing.assert_allclose(quad.A, inv(c_u_v) @ cuv @ inv(cvv), atol=1e-11)
    np.testing.assert_allclose(quad.B_u, inv(cuu) @ cuv @ inv(c_v_u) @ cuv.T @ inv(cuu), atol=1e-11)
    np.testing.assert_allclose(quad.B_u, inv(c_u_v) - inv(cuu), atol=1e-11)
    mirror = optimal_alignment(pair, "quadratic_v_given_u")
    np.testing.assert_allclose(mirror.A, inv(cuu) @ cuv @ inv(c_v_u), atol=1e-11)
    np.testing.assert_allclose(mirror.B_v, inv(c_v_u) - inv(cvv), atol=1e-11)


@pytest.mark.parametrize("n_u,n_v,seed", [(3, 5, 4), (5, 3, 4), (4, 4, 6)])
def test_rank_r_quadratic_optimum_is_the_literal_truncated_formula(n_u, n_v, seed):
    # The closed form (docs/theory/rank_r_quadratic.md) through sqrtm and an SVD of W:
    # B*(r) = C_uu^{-1/2} U_r diag(σ²/(1-σ²)) U_rᵀ C_uu^{-1/2}, A*(r) = C_uu^{-1/2} U_r diag(σ/(1-σ²)) V_rᵀ C_vv^{-1/2},
    # B_v*(r) = C_vv^{-1/2} V_r diag(σ²/(1-σ²)) V_rᵀ C_vv^{-1/2} for the mirror (same A).
    pair = random_gaussian_pair(n_u, n_v, seed=seed)
    ru = np.real(sqrtm(np.linalg.inv(pair.cov_uu)))
    rv = np.real(sqrtm(np.linalg.inv(pair.cov_vv)))
    U, s, Vt = np.linalg.svd(ru @ pair.cov_uv @ rv)
    for rank in range(1, min(n_u, n_v) + 1):
        u_r, v_r, s_r = U[:, :rank], Vt[:rank].T, s[:rank]
        a_r = ru @ (u_r * (s_r / (1 - s_r**2))) @ v_r.T @ rv
        result = optimal_alignment(pair, "quadratic_u_given_v", rank)
        mirror = optimal_alignment(pair, "quadratic_v_given_u", rank)
        np.testing.assert_allclose(result.B_u, ru @ (u_r * (s_r**2 / (1 - s_r**2))) @ u_r.T @ ru, atol=1e-11)
        np.testing.assert_allclose(mirror.B_v, rv @ (v_r * (s_r**2 / (1 - s_r**2))) @ v_r.T @ rv, atol=1e-11)
        np.testing.assert_allclose(result.A, a_r, atol=1e-11)
        np.testing.assert_allclose(mirror.A, a_r, atol=1e-11)


@pytest.mark.parametrize("rank", [0, 4, 1.0, True, "2"])
def test_bad_rank_raises(rank):
    with pytest.raises(ValueError, match="rank="):
        optimal_alignment(random_gaussian_pair(4, 3, seed=0), "conditional", rank)


def test_unknown_loss_raises(pair_2d):
    with pytest.raises(ValueError, match="loss='clip'"):
        optimal_alignment(pair_2d, "clip")
    with pytest.raises(ValueError, match="loss='quadratic'"):
        numerical_alignment(pair_2d, "quadratic")
    with pytest.raises(ValueError, match="restarts=0"):
        numerical_alignment(random_gaussian_pair(2, 2, seed=0), "conditional", 1, restarts=0)
