"""The losses the paper leaves unsolved in the Gaussian setting (issue 11, section 2).

Two-sided quadratic conditional, quadratic joint, MMD conditional and joint: closed forms,
numerical optima, the model law they define, Monte-Carlo and the trained batch losses.
"""

import numpy as np
import pytest
import torch

from clipmath.multimodal import losses
from clipmath.theory import (
    GaussianPair,
    gaussian_kl,
    monte_carlo_loss,
    numerical_alignment,
    optimal_alignment,
    population_loss,
    population_loss_gradient,
    random_gaussian_pair,
    tilted_model,
)
from clipmath.theory.alignment import make_alignment, two_sided_quadratic_weight

NEW = ("quadratic_conditional", "quadratic_joint", "mmd_conditional", "mmd_joint")


@pytest.fixture
def pair():
    return random_gaussian_pair(3, 2, seed=1)


def model_of(pair, result):
    if result.B_u is not None:
        return tilted_model(pair, result.A, result.B_u, result.B_v)
    return tilted_model(pair, result.A)


def test_two_sided_quadratic_weight_solves_its_quadratic_on_both_branches():
    sigma = np.array([1e-8, 1e-3, 0.3, 0.7499999, 0.75, 0.7500001, 0.9, 0.999])
    t = two_sided_quadratic_weight(sigma)
    residual = 2 * (1 - sigma) * t**2 + (3 - 4 * sigma) * t - 2 * sigma
    assert np.all(t > 0) and np.all(np.abs(residual) <= 1e-14 * (1 + t**2))
    assert t[0] == pytest.approx(2e-8 / 3, rel=1e-7)  # t ≈ 2σ/3, no cancellation
    assert np.abs(np.diff(t[3:6])).max() < 1e-6  # continuous across the branch switch at 3/4


def test_two_sided_quadratic_optimum_is_stationary_and_matches_neither_conditional(pair):
    result = optimal_alignment(pair, "quadratic_conditional")
    _, (d_a, d_bu, d_bv) = population_loss_gradient(pair, "quadratic_conditional", result.A, result.B_u, result.B_v)
    d_g = result.H @ d_a.T + 2 * result.G @ d_bu
    d_h = result.G @ d_a + 2 * result.H @ d_bv
    assert max(np.abs(d_g).max(), np.abs(d_h).max()) < 1e-12
    model = model_of(pair, result)
    for which in ("u_given_v", "v_given_u"):
        (m_model, s_model), (m_true, s_true) = model.conditional(which), pair.conditional(which)
        assert np.linalg.norm(m_model - m_true) > 0.05 * np.linalg.norm(m_true)
        assert np.linalg.norm(s_model - s_true) > 0.05 * np.linalg.norm(s_true)


def test_two_sided_quadratic_two_dimensional_numbers():
    # σ = 2/3: t = (√(11/3) − 1/3)/(4/3); ν_{u|v} mean coefficient t/(1+t), variance 1.5/(1+t).
    pair = GaussianPair.from_joint(np.array([[1.5, 1.0], [1.0, 1.5]]), 1)
    t = (np.sqrt(11 / 3) - 1 / 3) / (4 / 3)
    model = model_of(pair, optimal_alignment(pair, "quadratic_conditional"))
    mean, var = model.conditional("u_given_v")
    assert mean.item() == pytest.approx(t / (1 + t), rel=1e-12)
    assert var.item() == pytest.approx(1.5 / (1 + t), rel=1e-12)


@pytest.mark.parametrize("rank", [1, 2])
def test_quadratic_joint_minimum_and_model_law(rank):
    pair = random_gaussian_pair(4, 3, seed=2)
    sigma = pair.canonical_correlations()
    result = optimal_alignment(pair, "quadratic_joint", rank)
    value = population_loss(pair, "quadratic_joint", result.A, result.B_u, result.B_v)
    minimum = 0.5 * np.sum(sigma[:rank] + np.log1p(-sigma[:rank]))
    assert value == pytest.approx(minimum, rel=1e-12)
    model = model_of(pair, result)
    zero = np.zeros(pair.n_u + pair.n_v)
    kl = gaussian_kl(zero, pair.joint_cov, zero, model.joint_cov)
    # Theorem 3.8: KL(µ‖ν) = L_joint + I(u; v).
    assert kl == pytest.approx(value + pair.mutual_information(), rel=1e-10)
    # In canonical coordinates ν has cov [[1 − σ/2, σ/2], [σ/2, 1 − σ/2]] on the kept pairs.
    l_u, l_v = pair._whitening_bases(rank)
    cross = l_u.T @ model.cov_uv @ l_v
    np.testing.assert_allclose(cross, np.diag(sigma[:rank] / 2), atol=1e-12)
    np.testing.assert_allclose(np.diag(l_u.T @ model.cov_uu @ l_u), 1 - sigma[:rank] / 2, atol=1e-12)


def test_quadratic_joint_is_beaten_by_no_random_rank_r_encoder(pair):
    rng = np.random.default_rng(4)
    best = population_loss(pair, "quadratic_joint", **_args(optimal_alignment(pair, "quadratic_joint", 1)))
    for _ in range(200):
        g, h = rng.standard_normal((1, 3)), rng.standard_normal((1, 2))
        trial = make_alignment("quadratic_joint", 1, g * rng.uniform(0, 2), h * rng.uniform(0, 2))
        assert population_loss(pair, "quadratic_joint", **_args(trial)) >= best


