r"""Alignment metrics: the score matrix between two batches of embeddings.

Section 3.3 of Baptista, Stuart & Tran (2025) generalises the tilting
:math:`\rho(u, v) \propto \exp(\mathrm{sim}(g_u(u), g_v(v)) / \tau)` beyond cosine similarity:

- ``cosine``: :math:`\langle \bar g_u, \bar g_v \rangle` with :math:`\bar g = g/|g|` (eq. 2, the CLIP choice);
- ``inner``: :math:`\langle g_u, g_v \rangle`, unnormalised (eq. 25, the "first generalized tilting");
- ``neg_sq_l2``: :math:`-\tfrac12 |g_u - g_v|^2` (eq. 26, the "second generalized tilting").

With normalised embeddings ``neg_sq_l2 = cosine - 1``, so the cosine tilting is a special case.
Every function maps ``z_u (B_u, n_e)`` and ``z_v (B_v, n_e)`` to scores ``(B_u, B_v)``, row i
for ``u_i``, column j for ``v_j``; the computation runs in float32 or wider even under autocast.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

_EPS = 1e-12


def _wide(z: Tensor) -> Tensor:
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def cosine(z_u: Tensor, z_v: Tensor) -> Tensor:
    r"""Cosine similarity matrix (eq. 2).

    Args:
        z_u: (B_u, n_e) embeddings of modality u.
        z_v: (B_v, n_e) embeddings of modality v.

    Returns:
        (B_u, B_v) matrix of :math:`\langle z_u^i/|z_u^i|, z_v^j/|z_v^j| \rangle`.
    """
    z_u, z_v = _wide(z_u), _wide(z_v)
    return normalize(z_u) @ normalize(z_v).T


def inner(z_u: Tensor, z_v: Tensor) -> Tensor:
    r"""Unnormalised inner product (eq. 25).

    Args:
        z_u: (B_u, n_e) embeddings of modality u.
        z_v: (B_v, n_e) embeddings of modality v.

    Returns:
        (B_u, B_v) matrix of :math:`\langle z_u^i, z_v^j \rangle`.
    """
    return _wide(z_u) @ _wide(z_v).T


def neg_sq_l2(z_u: Tensor, z_v: Tensor) -> Tensor:
    r"""Negative half squared Euclidean distance (eq. 26).

    Computed as :math:`\langle z_u, z_v\rangle - \tfrac12|z_u|^2 - \tfrac12|z_v|^2`, one matmul.

    Args:
        z_u: (B_u, n_e) embeddings of modality u.
        z_v: (B_v, n_e) embeddings of modality v.

    Returns:
        (B_u, B_v) matrix of :math:`-\tfrac12 |z_u^i - z_v^j|^2`.
    """
    z_u, z_v = _wide(z_u), _wide(z_v)
    sq_u = 0.5 * (z_u * z_u).sum(-1, keepdim=True)
    sq_v = 0.5 * (z_v * z_v).sum(-1)
    return z_u @ z_v.T - sq_u - sq_v


def normalize(z: Tensor) -> Tensor:
    """Rows of ``z (B, n_e)`` scaled to unit Euclidean norm (zero rows stay zero)."""
    return z / z.norm(dim=-1, keepdim=True).clamp_min(_EPS)


METRICS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cosine": cosine,
    "inner": inner,
    "neg_sq_l2": neg_sq_l2,
}


def names() -> list[str]:
    """The alignment metrics by name."""
    return list(METRICS)


def get(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The alignment metric called ``name``.

    Raises:
        ValueError: if ``name`` is not one of :func:`names`.
    """
    if name not in METRICS:
        raise ValueError(f"metric={name!r} unknown; expected one of {', '.join(METRICS)}")
    return METRICS[name]


