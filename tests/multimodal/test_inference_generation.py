"""Crossmodal generation: resampling from eq. 28 and sampling the Gaussian model's conditional."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from clipmath import theory
from clipmath.multimodal.inference import conditional_weights, sample_conditional, sample_gaussian_conditional


def test_resampling_frequencies_follow_the_weights():
    gen = torch.Generator().manual_seed(0)
    queries, bank = torch.randn(2, 3, generator=gen), torch.randn(6, 3, generator=gen)
    n = 20_000
    draws = sample_conditional(queries, bank, math.log(1 / 0.5), n, generator=torch.Generator().manual_seed(1))
    assert draws.shape == (2, n)
    weights = conditional_weights(queries, bank, math.log(1 / 0.5)).double()
    for q in range(2):
        counts = torch.bincount(draws[q], minlength=6).double()
        # Pearson's statistic of a multinomial is asymptotically chi-square with N - 1 degrees of
        # freedom; its 1 - 1e-6 quantile bounds it except once in a million seeds.
        pearson = ((counts - n * weights[q]) ** 2 / (n * weights[q])).sum().item()
        assert pearson < scipy.stats.chi2.ppf(1 - 1e-6, df=5)


def test_resampling_is_reproducible_with_the_generator():
    queries, bank = torch.randn(1, 2), torch.randn(5, 2)
    draw = lambda: sample_conditional(queries, bank, 1.0, 50, generator=torch.Generator().manual_seed(3))  # noqa: E731
    assert torch.equal(draw(), draw())


def _pair():
    return theory.GaussianPair(
        np.array([[1.5, 0.3], [0.3, 1.0]]), np.array([[0.6, 0.2, 0.0], [0.1, 0.5, 0.3]]), np.diag([1.0, 1.2, 0.8])
    )


@pytest.mark.parametrize(
    ("given", "quadratic"), [("v", False), ("u", False), ("v", True)], ids=["u_given_v", "v_given_u", "quadratic"]
)
def test_gaussian_conditional_samples_have_the_model_moments(given, quadratic):
    pair = _pair()
    A = np.array([[0.3, -0.1, 0.2], [0.0, 0.25, -0.15]])
    B_u, B_v = (np.diag([0.5, 0.2]), np.diag([0.3, 0.1, 0.4])) if quadratic else (None, None)
    value = np.array([0.7, -1.2, 0.4]) if given == "v" else np.array([1.1, -0.5])
    n = 40_000
    samples = sample_gaussian_conditional(pair, A, given=given, value=value, n=n, seed=4, B_u=B_u, B_v=B_v)
    which = "u_given_v" if given == "v" else "v_given_u"
    mean_map, cov = theory.tilted_model(pair, A, B_u, B_v).conditional(which)
    assert samples.shape == (n, cov.shape[0])
    # Five standard errors: the sample mean has covariance S/n, the sample covariance entry (i, j)
    # variance (S_ii S_jj + S_ij^2)/n.
    mean_se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(samples.mean(0) - mean_map @ value) < 5 * mean_se)
    cov_se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(samples.T) - cov) < 5 * cov_se)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"given": "w", "value": np.zeros(3), "n": 5}, "given='w'"),
        ({"given": "v", "value": np.zeros(2), "n": 5}, "value"),
        ({"given": "v", "value": np.zeros(3), "n": 0}, "n=0"),
    ],
)
def test_gaussian_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_gaussian_conditional(_pair(), np.zeros((2, 3)), **kwargs)


def test_resampling_bad_input():
    with pytest.raises(ValueError, match="generator"):
        sample_conditional(torch.randn(1, 2), torch.randn(3, 2), 0.0, 4, generator=0)
