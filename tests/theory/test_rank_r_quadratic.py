"""The rank-r one-sided quadratic optimum in closed form (docs/theory/rank_r_quadratic.md).

Checked three ways: against the paper's numerical route, (50a) with B from minimising (50b)
(:func:`numerical_quadratic_alignment`, certified); against the literal formulas; and through
the steps of the proof (the reduction to F, the inner minimiser, the Poincaré bound).
"""

import warnings

import numpy as np
import pytest
from scipy.linalg import sqrtm

from clipmath.theory import (
    ConvergenceError,
    FlatMinimumWarning,
    gaussian_pair_with_correlations,
    numerical_quadratic_alignment,
    optimal_alignment,
    population_loss,
    quadratic_minimum,
    random_gaussian_pair,
    tilted_model,
    unique_minimiser,
)
from clipmath.theory.losses import population_loss_gradient

QUADRATIC = ("quadratic_u_given_v", "quadratic_v_given_u")
TILT = {"quadratic_u_given_v": "B_u", "quadratic_v_given_u": "B_v"}
# The bar for closed form against the (50b) oracle. Measured: <= 6e-15 on random
# pairs and weak correlations, <= 2e-10 at σ = 0.9999 (where 1/(1 − σ²) = 5e3 amplifies round-off).
REL = 1e-8


def rel(x, y):
    return np.linalg.norm(x - y) / np.linalg.norm(y)


def loss_of(pair, loss, result):
    return population_loss(pair, loss, result.A, **{TILT[loss]: getattr(result, TILT[loss])})


