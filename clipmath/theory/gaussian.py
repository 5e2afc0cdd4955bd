r"""The data law of Section 5 of Baptista, Stuart & Tran (2025): a centred Gaussian pair (u, v).

:math:`(u, v) \sim \mathcal N(0, \mathcal C)` with
:math:`\mathcal C = \begin{bmatrix} C_{uu} & C_{uv} \\ C_{vu} & C_{vv} \end{bmatrix} \succ 0`.
Everything the closed forms need is computed once, at construction, from one symmetric
eigendecomposition per diagonal block, :math:`C_{uu} = E_u \Lambda_u E_u^\top` (and the same
for v), and one SVD of the whitened cross-covariance written in those eigenbases,

.. math::  W' = \Lambda_u^{-1/2} E_u^\top C_{uv} E_v \Lambda_v^{-1/2} = U' \Sigma V'^\top .

Because :math:`C_{uu}^{-1/2} = E_u \Lambda_u^{-1/2} E_u^\top`, the whitened cross-covariance of
Theorems 5.1 and 5.6, :math:`W = C_{uu}^{-1/2} C_{uv} C_{vv}^{-1/2} = U \Sigma V^\top`, has
:math:`U = E_u U'` and :math:`V = E_v V'`: no matrix square root or inverse is ever formed.
The singular values Σ are the canonical correlations, and the joint covariance is positive
definite exactly when both blocks are and :math:`\sigma_1 < 1` (Schur complement), which is
how it is checked.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from clipmath.theory._checks import Seed, as_matrix, check_modality, direction, positive_int, symmetric

_EPS = np.finfo(np.float64).eps


def _eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Divide and conquer: the fastest LAPACK driver for all eigenpairs of a dense matrix.
    return scipy.linalg.eigh(matrix, check_finite=False, driver="evd")


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class GaussianPair:
    r"""The joint law :math:`\mathcal N(0, \mathcal C)` of a pair (u, v) (Section 5, eq. 36-37).

    Args:
        cov_uu: (n_u, n_u) covariance of u, symmetric positive definite.
        cov_uv: (n_u, n_v) cross-covariance :math:`E[u v^\top]`.
        cov_vv: (n_v, n_v) covariance of v, symmetric positive definite.

    Raises:
        ValueError: naming the argument, for a wrong shape, NaN/Inf, an asymmetric block, or a
            joint covariance that is not positive definite.
    """

    def __init__(self, cov_uu: np.ndarray, cov_uv: np.ndarray, cov_vv: np.ndarray):
        cov_uu = symmetric("cov_uu", as_matrix("cov_uu", cov_uu, (None, None)))
        cov_vv = symmetric("cov_vv", as_matrix("cov_vv", cov_vv, (None, None)))
        n_u, n_v = cov_uu.shape[0], cov_vv.shape[0]
        if n_u == 0 or n_v == 0:
            raise ValueError(f"cov_uu, cov_vv: expected non-empty blocks, got n_u={n_u}, n_v={n_v}")
        cov_uv = as_matrix("cov_uv", cov_uv, (n_u, n_v))
        self._eig = {"u": _eigh(cov_uu), "v": _eigh(cov_vv)}
        for side, name in (("u", "cov_uu"), ("v", "cov_vv")):
            lam = self._eig[side][0]
            if lam[0] <= len(lam) * _EPS * abs(lam[-1]):
                raise ValueError(f"{name}: expected positive definite, smallest eigenvalue {lam[0]:.3g}")
        (lam_u, e_u), (lam_v, e_v) = self._eig["u"], self._eig["v"]
        w = (e_u.T @ cov_uv @ e_v) / np.sqrt(lam_u)[:, None] / np.sqrt(lam_v)[None, :]
        u_c, sigma, vt_c = scipy.linalg.svd(w, full_matrices=False, check_finite=False)
        if 1.0 - sigma[0] ** 2 <= max(n_u, n_v) * _EPS:
            raise ValueError(
                "cov_uv: joint covariance [[cov_uu, cov_uv], [cov_uv^T, cov_vv]] is not positive "
                f"definite: largest canonical correlation {sigma[0]:.6g}, expected < 1"
            )
        self.cov_uu = _readonly(cov_uu)
        self.cov_uv = _readonly(cov_uv)
        self.cov_vv = _readonly(cov_vv)
        self._svd = (u_c, _readonly(sigma), vt_c.T)

    @classmethod
    def from_joint(cls, C: np.ndarray, n_u: int) -> GaussianPair:
        """The pair whose joint covariance is ``C``, u being the first ``n_u`` coordinates.

        Args:
            C: (n_u + n_v, n_u + n_v) joint covariance.
            n_u: dimension of u, 1 <= n_u < len(C).

        Raises:
            ValueError: naming ``C`` or ``n_u``.
        """
        C = symmetric("C", as_matrix("C", C, (None, None)))
        if isinstance(n_u, bool) or not isinstance(n_u, (int, np.integer)) or not 1 <= n_u < len(C):
            raise ValueError(f"n_u={n_u!r}: expected an int in 1..{len(C) - 1} for C of shape {C.shape}")
        try:
            return cls(C[:n_u, :n_u], C[:n_u, n_u:], C[n_u:, n_u:])
        except ValueError as err:
            raise ValueError(f"C: {err}") from None

    @classmethod
    def from_samples(cls, u: np.ndarray, v: np.ndarray) -> GaussianPair:
        r"""The empirical law of Remark D.2: second moments :math:`\frac1N \sum_i (u^i, v^i)(u^i, v^i)^\top`.

        No centring: the paper's data are centred, and with these moments the closed forms
        give the minimisers of the empirical losses (Remark D.2).

        Args:
            u: (N, n_u) samples of u.
            v: (N, n_v) samples of v, row i paired with row i of ``u``.

        Raises:
            ValueError: naming ``u`` or ``v`` for a shape mismatch, NaN/Inf, or N < n_u + n_v
                (the second-moment matrix would be singular).
        """
        u = as_matrix("u", u, (None, None))
        v = as_matrix("v", v, (None, None))
        n = len(u)
        if len(v) != n:
            raise ValueError(f"u and v: expected the same number of samples, got {len(u)} and {len(v)}")
        if n < u.shape[1] + v.shape[1]:
            raise ValueError(
                f"u, v: {n} samples cannot give a positive definite second moment in dimension "
                f"{u.shape[1] + v.shape[1]}; expected N >= n_u + n_v"
            )
        try:
            return cls(u.T @ u / n, u.T @ v / n, v.T @ v / n)
        except ValueError as err:
            raise ValueError(f"u, v (sample second moments): {err}") from None

    @property
    def n_u(self) -> int:
        """Dimension of u."""
        return self.cov_uu.shape[0]

    @property
    def n_v(self) -> int:
        """Dimension of v."""
        return self.cov_vv.shape[0]

    @property
    def joint_cov(self) -> np.ndarray:
        r"""(n_u + n_v, n_u + n_v) joint covariance :math:`\mathcal C`."""
        return np.block([[self.cov_uu, self.cov_uv], [self.cov_uv.T, self.cov_vv]])

    def canonical_correlations(self) -> np.ndarray:
        """Singular values of :math:`W = C_{uu}^{-1/2} C_{uv} C_{vv}^{-1/2}`, descending.

        Returns:
            (min(n_u, n_v),) canonical correlations, each in [0, 1).
        """
        return self._svd[1].copy()

    def mutual_information(self) -> float:
        r""":math:`I(u; v) = -\tfrac12 \sum_i \log(1 - \sigma_i^2)` in nats (σ the canonical correlations).

        This is the constant of Theorem 3.2: :math:`J_{cond} - L_{cond} = I(u; v)`.
        """
        return float(-0.5 * np.sum(np.log1p(-(self._svd[1] ** 2))))

    def marginal(self, modality: str) -> np.ndarray:
        r"""Covariance of the marginal :math:`\mu_u` or :math:`\mu_v` (eq. 36).

        Args:
            modality: ``"u"`` or ``"v"``.

        Returns:
            (n_u, n_u) or (n_v, n_v) covariance.
        """
        check_modality("modality", modality)
        return (self.cov_uu if modality == "u" else self.cov_vv).copy()

    def conditional(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        r"""The conditional law of one modality given the other, eq. (37).

        :math:`u | v \sim \mathcal N(C_{uv} C_{vv}^{-1} v, C_{uu} - C_{uv} C_{vv}^{-1} C_{vu})`.

        Args:
            which: ``"u_given_v"`` or ``"v_given_u"`` (the mirror image).

        Returns:
            ``(M, S)``: for ``u_given_v``, M (n_u, n_v) and S (n_u, n_u) with
            :math:`u | v \sim \mathcal N(M v, S)`; for ``v_given_u``, M (n_v, n_u) and S (n_v, n_v).
        """
        direction("which", which)
        given = "v" if which == "u_given_v" else "u"
        cross = self.cov_uv if which == "u_given_v" else self.cov_uv.T
        own = self.cov_uu if which == "u_given_v" else self.cov_vv
        lam, e = self._eig[given]
        # C_gg^{-1} from the cached eigenbasis: a product, not a new factorisation.
        mean_map = ((cross @ e) / lam) @ e.T
        cov = own - mean_map @ cross.T
        return mean_map, 0.5 * (cov + cov.T)

    def sample(self, n: int, seed: Seed = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` independent pairs.

        Args:
            n: number of pairs, >= 1.
            seed: seed of ``numpy.random.default_rng`` (an int, None, or a Generator to draw from).

        Returns:
            ``(u, v)`` with shapes (n, n_u) and (n, n_v).
        """
        positive_int("n", n)
        chol = np.linalg.cholesky(self.joint_cov)
        z = np.random.default_rng(seed).standard_normal((n, self.n_u + self.n_v)) @ chol.T
        return z[:, : self.n_u], z[:, self.n_u :]

    def _whitening_bases(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        r"""The leading r columns of :math:`C_{uu}^{-1/2} U` (n_u, r) and :math:`C_{vv}^{-1/2} V` (n_v, r).

        In these bases every closed form of Section 5 is diagonal: an alignment with
        canonical weights d is :math:`A = C_{uu}^{-1/2} U_r \mathrm{diag}(d) V_r^\top C_{vv}^{-1/2}`.
        """
        (lam_u, e_u), (lam_v, e_v) = self._eig["u"], self._eig["v"]
        u_c, _, v_c = self._svd
        return e_u @ (u_c[:, :r] / np.sqrt(lam_u)[:, None]), e_v @ (v_c[:, :r] / np.sqrt(lam_v)[:, None])

    def _whiten(self, A: np.ndarray) -> np.ndarray:
        r"""The whitened coupling :math:`\Lambda_u^{1/2} E_u^\top A E_v \Lambda_v^{1/2}` of A (n_u, n_v).

        It is an orthogonal change of basis away from :math:`C_{uu}^{1/2} A C_{vv}^{1/2}`, so it
        has the same singular values.
        """
        (lam_u, e_u), (lam_v, e_v) = self._eig["u"], self._eig["v"]
        return (e_u.T @ A @ e_v) * np.sqrt(lam_u)[:, None] * np.sqrt(lam_v)[None, :]

    def __repr__(self) -> str:
        sigma = np.array2string(self._svd[1], precision=4)
        return f"GaussianPair(n_u={self.n_u}, n_v={self.n_v}, canonical_correlations={sigma})"


def random_gaussian_pair(n_u: int, n_v: int, seed: Seed = None) -> GaussianPair:
    r"""A random, well-conditioned pair: :math:`\mathcal C = X X^\top / n + I/10`, X standard normal.

    With n = n_u + n_v the eigenvalues of :math:`X X^\top / n` fill [0, 4] (Marchenko-Pastur),
    so :math:`\mathcal C` has condition number at most about 41 while its blocks are generic
    (canonical correlations spread over (0, 1), the largest typically 0.6-0.9).

    Args:
        n_u: dimension of u (>= 1).
        n_v: dimension of v (>= 1).
        seed: seed of ``numpy.random.default_rng`` (int, None or a Generator).
    """
    positive_int("n_u", n_u)
    positive_int("n_v", n_v)
    n = n_u + n_v
    x = np.random.default_rng(seed).standard_normal((n, n))
    return GaussianPair.from_joint(x @ x.T / n + 0.1 * np.eye(n), n_u)


def gaussian_pair_with_correlations(sigma, n_u: int, n_v: int, seed: Seed = None) -> GaussianPair:
    r"""A pair with prescribed canonical correlations (for adversarial cases: ties, weak, near 1).

    :math:`C_{uv} = C_{uu}^{1/2} U \mathrm{diag}(\sigma) V^\top C_{vv}^{1/2}` with random orthonormal
    U (n_u, k), V (n_v, k), so :math:`W = C_{uu}^{-1/2} C_{uv} C_{vv}^{-1/2} = U \mathrm{diag}(\sigma) V^\top`
    exactly (in exact arithmetic); C_uu and C_vv are drawn as in :func:`random_gaussian_pair`
    (:math:`X X^\top / n + I/10`, n = n_u + n_v), with symmetric square roots.

    Args:
        sigma: canonical correlations, each in [0, 1), at most min(n_u, n_v) of them (padded
            with zeros; any order).
        n_u: dimension of u (>= 1).
        n_v: dimension of v (>= 1).
        seed: seed of ``numpy.random.default_rng`` (int, None or a Generator).

    Raises:
        ValueError: naming ``sigma`` for values outside [0, 1) or too many of them.
    """
    positive_int("n_u", n_u)
    positive_int("n_v", n_v)
    k = min(n_u, n_v)
    s = np.asarray(sigma, dtype=np.float64).ravel()
    if len(s) > k or not np.all((s >= 0.0) & (s < 1.0)):
        raise ValueError(f"sigma={sigma!r}: expected at most min(n_u, n_v) = {k} values in [0, 1)")
    s = np.concatenate([s, np.zeros(k - len(s))])
    rng = np.random.default_rng(seed)
    n = n_u + n_v

    def block(d: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((d, n))
        lam, e = _eigh(x @ x.T / n + 0.1 * np.eye(d))
        return (e * lam) @ e.T, (e * np.sqrt(lam)) @ e.T

    (cov_uu, root_u), (cov_vv, root_v) = block(n_u), block(n_v)
    u = np.linalg.qr(rng.standard_normal((n_u, k)))[0]
    v = np.linalg.qr(rng.standard_normal((n_v, k)))[0]
    return GaussianPair(cov_uu, root_u @ (u * s) @ v.T @ root_v, cov_vv)
