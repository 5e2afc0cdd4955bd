r"""The conditional loss :math:`L^N_{cond}` with one-sided and weighted variants.

Optimization Problem 3.13 of Baptista et al. (2025), in its empirical form (eq. 12):

.. math::
    L^N_{cond}(\theta; \lambda_u, \lambda_v)
    = -\frac1B \sum_{i=1}^B \Big[\frac{\lambda_u}{2} \log \rho^N(u_i \mid v_i)
      + \frac{\lambda_v}{2} \log \rho^N(v_i \mid u_i)\Big],

    \log \rho^N(u_i \mid v_i) = S_{ii} - \log \frac1B \sum_{j} e^{S_{ji}}, \qquad
    \log \rho^N(v_i \mid u_i) = S_{ii} - \log \frac1B \sum_{j} e^{S_{ij}},

where :math:`\rho^N` is the density of the model conditional with respect to the empirical
marginal (Remark 2.3), so the u|v term normalises column i over u and the v|u term row i
over v. :math:`\lambda_u` weights the u|v term, as in Problem 3.4 (Section 6.2 of the paper
swaps the labels; its "(2, 0)" is our ``v_given_u``), which is why the modules take a
direction name.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from clipmath.multimodal.checks import PendingChecks
from clipmath.multimodal.directions import resolve_weights
from clipmath.multimodal.losses.base import LossOutput, register
from clipmath.multimodal.losses.pair import PairLoss
from clipmath.multimodal.tiled import tiled_clip_loss


def conditional_loss(logits: Tensor, weight_u_given_v: float, weight_v_given_u: float) -> Tensor:
    r"""Empirical conditional loss :math:`L^N_{cond}(\theta; \lambda_u, \lambda_v)` (eq. 12, Problem 3.13).

    .. math::
        L = \frac{\lambda_u}{2}\,\frac1B\sum_i\Big[\log\frac1B\sum_j e^{S_{ji}} - S_{ii}\Big]
          + \frac{\lambda_v}{2}\,\frac1B\sum_i\Big[\log\frac1B\sum_j e^{S_{ij}} - S_{ii}\Big].

    With :math:`\lambda_u = \lambda_v = 1` this is :math:`L^N_{clip} - \log B` (Theorem 2.8).

    Args:
        logits: (B, B) scores :math:`S_{ij}` of :math:`(u_i, v_j)`, positives on the diagonal.
        weight_u_given_v: :math:`\lambda_u`, weight of the u|v term (column-wise normaliser).
        weight_v_given_u: :math:`\lambda_v`, weight of the v|u term (row-wise normaliser).

    Returns:
        Scalar loss.
    """
    log_b = math.log(logits.shape[0])
    loss = logits.new_zeros(())
    # log_softmax is one fused pass forward and backward (a logsumexp plus the diagonal costs
    # several B x B passes); a zero weight skips its direction entirely.
    for weight, dim in ((weight_u_given_v, 0), (weight_v_given_u, 1)):
        if weight:
            loss = loss - 0.5 * weight * (torch.log_softmax(logits, dim=dim).diagonal().mean() + log_b)
    return loss


@register("conditional")
class ConditionalLoss(PairLoss):
    r"""Conditional loss :math:`L^N_{cond}` (eq. 12, Problem 3.13 of Baptista et al. (2025)).

    Minimising it minimises :math:`\frac{\lambda_u}{2}\mathbb E_v D_{KL}(\mu_{u|v}\|\nu_{u|v})
    + \frac{\lambda_v}{2}\mathbb E_u D_{KL}(\mu_{v|u}\|\nu_{v|u})` (Theorem 3.2 and Remark 3.12).
    Works with every metric (``cosine``, ``inner``, ``neg_sq_l2``; Remark 3.3). The loss is
    invariant to ``logit_bias`` (a constant shift of every logit cancels in each log-ratio),
    so the bias gets an exactly zero gradient.

    With ``tile_size`` set, the loss is computed by
    :func:`clipmath.multimodal.tiled.tiled_clip_loss`, which never forms the B x B logits
    (memory O(B * tile_size), the same value and gradients); the output then carries
    ``logits=None``.

    Args:
        metric: alignment metric name.
        direction: ``two_sided`` (weights (1, 1), the default; equals ``clip`` minus log B),
            ``u_given_v`` (weights (2, 0)) or ``v_given_u`` (weights (0, 2)).
        weights: explicit ``(lambda_u, lambda_v)`` instead of ``direction``; ``lambda_u``
            weights the u|v term (Problem 3.4, not Section 6.2's swapped labels).
        tile_size: None (dense, the default) or the tile edge of the exact tiled computation.

    Raises:
        ValueError: for an unknown metric or direction, invalid weights, both given, or a
            ``tile_size`` that is not a positive integer.
    """

    def __init__(
        self,
        metric: str = "cosine",
        direction: str | None = None,
        weights: tuple[float, float] | None = None,
        tile_size: int | None = None,
    ):
        super().__init__(metric)
        self.weight_u_given_v, self.weight_v_given_u = resolve_weights(direction, weights)
        if tile_size is not None and (isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1):
            raise ValueError(f"tile_size={tile_size!r}: expected None or a positive integer")
        self.tile_size = tile_size

    def loss_from_logits(self, logits: Tensor) -> Tensor:
        """:func:`conditional_loss` of the logits with the module's weights."""
        return conditional_loss(logits, self.weight_u_given_v, self.weight_v_given_u)

    def offset(self, batch_size: int) -> float:
        """Constant added to :func:`conditional_loss` (0 here; ``log B`` for ``clip``)."""
        return 0.0

    def forward(self, z_u: Tensor, z_v: Tensor, logit_scale: Tensor, logit_bias: Tensor | None = None) -> LossOutput:
        r"""Loss of a paired batch (see :meth:`PairLoss.forward`); tiled when ``tile_size`` is set."""
        if self.tile_size is None:
            return super().forward(z_u, z_v, logit_scale, logit_bias)

        lambda_u, lambda_v = self.weight_u_given_v, self.weight_v_given_u
        # The tiled function weighs cross-entropies (CLIP = (1/2, 1/2)); L_cond is those minus
        # the log B of each density normaliser (Theorem 2.8).
        batch = z_u.shape[0]
        checks = PendingChecks()
        loss = tiled_clip_loss(
            z_u,
            z_v,
            logit_scale,
            logit_bias,
            metric=self.metric,
            weights=(lambda_u / 2, lambda_v / 2),
            tile_size=self.tile_size,
            checks=checks,
        )
        checks.resolve()
        return LossOutput(loss - 0.5 * (lambda_u + lambda_v) * math.log(batch) + self.offset(batch))

    def extra_repr(self) -> str:
        """The metric, the weights and the tile size, for ``repr``."""
        tiled = "" if self.tile_size is None else f", tile_size={self.tile_size}"
        return f"{super().extra_repr()}, weights=({self.weight_u_given_v}, {self.weight_v_given_u}){tiled}"
