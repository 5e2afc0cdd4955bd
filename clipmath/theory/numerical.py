r"""Numerical oracles for the closed forms of :mod:`clipmath.theory.alignment`.

- :func:`numerical_alignment`: the independent check of every closed form. The loss of
  :func:`clipmath.theory.population_loss` is minimised over :math:`G \in \mathbb R^{n_e \times n_u}`,
  :math:`H \in \mathbb R^{n_e \times n_v}` (eq. 38) with exact gradients (chain rule through
  :math:`A = G^\top H`, :math:`B_u = G^\top G`, :math:`B_v = H^\top H`), from several random
  starts (a check the paper itself does not report).
- :func:`numerical_quadratic_alignment`: the paper's own route for the rank-r quadratic loss,
  (50a) with B from numerically minimising (50b), the oracle of the rank-r closed form.

Both are certified (:mod:`clipmath.theory._optimise`): BFGS finds the basin, Newton on the
exact gradient converges to a scale-free tolerance (relative step ``rtol``), and anything short
of it raises :class:`ConvergenceError`. (BFGS alone stopped on precision loss and returned the
rank-r quadratic optimum off by 39 % at σ ≈ 0.001 without a word.)
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import scipy.optimize

from clipmath.theory._checks import Seed, positive_int
from clipmath.theory._optimise import ConvergenceError, FlatMinimumWarning, minimise, x_minus_log1p
from clipmath.theory.alignment import TILTS, Alignment, _check_rank, check_bandwidth, check_loss, make_alignment
from clipmath.theory.gaussian import GaussianPair
from clipmath.theory.losses import population_loss_gradient

__all__ = ["ConvergenceError", "FlatMinimumWarning", "numerical_alignment", "numerical_quadratic_alignment"]

logger = logging.getLogger(__name__)


def numerical_alignment(
    pair: GaussianPair,
    loss: str,
    rank: int | None = None,
    *,
    restarts: int = 4,
    seed: Seed = 0,
    gtol: float = 1e-12,
    rtol: float = 1e-10,
    bandwidth: float | None = None,
) -> Alignment:
    r"""Minimise ``population_loss(pair, loss, GᵀH, ...)`` over (G, H) with ``rank`` rows each.

    Starts are drawn inside the domain of every loss, at the natural size set by the largest
    canonical correlation σ_1 alone: G and H have Gaussian entries scaled so that
    :math:`E\|C_{uu}^{1/2} G^\top\|_F^2 = E\|C_{vv}^{1/2} H^\top\|_F^2 = \sigma_1/4` for the
    inner-product losses (the MMD ones included), :math:`\sigma_1^2/4` on the tilted side, 1/4 on
    the other, for the one-sided quadratic ones, and :math:`\sigma_1/4` on both sides for the
    two-sided and joint quadratic ones (halved until the loss is finite).
    BFGS from each start; the lowest is certified by Newton to a relative step ``rtol``.

    Args:
        pair: the data law (canonical correlations not all zero: the minimiser (G, H) = 0 has
            no relative tolerance).
        loss: one of :data:`clipmath.theory.LOSSES`.
        rank: embedding dimension n_e in 1..min(n_u, n_v); None for full rank.
        restarts: number of random starts (>= 1).
        seed: seed of ``numpy.random.default_rng`` for the starts (int, None or a Generator).
        gtol: BFGS tolerance on the gradient norm (ends the basin search only).
        rtol: certified bound on the relative distance :math:`\|\Delta (G, H)\| / \|(G, H)\|` of
            the last Newton step.
        bandwidth: kernel bandwidth of the MMD losses (default 1); None for the others.

    Returns:
        An :class:`~clipmath.theory.Alignment` holding the fitted G, H and the A, B_u, B_v they give.

    Raises:
        ConvergenceError: if no start reaches ``rtol``.

    Warns:
        FlatMinimumWarning: if the minimiser is not determined beyond the gauge to the precision
            of the gradient: a tie σ_r = σ_{r+1} or an optimum of rank below ``rank`` (compare
            loss values then, not matrices), or, for the quadratic losses at weak correlations,
            the O(σ²)-relative curvature of G -> cG, H -> H/c, or a plateau the rebalancing
            search below did not leave (then the result is not certified at all).

    For the quadratic losses a flat direction may be a plateau, not a family of minimisers:
    a weak component with its tilted row near 0 and the other row huge keeps A and loses only
    B's share. The fit is then rebalanced along T -> (I + (c − 1) q qᵀ) T, O -> (I + (1/c − 1) q qᵀ) O
    (which keeps A; q a singular direction of the tilted factor T, c on a log scale) and
    certified again. Measured: this turns a 6e-5 error at n_u = n_v = 8, full rank, into 7e-15.
    """
    check_loss(loss)
    bandwidth = check_bandwidth(loss, bandwidth)
    kernel = {} if bandwidth is None else {"bandwidth": bandwidth}
    r = _check_rank(pair, rank)
    positive_int("restarts", restarts)
    n_u, n_v = pair.n_u, pair.n_v
    reads = TILTS.get(loss, ())

    def unpack(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        g, h = flat[: r * n_u].reshape(r, n_u), flat[r * n_u :].reshape(r, n_v)
        tilts = {
            "B_u": g.T @ g if "B_u" in reads else None,
            "B_v": h.T @ h if "B_v" in reads else None,
        }
        return g, h, tilts

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        g, h, tilts = unpack(flat)
        value, (d_a, d_bu, d_bv) = population_loss_gradient(pair, loss, g.T @ h, **tilts, **kernel)
        d_g, d_h = h @ d_a.T, g @ d_a
        if d_bu is not None:
            d_g = d_g + 2.0 * g @ d_bu
        if d_bv is not None:
            d_h = d_h + 2.0 * h @ d_bv
        return value, np.concatenate([d_g.ravel(), d_h.ravel()])

    rng = np.random.default_rng(seed)
    # Natural sizes from σ_1 = ‖W‖₂ alone (scale-free starts): A ~ σ_1; for the quadratic losses
    # the tilted side carries B ~ σ_1² and the other side is O(1). Starting the tilted side at
    # O(1) instead leaves BFGS to crawl along G -> cG, H -> H/c, which changes the loss only at
    # O(σ_1⁴).
    s1 = max(float(pair.canonical_correlations()[0]), np.finfo(np.float64).tiny)
    size_u = size_v = np.sqrt(s1)
    if loss == "quadratic_u_given_v":
        size_u, size_v = s1, 1.0
    elif loss == "quadratic_v_given_u":
        size_u, size_v = 1.0, s1
    scale = np.concatenate(
        [
            np.full(r * n_u, 0.5 * size_u / np.sqrt(r * np.trace(pair.cov_uu))),
            np.full(r * n_v, 0.5 * size_v / np.sqrt(r * np.trace(pair.cov_vv))),
        ]
    )
    starts = []
    for _ in range(restarts):
        start = rng.standard_normal(len(scale)) * scale
        while not np.isfinite(objective(start)[0]):
            start = 0.5 * start
        starts.append(start)
    quadratic = bool(reads)  # the tilt keeps GᵀG (and/or HᵀH): only orthogonal gauges remain
    one_sided = len(reads) == 1

    def gauge(flat: np.ndarray) -> np.ndarray:
        # Invariances of (A, B): G -> MG, H -> M^{-T}H for the inner-product losses (any M),
        # G -> OG, H -> OH for the quadratic ones (orthogonal O, so that GᵀG is kept).
        g, h, _ = unpack(flat)
        tangents = []
        for a in range(r):
            for b in range(r):
                if quadratic and b <= a:
                    continue
                t_g, t_h = np.zeros_like(g), np.zeros_like(h)
                if quadratic:  # M = E_ab − E_ba
                    t_g[a], t_g[b], t_h[a], t_h[b] = g[b], -g[a], h[b], -h[a]
                else:  # M = E_ab: δG = E_ab G, δH = −E_ba H
                    t_g[a], t_h[b] = g[b], -h[a]
                tangents.append(np.concatenate([t_g.ravel(), t_h.ravel()]))
        return np.array(tangents).T if tangents else np.zeros((len(flat), 0))

    options = {
        "rtol": rtol,
        "gtol": gtol,
        "what": f"numerical_alignment({loss!r}, rank {r})",
        "gauge": gauge,
        "blocks": [slice(0, r * n_u), slice(r * n_u, r * (n_u + n_v))],
    }
    best = minimise(objective, starts, **options)
    for _ in range(3 if one_sided else 0):
        # A flat direction of a quadratic loss may be a plateau rather than a family of minimisers:
        # a weak component with its tilted row -> 0 and the other -> ∞ keeps A and loses only B's
        # share of the loss, with a vanishing gradient. The family T -> e^S T, O -> e^{-S} O
        # (S symmetric; T the tilted factor) keeps A exactly: minimise over it, and start again
        # from there if the value drops.
        if not best.flat:
            break
        moved, value = _rebalance(objective, best.x, r, r * n_u, tilted_first=loss == "quadratic_u_given_v")
        if not value < best.value - 1e-10 * abs(best.value):
            break
        best = minimise(objective, [moved], **options)
    if best.flat:
        warnings.warn(
            f"numerical_alignment({loss!r}, rank {r}): the minimiser (G, H) is not determined along {best.flat} "
            "direction(s) beyond the gauge (a tie, a rank-deficient optimum, a plateau, or curvature below the "
            "gradient's precision): its matrices are not certified, and its value is certified only at a tie",
            FlatMinimumWarning,
            stacklevel=2,
        )
    logger.debug("numerical %s rank %d: loss %.12g, relative step %.2g", loss, r, best.value, best.relative_step)
    g, h, _ = unpack(best.x)
    return make_alignment(loss, r, g, h, bandwidth)


def _rebalance(objective, x: np.ndarray, r: int, split: int, *, tilted_first: bool) -> tuple[np.ndarray, float]:
    """Minimise the loss over T -> (I + (c − 1) q qᵀ) T, O -> (I + (1/c − 1) q qᵀ) O, which keeps A = GᵀH.

    q runs over the left singular vectors of the tilted factor T (G if ``tilted_first``, else H;
    ``x`` holds G, its first ``split`` entries, then H) and c over a log grid from e^-30 to
    e^30, refined by a bounded scalar search: a plateau where T is tiny along q (B loses that
    component, A keeps it through a huge O) is left only by a large change of scale, which
    neither BFGS nor Newton makes. Returns the best point found and its value.
    """
    best_x, best_value = x, float(objective(x)[0])
    g, h = x[:split].reshape(r, -1), x[split:].reshape(r, -1)
    tilted, other = (g, h) if tilted_first else (h, g)
    for q in np.linalg.svd(tilted, full_matrices=False)[0].T:
        qq = np.outer(q, q)

        def point(log_c: float, qq=qq) -> np.ndarray:
            c = np.exp(log_c)
            t, o = tilted + (c - 1.0) * qq @ tilted, other + (1.0 / c - 1.0) * qq @ other
            return np.concatenate([(t if tilted_first else o).ravel(), (o if tilted_first else t).ravel()])

        def value(log_c: float, point=point) -> float:
            f = float(objective(point(log_c))[0])
            return f if np.isfinite(f) else np.inf

        grid = np.linspace(-30.0, 30.0, 121)
        values = [value(c) for c in grid]
        i = int(np.argmin(values))
        fit = scipy.optimize.minimize_scalar(
            value, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, 120)]), method="bounded"
        )
        if fit.fun < best_value:
            best_x, best_value = point(fit.x), float(fit.fun)
    return best_x, best_value


def _jacobi_svd(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD ``a = U diag(s) Vᵀ`` (a: (m, n), m >= n) by LAPACK's preconditioned Jacobi (gejsv).

    Accurate to each entry's own size for matrices graded by rows or columns, which is what
    weak canonical directions beside strong ones need (divide-and-conquer SVD, or eigh of the
    Gram matrix, are accurate only to eps times the largest singular value).

    Returns:
        ``(s, U, V)``, s descending.
    """
    s, u, v, work, _, info = scipy.linalg.lapack.dgejsv(a, jobu=0, jobv=0)
    if info != 0:
        raise ConvergenceError(f"LAPACK dgejsv failed (info={info})")
    return s * (work[0] / work[1]), u, v


