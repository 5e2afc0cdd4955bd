r"""Population-optimal linear encoders in the Gaussian setting (Section 5 of Baptista, Stuart & Tran 2025).

With :math:`W = C_{uu}^{-1/2} C_{uv} C_{vv}^{-1/2} = U \Sigma V^\top` (canonical correlations
σ), every closed form of Section 5 is diagonal in the canonical bases
:math:`L_u = C_{uu}^{-1/2} U` and :math:`L_v = C_{vv}^{-1/2} V`:

- ``conditional``: :math:`A^* = L_u \mathrm{diag}(\sigma) L_v^\top` (Theorem 5.1; the top r for rank r);
- ``joint``: :math:`A^* = L_u \mathrm{diag}(h(\sigma)) L_v^\top` (Theorem 5.6, Definition 5.5);
- ``quadratic_u_given_v``: :math:`A^* = L_u \mathrm{diag}(\sigma / (1 - \sigma^2)) L_v^\top` and
  :math:`B_u^* = L_u \mathrm{diag}(\sigma^2 / (1 - \sigma^2)) L_u^\top` (Theorem 5.3), and at rank r
  the top-r truncation of both (see below).

For the quadratic loss these are :math:`A^* = C_{u|v}^{-1} C_{uv} C_{vv}^{-1}` and
:math:`B^* = C_{u|v}^{-1} - C_{uu}^{-1}` of Theorem 5.3 (Woodbury). The factor encoders
(Remark D.3) are read off the same diagonal: :math:`G = \mathrm{diag}(g) L_u^\top` and
:math:`H = \mathrm{diag}(k) L_v^\top`, with :math:`g_i k_i` the diagonal of :math:`A^*` (and
:math:`g_i^2` that of :math:`B_u^*`); n_e is the rank.

**Rank-r quadratic optimum (a result the paper does not have).** The paper solves the rank-r
one-sided quadratic loss only through (50a) with B from a numerical minimisation of (50b). Its
minimiser is in fact the top-r truncation of Theorem 5.3,

.. math::
    B^*(r) = C_{uu}^{-1/2} U_r \mathrm{diag}\Big(\frac{\sigma_i^2}{1 - \sigma_i^2}\Big) U_r^\top C_{uu}^{-1/2}, \qquad
    A^*(r) = C_{uu}^{-1/2} U_r \mathrm{diag}\Big(\frac{\sigma_i}{1 - \sigma_i^2}\Big) V_r^\top C_{vv}^{-1/2},

with minimum :math:`\tfrac12 \sum_{i \le r} \log(1 - \sigma_i^2)` (:func:`quadratic_minimum`), unique iff
σ_r > σ_{r+1} or σ_r = 0 (:func:`unique_minimiser`). Proof (whitening, Ky Fan's maximum
principle, the inner convex minimiser :math:`\tilde B = M (I - M)^{-1}` with :math:`M = W P W^\top`,
Poincaré separation): ``docs/theory/rank_r_quadratic.md``. The numerical route of (50b) is
kept as an oracle, :func:`clipmath.theory.numerical_quadratic_alignment`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipmath.theory.gaussian import GaussianPair

#: The population losses of the Gaussian setting, by name (Section 5 and issue 11): the four of
#: the paper, the two-sided quadratic conditional and the quadratic joint loss, and the MMD
#: conditional and joint losses with the inner-product tilting and a Gaussian kernel.
LOSSES = (
    "conditional",
    "joint",
    "quadratic_u_given_v",
    "quadratic_v_given_u",
    "quadratic_conditional",
    "quadratic_joint",
    "mmd_conditional",
    "mmd_joint",
)
#: loss -> the tilt matrices it reads (B_u = GᵀG, B_v = HᵀH); the others read A = GᵀH alone.
TILTS = {
    "quadratic_u_given_v": ("B_u",),
    "quadratic_v_given_u": ("B_v",),
    "quadratic_conditional": ("B_u", "B_v"),
    "quadratic_joint": ("B_u", "B_v"),
}
#: The losses whose kernel has a bandwidth (Gaussian kernel, one bandwidth for u and v, as the
#: trained ``mmd_conditional``/``mmd_joint`` of :mod:`clipmath.multimodal.losses.mmd`).
MMD_LOSSES = ("mmd_conditional", "mmd_joint")
#: The bandwidth used when none is given (the trained losses' default).
DEFAULT_BANDWIDTH = 1.0


@dataclass(frozen=True)
class Alignment:
    r"""Optimal (or fitted) linear encoders :math:`g_u(u) = G u`, :math:`g_v(v) = H v` (eq. 38).

    Attributes:
        loss: the loss minimised, one of :data:`LOSSES`.
        rank: the embedding dimension n_e (rank constraint on A).
        A: (n_u, n_v) :math:`A = G^\top H`, the inner-product coupling of the tilting (39)/(46).
        G: (n_e, n_u) encoder of u.
        H: (n_e, n_v) encoder of v.
        B_u: (n_u, n_u) :math:`G^\top G` where the loss determines it (``quadratic_u_given_v``), else None.
        B_v: (n_v, n_v) :math:`H^\top H` where the loss determines it (``quadratic_v_given_u``), else None.
        bandwidth: the kernel bandwidth of an MMD loss, else None.
    """

    loss: str
    rank: int
    A: np.ndarray
    G: np.ndarray
    H: np.ndarray
    B_u: np.ndarray | None = None
    B_v: np.ndarray | None = None
    bandwidth: float | None = None

    def arguments(self) -> dict:
        """The keyword arguments of :func:`clipmath.theory.population_loss` besides A (tilts, bandwidth)."""
        out = {name: getattr(self, name) for name in TILTS.get(self.loss, ())}
        return out if self.bandwidth is None else {**out, "bandwidth": self.bandwidth}


def make_alignment(loss: str, rank: int, G: np.ndarray, H: np.ndarray, bandwidth: float | None = None) -> Alignment:
    """The :class:`Alignment` of encoders (G, H) for ``loss``: A = GᵀH and the tilts the loss reads."""
    tilts = {"B_u": G.T @ G, "B_v": H.T @ H}
    return Alignment(
        loss=loss,
        rank=rank,
        A=G.T @ H,
        G=G,
        H=H,
        bandwidth=bandwidth,
        **{name: tilts[name] for name in TILTS.get(loss, ())},
    )


def check_bandwidth(loss: str, bandwidth: float | None) -> float | None:
    """The bandwidth ``loss`` uses: :data:`DEFAULT_BANDWIDTH` if None for an MMD loss, None otherwise.

    Raises:
        ValueError: naming ``bandwidth`` if it is given to a loss without a kernel, or is not a
            finite number > 0.
    """
    if loss not in MMD_LOSSES:
        if bandwidth is not None:
            raise ValueError(f"bandwidth={bandwidth!r}: loss {loss!r} has no kernel (only {', '.join(MMD_LOSSES)})")
        return None
    if bandwidth is None:
        return DEFAULT_BANDWIDTH
    if (
        isinstance(bandwidth, bool)
        or not isinstance(bandwidth, (int, float, np.floating))
        or not (np.isfinite(bandwidth) and bandwidth > 0)
    ):
        raise ValueError(f"bandwidth={bandwidth!r}: expected a finite number > 0")
    return float(bandwidth)


def h(sigma: np.ndarray | float) -> np.ndarray | float:
    r"""The shrinkage of the joint loss, Definition 5.5.

    .. math::  h(\sigma) = \frac{\sqrt{1 + 4\sigma^2} - 1}{2\sigma} = \frac{2\sigma}{1 + \sqrt{1 + 4\sigma^2}},

    the positive root of :math:`\sigma D^2 + D - \sigma = 0`. The second form is used: it has
    no cancellation for small σ and extends continuously to h(0) = 0.

    Args:
        sigma: a float or an array of any shape with entries in [0, 1] (canonical correlations).

    Returns:
        h applied elementwise, a float for a float input.

    Raises:
        ValueError: if an entry is outside [0, 1] or NaN.
    """
    s = np.asarray(sigma, dtype=np.float64)
    if not np.all((s >= 0.0) & (s <= 1.0)):
        raise ValueError(f"sigma={sigma!r}: expected values in [0, 1] (Definition 5.5)")
    value = 2.0 * s / (1.0 + np.sqrt(1.0 + 4.0 * s * s))
    return float(value) if value.ndim == 0 else value


def _check_rank(pair: GaussianPair, rank: int | None) -> int:
    k = min(pair.n_u, pair.n_v)
    if rank is None:
        return k
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= k:
        raise ValueError(f"rank={rank!r}: expected an int in 1..min(n_u, n_v) = 1..{k}, or None")
    return int(rank)


def check_loss(loss: str) -> str:
    """``loss`` if it is one of :data:`LOSSES`; otherwise a ValueError naming it."""
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r}: expected one of {', '.join(LOSSES)}")
    return loss


def _in_basis(core: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``core @ basis.T`` for a (r, k) core; a (r,) core is a diagonal, applied by row scaling."""
    return core[:, None] * basis.T if core.ndim == 1 else core @ basis.T


