r"""The public base of the bimodal loss modules: :class:`PairLoss`.

A new loss subclasses it, implements :meth:`PairLoss.loss_from_logits` (or overrides
``forward`` for extra batch inputs, declaring them in ``reads``) and registers itself with
:func:`clipmath.multimodal.losses.register`.

Validation happens once, here, at the loss's boundary: the shapes when the logits are formed
and every value check of the step (finite embeddings, scale and bias, logits that fit their
dtype, and whatever the loss adds) together, with one host synchronisation
(:class:`~clipmath.multimodal.checks.PendingChecks`).
"""

from __future__ import annotations

from torch import Tensor, nn

from clipmath.multimodal import similarity
from clipmath.multimodal.checks import PendingChecks
from clipmath.multimodal.logits import check_scale_shape, defer_logit_checks, no_autocast, scaled_logits
from clipmath.multimodal.losses.base import LossOutput


class PairLoss(nn.Module):
    r"""Base of the bimodal loss modules: holds the metric and forms validated logits.

    A subclass whose loss depends on the logits alone implements :meth:`loss_from_logits`;
    one with extra keyword inputs overrides :meth:`forward` and calls :meth:`logits` (or
    :meth:`pending_logits`, to add its own value checks to the same single sync).

    Attributes:
        reads: the batch fields the loss takes as extra keyword inputs of ``forward`` (none by
            default); the trainer passes ``batch[name]`` for each, gathered across ranks like the
            embeddings.

    Args:
        metric: alignment metric name, one of ``clipmath.multimodal.similarity.names()``.

    Raises:
        ValueError: for an unknown metric.
    """

    reads: tuple[str, ...] = ()

    def __init__(self, metric: str = "cosine"):
        super().__init__()
        self._sim = similarity.get(metric)
        self.metric = metric

    def logits(self, z_u: Tensor, z_v: Tensor, logit_scale: Tensor, logit_bias: Tensor | None) -> Tensor:
        r"""Validate a paired batch and return its (B, B) logits (see :func:`scaled_logits`).

        Args:
            z_u: (B, n_e) embeddings of modality u, row i paired with row i of ``z_v``.
            z_v: (B, n_e) embeddings of modality v.
            logit_scale: scalar tensor, :math:`\log(1/\tau)`.
            logit_bias: scalar tensor or None.

        Raises:
            ValueError: naming the argument for bad shapes, unpaired batches, NaN or Inf, and
                naming ``logit_scale`` for logits that overflow (see :func:`check_logits`).
        """
        logits, checks = self.pending_logits(z_u, z_v, logit_scale, logit_bias)
        checks.resolve()
        return logits

    def pending_logits(
        self, z_u: Tensor, z_v: Tensor, logit_scale: Tensor, logit_bias: Tensor | None
    ) -> tuple[Tensor, PendingChecks]:
        r"""The (B, B) logits of :meth:`logits`, with their value checks queued rather than run.

        The shapes are checked now (no sync). The caller adds its own value checks and calls
        ``checks.resolve()`` once, before returning the loss, which raises the errors
        :meth:`logits` would have raised, in the same order.

        Raises:
            ValueError: naming the argument for bad shapes or unpaired batches.
        """
        similarity.check_pair_shapes(z_u, z_v, same_batch=True)
        check_scale_shape(logit_scale, logit_bias)
        logits = scaled_logits(self._sim, z_u, z_v, logit_scale, logit_bias)
        checks = PendingChecks()
        defer_logit_checks(checks, logits, z_u, z_v, logit_scale, logit_bias)
        return logits, checks

    def loss_from_logits(self, logits: Tensor) -> Tensor:
        """The scalar loss of (B, B) logits; implemented by losses without extra inputs."""
        raise NotImplementedError

    def forward(self, z_u: Tensor, z_v: Tensor, logit_scale: Tensor, logit_bias: Tensor | None = None) -> LossOutput:
        r"""Loss of a paired batch.

        Args:
            z_u: (B, n_e) embeddings of modality u, row i paired with row i of ``z_v``.
            z_v: (B, n_e) embeddings of modality v.
            logit_scale: scalar tensor, :math:`\log(1/\tau)`.
            logit_bias: scalar tensor or None.

        Returns:
            :class:`LossOutput` with the scalar loss and the (B, B) logits.
        """
        logits, checks = self.pending_logits(z_u, z_v, logit_scale, logit_bias)
        with no_autocast(logits):
            loss = self.loss_from_logits(logits)
        checks.resolve()
        return LossOutput(loss, logits)

    def extra_repr(self) -> str:
        """The metric, for ``repr``."""
        return f"metric={self.metric!r}"
