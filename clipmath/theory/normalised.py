r"""The normalised one-dimensional encoders of Fig. 6 (Section 5.4 of Baptista, Stuart & Tran 2025).

With :math:`n_u = n_v = n_e = 1` the normalised encoders :math:`\bar g_u = g u / |g u|` and
:math:`\bar g_v = h v / |h v|` only keep signs, so the tilting is
:math:`\nu \propto \exp(o\, \mathrm{sign}(u)\, \mathrm{sign}(v) / \tau)\, \mu_u \otimes \mu_v` with the
orientation :math:`o = \mathrm{sign}(g h) = \pm 1`. The paper does not state τ (nor whether it is
learned); τ = 1 is assumed, as for the unnormalised encoders of Section 5. Since
:math:`\mathrm{sign}(v)` is a fair coin under :math:`\mu_v`,
:math:`\mathbb E_{\mu_v} e^{o\,s_u s_v/\tau} = \cosh(1/\tau)` for either :math:`s_u`: the normaliser is
:math:`\cosh(1/\tau)` and both marginals of ν are exactly :math:`\mu_u`, :math:`\mu_v`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipmath.theory._checks import check_modality, direction
from clipmath.theory.gaussian import GaussianPair


def _normal_pdf(x: np.ndarray, var: float) -> np.ndarray:
    return np.exp(-0.5 * x * x / var) / np.sqrt(2.0 * np.pi * var)


@dataclass(frozen=True)
class SignModel:
    r"""The learned law of Fig. 6.

    Attributes:
        tau: temperature τ > 0.
        orientation: o = sign(g h), +1 when the data are positively correlated.
        var_u: variance of u (the marginal µ_u).
        var_v: variance of v (the marginal µ_v).
        true_same_sign_probability: :math:`P_\mu(\mathrm{sign}\,u = \mathrm{sign}\,v) = \tfrac12 + \arcsin(\rho)/\pi`
            under the data, ρ the correlation (Sheppard's formula), for comparison.
    """

    tau: float
    orientation: int
    var_u: float
    var_v: float
    true_same_sign_probability: float

    @property
    def same_sign_probability(self) -> float:
        r"""The model's probability that u and v have the same sign, given v.

        :math:`P_\nu(\mathrm{sign}\,u = \mathrm{sign}\,v \mid v) = e^{o/\tau} / (e^{1/\tau} + e^{-1/\tau})`
        (0.881 at τ = 1, o = 1).
        """
        return float(1.0 / (1.0 + np.exp(-2.0 * self.orientation / self.tau)))

    def density(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        r"""Joint density of ν at (u, v) (arrays broadcast against each other).

        :math:`\nu(u, v) = e^{o\, \mathrm{sign}(u) \mathrm{sign}(v)/\tau} / \cosh(1/\tau)\; \phi_u(u)\, \phi_v(v)`.
        """
        u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
        tilt = np.exp(self.orientation * np.sign(u) * np.sign(v) / self.tau) / np.cosh(1.0 / self.tau)
        return tilt * _normal_pdf(u, self.var_u) * _normal_pdf(v, self.var_v)

    def conditional_density(self, x: np.ndarray, given: float, which: str = "u_given_v") -> np.ndarray:
        r"""Density of :math:`\nu_{u|v}(x \mid v = \text{given})` (or ``v_given_u``) at the points x (any shape)."""
        direction("which", which)
        x = np.asarray(x, dtype=np.float64)
        var = self.var_u if which == "u_given_v" else self.var_v
        tilt = np.exp(self.orientation * np.sign(x) * np.sign(given) / self.tau) / np.cosh(1.0 / self.tau)
        return tilt * _normal_pdf(x, var)

    def marginal_density(self, x: np.ndarray, modality: str) -> np.ndarray:
        """Density of the marginal ν_u or ν_v at x: exactly that of µ_u or µ_v."""
        check_modality("modality", modality)
        return _normal_pdf(np.asarray(x, dtype=np.float64), self.var_u if modality == "u" else self.var_v)


def sign_model(pair_1d: GaussianPair, tau: float = 1.0) -> SignModel:
    r"""The model learned with normalised 1-D encoders (Fig. 6), at temperature τ (default 1, assumed).

    The orientation minimising :math:`L_{cond}` is the sign of the correlation:
    :math:`L_{cond} = -o\, \mathbb E_\mu[\mathrm{sign}(u)\mathrm{sign}(v)]/\tau + \log\cosh(1/\tau)` and
    :math:`\mathbb E_\mu[\mathrm{sign}(u)\mathrm{sign}(v)] = 2 \arcsin(\rho)/\pi`; o = +1 when ρ = 0.

    Args:
        pair_1d: a pair with n_u = n_v = 1.
        tau: temperature, finite and > 0.

    Raises:
        ValueError: naming ``pair_1d`` if it is not one-dimensional, or ``tau`` if not positive.
    """
    if pair_1d.n_u != 1 or pair_1d.n_v != 1:
        raise ValueError(f"pair_1d: expected n_u = n_v = 1, got n_u={pair_1d.n_u}, n_v={pair_1d.n_v}")
    if not (isinstance(tau, (int, float)) and np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau={tau!r}: expected a finite float > 0")
    var_u, var_v, cov = float(pair_1d.cov_uu[0, 0]), float(pair_1d.cov_vv[0, 0]), float(pair_1d.cov_uv[0, 0])
    rho = cov / np.sqrt(var_u * var_v)
    return SignModel(
        tau=float(tau),
        orientation=1 if cov >= 0 else -1,
        var_u=var_u,
        var_v=var_v,
        true_same_sign_probability=float(0.5 + np.arcsin(rho) / np.pi),
    )
