"""GaussianProcessSource (Section 6.1): covariance, whitened KL coefficients, conditioning, bad input."""

import math

import numpy as np
import pytest

from clipmath.datasets import GaussianProcessSource

# Two-sided normal quantile at 4.5 standard errors: p = 6.8e-6 per entry, so even over the
# 153 entries of a 17 x 17 covariance a false alarm has probability about 1e-3 (seeds are fixed).
Z = 4.5


def test_sample_covariance_matches_pair_within_monte_carlo_error():
    source = GaussianProcessSource()
    n = 20_000
    u, v = source.sample(n, seed=3)
    z = np.concatenate([u, v], axis=1)
    pair = source.pair()
    cov = np.block([[pair.cov_uu, pair.cov_uv], [pair.cov_uv.T, pair.cov_vv]])
    empirical = z.T @ z / n  # the mean is known to be zero
    # Var of the (i, j) second moment of a centred Gaussian: (C_ii C_jj + C_ij^2) / n.
    stderr = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(empirical - cov) <= Z * stderr)


def test_pair_matches_the_kl_formula_term_by_term():
    source = GaussianProcessSource(tau=2.0, alpha=1.5, n_modes=40, n_u=4, n_v=3, sigma=0.1)
    x = [(i + 0.5) / 4 for i in range(4)]
    lam = [(j * j * math.pi**2 + 4.0) ** -1.5 for j in range(1, 41)]
    cov_uu = np.zeros((4, 4))
    for i in range(4):
        for k in range(4):
            for j in range(1, 41):
                cov_uu[i, k] += lam[j - 1] * 2 * math.cos(j * math.pi * x[i]) * math.cos(j * math.pi * x[k])
            cov_uu[i, k] += 0.01 * (i == k)
    cov_uv = np.array(
        [[math.sqrt(2 * lam[j]) * math.cos((j + 1) * math.pi * x[i]) for j in range(3)] for i in range(4)]
    )
    pair = source.pair()
    np.testing.assert_allclose(source.x, x, rtol=0, atol=1e-15)
    np.testing.assert_allclose(pair.cov_uu, cov_uu, rtol=1e-12, atol=0)
    np.testing.assert_allclose(pair.cov_uv, cov_uv, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(pair.cov_vv, np.eye(3))


def test_v_is_the_whitened_kl_coefficient_of_the_field():
    # v_k = lambda_k^{-1/2} int_0^1 w psi_k dx. The midpoint rule on M > n_modes points
    # integrates cos(j pi x) cos(k pi x) exactly (DCT-II orthogonality), so the only error is
    # float64 round-off: ~1e-15 per 2000-term sum, times lambda_k^{-1/2} <= 256 for k <= 5.
    source = GaussianProcessSource()
    m = 2 * source.n_modes
    grid = (np.arange(m) + 0.5) / m
    u, v, w = source.sample_field(8, seed=0, x=grid)
    k = np.arange(1, source.n_v + 1)
    psi = np.sqrt(2.0) * np.cos(np.pi * np.outer(grid, k))
    coefficients = (w @ psi / m) / np.sqrt(source.eigenvalues[: source.n_v])
    np.testing.assert_allclose(coefficients, v, rtol=0, atol=1e-12)
    # u is w at the observation points plus the noise.
    noise = u - source.sample_field(8, seed=0, x=source.x)[2]
    assert 0 < np.abs(noise).max() < 6 * source.sigma


def test_sample_is_sample_field_without_the_field():
    source = GaussianProcessSource(n_modes=50)
    u, v = source.sample(5000, seed=1)  # more than one chunk of draws
    u2, v2, _ = source.sample_field(5000, seed=1, x=[0.0, 0.5])
    np.testing.assert_array_equal(u, u2)
    np.testing.assert_array_equal(v, v2)


def test_conditioning_on_v_gives_the_conditional_mean_of_u():
    source = GaussianProcessSource()
    pair = source.pair()
    v_given = np.array([1.0, -0.5, 0.3, 0.0, 2.0])
    n = 4000
    u, v, _ = source.sample_field(n, seed=2, x=source.x, v=v_given)
    np.testing.assert_array_equal(v, np.broadcast_to(v_given, (n, 5)))
    mean, cov = pair.cov_uv @ v_given, pair.cov_uu - pair.cov_uv @ pair.cov_uv.T  # C_vv = I
    assert np.all(np.abs(u.mean(axis=0) - mean) <= Z * np.sqrt(np.diag(cov) / n))


def test_config_rebuilds_the_source():
    source = GaussianProcessSource(tau=1.0, n_modes=30, sigma=0.2)
    rebuilt = GaussianProcessSource(**source.config())
    np.testing.assert_array_equal(rebuilt.pair().cov_uu, source.pair().cov_uu)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"tau": -1.0}, "tau=-1.0"),
        ({"alpha": 0.0}, "alpha=0.0"),
        ({"sigma": float("nan")}, "sigma=nan"),
        ({"n_u": 0}, "n_u=0"),
        ({"n_modes": 3}, "n_modes=3"),
        ({"n_v": 2.5}, "n_v=2.5"),
    ],
)
def test_bad_parameters_raise_naming_them(kwargs, named):
    with pytest.raises(ValueError, match=named):
        GaussianProcessSource(**kwargs)


def test_bad_sampling_arguments_raise_naming_them():
    source = GaussianProcessSource(n_modes=10)
    with pytest.raises(ValueError, match="n=0"):
        source.sample(0, seed=0)
    with pytest.raises(ValueError, match="v: expected shape"):
        source.sample_field(3, seed=0, x=[0.5], v=np.zeros(4))
    with pytest.raises(ValueError, match="x: expected shape"):
        source.sample_field(3, seed=0, x=np.zeros((2, 2)))
