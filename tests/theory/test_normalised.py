"""The normalised 1-D sign model of Fig. 6 (τ = 1 assumed)."""

import functools

import numpy as np
import pytest
from scipy.integrate import quad

from clipmath.theory import GaussianPair, random_gaussian_pair, sign_model


@pytest.fixture
def pair_2d():
    return GaussianPair([[1.5]], [[1.0]], [[1.5]])


def test_same_sign_probability(pair_2d):
    model = sign_model(pair_2d)
    assert model.tau == 1.0 and model.orientation == 1
    assert model.same_sign_probability == pytest.approx(np.e / (np.e + 1 / np.e), rel=1e-15)
    assert round(model.same_sign_probability, 3) == 0.881
    # Sheppard: P(sign u = sign v) = ½ + arcsin(2/3)/π under the data.
    assert model.true_same_sign_probability == pytest.approx(0.5 + np.arcsin(2 / 3) / np.pi, rel=1e-15)
    negative = sign_model(GaussianPair([[1.5]], [[-1.0]], [[1.5]]), tau=0.5)
    assert negative.orientation == -1
    assert negative.same_sign_probability == pytest.approx(1 / (1 + np.exp(4.0)), rel=1e-14)


def test_densities_integrate_and_marginals_are_exact(pair_2d):
    model = sign_model(pair_2d)

    # The density has a kink at 0: integrate each half-line separately. quad's default stopping
    # rule (estimated error 1.5e-8) does not back the 1e-10 asserted below, even though it lands
    # far closer on a smooth Gaussian: ask it for 1e-12 per half-line.
    def integral(f):
        return quad(f, -np.inf, 0, epsabs=1e-12, epsrel=0)[0] + quad(f, 0, np.inf, epsabs=1e-12, epsrel=0)[0]

    # ν(u | v = 1) integrates to 1 and puts 0.881 on u > 0.
    assert integral(lambda x: model.conditional_density(x, 1.0)) == pytest.approx(1.0, abs=1e-10)
    assert quad(lambda x: model.conditional_density(x, 1.0), 0, np.inf, epsabs=1e-12, epsrel=0)[0] == pytest.approx(
        model.same_sign_probability, abs=1e-10
    )
    # Integrating the joint over v gives µ_u exactly.
    for u in (-1.3, 0.4, 2.0):
        marginal = integral(functools.partial(model.density, u))
        assert marginal == pytest.approx(model.marginal_density(u, "u"), abs=1e-10)
    assert model.marginal_density(0.0, "v") == pytest.approx(1 / np.sqrt(2 * np.pi * 1.5), rel=1e-15)
    grid = np.linspace(-2, 2, 5)
    assert model.density(grid[:, None], grid[None, :]).shape == (5, 5)


def test_bad_arguments_raise(pair_2d):
    with pytest.raises(ValueError, match="pair_1d: expected n_u = n_v = 1"):
        sign_model(random_gaussian_pair(2, 1, seed=0))
    for tau in (0.0, -1.0, np.inf, "1"):
        with pytest.raises(ValueError, match="tau="):
            sign_model(pair_2d, tau=tau)
    model = sign_model(pair_2d)
    with pytest.raises(ValueError, match="which='u'"):
        model.conditional_density(0.0, 1.0, which="u")
    with pytest.raises(ValueError, match="modality='x'"):
        model.marginal_density(0.0, "x")
