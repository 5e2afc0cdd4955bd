r"""The Gaussian-process pairs of Section 6.1 of Baptista, Stuart & Tran (2025).

A random field :math:`w \sim \mathcal N(0, (-\Delta + \tau^2 I)^{-\alpha})` on D = (0, 1)
(Neumann Laplacian on mean-zero functions) is drawn from its Karhunen-Loeve expansion, eq. (56),

.. math::  w = \sum_{j=1}^{J} \sqrt{\lambda_j}\, \xi_j\, \psi_j, \qquad
           \lambda_j = (j^2\pi^2 + \tau^2)^{-\alpha}, \qquad \xi_j \sim \mathcal N(0, 1)\ \text{i.i.d.},

truncated at J = ``n_modes`` modes, and observed in two modalities, eq. (57):

* :math:`u = (w(x_1), \dots, w(x_{n_u})) + \eta`, :math:`\eta \sim \mathcal N(0, \sigma^2 I)`,
  at the cell midpoints :math:`x_i = (i - \tfrac12)/n_u` (the paper says only "uniformly
  spaced"; midpoints keep the points inside D and symmetric about 1/2);
* :math:`v = (\lambda_k^{-1/2} \int_D w\, \psi_k)_{k=1}^{n_v}`, the first whitened KL coefficients.

The paper prints :math:`\psi_j = \cos(j\pi x)`; the eigenfunctions of the covariance
operator normalised in :math:`L^2(D)` are :math:`\psi_j = \sqrt2 \cos(j\pi x)`, which is
what is used here. With them :math:`v = \xi_{1:n_v}` exactly, so
:math:`v \sim \mathcal N(0, I)`; the literal :math:`\cos(j\pi x)` would give
:math:`v = \xi_{1:n_v}/2`. Writing :math:`\Phi_{ij} = \sqrt{\lambda_j}\psi_j(x_i)`, the pair
is Gaussian with

.. math::  C_{uu} = \Phi\Phi^\top + \sigma^2 I, \qquad C_{uv} = \Phi_{:, 1:n_v}, \qquad C_{vv} = I .

Here ``tau`` is the inverse length scale of the field, not the contrastive temperature.
"""

from __future__ import annotations

import numpy as np

from clipmath.datasets.checks import check_int
from clipmath.theory.gaussian import GaussianPair

# Rows of standard normals drawn at once: bounds memory at 4096 * n_modes floats.
_CHUNK = 4096


def _check_real(name: str, value: object, minimum: float, *, strict: bool) -> float:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if ok and np.isfinite(value) and (value > minimum if strict else value >= minimum):
        return float(value)
    raise ValueError(f"{name}={value!r}: expected a finite number {'>' if strict else '>='} {minimum}")


