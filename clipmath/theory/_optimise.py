r"""Certified numerical minimisation for the numerical oracles of :mod:`clipmath.theory`.

BFGS alone cannot be trusted to a relative tolerance: it stops when its line search loses
precision in the *values*, and values of these losses carry terms far larger than the part
that depends on the variables (for weak correlations σ the rank-r quadratic (50b) objective is
a constant of order σ² plus a variable part of order σ⁴), so with an absolute gradient
tolerance it stops early, quietly, and wrong. Here:

1. BFGS finds the basin, restarted in Jacobi-preconditioned coordinates (curvatures of
   canonical directions differ by decades when the correlations do);
2. Newton's method on the exact *gradient* (which has no such constant) converges, with a
   Hessian from central differences of the gradient (steps relative to the size of each
   block of variables), Jacobi-scaled, on the orthogonal complement of the caller's gauge
   directions (e.g. :math:`G \mapsto O G`, :math:`H \mapsto O H`), pseudo-inverted above its own
   noise level (measured by its asymmetry);
3. the stop is scale-free: the relative Newton step :math:`\|w \Delta x\| / \|w x\|` (invariant
   under rescaling x and the objective), an estimate of the relative distance to the
   stationary point.

If the step does not fall below ``rtol``, or the point has negative curvature beyond the
noise (a saddle), :class:`ConvergenceError` is raised: never a wrong answer returned
quietly. Directions whose curvature is below the noise (ties, near-ties) are counted in
:attr:`Minimum.flat`, and the callers warn (:class:`FlatMinimumWarning`): there only the value
of the minimum is determined, not the minimiser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.optimize

FunGrad = Callable[[np.ndarray], tuple[float, np.ndarray]]
#: Index blocks of x whose entries share a natural size (e.g. G and H); None: one block.
Blocks = Sequence[slice] | None

#: Relative central-difference step of the Hessian: truncation ~1e-10, round-off ~eps/1e-5.
_FD_STEP = 1e-5
#: Floor of the Hessian's noise level (relative to its largest scaled eigenvalue); the level
#: used is max(this, 10 × the relative asymmetry of the finite-difference Hessian), ~1e-10
#: on well-scaled problems. Scaled eigenvalues within it of zero get no Newton step.
_CUTOFF = 1e-12
#: Scaled eigenvalues below minus (this + the Hessian's own noise) times the largest mean a
#: saddle, not a minimum.
_NEGATIVE = 1e-8
#: A finite-difference Hessian noisier than this (relative) certifies nothing.
_NOISY = 1e-3


class ConvergenceError(RuntimeError):
    """A numerical minimisation did not reach its tolerance; its result would not be trustworthy."""


class FlatMinimumWarning(RuntimeWarning):
    """The minimum was reached but the minimiser is not determined along some directions.

    At a tie (or a near-tie, or curvature below what the gradient's precision resolves), only
    the minimum value is certified: compare values there, not matrices.
    """


@dataclass(frozen=True)
class Minimum:
    r"""A certified minimiser.

    Attributes:
        x: the minimiser (flat).
        value: the objective there.
        relative_step: :math:`\|\Delta x\| / \|x\|` of the last Newton step (<= the tolerance).
        newton_steps: Newton iterations taken after BFGS.
        flat: directions off the gauge with (scaled) curvature below the Hessian's noise: 0
            for an isolated minimiser; > 0 at a tie, where only the value is determined.
    """

    x: np.ndarray
    value: float
    relative_step: float
    newton_steps: int
    flat: int = 0


def x_minus_log1p(x: np.ndarray) -> np.ndarray:
    r""":math:`x - \log(1 + x)` for x > -1, without the cancellation of the naive form near 0.

    For |x| < 0.1 the alternating series :math:`\sum_{k \ge 2} (-x)^k / k` (24 terms: the tail
    is below :math:`10^{-24} \cdot x^2`), elsewhere the direct form (no cancellation there).
    """
    x = np.asarray(x, dtype=np.float64)
    small = np.abs(x) < 0.1
    xs = np.where(small, x, 0.0)
    series = np.full_like(xs, 1.0 / 25.0)
    for k in range(24, 1, -1):  # Horner: x² (1/2 − x (1/3 − x (1/4 − ...)))
        series = 1.0 / k - xs * series
    series = series * xs * xs
    with np.errstate(invalid="ignore", divide="ignore"):
        direct = x - np.log1p(x)
    return np.where(small, series, direct)


def _fd_hessian(grad: Callable[[np.ndarray], np.ndarray], x: np.ndarray, blocks: Blocks = None) -> np.ndarray:
    """Central differences of the gradient, the step relative to the RMS size of each block of x."""
    h = np.empty(len(x))
    for block in blocks or [slice(None)]:
        h[block] = _FD_STEP * max(np.sqrt(np.mean(x[block] ** 2)), np.finfo(np.float64).tiny)
    hess = np.empty((len(x), len(x)))
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h[i]
        hess[:, i] = (grad(x + e) - grad(x - e)) / (2.0 * h[i])
    return hess


def _newton_step(hess: np.ndarray, g: np.ndarray, tangent: np.ndarray | None) -> tuple[np.ndarray, float, int, float]:
    """Pseudo-inverse Newton step after Jacobi scaling, orthogonal to the gauge ``tangent`` (n, p).

    ``hess`` is the raw finite-difference Hessian; its asymmetry measures its own error, and
    scaled curvatures within ``noise`` = max(_CUTOFF, 10 × asymmetry) of zero (relative to the
    largest) are flat: no step is taken along them and they are counted.

    Returns the step, the most negative scaled curvature off the gauge beyond the noise
    (relative to the largest; 0 if none), the number of flat directions off the gauge
    (directions along which the minimiser is not determined to this precision), and the noise.
    """
    n = len(g)
    d = np.sqrt(np.abs(np.diag(hess)))
    d = np.maximum(d, 1e-8 * max(d.max(), np.finfo(np.float64).tiny))
    basis = np.eye(n)
    if tangent is not None and tangent.size:
        # Gauge directions in the scaled coordinates D x; work on their orthogonal complement.
        u, sv, _ = np.linalg.svd(tangent * d[:, None], full_matrices=True)
        rank = int(np.sum(sv > 1e-10 * max(sv[0], np.finfo(np.float64).tiny))) if sv.size else 0
        basis = u[:, rank:]
    raw = hess / d[:, None] / d[None, :]
    sym = 0.5 * (raw + raw.T)
    w, v = np.linalg.eigh(basis.T @ sym @ basis)
    top = max(w[-1], np.finfo(np.float64).tiny)
    noise = max(_CUTOFF, 10.0 * np.linalg.norm(raw - raw.T) / max(np.linalg.norm(sym), np.finfo(np.float64).tiny))
    keep = w > noise * top
    flat = int(np.sum(~keep & (w >= -noise * top)))
    g_scaled = v.T @ (basis.T @ (g / d))
    step = -(basis @ (v[:, keep] @ (g_scaled[keep] / w[keep]))) / d
    negative = float(min(w[0] / top + noise, 0.0))
    return step, negative, flat, noise


def _bfgs(fun_grad: FunGrad, x: np.ndarray, gtol: float, blocks: Blocks, rounds: int = 3) -> tuple[np.ndarray, float]:
    """BFGS, restarted ``rounds`` − 1 times in Jacobi-preconditioned coordinates u = D x.

    D = sqrt|diag H| from the finite-difference Hessian at the current point: canonical
    directions whose curvatures differ by many decades (σ_j⁴ for a correlation σ_j) would
    otherwise leave the weak ones unconverged, and Newton might then polish a saddle.
    """
    options = {"gtol": gtol, "maxiter": 20_000}
    fit = scipy.optimize.minimize(fun_grad, x, jac=True, method="BFGS", options=options)
    x, value = fit.x, fit.fun
    for _ in range(rounds - 1):
        if not np.isfinite(value):
            break
        d = np.sqrt(np.abs(np.diag(_fd_hessian(lambda z: fun_grad(z)[1], x, blocks))))
        d = np.maximum(d, 1e-8 * max(d.max(), np.finfo(np.float64).tiny))

        def scaled(u: np.ndarray, d=d) -> tuple[float, np.ndarray]:
            f, g = fun_grad(u / d)
            return f, g / d

        fit = scipy.optimize.minimize(scaled, x * d, jac=True, method="BFGS", options=options)
        if fit.fun <= value:
            x, value = fit.x / d, fit.fun
    return x, value


@dataclass
class _Polished:
    x: np.ndarray
    relative: float
    steps: int
    curvature: float
    flat: int


def _polish(
    fun_grad: FunGrad,
    x: np.ndarray,
    rtol: float,
    max_steps: int,
    gauge: Callable[[np.ndarray], np.ndarray] | None,
    weights: np.ndarray,
    blocks: Blocks,
) -> _Polished:
    grad = lambda z: fun_grad(z)[1]  # noqa: E731
    relative, curvature, flat = np.inf, 0.0, 0
    for it in range(1, max_steps + 1):
        g = grad(x)
        tangent = None if gauge is None else gauge(x)
        step, curvature, flat, noise = _newton_step(_fd_hessian(grad, x, blocks), g, tangent)
        if noise > _NOISY:
            break  # the Hessian is mostly round-off: nothing can be certified
        relative = float(
            np.linalg.norm(weights * step) / max(np.linalg.norm(weights * (x + step)), np.finfo(np.float64).tiny)
        )
        if relative <= rtol:
            return _Polished(x + step, relative, it, curvature, flat)
        # Not there yet: damp the step until the gradient norm drops (a scale-free merit).
        t, g_norm = 1.0, np.linalg.norm(g)
        while t > 1e-6:
            value, g_try = fun_grad(x + t * step)
            if np.isfinite(value) and np.linalg.norm(g_try) < g_norm:
                break
            t *= 0.5
        x = x + t * step
    return _Polished(x, relative, max_steps, curvature, flat)


def minimise(
    fun_grad: FunGrad,
    starts: Sequence[np.ndarray],
    *,
    rtol: float,
    what: str,
    gtol: float = 1e-12,
    max_newton: int = 30,
    gauge: Callable[[np.ndarray], np.ndarray] | None = None,
    weights: np.ndarray | None = None,
    blocks: Blocks = None,
) -> Minimum:
    r"""Minimise ``fun_grad`` from each start with BFGS, then certify the best with Newton.

    The starts are ranked by their BFGS value; the best is polished by Newton until the
    relative step is at most ``rtol``. If it fails (no convergence, or negative curvature:
    a saddle), the next best is tried; if all fail, :class:`ConvergenceError`.

    Args:
        fun_grad: objective, returning ``(value, gradient)`` (value may be ``inf`` outside the domain).
        starts: flat starting points, each with a finite value.
        rtol: bound on the final relative Newton step :math:`\|w \Delta x\| / \|w x\|`.
        what: name of the problem, for the error message.
        gtol: BFGS gradient tolerance (only ends the basin search; certification is Newton's).
        max_newton: Newton iterations per start.
        gauge: ``gauge(x)`` -> (n, p) tangent vectors of the directions along which the
            objective is invariant (e.g. G -> OG); Newton steps are taken orthogonal to them.
        weights: (n,) positive weights w of the step norm (default all ones), so that the
            tolerance is measured in the caller's natural units.
        blocks: index blocks of x with a common natural size (finite-difference steps are
            relative to each block's RMS); None for one block.

    Returns:
        The certified :class:`Minimum`; ``flat`` > 0 says the minimiser is not isolated
        (beyond the gauge) to this precision, i.e. only its value is determined.

    Raises:
        ConvergenceError: if no start reaches ``rtol`` at a point of non-negative curvature.
    """
    weights = np.ones(len(starts[0])) if weights is None else np.asarray(weights, dtype=np.float64)
    fits = [_bfgs(fun_grad, np.asarray(x0, dtype=np.float64), gtol, blocks) for x0 in starts]
    failures = []
    for x0, _ in sorted(fits, key=lambda f: f[1] if np.isfinite(f[1]) else np.inf):
        out = _polish(fun_grad, x0, rtol, max_newton, gauge, weights, blocks)
        value = float(fun_grad(out.x)[0])
        if out.relative <= rtol and out.curvature >= -_NEGATIVE and np.isfinite(value):
            return Minimum(x=out.x, value=value, relative_step=out.relative, newton_steps=out.steps, flat=out.flat)
        failures.append(f"relative step {out.relative:.2g}, scaled curvature {out.curvature:.2g}")
    raise ConvergenceError(
        f"{what}: no start reached relative Newton step <= {rtol:g} at a minimum ({'; '.join(failures)}); "
        "the result would not be reliable"
    )
