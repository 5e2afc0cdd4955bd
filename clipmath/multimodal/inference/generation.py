r"""Crossmodal generation: sampling the model conditional (Section 4 and Fig. 12).

Baptista, Stuart & Tran (2025) read generation as sampling from the model's conditional. On a data
set it is the empirical conditional of eq. 28, :math:`\nu^N_{u|v} = \sum_i w_i(v)\delta_{u^i}`: a
weighted resampling of the bank (Fig. 12 draws 16 MNIST images for the label 7 this way). In the
Gaussian setting of Section 5 the tilted model's conditional is itself Gaussian,
:math:`u \mid v \sim \mathcal N(M v, S)` (eqs. 41 and 48), and is sampled directly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from clipmath import theory
from clipmath.multimodal.inference.retrieval import check_positive_int, conditional_weights


def sample_conditional(
    query_emb: Tensor,
    bank_emb: Tensor,
    logit_scale: Tensor | float,
    n: int,
    *,
    generator: torch.Generator,
    metric: str = "cosine",
) -> Tensor:
    r"""Draw bank indices from :math:`\nu^N(\cdot \mid q)` (eq. 28), with replacement.

    Args:
        query_emb: (Q, n_e) embeddings of the conditioning modality (v to generate u).
        bank_emb: (N, n_e) embeddings of the data set to resample.
        logit_scale: ``log(1/tau)``, a float or a one-element tensor.
        n: samples per query, >= 1.
        generator: the torch random generator to draw from (on the embeddings' device).
        metric: alignment metric, one of ``cosine``, ``inner``, ``neg_sq_l2``.

    Returns:
        (Q, n) bank indices; index i appears with probability :math:`w_i(q)` in every draw.

    Raises:
        ValueError: for malformed embeddings, a bad ``n`` or ``generator``, or an unknown metric.
    """
    check_positive_int("n", n)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator={generator!r}: expected a torch.Generator")
    weights = conditional_weights(query_emb, bank_emb, logit_scale, metric)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def sample_gaussian_conditional(
    pair: theory.GaussianPair,
    A: np.ndarray,
    *,
    given: str = "v",
    value: np.ndarray,
    n: int,
    seed: int | None = None,
    B_u: np.ndarray | None = None,
    B_v: np.ndarray | None = None,
) -> np.ndarray:
    r"""Samples of the Gaussian tilted model's conditional, :math:`u | v \sim \mathcal N(Mv, S)`.

    The model is ``clipmath.theory.tilted_model(pair, A, B_u, B_v)``: the inner-product tilting
    (eqs. 39-41: :math:`M = C_{uu}A`, :math:`S = C_{uu}`) when ``B_u`` and ``B_v`` are None, the
    quadratic tilting otherwise (eqs. 46-48).

    Args:
        pair: the data law :math:`\mathcal N(0, \mathcal C)` (a ``clipmath.theory.GaussianPair``).
        A: (n_u, n_v) tilting matrix :math:`A = G^\top H`.
        given: the conditioning modality, ``"v"`` (sample u) or ``"u"`` (sample v).
        value: (n_v,) or (n_u,) the conditioning point.
        n: number of samples, >= 1.
        seed: seed of ``numpy.random.default_rng``.
        B_u: (n_u, n_u) :math:`G^\top G` of the quadratic tilting, or None.
        B_v: (n_v, n_v) :math:`H^\top H` of the quadratic tilting, or None.

    Returns:
        (n, n_u) samples of u (``given="v"``) or (n, n_v) samples of v (``given="u"``).

    Raises:
        ValueError: for a bad ``given``, ``value`` or ``n`` (and whatever ``theory`` rejects).
    """
    if given not in ("u", "v"):
        raise ValueError(f"given={given!r}: expected 'u' or 'v'")
    check_positive_int("n", n)
    mean_map, cov = theory.tilted_model(pair, A, B_u, B_v).conditional("u_given_v" if given == "v" else "v_given_u")
    value = np.asarray(value, dtype=np.float64)
    if value.shape != (mean_map.shape[1],) or not np.isfinite(value).all():
        raise ValueError(f"value: expected a finite ({mean_map.shape[1]},) vector of {given}, got shape {value.shape}")
    # eigh tolerates a covariance that is only positive semi-definite to round-off.
    return np.random.default_rng(seed).multivariate_normal(mean_map @ value, cov, size=n, method="eigh")