#: Canonical correlations at or below this fraction of σ_1 are treated as zero by the (50b)
#: oracle: their part of B*, at most (1e-8)² of the largest, is below any tolerance checked.
_ZERO_CORRELATION = 1e-8


def _quadratic_50b_core(
    sigma: np.ndarray, r: int, restarts: int, seed: Seed, rtol: float
) -> tuple[np.ndarray, np.ndarray]:
    r"""Rank-r minimiser of (50b) (with the corrected −log det), then (50a), in canonical coordinates.

    In whitened coordinates, :math:`\tilde B = C_{uu}^{1/2} B C_{uu}^{1/2}`, (50b) equals
    :math:`2 f(\tilde B) + n_u + 2 I(u; v)` with

    .. math::  f(\tilde B) = \tfrac12 \big[\mathrm{Tr} \tilde B - \log\det(I + \tilde B)
               - \textstyle\sum_{i \le r} \lambda_i\big(W^\top (I + \tilde B) W\big)\big],

    the last sum being :math:`\|(P_B^{1/2} C_{uv} C_{vv}^{-1/2})_r\|_F^2` (step 1 of
    ``docs/theory/rank_r_quadratic.md``). In the canonical basis W = Σ; components of
    :math:`\tilde B` outside the m canonical directions with σ_j > 0 leave the sum unchanged and
    only raise :math:`\mathrm{Tr} - \log\det` (whose derivative :math:`I - (I + \tilde B)^{-1}` is
    PSD), so :math:`\tilde B = Y^\top Y` with Y (r', m), r' = min(r, m), a dense matrix: nothing
    else about the minimiser is assumed. With :math:`N = \Sigma (I + Y^\top Y) \Sigma`, the gradient
    is :math:`(I + Y Y^\top)^{-1} Y Y^\top Y - Y \Sigma Q_r Q_r^\top \Sigma`, :math:`Q_r` the top-r
    eigenvectors of N; the invariance Y -> OY is the gauge.

    Scale-free and cancellation-free formulation: Y = Z diag(σ) (each canonical column at its
    natural size); the objective :math:`(f(Y) - f(0)) / \sigma_1^4` (the part that depends on Y is
    :math:`O(\sigma^4)`); with :math:`Y = P \mathrm{diag}(t) Q^\top`,
    :math:`\mathrm{Tr} - \log\det = \sum_i (t_i^2 - \log(1 + t_i^2))` (no cancellation) and
    :math:`(I + Y Y^\top)^{-1} Y Y^\top Y = P \mathrm{diag}(t^3 / (1 + t^2)) Q^\top` (no solve with
    :math:`I + Y Y^\top`, whose condition reaches :math:`1/(1 - \sigma_1^2)`); and :math:`Q_r` from the
    Jacobi SVD of :math:`X = [\Sigma; Y \Sigma]` (:math:`N = X^\top X`), accurate to each entry's size
    when the σ_j span decades. Then (50a):
    :math:`\tilde A = (I + \tilde B)^{1/2} \big((I + \tilde B)^{1/2} \Sigma\big)_r`, and the v-side core X
    solves :math:`Y^\top X = \tilde A`.

    Args:
        sigma: (k,) canonical correlations, descending.
        r: rank, 1 <= r <= k.
        restarts: number of random starts.
        seed: seed of ``numpy.random.default_rng`` for the starts.
        rtol: certified relative Newton step.

    Returns:
        ``(Y, X)``, both (r, k) (rows beyond r' and columns beyond m are zero):
        :math:`G = Y L_u^\top`, :math:`H = X L_v^\top` for the u|v loss.

    Raises:
        ConvergenceError: if the minimisation cannot be certified to ``rtol``.
    """
    k = len(sigma)
    y_full, x_full = np.zeros((r, k)), np.zeros((r, k))
    if sigma[0] == 0.0:
        return y_full, x_full  # W = 0: B = 0 and A = 0 minimise (Tr − log det >= 0).
    m = int(np.sum(sigma > _ZERO_CORRELATION * sigma[0]))
    s = sigma[:m]
    rr = min(r, m)
    s1_4 = s[0] ** 4
    top_const = np.sum(s[:rr] ** 2)

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        y = flat.reshape(rr, m) * s
        # Y = P diag(t) Qᵀ: Tr − log det = Σ φ(t²) and (I + YYᵀ)^{-1} YYᵀ Y = P diag(t³/(1 + t²)) Qᵀ,
        # with no cancellation for small t and no (I + YYᵀ)^{-1} (condition up to 1/(1 − σ_1²)).
        t, q_y, p_y = _jacobi_svd(y.T)  # Yᵀ = Q diag(t) Pᵀ
        # N = Σ(I + YᵀY)Σ = XᵀX with X = [Σ; YΣ], graded by the columns of Σ.
        x_mat = np.vstack([np.diag(s), y * s])
        top = _jacobi_svd(x_mat)[2][:, :rr]
        top_sq = np.sum((x_mat @ top) ** 2, axis=0)
        value = 0.5 * (np.sum(x_minus_log1p(t * t)) - (np.sum(top_sq) - top_const))
        grad = (p_y * (t**3 / (1.0 + t * t))) @ q_y.T - (y @ (s[:, None] * top)) @ (top.T * s)
        return value / s1_4, (grad * s).ravel() / s1_4

    def gauge(flat: np.ndarray) -> np.ndarray:
        # f depends on YᵀY only: Y -> OY, tangent M Y = M Z diag(σ) for antisymmetric M.
        z = flat.reshape(rr, m)
        tangents = []
        for a in range(rr):
            for b in range(a + 1, rr):
                t = np.zeros((rr, m))
                t[a], t[b] = z[b], -z[a]
                tangents.append(t.ravel())
        return np.array(tangents).T if tangents else np.zeros((rr * m, 0))

    rng = np.random.default_rng(seed)
    best = minimise(
        objective,
        [rng.standard_normal(rr * m) for _ in range(restarts)],
        rtol=rtol,
        gtol=1e-14,
        what=f"(50b) rank {r}",
        gauge=gauge,
        weights=np.tile(s, rr),
    )
    if best.flat:
        warnings.warn(
            f"(50b) rank {r}: the minimiser is not determined along {best.flat} direction(s) beyond the gauge "
            "(a tie or near-tie of canonical correlations, or curvature below the gradient's precision); "
            "only its loss value is certified",
            FlatMinimumWarning,
            stacklevel=3,
        )
    y = best.x.reshape(rr, m) * s
    # (50a): Ã = R (R Σ)_r with R = (I + YᵀY)^{1/2}.
    lam_b, e_b = np.linalg.eigh(y.T @ y)
    root = (e_b * np.sqrt(1.0 + np.maximum(lam_b, 0.0))) @ e_b.T
    u_c, s_c, vt_c = scipy.linalg.svd(root * s, full_matrices=False)
    a_white = root @ (u_c[:, :rr] * s_c[:rr]) @ vt_c[:rr]
    x = np.linalg.lstsq(y.T, a_white, rcond=None)[0]
    y_full[:rr, :m], x_full[:rr, :m] = y, x
    return y_full, x_full


