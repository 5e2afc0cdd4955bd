r"""Target plans :math:`P_{tgt}` of the GCA losses (§3, §4.6 and §11.6 of Chen et al. (2024)).

A GCA loss scores the distance :math:`d_M(P_{tgt}\,\|\,P_\theta)` between a target plan and the
transport plan of the batch. Row i belongs to :math:`u_i`, column j to :math:`v_j`; in the
cross-view :math:`B \times B` form the positive pairs are the diagonal.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def identity_pairs(batch_size: int, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    r"""The standard SSL target :math:`P_{tgt} = I`: a 1 on each positive pair :math:`(i, i)`.

    Args:
        batch_size: :math:`B \ge 1`.
        dtype: floating dtype of the result.
        device: device of the result.

    Returns:
        (B, B) identity matrix.

    Raises:
        ValueError: if ``batch_size`` is not a positive integer.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected an integer >= 1")
    return torch.eye(batch_size, dtype=dtype, device=device)


def domain_prior(domain_ids: Tensor, alpha: float, beta: float, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""Domain-aware target plan (§4.6 of Chen et al. (2024)).

    .. math::
        P^{tgt}_{ij} = \mathbb 1[i=j] + \alpha\,\mathbb 1[D_i=D_j,\,i\ne j] + \beta\,\mathbb 1[D_i\ne D_j].

    The PACS target of §4.6 (Figure 1 of Chen et al. (2024)): 1 on the positives, :math:`\alpha`
    on pairs from the same domain and :math:`\beta` across domains; raising
    :math:`\alpha - \beta` pulls each domain together. The matrix is not doubly stochastic, so the
    losses score it with the generalised KL.

    Args:
        domain_ids: (B,) integer domain label :math:`D_i` of pair i.
        alpha: weight :math:`\alpha \ge 0` of same-domain pairs.
        beta: weight :math:`\beta \ge 0` of cross-domain pairs.
        dtype: floating dtype of the plan (the losses pass their logits' dtype, so that a float64
            loss sees :math:`\alpha, \beta` unrounded).

    Returns:
        (B, B) target plan of ``dtype``.

    Raises:
        ValueError: for ids that are not a non-empty 1-D integer tensor, or a negative or
            non-finite weight.
    """
    same = _same_label("domain_ids", domain_ids)
    check_domain_weights(alpha, beta)
    target = torch.full(same.shape, float(beta), dtype=dtype, device=same.device)
    return target.masked_fill_(same, float(alpha)).fill_diagonal_(1.0)


def check_domain_weights(alpha: float, beta: float) -> None:
    r"""Validate the weights :math:`\alpha, \beta` of :func:`domain_prior`.

    Raises:
        ValueError: naming the weight that is not a finite number >= 0.
    """
    for name, weight in (("alpha", alpha), ("beta", beta)):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
            raise ValueError(f"{name}={weight!r}: expected a finite number >= 0")


def class_positives(class_ids: Tensor) -> Tensor:
    r"""Class-aware target :math:`\mathbb 1[c_i = c_j]`: every same-class pair is a positive.

    The supervised-contrastive choice of positives (the "class-aware prior" of §11.6 of
    Chen et al. (2024)); the diagonal is always 1.

    Args:
        class_ids: (B,) integer class label :math:`c_i` of pair i.

    Returns:
        (B, B) float32 target plan.

    Raises:
        ValueError: for ids that are not a non-empty 1-D integer tensor.
    """
    return _same_label("class_ids", class_ids).float()


def _same_label(name: str, ids: Tensor) -> Tensor:
    """(B, B) boolean matrix ``ids[i] == ids[j]`` of validated labels."""
    if not isinstance(ids, Tensor) or ids.dim() != 1 or ids.numel() == 0:
        shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"{name}={shape}: expected a non-empty 1-D tensor of labels, shape (B,)")
    if ids.is_floating_point() or ids.is_complex():
        raise ValueError(f"{name}: dtype {ids.dtype}; expected an integer or bool tensor")
    return ids.unsqueeze(1) == ids.unsqueeze(0)