def _args(result):
    return {"A": result.A, **result.arguments()}


@pytest.mark.parametrize("bandwidth", [0.3, 1.0, 5.0])
def test_mmd_conditional_full_rank_optimum_is_theorem_5_1(pair, bandwidth):
    result = optimal_alignment(pair, "mmd_conditional", bandwidth=bandwidth)
    np.testing.assert_allclose(result.A, optimal_alignment(pair, "conditional").A, atol=1e-14)
    assert result.bandwidth == bandwidth
    _, (d_a, _, _) = population_loss_gradient(pair, "mmd_conditional", result.A, bandwidth=bandwidth)
    assert np.abs(d_a).max() < 1e-12


def test_mmd_numerical_optima_are_reproducible_and_beat_the_kl_optima():
    pair = random_gaussian_pair(2, 2, seed=7)
    for loss, kl_loss, rank in (("mmd_conditional", "conditional", 1), ("mmd_joint", "joint", 2)):
        for bandwidth in (0.5, 2.0):
            closed = optimal_alignment(pair, loss, rank, bandwidth=bandwidth)
            again = numerical_alignment(pair, loss, rank, restarts=2, seed=11, bandwidth=bandwidth)
            assert np.linalg.norm(again.A - closed.A) <= 1e-6 * np.linalg.norm(closed.A)
            value = population_loss(pair, loss, closed.A, bandwidth=bandwidth)
            kl_optimum = optimal_alignment(pair, kl_loss, rank).A
            assert value < population_loss(pair, loss, kl_optimum, bandwidth=bandwidth)


@pytest.mark.parametrize(
    "loss,bandwidth",
    [
        ("quadratic_conditional", None),
        ("quadratic_joint", None),
        *((loss, h) for loss in ("mmd_conditional", "mmd_joint") for h in (0.5, 3.0)),
    ],
)
def test_monte_carlo_at_other_bandwidths_and_off_the_optimum(pair, loss, bandwidth):
    kernel = {} if bandwidth is None else {"bandwidth": bandwidth}
    result = optimal_alignment(pair, loss, 1, **kernel)
    shifted = make_alignment(loss, 1, 0.8 * result.G, 1.1 * result.H, result.bandwidth)
    estimate, se = monte_carlo_loss(pair, loss, n=100_000, seed=5, **_args(shifted))
    assert abs(estimate - population_loss(pair, loss, **_args(shifted))) <= 4 * se


#: loss -> the trained loss of clipmath.multimodal.losses whose batch estimator it is the limit of.
TRAINED = {
    "quadratic_conditional": ("conditional", {"metric": "neg_sq_l2", "direction": "two_sided"}),
    "quadratic_joint": ("joint", {"metric": "neg_sq_l2"}),
    "mmd_conditional": ("mmd_conditional", {"metric": "inner"}),
    "mmd_joint": ("mmd_joint", {"metric": "inner"}),
}


@pytest.mark.parametrize("loss", NEW)
def test_trained_batch_losses_converge_to_the_population_loss(pair, loss):
    """The mean trained loss over independent batches of B pairs at the optimum (τ = 1).

    Allowance 4 standard errors plus 8/B: the batch normalisers bias the estimators by O(1/B)
    (measured |B · bias| <= 6 for B from 256 to 4096 on this pair, within the noise).
    """
    batch, draws = 1024, 12
    result = optimal_alignment(pair, loss)
    name, options = TRAINED[loss]
    module = losses.build(name, **options)
    G, H = torch.tensor(result.G), torch.tensor(result.H)
    values = []
    for k in range(draws):
        u, v = (torch.tensor(x) for x in pair.sample(batch, seed=100 + k))
        extra = {"u": u, "v": v} if name.startswith("mmd") else {}
        values.append(module(u @ G.T, v @ H.T, torch.tensor(0.0, dtype=torch.float64), **extra).loss.item())
    values = np.array(values)
    se = values.std(ddof=1) / np.sqrt(draws)
    assert abs(values.mean() - population_loss(pair, loss, **_args(result))) <= 4 * se + 8 / batch


def test_bandwidth_is_checked(pair):
    A = np.zeros((3, 2))
    with pytest.raises(ValueError, match="bandwidth=1.0: loss 'conditional' has no kernel"):
        population_loss(pair, "conditional", A, bandwidth=1.0)
    for bad in (0.0, -1.0, np.inf, True):
        with pytest.raises(ValueError, match="bandwidth=.*expected a finite number > 0"):
            population_loss(pair, "mmd_joint", A, bandwidth=bad)
    with pytest.raises(ValueError, match="B_v: loss 'quadratic_joint' expects a"):
        population_loss(pair, "quadratic_joint", A, B_u=np.zeros((3, 3)))


def test_improper_models_have_infinite_loss(pair):
    big = 10.0 * optimal_alignment(pair, "conditional").A
    assert population_loss(pair, "mmd_joint", big) == np.inf
    bad = optimal_alignment(pair, "quadratic_joint")
    assert population_loss(pair, "quadratic_joint", 10.0 * bad.A, bad.B_u, bad.B_v) == np.inf