def numerical_quadratic_alignment(
    pair: GaussianPair,
    loss: str,
    rank: int | None = None,
    *,
    restarts: int = 3,
    seed: Seed = 0,
    rtol: float = 1e-10,
) -> Alignment:
    """The rank-r one-sided quadratic optimum by the paper's route: (50a) with B from minimising (50b).

    The oracle of the closed form :func:`clipmath.theory.optimal_alignment` (which is the top-r
    truncation of Theorem 5.3; ``docs/theory/rank_r_quadratic.md``). (50b) is minimised over
    PSD rank-r B (with −log det, the sign corrected in ``docs/math/typos.md``) as a dense factor in
    the canonical basis from random starts, certified to a relative step ``rtol`` (see
    :func:`_quadratic_50b_core`), and (50a) gives A. ``quadratic_v_given_u`` is the mirror image
    (B_v). At a tie σ_r = σ_{r+1} > 0 it returns some member of the family of minimisers: compare
    loss values there.

    Args:
        pair: the data law.
        loss: ``"quadratic_u_given_v"`` or ``"quadratic_v_given_u"``.
        rank: embedding dimension in 1..min(n_u, n_v); None for full rank.
        restarts: random starts (>= 1).
        seed: seed of ``numpy.random.default_rng`` for the starts (int, None or a Generator).
        rtol: certified bound on the relative Newton step of the (50b) minimisation.

    Returns:
        An :class:`~clipmath.theory.Alignment` with ``rank`` rows in G and H.

    Raises:
        ValueError: for another loss, or a bad rank or restarts.
        ConvergenceError: if (50b) cannot be minimised to ``rtol`` (then no answer is given).

    Warns:
        FlatMinimumWarning: if the minimiser is not determined to the gradient's precision (a tie
            or near-tie σ_r ≈ σ_{r+1}, or canonical correlations many decades below σ_1):
            compare loss values then, not matrices.
    """
    if loss not in ("quadratic_u_given_v", "quadratic_v_given_u"):
        raise ValueError(f"loss={loss!r}: expected 'quadratic_u_given_v' or 'quadratic_v_given_u'")
    r = _check_rank(pair, rank)
    positive_int("restarts", restarts)
    sigma = pair.canonical_correlations()
    tilted, other = _quadratic_50b_core(sigma, r, restarts, seed, rtol)
    l_u, l_v = pair._whitening_bases(len(sigma))
    if loss == "quadratic_v_given_u":
        # Mirror: the v-side carries B_v; in canonical coordinates W = Σ is the same both ways,
        # so the u-side core is the transpose route, i.e. the same cores with roles swapped.
        G, H = other @ l_u.T, tilted @ l_v.T
        return Alignment(loss=loss, rank=r, A=G.T @ H, G=G, H=H, B_v=H.T @ H)
    G, H = tilted @ l_u.T, other @ l_v.T
    return Alignment(loss=loss, rank=r, A=G.T @ H, G=G, H=H, B_u=G.T @ G)
