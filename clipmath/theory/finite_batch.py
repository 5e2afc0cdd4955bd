r"""The finite-batch floor: the optimum of the *expected batch* conditional loss (issue 11, section 3).

Every theorem of Baptista, Stuart & Tran (2025) is about the population loss (eq. 11), but
training minimises the batch loss of Remark 2.6 / eq. (12), whose normalisers are batch means
that include the positive pair. For the inner-product tilting with linear encoders
(:math:`S_{ij} = u_i^\top A v_j`), the two-sided batch loss of B pairs is

.. math::
    \ell_B(A) = \frac1B \sum_i \Big[-S_{ii} + \tfrac12 \log \frac1B \sum_j e^{S_{ji}}
                 + \tfrac12 \log \frac1B \sum_j e^{S_{ij}}\Big],

the trained ``conditional`` loss (two-sided) of :mod:`clipmath.multimodal.losses.conditional`.
Its expectation over batches, :math:`\bar\ell_B(A) = \mathbb E\,\ell_B(A)`, has a minimiser
:math:`A_B \ne A^*` (Theorem 5.1's), and :math:`A_B \to A^*` as :math:`B \to \infty`. It has no
closed form; it is computed by a sample-average approximation (SAA): a fixed set of K batches
(common random numbers: the same batches at every A), whose average loss is convex in A (a
sum of log-sum-exps of linear functions), minimised deterministically.

The minimisation is a Richardson iteration (Anderson-accelerated, depth 5) preconditioned by
the population Hessian,
:math:`A \leftarrow A - \mathcal H^{-1} \nabla \hat\ell(A)` with
:math:`\mathcal H = C_{vv} \otimes C_{uu}` (the exact Hessian of the population loss (42)), i.e.
:math:`\Delta A = -C_{uu}^{-1} \nabla \hat\ell\, C_{vv}^{-1}`, from :math:`A^*`: the SAA Hessian differs from
:math:`\mathcal H` by O(1/B) and sampling, so it contracts fast, and it stops on the scale-free
relative step :math:`\|C_{uu}^{1/2} \Delta A C_{vv}^{1/2}\|_F / \|C_{uu}^{1/2} A C_{vv}^{1/2}\|_F \le` ``rtol`` or
raises :class:`~clipmath.theory.ConvergenceError`.

Its own Monte-Carlo error (the SAA optimum :math:`\hat A_K` of K batches scatters about
:math:`A_B`) is estimated by the delta method: :math:`\mathrm{Cov}(\mathrm{vec}\,\hat A_K) \approx
\mathcal H^{-1} \mathrm{Cov}(g_k) \mathcal H^{-1} / K`, :math:`g_k` the per-batch gradients at :math:`\hat A_K`.
Derivation and what it explains of the trained plateau of ``gaussian-process``: ``docs/theory/finite_batch.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipmath.theory._checks import as_matrix
from clipmath.theory._optimise import ConvergenceError
from clipmath.theory.gaussian import GaussianPair

#: Batches per vectorised chunk: bounds the (chunk, B, B) logit arrays to ~ 8 · 1024² floats.
_CHUNK_PAIRS = 8 * 1024 * 1024


@dataclass(frozen=True)
class BatchOptimum:
    """The SAA optimum of the expected two-sided batch loss.

    Attributes:
        A: (n_u, n_v) minimiser of the average loss of the K batches.
        batch_size: B.
        n_batches: K.
        value: the average batch loss at A.
        covariance: (n_u n_v, n_u n_v) delta-method covariance of vec(A) (row-major) across
            independent sets of K batches.
        iterations: gradient evaluations of the iteration (each one pass over the K batches).
    """

    A: np.ndarray
    batch_size: int
    n_batches: int
    value: float
    covariance: np.ndarray
    iterations: int


def _batch_losses_and_gradients(A: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-batch losses (K,) and gradients (K, n_u, n_v) of :math:`\ell_B` for batches u (K, B, n_u), v (K, B, n_v)."""
    k, b, _ = u.shape
    chunk = max(1, _CHUNK_PAIRS // (b * b))
    losses, grads = np.empty(k), np.empty((k, A.shape[0], A.shape[1]))
    eye = np.eye(b)
    for start in range(0, k, chunk):
        uu, vv = u[start : start + chunk], v[start : start + chunk]
        s = (uu @ A) @ vv.transpose(0, 2, 1)  # S[k, i, j] = u_i A v_j
        top = s.max(axis=(1, 2), keepdims=True)
        e = np.exp(s - top)  # one exponential serves both normalisers
        col, row = e.sum(axis=1), e.sum(axis=2)  # col[k, i] = Σ_j e^{S_ji}, row[k, i] = Σ_j e^{S_ij}
        diag = np.einsum("kii->ki", s)
        lme = top[:, :, 0] - np.log(b)
        losses[start : start + chunk] = np.mean(-diag + 0.5 * (np.log(col) + lme) + 0.5 * (np.log(row) + lme), axis=1)
        d_s = (-eye + 0.5 * e / col[:, None, :] + 0.5 * e / row[:, :, None]) / b  # ∂ℓ/∂S
        grads[start : start + chunk] = uu.transpose(0, 2, 1) @ d_s @ vv
    return losses, grads


def batch_optimum(
    pair: GaussianPair, u: np.ndarray, v: np.ndarray, *, rtol: float = 1e-8, max_iterations: int = 50
) -> BatchOptimum:
    """Minimise the average two-sided batch loss of fixed batches (u, v) over full-rank A.

    Args:
        pair: the data law µ (its covariances precondition the iteration and give the start A*;
            the batches may come from µ or from a fixed training set drawn from it).
        u: (K, B, n_u) the K batches of u, row i of batch k paired with row i of ``v[k]``.
        v: (K, B, n_v) the batches of v.
        rtol: bound on the final relative (whitened) step.
        max_iterations: Richardson steps allowed.

    Returns:
        The :class:`BatchOptimum` (module docstring).

    Raises:
        ValueError: naming ``u`` or ``v`` for shapes that disagree with ``pair`` or each other,
            K < 2 or B < 2.
        ConvergenceError: if the relative step does not fall below ``rtol``.
    """
    u = as_matrix("u", u, (None, None, pair.n_u))
    v = as_matrix("v", v, (u.shape[0], u.shape[1], pair.n_v))
    k, b, _ = u.shape
    if k < 2 or b < 2:
        raise ValueError(f"u: expected at least 2 batches of at least 2 pairs, got shape {u.shape}")
    (lam_u, e_u), (lam_v, e_v) = pair._eig["u"], pair._eig["v"]
    inv_u, inv_v = (e_u / lam_u) @ e_u.T, (e_v / lam_v) @ e_v.T
    A = inv_u @ pair.cov_uv @ inv_v  # Theorem 5.1
    relative, xs, fs = np.inf, [], []
    for iteration in range(1, max_iterations + 1):  # noqa: B007 (reported after the loop)
        _, grads = _batch_losses_and_gradients(A, u, v)
        step = -inv_u @ grads.mean(axis=0) @ inv_v
        relative = np.linalg.norm(pair._whiten(step)) / np.linalg.norm(pair._whiten(A + step))
        if relative <= rtol:
            A = A + step
            break
        # Anderson acceleration (depth 5) of the fixed-point map A -> A + step.
        xs, fs = [*xs[-5:], A.ravel()], [*fs[-5:], step.ravel()]
        if len(xs) > 1:
            d_x, d_f = np.diff(np.array(xs), axis=0).T, np.diff(np.array(fs), axis=0).T
            gamma = np.linalg.lstsq(d_f, step.ravel(), rcond=None)[0]
            A = (A.ravel() + step.ravel() - (d_x + d_f) @ gamma).reshape(A.shape)
        else:
            A = A + step
    else:
        raise ConvergenceError(
            f"batch_optimum (B={b}, K={k}): relative step {relative:.2g} > rtol={rtol:g} after "
            f"{max_iterations} iterations; the result would not be reliable"
        )
    losses, grads = _batch_losses_and_gradients(A, u, v)
    # Delta method: vec(ΔA) = -H^{-1} vec(ḡ), H^{-1} vec(X) = vec(C_uu^{-1} X C_vv^{-1}).
    centred = grads - grads.mean(axis=0)
    mapped = (inv_u @ centred @ inv_v).reshape(k, -1)
    covariance = mapped.T @ mapped / (k - 1) / k
    return BatchOptimum(
        A=A, batch_size=b, n_batches=k, value=float(losses.mean()), covariance=covariance, iterations=iteration
    )


def gaussian_batches(pair: GaussianPair, batch_size: int, n_batches: int, seed) -> tuple[np.ndarray, np.ndarray]:
    """K independent batches of B pairs from µ: (K, B, n_u) and (K, B, n_v)."""
    u, v = pair.sample(batch_size * n_batches, seed=seed)
    return u.reshape(n_batches, batch_size, -1), v.reshape(n_batches, batch_size, -1)


def epoch_batches(u: np.ndarray, v: np.ndarray, batch_size: int, n_batches: int, seed) -> tuple[np.ndarray, np.ndarray]:
    """K batches of B pairs as training draws them from a fixed set of N pairs.

    Each epoch is a fresh permutation cut into floor(N / B) batches (the last partial batch
    dropped), epochs repeated until K batches are drawn.
    """
    rng = np.random.default_rng(seed)
    per_epoch = len(u) // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch_size={batch_size}: expected at most N = {len(u)}")
    index = np.concatenate(
        [
            rng.permutation(len(u))[: per_epoch * batch_size].reshape(per_epoch, batch_size)
            for _ in range(-(-n_batches // per_epoch))
        ]
    )[:n_batches]
    return u[index], v[index]
