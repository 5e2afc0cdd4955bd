r"""Random incompressible time-dependent flows on the periodic unit square (Section 6.3).

The Eulerian side of the Lagrangian data-assimilation example of Section 6.3 of Baptista,
Stuart & Tran (2025), eqs. (58)-(59): a streamfunction

.. math::  \psi(x, t) = \operatorname{Re} \sum_{k \in \mathcal K} \psi_k\, e^{i\omega_k t}\, e_k(x),
           \qquad e_k(x) = e^{2\pi i\, k \cdot x},

on :math:`\mathbb T^2 = [0, 1)^2` with the wavenumbers
:math:`\mathcal K = \{-k_{max}, \dots, k_{max}\}^2`, so K = (2 k_max + 1)^2 = 49 modes for the
default k_max = 3 (the paper's K = 49, read as a 7 x 7 set), and the velocity

.. math::  w = J \nabla\psi, \qquad J = \begin{pmatrix} 0 & 1 \\ -1 & 0 \end{pmatrix}, \qquad
           w(x, t) = \operatorname{Re} \sum_k 2\pi i\, \psi_k e^{i\omega_k t} (k_2, -k_1)\, e_k(x),

which is divergence-free for any skew J: :math:`\nabla\cdot w = \partial_1\partial_2\psi -
\partial_2\partial_1\psi = 0`. (The paper's sign placement in J is ambiguous; this one makes
the flow run clockwise around maxima of ψ.) The real part is needed for a real velocity; a pair
k, -k enters the velocity only through :math:`\psi_k e^{i\omega_k t} + \overline{\psi_{-k}}
e^{-i\omega_{-k} t}`, and the k = 0 mode not at all.

The paper leaves the laws of the coefficients and frequencies open. Here, independently per
sample and mode (:class:`FlowConfig`):

* :math:`\psi_k \sim \mathcal{CN}(0, \sigma_k^2)` (real and imaginary parts i.i.d.
  :math:`\mathcal N(0, \sigma_k^2/2)`), :math:`\sigma_k = a\,(1 + |k|^2)^{-p}` with amplitude
  a = 1 and decay p = 1;
* :math:`\psi_0 = 0`: the mean mode moves no drifter, so a random one would be a coordinate of
  u that no trajectory can inform (``mean_mode=True`` draws it like the others);
* :math:`\omega_k \sim U(-\omega_{max}, \omega_{max})`, ω_max = 10.

Why these. With p = 1 every shell of wavenumbers moves the drifter about equally,
:math:`2\pi |k| \sigma_k` = 3.1 for :math:`|k| = 1` down to 1.4 for :math:`|k| = 3\sqrt2`, so a track carries
information about all 48 moving modes rather than the four longest; the mean squared speed is
:math:`E|w|^2 = 2\pi^2 \sum_k |k|^2 \sigma_k^2 = 114`, an rms speed of 10.7 domain lengths per
unit time. Over the paper's T = 0.1 a track from (0.75, 0.75) then runs a path of 0.95 domain
lengths on average (0.39 to 1.45 from the 5th to the 95th percentile, 2.5 at most) and ends
0.35 from its start (median; rms 0.48, 95th percentile 0.90), measured on the 65,536 flows of
the paper-size set: it visits a good part of the square, half of the tracks cross the periodic
boundary, and none freezes or winds around the torus many times. With ω_max = 10 each mode
turns its phase by at most one radian during a track: the flow is genuinely time-dependent (a
steady flow would confine the track to one streamline) without decorrelating within it. A
larger amplitude lengthens the tracks in proportion and makes them stiffer for RK4 (see
:mod:`.drifters` for the step).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

TWO_PI = 2.0 * math.pi


def _check_real(name: str, value: object, minimum: float, *, strict: bool) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok and math.isfinite(value) and (value > minimum if strict else value >= minimum):
        return float(value)
    raise ValueError(f"{name}={value!r}: expected a finite number {'>' if strict else '>='} {minimum}")


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum:
        return int(value)
    raise ValueError(f"{name}={value!r}: expected an int >= {minimum}")


def wavenumbers(k_max: int = 3) -> np.ndarray:
    r"""The wavenumber set :math:`\{-k_{max}, \dots, k_{max}\}^2` in the package's mode order.

    Mode m has :math:`k = (k_1, k_2)` with :math:`k_1 = m // (2k_{max}+1) - k_{max}` and
    :math:`k_2 = m \% (2k_{max}+1) - k_{max}` (row-major in k_1, then k_2), so mode K // 2 is
    k = 0 and modes m and K - 1 - m are k and -k.

    Args:
        k_max: largest :math:`|k_1|, |k_2|` (>= 1); 3 gives the paper's K = 49.

    Returns:
        (K, 2) int64 array, K = (2 k_max + 1)^2.
    """
    k_max = _check_int("k_max", k_max, 1)
    axis = np.arange(-k_max, k_max + 1)
    return np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)


def k_max_of(n_modes: int) -> int:
    """The k_max with :math:`(2k_{max}+1)^2 =` ``n_modes``; a ValueError naming it otherwise."""
    side = math.isqrt(n_modes) if isinstance(n_modes, int) and n_modes > 0 else 0
    if side * side != n_modes or side % 2 == 0 or side < 3:
        raise ValueError(f"n_modes={n_modes!r}: expected (2 k_max + 1)^2 modes for some k_max >= 1 (9, 25, 49, ...)")
    return (side - 1) // 2


@dataclass(frozen=True)
class FlowConfig:
    r"""Laws of the random flow (module docstring: the math and why these defaults).

    Attributes:
        k_max: wavenumbers :math:`k \in \{-k_{max}..k_{max}\}^2`, K = (2 k_max + 1)^2 modes.
        amplitude: a in :math:`\sigma_k = a (1 + |k|^2)^{-p}`, the standard deviation of
            :math:`\psi_k \sim \mathcal{CN}(0, \sigma_k^2)`.
        decay: p in :math:`\sigma_k` (>= 0).
        omega_max: frequencies :math:`\omega_k \sim U(-\omega_{max}, \omega_{max})` (>= 0;
            0 gives steady flows).
        mean_mode: draw :math:`\psi_0` like the other modes instead of fixing it at 0.

    Raises:
        ValueError: naming the field, for a value out of range.
    """

    k_max: int = 3
    amplitude: float = 1.0
    decay: float = 1.0
    omega_max: float = 10.0
    mean_mode: bool = False

    def __post_init__(self) -> None:
        _check_int("FlowConfig.k_max", self.k_max, 1)
        _check_real("FlowConfig.amplitude", self.amplitude, 0.0, strict=True)
        _check_real("FlowConfig.decay", self.decay, 0.0, strict=False)
        _check_real("FlowConfig.omega_max", self.omega_max, 0.0, strict=False)
        if not isinstance(self.mean_mode, (bool, np.bool_)):
            raise ValueError(f"FlowConfig.mean_mode={self.mean_mode!r}: expected a bool")

    @property
    def n_modes(self) -> int:
        """K = (2 k_max + 1)^2."""
        return (2 * self.k_max + 1) ** 2

    def sigma(self) -> np.ndarray:
        r"""(K,) standard deviations :math:`\sigma_k` in mode order (0 at k = 0 unless ``mean_mode``)."""
        k = wavenumbers(self.k_max)
        sigma = self.amplitude * (1.0 + (k**2).sum(axis=1)) ** (-self.decay)
        if not self.mean_mode:
            sigma[self.n_modes // 2] = 0.0
        return sigma


@dataclass(frozen=True)
class Flows:
    r"""A batch of flows: coefficients :math:`\psi_k` and frequencies :math:`\omega_k` of eq. (59).

    Attributes:
        coefficients: (n, K) complex128 :math:`\psi_k`, modes in :func:`wavenumbers` order.
        frequencies: (n, K) float64 :math:`\omega_k`.

    Raises:
        ValueError: for arrays of other shapes, or a K that is not (2 k_max + 1)^2.
    """

    coefficients: np.ndarray
    frequencies: np.ndarray

    def __post_init__(self) -> None:
        coefficients = np.asarray(self.coefficients)
        frequencies = np.asarray(self.frequencies)
        if coefficients.ndim != 2:
            raise ValueError(f"coefficients: expected shape (n, K), got {coefficients.shape}")
        k_max_of(coefficients.shape[1])
        if frequencies.shape != coefficients.shape:
            raise ValueError(
                f"frequencies: expected shape {coefficients.shape} (that of coefficients), got {frequencies.shape}"
            )
        if not (np.isfinite(coefficients).all() and np.isfinite(frequencies).all()):
            raise ValueError("coefficients, frequencies: expected finite values")
        object.__setattr__(self, "coefficients", coefficients.astype(np.complex128, copy=False))
        object.__setattr__(self, "frequencies", frequencies.astype(np.float64, copy=False))

    def __len__(self) -> int:
        return self.coefficients.shape[0]

    def __getitem__(self, index) -> Flows:
        """The flows at ``index`` (a slice or an index array), as a ``Flows``."""
        if isinstance(index, (int, np.integer)):
            index = slice(index, index + 1 if index != -1 else None)
        return Flows(self.coefficients[index], self.frequencies[index])

    @property
    def k_max(self) -> int:
        """Largest :math:`|k_1|, |k_2|` of the modes, from K = (2 k_max + 1)^2."""
        return k_max_of(self.coefficients.shape[1])

    @property
    def wavenumbers(self) -> np.ndarray:
        """(K, 2) wavenumbers of the modes."""
        return wavenumbers(self.k_max)

    def _terms(self, x: np.ndarray, t) -> tuple[np.ndarray, np.ndarray]:
        r""":math:`\psi_k e^{i\omega_k t} e_k(x)` as (n, m, K), and the (K, 2) wavenumbers."""
        k = self.wavenumbers
        x = np.asarray(x, dtype=np.float64)
        if x.ndim not in (2, 3) or x.shape[-1] != 2 or (x.ndim == 3 and x.shape[0] != len(self)):
            raise ValueError(f"x: expected shape (m, 2) or ({len(self)}, m, 2), got {x.shape}")
        t = np.asarray(t, dtype=np.float64)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != len(self)):
            raise ValueError(f"t: expected a scalar or shape ({len(self)},), got {t.shape}")
        c = self.coefficients * np.exp(1j * self.frequencies * t.reshape(-1, 1))
        phase = TWO_PI * (x @ k.T)
        return c[:, None, :] * np.exp(1j * phase), k

    def streamfunction(self, x: np.ndarray, t=0.0) -> np.ndarray:
        r""":math:`\psi(x, t)`, eq. (59), summed mode by mode (a reference, not the fast path).

        Args:
            x: (m, 2) points shared by all flows, or (n, m, 2) points per flow.
            t: time, a scalar or (n,) per flow.

        Returns:
            (n, m) float64.
        """
        terms, _ = self._terms(x, t)
        return terms.sum(axis=-1).real

    def velocity(self, x: np.ndarray, t=0.0) -> np.ndarray:
        r""":math:`w = J\nabla\psi = (\partial_2\psi, -\partial_1\psi)`, summed mode by mode.

        This direct evaluation is the reference for the integrator of :mod:`.drifters` (which
        never calls it) and the right-hand side of the ``solve_ivp`` anchor.

        Args:
            x: (m, 2) points shared by all flows, or (n, m, 2) points per flow.
            t: time, a scalar or (n,) per flow.

        Returns:
            (n, m, 2) float64.
        """
        terms, k = self._terms(x, t)
        grad = (TWO_PI * 1j * terms) @ k.astype(np.complex128)  # (n, m, 2): d/dx1, d/dx2
        return np.stack([grad[..., 1].real, -grad[..., 0].real], axis=-1)

    def on_grid(self, n_grid: int = 64, t: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Streamfunction and velocity on the grid :math:`x_{ij} = (i, j) / G`, for figures.

        Separable evaluation: :math:`\sum_{k_1,k_2} c_{k_1 k_2} e^{2\pi i k_1 x_1} e^{2\pi i k_2 x_2}`
        as two small matrix products per flow.

        Args:
            n_grid: points per axis G (>= 2).
            t: time.

        Returns:
            ``grid`` (G,) the axis points i / G, ``psi`` (n, G, G) and ``velocity``
            (n, G, G, 2), float64, indexed ``[flow, i, j]`` with :math:`x_1 = i/G`,
            :math:`x_2 = j/G` (for ``imshow`` take ``psi[s].T`` with ``origin="lower"``).
        """
        n_grid = _check_int("n_grid", n_grid, 2)
        t = _check_real("t", t, -math.inf, strict=True)
        k_max = self.k_max
        side = 2 * k_max + 1
        grid = np.arange(n_grid) / n_grid
        k_axis = np.arange(-k_max, k_max + 1)
        basis = np.exp(TWO_PI * 1j * np.outer(grid, k_axis))  # (G, side)
        c = (self.coefficients * np.exp(1j * self.frequencies * t)).reshape(-1, side, side)

        def field(weights: np.ndarray) -> np.ndarray:
            return np.einsum("ia,nab,jb->nij", basis, weights, basis, optimize=True).real

        psi = field(c)
        d1 = field(TWO_PI * 1j * k_axis[:, None] * c)
        d2 = field(TWO_PI * 1j * k_axis[None, :] * c)
        return grid, psi, np.stack([d2, -d1], axis=-1)


