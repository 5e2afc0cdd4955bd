"""Population losses: Monte-Carlo averages of the per-sample loss, Theorems 3.2 and 3.10, gradients."""

import numpy as np
import pytest

from clipmath.theory import (
    LOSSES,
    GaussianPair,
    conditional_kl_objective,
    monte_carlo_loss,
    optimal_alignment,
    population_loss,
    population_loss_gradient,
    random_gaussian_pair,
)
from clipmath.theory.alignment import TILTS

N_MC = 200_000


def random_A(pair, rng, norm):
    """A random A with ||C_uu^{1/2} A C_vv^{1/2}||_2 = norm."""
    A = rng.standard_normal((pair.n_u, pair.n_v))
    su, sv = np.linalg.cholesky(pair.cov_uu), np.linalg.cholesky(pair.cov_vv)
    return A * norm / np.linalg.norm(su.T @ A @ sv, 2)


@pytest.fixture
def pair():
    return random_gaussian_pair(3, 2, seed=1)


def tilts(result):
    return result.arguments()


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("which", ["optimum", "random"])
def test_population_loss_is_the_monte_carlo_mean_of_the_per_sample_loss(pair, loss, which):
    result = optimal_alignment(pair, loss)
    # The joint estimator needs ||C_uu^{1/2} A C_vv^{1/2}||² < 1/2 for a finite variance; the
    # joint optimum has h(σ_1)² < h(1)² = 0.38, and the random A is drawn at norm 0.6.
    A = result.A if which == "optimum" else random_A(pair, np.random.default_rng(0), 0.6)
    estimate, se = monte_carlo_loss(pair, loss, A, **tilts(result), n=N_MC, seed=3)
    assert abs(estimate - population_loss(pair, loss, A, **tilts(result))) <= 4 * se


def test_monte_carlo_loss_is_seeded_and_validates(pair):
    A = np.zeros((3, 2))
    assert monte_carlo_loss(pair, "joint", A, n=10, seed=1) == monte_carlo_loss(pair, "joint", A, n=10, seed=1)
    with pytest.raises(ValueError, match="n=1"):
        monte_carlo_loss(pair, "conditional", A, n=1)
    with pytest.raises(ValueError, match="B_u: loss 'quadratic_u_given_v' expects a"):
        monte_carlo_loss(pair, "quadratic_u_given_v", A)


def test_conditional_loss_is_below_joint_loss_theorem_3_10():
    rng = np.random.default_rng(2)
    for n_u, n_v in [(1, 1), (3, 2), (4, 5)]:
        pair = random_gaussian_pair(n_u, n_v, seed=n_u)
        for norm in rng.uniform(0.0, 0.99, size=40):
            A = random_A(pair, rng, norm)
            assert population_loss(pair, "conditional", A) <= population_loss(pair, "joint", A)


def test_joint_loss_is_infinite_outside_its_domain(pair):
    A = random_A(pair, np.random.default_rng(3), 1.0 + 1e-9)
    assert population_loss(pair, "joint", A) == np.inf
    value, (grad, _, _) = population_loss_gradient(pair, "joint", A)
    assert value == np.inf and np.all(np.isnan(grad))
    # The quadratic loss diverges once C_uu^{-1} + B_u is indefinite.
    assert population_loss(pair, "quadratic_u_given_v", A, B_u=-2.0 * np.linalg.inv(pair.cov_uu)) == np.inf


@pytest.mark.parametrize("n_u,n_v", [(1, 1), (3, 2), (2, 4)])
def test_kl_objective_minus_conditional_loss_is_mutual_information_theorem_3_2(n_u, n_v):
    pair = random_gaussian_pair(n_u, n_v, seed=9)
    rng = np.random.default_rng(4)
    mi = pair.mutual_information()
    for A in [optimal_alignment(pair, "conditional").A] + [rng.standard_normal((n_u, n_v)) for _ in range(5)]:
        gap = conditional_kl_objective(pair, A) - population_loss(pair, "conditional", A)
        # O(1)-sized terms combined in float64 with condition numbers below ~50: round-off ~1e-13.
        assert gap == pytest.approx(mi, abs=1e-10)
    assert conditional_kl_objective(pair, optimal_alignment(pair, "conditional").A) >= 0.0


