r"""The standard CLIP loss :math:`L^N_{clip}` (eq. 7 of Baptista et al. (2025)).

.. math::
    L^N_{clip} = -\frac12\,\frac1B\sum_{i=1}^B\big[\log p(u_i\mid v_i) + \log p(v_i\mid u_i)\big],
    \qquad p(u_i\mid v_i) = \frac{e^{S_{ii}}}{\sum_j e^{S_{ji}}},\quad
    p(v_i\mid u_i) = \frac{e^{S_{ii}}}{\sum_j e^{S_{ij}}},

the mean of the row-wise and column-wise cross-entropies of the logits against the diagonal
(eqs. 5a/6a). By Theorem 2.8 it is the conditional loss plus :math:`\log B`, and it is
computed that way, from one logits matrix with one log-softmax per direction.
"""

from __future__ import annotations

import math

from torch import Tensor

from clipmath.multimodal.losses.base import register
from clipmath.multimodal.losses.conditional import ConditionalLoss, conditional_loss


def clip_loss(logits: Tensor) -> Tensor:
    r""":math:`L^N_{clip} = L^N_{cond}(\theta; 1, 1) + \log B` (eq. 7, Theorem 2.8).

    Args:
        logits: (B, B) scores :math:`S_{ij}` of :math:`(u_i, v_j)`, positives on the diagonal.

    Returns:
        Scalar loss.
    """
    return conditional_loss(logits, 1.0, 1.0) + math.log(logits.shape[0])


@register("clip")
class ClipLoss(ConditionalLoss):
    r"""Standard CLIP loss :math:`L^N_{clip}` (eq. 7, Optimization Problem 2.4 of Baptista et al. (2025)).

    Equal to open_clip's ``ClipLoss`` fed ``exp(logit_scale)`` and the metric's features.
    Works with every metric (``cosine``, ``inner``, ``neg_sq_l2``; Section 3.3). Invariant to
    ``logit_bias`` (the shift cancels in each softmax), which therefore gets a zero gradient.

    It is the two-sided conditional loss plus ``log B``, and shares its tiled path: with
    ``tile_size`` set it never forms the B x B logits (batch 65,536 fits in well under 1 GiB).

    Args:
        metric: alignment metric name.
        tile_size: None (dense, the default) or the tile edge of the exact tiled computation.

    Raises:
        ValueError: for an unknown metric or a bad ``tile_size``.
    """

    def __init__(self, metric: str = "cosine", tile_size: int | None = None):
        super().__init__(metric, tile_size=tile_size)

    def loss_from_logits(self, logits: Tensor) -> Tensor:
        """:func:`clip_loss` of the logits."""
        return clip_loss(logits)

    def offset(self, batch_size: int) -> float:
        """``log B``: the CLIP loss is the conditional loss plus log B (Theorem 2.8)."""
        return math.log(batch_size)