def sample_flows(config: FlowConfig, n: int, seed: int) -> Flows:
    """Draw ``n`` flows from the laws of ``config`` (module docstring).

    The draws are prefix-stable: flow i is the same for every ``n > i`` (each flow takes its
    own row of the real/imaginary normals and of the uniforms, from two independent streams of
    ``numpy.random.SeedSequence(seed)``), so a small preset is the head of the paper-size set.

    Args:
        config: the laws.
        n: number of flows (>= 1).
        seed: seed (>= 0).

    Returns:
        :class:`Flows` with (n, K) coefficients and frequencies.
    """
    if not isinstance(config, FlowConfig):
        raise ValueError(f"config={config!r:.80}: expected a FlowConfig")
    n = _check_int("n", n, 1)
    seed = _check_int("seed", seed, 0)
    coefficient_seq, frequency_seq = np.random.SeedSequence([seed, 0x0CEA]).spawn(3)[:2]
    normals = np.random.default_rng(coefficient_seq).standard_normal((n, 2, config.n_modes))
    sigma = config.sigma() / math.sqrt(2.0)
    coefficients = sigma * (normals[:, 0] + 1j * normals[:, 1])
    frequencies = np.random.default_rng(frequency_seq).uniform(-config.omega_max, config.omega_max, (n, config.n_modes))
    return Flows(coefficients, frequencies)


def flow_config_from_dict(data: dict) -> FlowConfig:
    """A :class:`FlowConfig` from a mapping (e.g. a dataset's stored config); unknown keys are errors."""
    return _from_dict(FlowConfig, data, "flow")


def _from_dict(cls, data, prefix: str):
    if not isinstance(data, dict):
        raise ValueError(f"{prefix}={data!r:.80}: expected a mapping for {cls.__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ValueError(f"unknown key {prefix}.{key!r}; {cls.__name__} has: {', '.join(sorted(names))}")
    return cls(**data)