def factored(name: str) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    r"""The metric ``name`` as an inner product of mapped rows: ``sim(z_u, z_v) = inner(f_u(z_u), f_v(z_v))``.

    - ``inner``: :math:`f_u = f_v = \mathrm{id}`;
    - ``cosine``: :math:`f_u = f_v = z \mapsto z/|z|`;
    - ``neg_sq_l2``: :math:`f_u(z) = (z, -\tfrac12|z|^2, 1)`, :math:`f_v(z) = (z, 1, -\tfrac12|z|^2)`, since
      :math:`-\tfrac12|a - b|^2 = \langle a, b\rangle - \tfrac12|a|^2 - \tfrac12|b|^2` (the same
      arithmetic as :func:`neg_sq_l2`).

    Tiled computations map the rows once and then need only matrix products. A new metric adds
    its maps here; ``tests/multimodal/test_similarity.py`` checks them against :func:`get`.

    Returns:
        (f_u, f_v), each mapping (B, n_e) rows to (B, m) rows.

    Raises:
        ValueError: if ``name`` is not one of :func:`names`.
    """
    get(name)
    if name == "cosine":
        return normalize, normalize
    if name == "neg_sq_l2":
        return _lift_u, _lift_v
    return _identity, _identity


def _identity(z: Tensor) -> Tensor:
    return z


def _lift_u(z: Tensor) -> Tensor:
    half_sq = -0.5 * (z * z).sum(-1, keepdim=True)
    return torch.cat([z, half_sq, torch.ones_like(half_sq)], dim=-1)


def _lift_v(z: Tensor) -> Tensor:
    half_sq = -0.5 * (z * z).sum(-1, keepdim=True)
    return torch.cat([z, torch.ones_like(half_sq), half_sq], dim=-1)


def check_pair(z_u: Tensor, z_v: Tensor, *, same_batch: bool = False) -> None:
    """Validate two embedding batches at a metric boundary: shapes (:func:`check_pair_shapes`) and values.

    Args:
        z_u: (B_u, n_e) embeddings of modality u.
        z_v: (B_v, n_e) embeddings of modality v.
        same_batch: require B_u == B_v (paired batches).

    Raises:
        ValueError: naming the argument for a wrong rank, mismatched sizes, or non-finite values.
    """
    check_pair_shapes(z_u, z_v, same_batch=same_batch)
    for name, z in (("z_u", z_u), ("z_v", z_v)):
        check_finite(name, z)


def check_pair_shapes(z_u: Tensor, z_v: Tensor, *, same_batch: bool = False) -> None:
    """Validate the types and shapes of two embedding batches; reads no value, so never waits for the device.

    The losses check the values once, with their logits (see
    :meth:`clipmath.multimodal.losses.PairLoss.pending_logits`).

    Args:
        z_u: (B_u, n_e) embeddings of modality u.
        z_v: (B_v, n_e) embeddings of modality v.
        same_batch: require B_u == B_v (paired batches).

    Raises:
        ValueError: naming the argument for a non-tensor, a wrong rank, an empty batch or
            mismatched sizes.
    """
    for name, z in (("z_u", z_u), ("z_v", z_v)):
        if not isinstance(z, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(z).__name__}")
        if z.dim() != 2:
            raise ValueError(f"{name}: expected shape (B, n_e), got {tuple(z.shape)}")
        if z.shape[0] == 0:
            raise ValueError(f"{name}: empty batch, shape {tuple(z.shape)}")
    if z_u.shape[1] != z_v.shape[1]:
        raise ValueError(f"z_u and z_v: embedding dimensions differ ({z_u.shape[1]} vs {z_v.shape[1]})")
    if same_batch and z_u.shape[0] != z_v.shape[0]:
        raise ValueError(f"z_u and z_v: paired batches must have equal size, got {z_u.shape[0]} and {z_v.shape[0]}")


def check_finite(name: str, z: Tensor) -> None:
    """Raise ``ValueError`` naming ``name`` when the tensor ``z`` holds NaN or Inf (one device sync)."""
    if not torch.isfinite(z).all():
        raise ValueError(f"{name}: contains NaN or Inf")
