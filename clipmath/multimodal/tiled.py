r"""Exact CLIP loss over tiles of the score matrix: O(B) memory instead of O(B^2).

With logits :math:`L_{ij} = e^{s}\,\mathrm{sim}(z_u^i, z_v^j) + b` (``s = logit_scale = log(1/tau)``,
``b = logit_bias``), the weighted CLIP loss is (eq. 7 and Remark 2.6 of Baptista, Stuart & Tran (2025))

.. math::

    L = \frac{\lambda_u}{B}\sum_j \Big(\log\sum_i e^{L_{ij}} - L_{jj}\Big)
      + \frac{\lambda_v}{B}\sum_i \Big(\log\sum_j e^{L_{ij}} - L_{ii}\Big),

the column (``u_given_v``) and row (``v_given_u``) cross-entropies; :math:`\lambda_u=\lambda_v=\tfrac12`
is CLIP, and by Theorem 2.8 it equals the conditional loss plus :math:`\log B`.

Only the row and column log-sum-exps :math:`r_i = \log\sum_j e^{L_{ij}}`, :math:`c_j = \log\sum_i e^{L_{ij}}`
need the whole matrix. A custom autograd Function computes them tile by tile, merging each tile's
log-sum-exp into a running one, and keeps only ``r`` and ``c`` (O(B)) for backward, where every tile
is recomputed and its gradient :math:`\partial L/\partial L_{ij} = g^r_i e^{L_{ij}-r_i} + g^c_j e^{L_{ij}-c_j}`
(the softmax of the row and of the column) is pushed into ``z_u``, ``z_v``, ``logit_scale`` and
``logit_bias`` before the tile is dropped. The positive-pair term :math:`L_{ii}` is O(B) and is left to
ordinary autograd. Peak memory is a few ``tile_size x tile_size`` buffers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from clipmath.multimodal import similarity
from clipmath.multimodal.checks import PendingChecks
from clipmath.multimodal.directions import resolve_weights
from clipmath.multimodal.logits import check_scale, check_scale_shape, defer_input_checks


def tiled_clip_loss(
    z_u: Tensor,
    z_v: Tensor,
    logit_scale: Tensor,
    logit_bias: Tensor | None = None,
    *,
    metric: str = "cosine",
    weights: Sequence[float] = (0.5, 0.5),
    tile_size: int = 4096,
    checks: PendingChecks | None = None,
) -> Tensor:
    r"""Weighted CLIP loss (eq. 7 of Baptista, Stuart & Tran (2025)) without forming the B x B logits.

    Computes :math:`\lambda_u\,\mathrm{CE}_{u|v} + \lambda_v\,\mathrm{CE}_{v|u}` (see the module docstring),
    equal in value and gradient to the dense loss up to floating-point round-off, for any
    ``B`` (not necessarily a multiple of ``tile_size``). Every metric enters as the inner product of
    rows mapped by :func:`clipmath.multimodal.similarity.factored`, so it is defined in one place. The
    computation runs in float32 (or float64 for float64 inputs), with autocast disabled inside the tiles.

    Args:
        z_u: (B, n_e) embeddings of modality u; row i is paired with row i of ``z_v``.
        z_v: (B, n_e) embeddings of modality v.
        logit_scale: scalar tensor (shape () or (1,)), ``log(1/tau)``.
        logit_bias: optional scalar tensor added to every logit. Both cross-entropies are invariant
            to it, so its gradient is zero up to round-off; it is accepted so that models with a bias
            can share this loss.
        metric: alignment metric, one of ``cosine``, ``inner``, ``neg_sq_l2``.
        weights: (lambda_u, lambda_v), the weights of the column (``u_given_v``) and row
            (``v_given_u``) cross-entropies; ``(0.5, 0.5)`` is CLIP. These are half the paper's
            :math:`(\lambda_u, \lambda_v)` of Problem 3.13 (the ``conditional`` loss's weights):
            ``weights = (l_u/2, l_v/2)`` gives that loss plus :math:`\tfrac{l_u + l_v}{2}\log B`.
        tile_size: rows and columns per tile; memory grows as ``tile_size**2``. On the CPU, 2048
            (16 MiB float32 tiles, recycled by glibc's heap) spends less system time than 4096,
            whose 64 MiB buffers are mapped and page-faulted afresh for every tile.
        checks: None (default) checks the values of the embeddings, scale and bias now (and
            returns an infinite loss for logits too large for the dtype); a loss's
            :class:`~clipmath.multimodal.checks.PendingChecks` takes every value check instead,
            made on the returned loss (the tiles are never kept; non-finite inputs and an
            overflow both make the loss NaN or infinite), to be resolved by the caller with its
            other checks, one host sync (the ``conditional`` loss does this). The shapes are
            checked now either way.

    Returns:
        Scalar loss tensor.

    Raises:
        ValueError: for malformed embeddings, a non-scalar or non-finite ``logit_scale`` or
            ``logit_bias``, an unknown ``metric``, negative or all-zero ``weights``, or
            ``tile_size < 1``.
    """
    similarity.check_pair_shapes(z_u, z_v, same_batch=True)
    if checks is None:
        for name, z in (("z_u", z_u), ("z_v", z_v)):
            similarity.check_finite(name, z)
    similarity.get(metric)
    lambda_u, lambda_v = resolve_weights(None, weights)
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size={tile_size!r}: expected a positive integer")
    (check_scale if checks is None else check_scale_shape)(logit_scale, logit_bias)

    # float32 at least (float64 stays float64), whatever the input or autocast dtype.
    dtype = torch.promote_types(torch.promote_types(z_u.dtype, z_v.dtype), torch.float32)
    # Every metric is an inner product of mapped rows (similarity.factored): the rows are mapped
    # once here, autograd differentiates the maps, and the tiles need only matrix products.
    map_u, map_v = similarity.factored(metric)
    f_u, f_v = map_u(z_u.to(dtype)), map_v(z_v.to(dtype))
    row_lse, col_lse = _TiledLogsumexp.apply(f_u, f_v, logit_scale, logit_bias, tile_size)
    positives = logit_scale.to(dtype).reshape(()).exp() * (f_u * f_v).sum(-1)
    if logit_bias is not None:
        positives = positives + logit_bias.to(dtype).reshape(())
    loss = lambda_v * row_lse.mean() + lambda_u * col_lse.mean() - (lambda_u + lambda_v) * positives.mean()
    if checks is not None:
        limit = torch.finfo(loss.dtype).max
        detail = "the tiled loss is {}".format
        defer_input_checks(checks, loss, limit, detail, z_u, z_v, logit_scale, logit_bias)
    return loss


def _tiles(size: int, tile_size: int) -> list[slice]:
    return [slice(start, min(start + tile_size, size)) for start in range(0, size, tile_size)]


class _TiledLogsumexp(torch.autograd.Function):
    """Row and column log-sum-exps of ``exp(logit_scale) * z_u @ z_v.T + logit_bias``, tile by tile."""

    @staticmethod
    def forward(ctx, z_u, z_v, logit_scale, logit_bias, tile_size):  # noqa: D102
        scale = logit_scale.to(z_u.dtype).reshape(()).exp()
        bias = 0.0 if logit_bias is None else logit_bias.to(z_u.dtype).reshape(())
        row_lse = z_u.new_full((z_u.shape[0],), -math.inf)
        col_lse = z_v.new_full((z_v.shape[0],), -math.inf)
        with torch.autocast(z_u.device.type, enabled=False):
            for rows in _tiles(z_u.shape[0], tile_size):
                for cols in _tiles(z_v.shape[0], tile_size):
                    logits = (z_u[rows] @ z_v[cols].T).mul_(scale).add_(bias)
                    # Merging log-sum-exps (rather than a shared max and sum) keeps every row and
                    # column exact even when a tile spans more than float32's exponent range.
                    row_lse[rows] = torch.logaddexp(row_lse[rows], logits.logsumexp(1))
                    col_lse[cols] = torch.logaddexp(col_lse[cols], logits.logsumexp(0))
        ctx.save_for_backward(z_u, z_v, logit_scale, logit_bias, row_lse, col_lse)
        ctx.tile_size = tile_size
        return row_lse, col_lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_row, grad_col):  # noqa: D102
        z_u, z_v, logit_scale, logit_bias, row_lse, col_lse = ctx.saved_tensors
        scale = logit_scale.to(z_u.dtype).reshape(()).exp()
        bias = 0.0 if logit_bias is None else logit_bias.to(z_u.dtype).reshape(())
        grad_u, grad_v = torch.zeros_like(z_u), torch.zeros_like(z_v)
        grad_scale, grad_bias = z_u.new_zeros(()), z_u.new_zeros(())
        with torch.autocast(z_u.device.type, enabled=False):
            for rows in _tiles(z_u.shape[0], ctx.tile_size):
                for cols in _tiles(z_v.shape[0], ctx.tile_size):
                    scores = z_u[rows] @ z_v[cols].T
                    logits = scores * scale + bias
                    # dL/dL_ij: the row softmax weighted by dL/dr_i plus the column softmax by dL/dc_j.
                    grad_logits = (logits - row_lse[rows, None]).exp_().mul_(grad_row[rows, None])
                    grad_logits += (logits - col_lse[None, cols]).exp_().mul_(grad_col[None, cols])
                    grad_bias += grad_logits.sum()
                    grad_scale += torch.dot(grad_logits.flatten(), scores.flatten())
                    grad_scores = grad_logits.mul_(scale)
                    grad_u[rows].addmm_(grad_scores, z_v[cols])
                    grad_v[cols].addmm_(grad_scores.T, z_u[rows])
        grad_scale = (grad_scale * scale).reshape(logit_scale.shape).to(logit_scale.dtype)
        grad_bias = None if logit_bias is None else grad_bias.reshape(logit_bias.shape).to(logit_bias.dtype)
        return grad_u, grad_v, grad_scale, grad_bias, None