def test_two_dimensional_loss_values():
    pair = GaussianPair([[1.5]], [[1.0]], [[1.5]])
    # L_cond(A) = −A + ½ A² 1.5², minimal at 4/9 with value −(4/9)/2.
    assert population_loss(pair, "conditional", [[4 / 9]]) == pytest.approx(-2 / 9, rel=1e-14)
    # L_joint(A) = −A − ½ log(1 − 2.25 A²) at A = 1/3: −1/3 − ½ log(3/4).
    assert population_loss(pair, "joint", [[1 / 3]]) == pytest.approx(-1 / 3 - 0.5 * np.log(0.75), rel=1e-14)


@pytest.mark.parametrize("loss", LOSSES)
def test_gradient_matches_central_differences(loss):
    pair = random_gaussian_pair(3, 2, seed=5)
    rng = np.random.default_rng(6)
    A = random_A(pair, rng, 0.5)
    sizes = {"B_u": pair.n_u, "B_v": pair.n_v}
    tilt = {}
    for name in TILTS.get(loss, ()):
        g = rng.standard_normal((2, sizes[name]))
        tilt[name] = g.T @ g
    if loss == "quadratic_joint":
        # Off the optimum (G, H) = random, A = GᵀH keeps D_0^{-1} + X positive definite.
        g, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 2))
        A, tilt = g.T @ h, {"B_u": g.T @ g, "B_v": h.T @ h}
    grads = dict(zip(("A", "B_u", "B_v"), population_loss_gradient(pair, loss, A, **tilt)[1], strict=False))
    step = 1e-5  # central differences: truncation ~ step² ≈ 1e-10, round-off ~ eps/step ≈ 1e-11

    def numeric(f, x):
        out = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            e = np.zeros_like(x)
            e[idx] = step
            out[idx] = (f(x + e) - f(x - e)) / (2 * step)
        return out

    num_a = numeric(lambda a: population_loss(pair, loss, a, **tilt), A)
    np.testing.assert_allclose(grads["A"], num_a, atol=1e-7)
    for name in ("B_u", "B_v"):
        if name not in tilt:
            assert grads[name] is None
            continue
        # The loss sees B only through its symmetric part: differentiate along symmetric directions.
        num_b = numeric(
            lambda b, name=name: population_loss(pair, loss, A, **{**tilt, name: 0.5 * (b + b.T)}), tilt[name]
        )
        np.testing.assert_allclose(grads[name], num_b, atol=1e-7)


def test_bad_arguments_raise(pair):
    A = np.zeros((3, 2))
    with pytest.raises(ValueError, match="loss='clip'"):
        population_loss(pair, "clip", A)
    with pytest.raises(ValueError, match=r"A: expected shape \(3, 2\)"):
        population_loss(pair, "conditional", np.zeros((2, 3)))
    with pytest.raises(ValueError, match="A: contains NaN"):
        population_loss(pair, "joint", np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="B_u: loss 'quadratic_u_given_v' expects a"):
        population_loss(pair, "quadratic_u_given_v", A)
    with pytest.raises(ValueError, match="B_u: loss 'conditional' expects None"):
        population_loss(pair, "conditional", A, B_u=np.eye(3))
    with pytest.raises(ValueError, match="B_v: loss 'quadratic_u_given_v' expects None"):
        population_loss(pair, "quadratic_u_given_v", A, B_u=np.eye(3), B_v=np.eye(2))
    with pytest.raises(ValueError, match="B_v: expected a symmetric"):
        population_loss(pair, "quadratic_v_given_u", A, B_v=[[1.0, 1.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"A: expected shape \(3, 2\)"):
        conditional_kl_objective(pair, np.zeros(3))
