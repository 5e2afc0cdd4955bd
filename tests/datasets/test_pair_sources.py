"""gaussian_samples and the named-source registry (sources / build_source)."""

import numpy as np
import pytest

from clipmath.datasets import GaussianProcessSource, build_source, gaussian_samples, sources
from clipmath.theory.gaussian import GaussianPair


def test_gaussian_samples_are_the_pairs_drawn_as_float32_under_sorted_keys():
    pair = GaussianPair.from_joint([[1.5, 1.0], [1.0, 1.5]], 1)
    samples = list(gaussian_samples(pair, 12, seed=4))
    u, v = pair.sample(12, 4)
    assert [s["__key__"] for s in samples] == [f"sample-{i:07d}" for i in range(12)]
    for i, sample in enumerate(samples):
        assert sample["u"].dtype == np.float32 and sample["u"].shape == (1,)
        np.testing.assert_array_equal(sample["u"], u[i].astype(np.float32))
        np.testing.assert_array_equal(sample["v"], v[i].astype(np.float32))


def test_gaussian_samples_accept_the_gp_source():
    samples = list(gaussian_samples(GaussianProcessSource(n_modes=20), 3, seed=0))
    assert samples[0]["u"].shape == (12,) and samples[0]["v"].shape == (5,)


@pytest.mark.parametrize(("n", "seed", "named"), [(0, 0, "n=0"), (3, -1, "seed=-1")])
def test_gaussian_samples_bad_arguments(n, seed, named):
    with pytest.raises(ValueError, match=named):
        next(gaussian_samples(GaussianPair.from_joint(np.eye(2), 1), n, seed))


def test_registry_lists_the_sources():
    assert {"gaussian", "gaussian-process"} <= set(sources())


def test_gaussian_source_variants():
    default = build_source("gaussian")
    np.testing.assert_array_equal(default.joint_cov, [[1.5, 1.0], [1.0, 1.5]])
    given = build_source("gaussian", cov=[[2.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 1.0]], n_u=2)
    assert (given.n_u, given.n_v) == (2, 1)
    random = build_source("gaussian", n_u=4, n_v=3, cov_seed=7)
    assert (random.n_u, random.n_v) == (4, 3)
    np.testing.assert_array_equal(random.joint_cov, build_source("gaussian", n_u=4, n_v=3, cov_seed=7).joint_cov)
    assert not np.array_equal(random.joint_cov, build_source("gaussian", n_u=4, n_v=3, cov_seed=8).joint_cov)


def test_gp_source_parameters_pass_through():
    source = build_source("gaussian-process", sigma=0.1, n_modes=30)
    assert isinstance(source, GaussianProcessSource) and source.sigma == 0.1 and source.n_modes == 30


@pytest.mark.parametrize(
    ("name", "params", "named"),
    [
        ("gaussian", {"sigma": 1.0}, "unknown parameter 'sigma'"),
        ("gaussian-process", {"cov": [[1.0]]}, "unknown parameter 'cov'"),
        ("nope", {}, "source 'nope' unknown"),
        ("gaussian", {"cov": [[1.0, 0.0], [0.0, 1.0]]}, "n_u=None"),
        ("gaussian", {"n_u": 3}, "n_v=None"),
        ("gaussian", {"cov": [[1.0, 0.0], [0.0, 1.0]], "n_u": 1, "n_v": 1}, "with cov give only n_u"),
    ],
)
def test_bad_sources_raise_naming_the_key(name, params, named):
    with pytest.raises(ValueError, match=named):
        build_source(name, **params)