def oracle(pair, loss, rank, *, expect_flat=False, seed=0):
    """The (50b) oracle; a FlatMinimumWarning is an error unless a tie is expected (and then required)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = numerical_quadratic_alignment(pair, loss, rank, seed=seed)
    flat = [w for w in caught if issubclass(w.category, FlatMinimumWarning)]
    assert bool(flat) == expect_flat, [str(w.message) for w in flat]
    return result


def whitened(pair):
    ru = np.real(sqrtm(np.linalg.inv(pair.cov_uu)))
    rv = np.real(sqrtm(np.linalg.inv(pair.cov_vv)))
    return ru, rv, ru @ pair.cov_uv @ rv


@pytest.mark.parametrize("n_u,n_v,seed", [(2, 2, 0), (4, 3, 1), (3, 5, 2), (6, 6, 3), (7, 4, 4)])
def test_closed_form_matches_the_50b_oracle_at_every_rank(n_u, n_v, seed):
    pair = random_gaussian_pair(n_u, n_v, seed=seed)
    for loss in QUADRATIC:
        for rank in range(1, min(n_u, n_v) + 1):
            closed, fitted = optimal_alignment(pair, loss, rank), oracle(pair, loss, rank, seed=seed)
            assert rel(fitted.A, closed.A) <= REL, (loss, rank)
            assert rel(getattr(fitted, TILT[loss]), getattr(closed, TILT[loss])) <= REL, (loss, rank)
            # The closed form is never beaten (beyond round-off of an O(1) loss).
            assert loss_of(pair, loss, closed) <= loss_of(pair, loss, fitted) + 1e-13


@pytest.mark.parametrize("loss", QUADRATIC)
def test_minimum_value_and_factor_encoders(loss):
    pair = random_gaussian_pair(5, 4, seed=7)
    sigma = pair.canonical_correlations()
    values = []
    for rank in range(1, 5):
        result = optimal_alignment(pair, loss, rank)
        value = quadratic_minimum(pair, rank)
        assert value == pytest.approx(0.5 * np.sum(np.log(1 - sigma[:rank] ** 2)), rel=1e-14)
        assert loss_of(pair, loss, result) == pytest.approx(value, rel=1e-12)
        # Rank-r encoders (Remark D.3): n_e = r rows, GᵀH = A, and the tilted side's Gram is B.
        assert result.G.shape == (rank, 5) and result.H.shape == (rank, 4)
        assert np.linalg.matrix_rank(result.A) == rank
        tilted = result.G if loss == "quadratic_u_given_v" else result.H
        np.testing.assert_allclose(tilted.T @ tilted, getattr(result, TILT[loss]), atol=1e-12)
        values.append(value)
    assert np.all(np.diff(values) < 0)  # each extra dimension lowers the minimum by ½ log(1 − σ_r²)
    assert values[-1] == pytest.approx(-pair.mutual_information(), rel=1e-13)  # full rank: −I(u; v)


@pytest.mark.parametrize("loss", QUADRATIC)
def test_closed_form_is_stationary_over_the_encoders(loss):
    # ∂L/∂G and ∂L/∂H vanish at the closed form (chain rule through A = GᵀH and B = GᵀG or HᵀH),
    # while a 1e-3 perturbation gives an O(1e-3) gradient: the zero is not an artefact of scale.
    pair = random_gaussian_pair(5, 4, seed=8)
    tilt = TILT[loss]

    def grad(g, h):
        b = {tilt: (g.T @ g if tilt == "B_u" else h.T @ h)}
        _, (d_a, d_bu, d_bv) = population_loss_gradient(pair, loss, g.T @ h, **b)
        d_g, d_h = h @ d_a.T, g @ d_a
        d_g = d_g + (2 * g @ d_bu if d_bu is not None else 0)
        d_h = d_h + (2 * h @ d_bv if d_bv is not None else 0)
        return np.sqrt(np.sum(d_g**2) + np.sum(d_h**2))

    for rank in (1, 2, 3):
        result = optimal_alignment(pair, loss, rank)
        assert grad(result.G, result.H) <= 1e-12
        perturbed = result.G * (1 + 1e-3)
        assert grad(perturbed, result.H) >= 1e-5


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_model_conditional_is_u_given_the_top_r_canonical_variates(rank):
    # Rank-r Corollary 5.4: at (A*(r), B*(r)) the model's u|v is exactly the law of u given
    # z = V_rᵀ C_vv^{-1/2} v, N(C_uz C_zz^{-1} z, C_uu − C_uz C_zz^{-1} C_zu), whatever C = HᵀH.
    pair = random_gaussian_pair(5, 4, seed=3)
    result = optimal_alignment(pair, "quadratic_u_given_v", rank)
    mean, cov = tilted_model(pair, result.A, result.B_u, result.H.T @ result.H).conditional("u_given_v")
    _, rv, w = whitened(pair)
    z = np.linalg.svd(w)[2][:rank] @ rv
    c_zz, c_uz = z @ pair.cov_vv @ z.T, pair.cov_uv @ z.T
    np.testing.assert_allclose(mean, c_uz @ np.linalg.solve(c_zz, z), atol=1e-12)
    np.testing.assert_allclose(cov, pair.cov_uu - c_uz @ np.linalg.solve(c_zz, c_uz.T), atol=1e-12)
    if rank < 4:  # and it is not the full conditional of Corollary 5.4
        assert np.abs(cov - pair.conditional("u_given_v")[1]).max() > 1e-3


def test_proof_steps_reduction_inner_minimiser_and_poincare_bound():
    pair = random_gaussian_pair(5, 4, seed=9)
    ru, rv, w = whitened(pair)
    U, s, Vt = np.linalg.svd(w)
    rng = np.random.default_rng(0)
    for r in (1, 2, 3):
        bound = np.sum(np.log(1 - s[:r] ** 2))
        for _ in range(20):
            # Step 1: for any PSD rank-r B̃, 2 L(A*(B), B) = F(B̃), A*(B) from (50a) in whitened form.
            y = rng.standard_normal((r, 5)) * rng.uniform(0.1, 2.0)
            b_t = y.T @ y
            root = np.real(sqrtm(np.eye(5) + b_t))
            uu, ss, vv = np.linalg.svd(root @ w, full_matrices=False)
            a_t = root @ (uu[:, :r] * ss[:r]) @ vv[:r]
            value = population_loss(pair, "quadratic_u_given_v", ru @ a_t @ rv, B_u=ru @ b_t @ ru)
            top_r = np.sort(np.linalg.eigvalsh(w.T @ (np.eye(5) + b_t) @ w))[-r:].sum()
            f_value = np.trace(b_t) - np.linalg.slogdet(np.eye(5) + b_t)[1] - top_r
            assert 2 * value == pytest.approx(f_value, rel=1e-10, abs=1e-12)
            assert f_value >= bound  # the minimum of F
            # Steps 3-4: for a rank-r projector P, M = W P Wᵀ, B̃ = M (I − M)^{-1} has rank <= r and
            # G_P(B̃) = Tr((I − M)B̃) − log det(I + B̃) − Tr M = log det(I − M) >= Σ log(1 − σ²).
            q = np.linalg.qr(rng.standard_normal((4, r)))[0]
            m = w @ q @ q.T @ w.T
            b_p = m @ np.linalg.inv(np.eye(5) - m)
            g_p = np.trace((np.eye(5) - m) @ b_p) - np.linalg.slogdet(np.eye(5) + b_p)[1] - np.trace(m)
            log_det = np.linalg.slogdet(np.eye(5) - m)[1]
            assert np.linalg.matrix_rank(b_p, tol=1e-10) <= r
            assert g_p == pytest.approx(log_det, rel=1e-12, abs=1e-14)
            assert log_det >= bound - 1e-14
            # ... and B̃ minimises the convex G_P: a random PSD perturbation does not do better.
            e = rng.standard_normal((5, 5)) * 0.05
            b_e = b_p + e @ e.T
            g_e = np.trace((np.eye(5) - m) @ b_e) - np.linalg.slogdet(np.eye(5) + b_e)[1] - np.trace(m)
            assert g_e >= g_p
        # Equality at P = V_r V_rᵀ: M = U_r Σ_r² U_rᵀ, B̃ = U_r diag(σ²/(1 − σ²)) U_rᵀ.
        m = w @ Vt[:r].T @ Vt[:r] @ w.T
        assert np.linalg.slogdet(np.eye(5) - m)[1] == pytest.approx(bound, rel=1e-12)


# Unique cases (σ_r > σ_{r+1} or σ_r = 0 at every rank checked): matrices are compared.
UNIQUE = {
    "near-tie 1e-4": [0.6, 0.6 * (1 - 1e-4), 0.3],
    "near-tie 1e-7": [0.6, 0.6 * (1 - 1e-7), 0.3],
    "sigma up to 0.9999": [0.9999, 0.999, 0.5],
    "rank-deficient C_uv (tie at zero)": [0.8, 0.5, 0.0, 0.0],
    "weak 1e-3": [1e-3, 8e-4, 5e-4],
    "weak 1e-6": [1e-6, 7e-7, 4e-7],
}


@pytest.mark.parametrize("name", UNIQUE)
def test_adversarial_unique_cases_match_the_oracle(name):
    sigma = UNIQUE[name]
    pair = gaussian_pair_with_correlations(sigma, len(sigma) + 1, len(sigma), seed=3)
    for rank in range(1, len(sigma) + 1):
        assert unique_minimiser(pair, rank)
        for loss in QUADRATIC:
            closed, fitted = optimal_alignment(pair, loss, rank), oracle(pair, loss, rank)
            assert rel(fitted.A, closed.A) <= REL, (loss, rank)
            assert rel(getattr(fitted, TILT[loss]), getattr(closed, TILT[loss])) <= REL, (loss, rank)


@pytest.mark.parametrize("sigma", [[0.9, 1e-2, 1e-3], [0.9, 1e-3, 1e-5]])
def test_graded_correlations_are_resolved_or_flagged(sigma):
    # Correlations many decades below σ_1 give curvatures ~(σ_j/σ_1)^4 that the gradient's
    # precision may not resolve: the oracle then says so (FlatMinimumWarning) and its value
    # still matches; where it does not warn, its matrices must match.
    pair = gaussian_pair_with_correlations(sigma, 4, 3, seed=3)
    resolved = 0
    for rank in (1, 2, 3):
        for loss in QUADRATIC:
            closed = optimal_alignment(pair, loss, rank)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fitted = numerical_quadratic_alignment(pair, loss, rank)
            assert loss_of(pair, loss, fitted) == pytest.approx(loss_of(pair, loss, closed), rel=REL)
            if not any(issubclass(w.category, FlatMinimumWarning) for w in caught):
                resolved += 1
                assert rel(fitted.A, closed.A) <= REL
                assert rel(getattr(fitted, TILT[loss]), getattr(closed, TILT[loss])) <= REL
    assert resolved >= 2  # rank 1 at least, both directions (measured: 4 of 6 and 2 of 6)


TIES = {  # (σ, ranks at a tie σ_r = σ_{r+1} > 0)
    "tie at r = 1": ([0.6, 0.6, 0.3], [1]),
    "triple tie": ([0.7, 0.5, 0.5, 0.5, 0.2], [2, 3]),
    "weak tie": ([1e-3, 1e-3, 1e-4], [1]),
    "near-tie 1e-10 (below resolution)": ([0.6, 0.6 * (1 - 1e-10), 0.3], [1]),
}


@pytest.mark.parametrize("name", TIES)
def test_ties_share_the_minimum_value(name):
    sigma, ranks = TIES[name]
    pair = gaussian_pair_with_correlations(sigma, len(sigma) + 1, len(sigma), seed=3)
    for rank in ranks:
        exact_tie = "near-tie" not in name
        assert unique_minimiser(pair, rank) is not exact_tie
        for loss in QUADRATIC:
            closed = optimal_alignment(pair, loss, rank)
            fitted = oracle(pair, loss, rank, expect_flat=True)  # the oracle says it cannot pick one
            value = loss_of(pair, loss, closed)
            assert loss_of(pair, loss, fitted) == pytest.approx(value, rel=REL)
            assert value == pytest.approx(quadratic_minimum(pair, rank), rel=1e-12)


def _rotated_member(pair, r, theta):
    """(B_u, loss) of the rank-r candidate whose r-th direction is turned by θ towards the (r+1)-th."""
    ru, rv, w = whitened(pair)
    _, _, Vt = np.linalg.svd(w)
    basis = Vt[:r].T.copy()
    basis[:, r - 1] = np.cos(theta) * Vt[r - 1] + np.sin(theta) * Vt[r]
    m = w @ basis @ basis.T @ w.T
    b_t = m @ np.linalg.inv(np.eye(pair.n_u) - m)
    root = np.real(sqrtm(np.eye(pair.n_u) + b_t))
    uu, ss, vv = np.linalg.svd(root @ w, full_matrices=False)
    B, A = ru @ b_t @ ru, ru @ root @ (uu[:, :r] * ss[:r]) @ vv[:r] @ rv
    return B, population_loss(pair, "quadratic_u_given_v", A, B_u=B)


def test_a_tie_has_a_family_of_minimisers_and_a_gap_has_one():
    # Rotate the r-th canonical direction towards the (r+1)-th, P = span(v_1..v_{r-1}, cos θ v_r + sin θ v_{r+1}),
    # and build B̃ = M (I − M)^{-1}, A from (50a): at a tie every θ gives the minimum, otherwise only θ = 0.
    r = 2
    for sigma, tie in (([0.7, 0.5, 0.5, 0.2], True), ([0.7, 0.5, 0.45, 0.2], False)):
        pair = gaussian_pair_with_correlations(sigma, 5, 4, seed=11)
        (b_0, value_0), (b_t, value_t) = _rotated_member(pair, r, 0.0), _rotated_member(pair, r, 0.7)
        assert unique_minimiser(pair, r) is not tie
        assert value_0 == pytest.approx(quadratic_minimum(pair, r), rel=1e-12)
        assert rel(b_t, b_0) > 0.1  # a different matrix ...
        if tie:
            assert value_t == pytest.approx(value_0, rel=1e-12)  # ... with the same value
        else:
            np.testing.assert_allclose(b_0, optimal_alignment(pair, "quadratic_u_given_v", r).B_u, atol=1e-12)
            assert value_t > value_0 + 1e-3


@pytest.mark.parametrize("scale", [1e-2, 3e-3, 1e-3, 1e-6])
def test_weak_correlations_closed_form_and_oracle(scale):
    # The defect: BFGS on (50b) stopped on precision loss and returned A off by 0.1 % at σ ≈ 0.01,
    # 11 % at 0.003 and 39 % at 0.001, silently. The closed form is the literal formula at any scale,
    # and the certified oracle agrees with it to REL (measured ~1e-15).
    pair = gaussian_pair_with_correlations(scale * np.array([1.0, 0.7, 0.4]), 4, 3, seed=1)
    ru, rv, w = whitened(pair)
    U, s, Vt = np.linalg.svd(w)
    rank = 2
    a_r = ru @ (U[:, :rank] * (s[:rank] / (1 - s[:rank] ** 2))) @ Vt[:rank] @ rv
    b_r = ru @ (U[:, :rank] * (s[:rank] ** 2 / (1 - s[:rank] ** 2))) @ U[:, :rank].T @ ru
    closed = optimal_alignment(pair, "quadratic_u_given_v", rank)
    assert rel(closed.A, a_r) <= 1e-10 and rel(closed.B_u, b_r) <= 1e-10
    for loss in QUADRATIC:
        closed, fitted = optimal_alignment(pair, loss, rank), oracle(pair, loss, rank)
        assert rel(fitted.A, closed.A) <= REL
        assert rel(getattr(fitted, TILT[loss]), getattr(closed, TILT[loss])) <= REL


def test_oracle_refuses_rather_than_returning_an_unconverged_answer():
    pair = random_gaussian_pair(4, 3, seed=0)
    with pytest.raises(ConvergenceError, match=r"\(50b\) rank 2"):
        numerical_quadratic_alignment(pair, "quadratic_u_given_v", 2, rtol=1e-300)


def test_unique_minimiser_and_validation():
    pair = gaussian_pair_with_correlations([0.6, 0.6, 0.3, 0.0, 0.0], 5, 6, seed=2)
    assert [unique_minimiser(pair, r) for r in range(1, 6)] == [False, True, True, True, True]
    assert unique_minimiser(pair)  # full rank
    with pytest.raises(ValueError, match="loss='conditional'"):
        numerical_quadratic_alignment(pair, "conditional", 1)
    with pytest.raises(ValueError, match="restarts=0"):
        numerical_quadratic_alignment(pair, "quadratic_u_given_v", 1, restarts=0)
    with pytest.raises(ValueError, match="sigma="):
        gaussian_pair_with_correlations([1.0], 2, 2)
    with pytest.raises(ValueError, match="sigma="):
        gaussian_pair_with_correlations([0.5, 0.4, 0.3], 2, 2)
    np.testing.assert_allclose(pair.canonical_correlations(), [0.6, 0.6, 0.3, 0.0, 0.0], atol=1e-14)