class GaussianProcessSource:
    r"""Draws (u, v) pairs of Section 6.1 (eqs. 56-57); see the module docstring for the math.

    Args:
        tau: inverse length scale τ >= 0 of the covariance :math:`(-\Delta + \tau^2)^{-\alpha}`.
        alpha: smoothness α > 0.
        n_modes: number J of KL modes kept (>= n_v).
        n_u: number of observation points, the dimension of u.
        n_v: number of whitened KL coefficients, the dimension of v.
        sigma: standard deviation σ >= 0 of the observation noise on u.

    Attributes:
        x: (n_u,) observation points :math:`x_i = (i - 1/2)/n_u`.
        eigenvalues: (n_modes,) :math:`\lambda_j`, j = 1..n_modes.

    Raises:
        ValueError: naming the argument, for a value out of range.
    """

    def __init__(
        self,
        tau: float = 3.0,
        alpha: float = 2.0,
        n_modes: int = 1000,
        n_u: int = 12,
        n_v: int = 5,
        sigma: float = 0.05,
    ) -> None:
        self.tau = _check_real("tau", tau, 0.0, strict=False)
        self.alpha = _check_real("alpha", alpha, 0.0, strict=True)
        self.sigma = _check_real("sigma", sigma, 0.0, strict=False)
        check_int("n_u", n_u, 1)
        check_int("n_v", n_v, 1)
        check_int("n_modes", n_modes, n_v)
        self.n_modes, self.n_u, self.n_v = n_modes, n_u, n_v
        j = np.arange(1, n_modes + 1)
        self.eigenvalues = (j**2 * np.pi**2 + self.tau**2) ** (-self.alpha)
        self.x = (np.arange(1, n_u + 1) - 0.5) / n_u
        self._phi = self.modes(self.x)

    def config(self) -> dict:
        """The constructor arguments, for a manifest or a run config."""
        return {
            "tau": self.tau,
            "alpha": self.alpha,
            "n_modes": self.n_modes,
            "n_u": self.n_u,
            "n_v": self.n_v,
            "sigma": self.sigma,
        }

    def modes(self, x: np.ndarray) -> np.ndarray:
        r"""The scaled eigenfunctions :math:`\Phi_{ij} = \sqrt{\lambda_j}\,\sqrt2\cos(j\pi x_i)`.

        Args:
            x: (m,) points in [0, 1].

        Returns:
            (m, n_modes) array, so that :math:`w(x) = \Phi(x)\,\xi`.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"x: expected shape (m,), got {x.shape}")
        j = np.arange(1, self.n_modes + 1)
        return np.sqrt(2.0 * self.eigenvalues) * np.cos(np.pi * np.outer(x, j))

    def pair(self) -> GaussianPair:
        r"""The exact law of (u, v) as a ``GaussianPair``.

        :math:`C_{uu} = \Phi\Phi^\top + \sigma^2 I`, :math:`C_{uv} = \Phi_{:,1:n_v}`,
        :math:`C_{vv} = I`, with the same ``n_modes`` modes the sampler uses.
        """
        cov_uu = self._phi @ self._phi.T + self.sigma**2 * np.eye(self.n_u)
        return GaussianPair(cov_uu, self._phi[:, : self.n_v], np.eye(self.n_v))

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` independent pairs (eq. 57).

        Args:
            n: number of pairs (>= 1).
            seed: seed of ``numpy.random.default_rng`` (>= 0).

        Returns:
            u (n, n_u) and v (n, n_v), float64; the same as the first two outputs of
            :meth:`sample_field` for the same ``n`` and ``seed``.
        """
        u, v, _ = self._draw(n, seed, None, None)
        return u, v

    def sample_field(
        self, n: int, seed: int, x: np.ndarray, *, v: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Draw pairs together with the field w on a grid (e.g. for Fig. 7).

        Given ``v``, the first n_v coefficients are fixed, :math:`\xi_{1:n_v} = v`, and the rest
        drawn: the outputs are then samples of :math:`w \mid v` and :math:`u \mid v`.

        Args:
            n: number of draws (>= 1).
            seed: seed of ``numpy.random.default_rng`` (>= 0).
            x: (m,) points in [0, 1] where w is evaluated.
            v: optional conditioning value, (n_v,) or (n, n_v).

        Returns:
            u (n, n_u), v (n, n_v) and w (n, m), float64.
        """
        if v is not None:
            v = np.asarray(v, dtype=np.float64)
            if v.shape not in ((self.n_v,), (n, self.n_v)):
                raise ValueError(f"v: expected shape ({self.n_v},) or ({n}, {self.n_v}), got {v.shape}")
            v = np.broadcast_to(v, (n, self.n_v))
        return self._draw(n, seed, self.modes(x), v)

    def _draw(self, n: int, seed: int, phi_x: np.ndarray | None, v_given: np.ndarray | None):
        check_int("n", n, 1)
        check_int("seed", seed, 0)
        rng = np.random.default_rng(seed)
        u = np.empty((n, self.n_u))
        v = np.empty((n, self.n_v))
        w = None if phi_x is None else np.empty((n, len(phi_x)))
        for start in range(0, n, _CHUNK):
            stop = min(n, start + _CHUNK)
            xi = rng.standard_normal((stop - start, self.n_modes))
            eta = rng.standard_normal((stop - start, self.n_u))
            if v_given is not None:
                xi[:, : self.n_v] = v_given[start:stop]
            u[start:stop] = xi @ self._phi.T + self.sigma * eta
            v[start:stop] = xi[:, : self.n_v]
            if w is not None:
                w[start:stop] = xi @ phi_x.T
        return u, v, w

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"GaussianProcessSource({args})"
