r"""The pairwise sigmoid loss of SigLIP (Zhai et al. 2023), as open_clip's ``SigLipLoss``.

Every pair :math:`(u_i, v_j)` is a binary classification with label :math:`y_{ij} = 2\delta_{ij}-1`:

.. math::
    L = -\frac1B\sum_{i,j}\log\sigma(y_{ij} S_{ij})
      = \frac1B\Big[\sum_{i,j}\operatorname{softplus}(S_{ij}) - \sum_i S_{ii}\Big],

the second form from :math:`\log\sigma(x) - \log\sigma(-x) = x`, which avoids building the
label matrix. Unlike the softmax losses it is not a tilting of :math:`\mu_u\otimes\mu_v`,
and the bias matters.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from clipmath.multimodal.losses.base import register
from clipmath.multimodal.losses.pair import PairLoss


def siglip_loss(logits: Tensor) -> Tensor:
    r"""Sigmoid loss :math:`\frac1B[\sum_{ij}\operatorname{softplus}(S_{ij}) - \sum_i S_{ii}]`.

    Args:
        logits: (B, B) scores :math:`S_{ij}` of :math:`(u_i, v_j)` including the bias,
            positives on the diagonal.

    Returns:
        Scalar loss.
    """
    return (F.softplus(logits).sum() - logits.diagonal().sum()) / logits.shape[0]


@register("siglip")
class SigLipLoss(PairLoss):
    r"""SigLIP loss (Zhai et al. 2023), equal to open_clip's ``SigLipLoss`` (one process).

    The logits are :math:`e^{\text{logit\_scale}}\mathrm{sim}(z_u^i, z_v^j) + b`. Its model
    defaults differ from CLIP's: Zhai et al. initialise :math:`\tau = 0.1` (logit_scale
    :math:`\log 10`) and bias :math:`b = -10`, i.e. ``BimodalModel(..., tau=0.1, bias=-10.0)``;
    the bias starts training near the prior that almost every pair is a negative. Works with
    every metric (``cosine``, ``inner``, ``neg_sq_l2``). Both ``logit_scale`` and ``logit_bias``
    get a gradient.

    Args:
        metric: alignment metric name.

    Raises:
        ValueError: for an unknown metric.
    """

    def loss_from_logits(self, logits: Tensor) -> Tensor:
        """:func:`siglip_loss` of the logits."""
        return siglip_loss(logits)