#: Random starts of the numerical optima that :func:`optimal_alignment` computes (seed 0: deterministic).
NUMERICAL_RESTARTS = 4


def two_sided_quadratic_weight(sigma: np.ndarray) -> np.ndarray:
    r"""The canonical weight t(σ) of the two-sided quadratic optimum, A = B_u = B_v = t in canonical coordinates.

    The positive root of :math:`2(1 - \sigma) t^2 + (3 - 4\sigma) t - 2\sigma = 0`, the stationarity of the
    per-pair loss :math:`\tfrac12 [t - \log(1 + t) - 2\sigma t + t^2/(1 + t)]`
    (``docs/theory/quadratic_conditional.md``), in the form without cancellation on each side of
    σ = 3/4 (t ≈ 2σ/3 for small σ).
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    b, root = 3.0 - 4.0 * sigma, np.sqrt(9.0 - 8.0 * sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        small = 4.0 * sigma / (b + root)
        large = (root - b) / (4.0 * (1.0 - sigma))
    return np.where(b >= 0.0, small, large)


def optimal_alignment(
    pair: GaussianPair, loss: str, rank: int | None = None, *, bandwidth: float | None = None
) -> Alignment:
    r"""The population minimiser of ``loss`` over linear encoders with embedding dimension ``rank``.

    Closed forms in the canonical bases (one SVD of W, cached by ``pair``) wherever one exists:

    - ``conditional``: inner-product tilting, two-sided conditional loss (42), Theorem 5.1:
      :math:`A^*(r) = C_{uu}^{-1/2} (W)_r C_{vv}^{-1/2}`.
    - ``joint``: inner-product tilting, joint loss (52), Theorem 5.6:
      :math:`A^*(r) = C_{uu}^{-1/2} (U h(\Sigma) V^\top)_r C_{vv}^{-1/2}`.
    - ``quadratic_u_given_v``: quadratic tilting, one-sided u|v loss, Theorem 5.3:
      :math:`A^* = C_{u|v}^{-1} C_{uv} C_{vv}^{-1}`, :math:`B_u^* = C_{u|v}^{-1} - C_{uu}^{-1}` at full
      rank; at rank r the top-r truncation
      :math:`B_u^*(r) = C_{uu}^{-1/2} U_r \mathrm{diag}(\sigma^2/(1-\sigma^2)) U_r^\top C_{uu}^{-1/2}`,
      :math:`A^*(r) = C_{uu}^{-1/2} U_r \mathrm{diag}(\sigma/(1-\sigma^2)) V_r^\top C_{vv}^{-1/2}`, the
      minimiser of (50a)/(50b) over PSD :math:`B_u` of rank <= r (proof in
      ``docs/theory/rank_r_quadratic.md``; :func:`clipmath.theory.numerical_quadratic_alignment` is
      the numerical (50b) oracle).
    - ``quadratic_v_given_u``: the mirror image, roles of u and v swapped (B_v = HᵀH,
      :math:`B_v^*(r) = C_{vv}^{-1/2} V_r \mathrm{diag}(\sigma^2/(1-\sigma^2)) V_r^\top C_{vv}^{-1/2}`, same A).
    - ``quadratic_conditional`` (two-sided, λ = (1, 1)): :math:`G = \mathrm{diag}(\sqrt t) L_u^\top`,
      :math:`H = \mathrm{diag}(\sqrt t) L_v^\top` over the top r canonical pairs, t =
      :func:`two_sided_quadratic_weight` (σ); the canonical-diagonal form is verified against the
      numerical minimisation over dense (G, H), not proved (``docs/theory/quadratic_conditional.md``).
    - ``quadratic_joint``: the same with :math:`t = \sigma / (2(1 - \sigma))`, so that
      :math:`\nu` has precision :math:`\mathrm{diag}(C_{uu}^{-1}, C_{vv}^{-1}) + [G, -H]^\top [G, -H]`;
      proved by Cauchy interlacing (``docs/theory/quadratic_joint.md``).
    - ``mmd_conditional``: at full rank the A* of Theorem 5.1 for every bandwidth (both conditional
      means matched; the inner-product tilting fixes the covariances); at rank r < min(n_u, n_v)
      a numerical optimum (``docs/theory/mmd.md``).
    - ``mmd_joint``: a numerical optimum at every rank.

    A numerical optimum is :func:`clipmath.theory.numerical_alignment` from
    :data:`NUMERICAL_RESTARTS` seeded random starts (seed 0, so the answer is deterministic),
    certified to a relative Newton step of 1e-10; it raises rather than return an unconverged answer.

    At a tie σ_r = σ_{r+1} > 0 the minimiser is not unique (:func:`unique_minimiser`); this
    returns the member built from the SVD's singular vectors, and every member has the same loss.

    Args:
        pair: the data law.
        loss: one of :data:`LOSSES`.
        rank: embedding dimension n_e in 1..min(n_u, n_v); None for min(n_u, n_v) (full rank).
        bandwidth: kernel bandwidth of the MMD losses (default 1); None for the others.

    Returns:
        An :class:`Alignment` with :math:`G^\top H = A` (Remark D.3); G and H have ``rank`` rows.

    Raises:
        ValueError: for an unknown ``loss``, a ``rank`` outside 1..min(n_u, n_v) or a bad bandwidth.
        ConvergenceError: if a numerical optimum cannot be certified.
    """
    check_loss(loss)
    bandwidth = check_bandwidth(loss, bandwidth)
    r = _check_rank(pair, rank)
    if loss == "mmd_joint" or (loss == "mmd_conditional" and r < min(pair.n_u, pair.n_v)):
        from clipmath.theory.numerical import numerical_alignment  # it imports this module

        return numerical_alignment(pair, loss, r, restarts=NUMERICAL_RESTARTS, seed=0, bandwidth=bandwidth)
    sigma = pair.canonical_correlations()[:r]
    if loss in ("conditional", "mmd_conditional"):
        tilted = other = np.sqrt(sigma)
    elif loss == "joint":
        tilted = other = np.sqrt(h(sigma))
    elif loss == "quadratic_conditional":
        tilted = other = np.sqrt(two_sided_quadratic_weight(sigma))
    elif loss == "quadratic_joint":
        tilted = other = np.sqrt(sigma / (2.0 * (1.0 - sigma)))
    else:
        # Theorem 5.3 in canonical form, truncated to the top r (rank-r optimum): σ/√(1-σ²)
        # carries B = σ²/(1-σ²), 1/√(1-σ²) completes A = σ/(1-σ²).
        tilted = sigma / np.sqrt(1.0 - sigma**2)
        other = 1.0 / np.sqrt(1.0 - sigma**2)
    l_u, l_v = pair._whitening_bases(r)
    # The v|u loss is the u|v loss with the roles swapped; W has the same σ both ways.
    g_core, h_core = (other, tilted) if loss == "quadratic_v_given_u" else (tilted, other)
    return make_alignment(loss, r, _in_basis(g_core, l_u), _in_basis(h_core, l_v), bandwidth)


def quadratic_minimum(pair: GaussianPair, rank: int | None = None) -> float:
    r"""Minimum of the rank-r one-sided quadratic loss, :math:`\tfrac12 \sum_{i \le r} \log(1 - \sigma_i^2)`.

    The value of :func:`clipmath.theory.population_loss` at :func:`optimal_alignment` for
    ``quadratic_u_given_v`` and ``quadratic_v_given_u`` alike (the loss keeps every constant
    and vanishes at A = 0, B = 0, so the constant of the derivation is 0 here). At full rank
    it is :math:`-I(u; v)`, minus the mutual information (the constant of Theorem 3.2).
    Derivation: ``docs/theory/rank_r_quadratic.md``.

    Args:
        pair: the data law.
        rank: embedding dimension in 1..min(n_u, n_v); None for full rank.

    Returns:
        The minimum in nats (<= 0).
    """
    r = _check_rank(pair, rank)
    return float(0.5 * np.sum(np.log1p(-(pair.canonical_correlations()[:r] ** 2))))


def unique_minimiser(pair: GaussianPair, rank: int | None = None, *, rtol: float = 1e-12) -> bool:
    """Whether the rank-r quadratic (and conditional) minimiser is unique: σ_r > σ_{r+1} or σ_r = 0.

    At σ_r = σ_{r+1} > 0 every rank-r subspace between the canonical directions above the tie
    and those through it gives a minimiser of the same loss (Ky Fan's maximum is attained by
    a family of projectors, ``docs/theory/rank_r_quadratic.md``), so matrices are not
    comparable there, only loss values. A tie at zero is no tie: the minimiser then has rank
    below r and is unique. The same condition decides uniqueness of the rank-r conditional
    optimum of Theorem 5.1 (Eckart-Young). Full rank is always unique.

    Args:
        pair: the data law.
        rank: embedding dimension in 1..min(n_u, n_v); None for full rank.
        rtol: σ_r − σ_{r+1} <= rtol·σ_1 counts as a tie, σ_r <= rtol·σ_1 as zero (σ from an SVD
            carry round-off of about eps·σ_1).

    Returns:
        True if the minimiser is unique.
    """
    r = _check_rank(pair, rank)
    sigma = pair.canonical_correlations()
    if r == len(sigma):
        return True
    scale = rtol * sigma[0]
    return bool(sigma[r - 1] - sigma[r] > scale or sigma[r - 1] <= scale)
