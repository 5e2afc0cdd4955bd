r"""Exact large batches by gradient accumulation over micro-batches (the feature-cache method).

A contrastive loss couples every pair of the batch, so accumulating the gradients of separate
micro-batch losses changes the loss (fewer negatives). The feature cache (Gao et al. 2021,
"GradCache"; open_clip's ``--accum-freq``) keeps the loss of the whole batch. Write the batch of
B pairs as m micro-batches :math:`x_1, \dots, x_m`, their embeddings :math:`z_k = g_\theta(x_k)`
(both modalities) and :math:`L(z_1, \dots, z_m; s, b)` the loss of the full batch, with
:math:`s` the logit scale and :math:`b` the bias. By the chain rule

.. math::

    \frac{dL}{d\theta} \;=\; \sum_{k=1}^{m} \Big(\frac{\partial L}{\partial z_k}\Big)^{\!\top}
        \frac{\partial z_k}{\partial \theta}
      \;+\; \frac{\partial L}{\partial s}\frac{ds}{d\theta} + \frac{\partial L}{\partial b}\frac{db}{d\theta},

and :math:`\partial L/\partial z_k` needs only the embeddings, not the encoders' activations. So
:func:`accumulated_step`

1. embeds every micro-batch without gradient and caches :math:`z_1, \dots, z_m` (O(B n_e) memory);
2. evaluates the loss of the whole batch once on the cached embeddings, as leaves, and
   back-propagates it to :math:`G_k = \partial L/\partial z_k`, :math:`\partial L/\partial s`,
   :math:`\partial L/\partial b` (and to any parameters of the loss itself);
3. re-embeds each micro-batch with gradient and back-propagates :math:`G_k` through it
   (``torch.autograd.backward(z_k, G_k)``), adding :math:`G_k^\top \partial z_k/\partial\theta`
   to the parameters' ``.grad``; the last one also carries :math:`\partial L/\partial s` and
   :math:`\partial L/\partial b` into the model's temperature and bias.

The sum of step 3 is the one-batch gradient, up to round-off. Peak memory is the encoders'
activations of one micro-batch plus the loss of B cached embeddings, which the tiled loss
(``losses.build("clip", tile_size=...)``) keeps at O(B * tile_size): a batch of 16,384 fits where
its dense one-batch step would not. The cost is one extra forward of the encoders.

Two differences from open_clip's loop (``train_one_epoch`` with ``accum_freq > 1``), which for
each micro-batch :math:`j` concatenates the cache with the live :math:`z_j` and back-propagates the
whole loss: the loss is evaluated once here, not m times (the same :math:`G_k`, m times cheaper for
a B x B loss), and the temperature and bias get :math:`\partial L/\partial s` once, where open_clip's
m backward passes through its live ``logit_scale`` add it m times.

Exactness needs the re-embedding to reproduce the cached embeddings: the RNG state before each
micro-batch's first forward is restored before its second (dropout, patch dropout and other random
layers draw the same numbers), and the state after the cache pass is restored at the end. Layers
whose output depends on the rest of the micro-batch (BatchNorm in training mode) see micro-batches,
not the whole batch, and update their running statistics twice; they make the step differ from a
one-batch step. Under torchrun (``model`` wrapped in DistributedDataParallel) the caches and the
loss's batch fields are gathered across ranks (each rank's batch the same size), each rank pushes
its rows of :math:`W G` (the factor ``W`` cancels DDP's gradient average, as the all-reduce in
:func:`~clipmath.multimodal.distributed.gather_with_grad` does), and gradients synchronise only in
the last micro-batch's backward (``no_sync`` for the others).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from clipmath.multimodal.distributed import gather_with_grad, world_info
from clipmath.multimodal.losses.base import LossOutput


@dataclass
class AccumulatedOutput:
    """What :func:`accumulated_step` returns (the gradients are in the parameters' ``.grad``).

    Attributes:
        loss: scalar tensor, the loss of the whole (global) batch, detached.
        logit_scale: scalar tensor, the model's clamped ``log(1/tau)`` used, detached.
        logit_bias: scalar tensor or None, the model's bias used, detached.
        output: the loss's :class:`~clipmath.multimodal.losses.LossOutput` on the whole batch
            (logits, transport plan, iterations; ``logits`` is None for the tiled loss).
    """

    loss: Tensor
    logit_scale: Tensor
    logit_bias: Tensor | None
    output: LossOutput


def batch_size_of(value: Any, name: str = "batch['u']") -> int:
    """Number of rows B of a batch value: a tensor (B, ...), a dict of such tensors, or a list of B items.

    Raises:
        ValueError: for a value of another kind, or a dict whose tensors disagree on B.
    """
    if isinstance(value, Tensor) and value.dim() > 0:
        return value.shape[0]
    if isinstance(value, dict) and value:
        sizes = {batch_size_of(item, f"{name}[{key!r}]") for key, item in value.items()}
        if len(sizes) != 1:
            raise ValueError(f"{name}: a dict whose entries have different batch sizes {sorted(sizes)}")
        return sizes.pop()
    if isinstance(value, list) and value:
        return len(value)
    raise ValueError(
        f"{name}: a {type(value).__name__}; expected a tensor (B, ...), a dict of them, or a list of B items"
    )


def split_value(value: Any, bounds: list[tuple[int, int]]) -> list[Any]:
    """``value`` cut along its first axis into the row ranges ``bounds``, recursively through dicts."""
    if isinstance(value, dict):
        parts = {key: split_value(item, bounds) for key, item in value.items()}
        return [{key: parts[key][k] for key in value} for k in range(len(bounds))]
    return [value[start:stop] for start, stop in bounds]


def micro_batch_bounds(batch_size: int, micro_batches: int) -> list[tuple[int, int]]:
    """Row ranges of ``micro_batches`` contiguous micro-batches of sizes differing by at most one."""
    base, extra = divmod(batch_size, micro_batches)
    bounds, start = [], 0
    for k in range(micro_batches):
        stop = start + base + (k < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def loss_inputs(loss_fn: nn.Module, batch: dict) -> dict[str, Any]:
    """The batch fields the loss declares in ``reads``, by name (its extra keyword inputs).

    Raises:
        ValueError: naming a declared field the batch lacks, and the fields it has.
    """
    reads = tuple(getattr(loss_fn, "reads", ()))
    missing = [name for name in reads if name not in batch]
    if missing:
        raise ValueError(
            f"batch: the loss {type(loss_fn).__name__} reads the fields {missing}, which the batch lacks; "
            f"it has {sorted(batch)} (add them in the stream's transform)"
        )
    return {name: batch[name] for name in reads}


def _rng_state(device: torch.device | None) -> tuple[Tensor, Tensor | None]:
    cuda = device is not None and device.type == "cuda"
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device | None) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _device_of(value: Any) -> torch.device | None:
    if isinstance(value, Tensor):
        return value.device
    if isinstance(value, dict):
        return next((d for d in map(_device_of, value.values()) if d is not None), None)
    if isinstance(value, list):
        return next((d for d in map(_device_of, value) if d is not None), None)
    return None


def _gather(tensor: Tensor) -> Tensor:
    """This rank's rows and every other rank's, in rank order (no gradient needed)."""
    return gather_with_grad(tensor.contiguous()).detach()


def accumulated_step(
    model: nn.Module,
    loss_fn: nn.Module,
    batch: dict,
    micro_batches: int,
    *,
    autocast: contextlib.AbstractContextManager | None = None,
) -> AccumulatedOutput:
    r"""Forward and backward of one batch in ``micro_batches`` pieces, with the one-batch gradient.

    Adds :math:`dL/d\theta` of the loss :math:`L` of the whole batch to every parameter's
    ``.grad`` (zero them before; the optimizer step, clipping and ``clamp_logit_scale_`` stay
    with the caller), by the feature cache described in the module docstring. Peak memory is one
    micro-batch's activations plus the loss of the cached (B, n_e) embeddings.

    Args:
        model: maps ``(u, v)`` to an output with ``z_u (b, n_e)``, ``z_v (b, n_e)``,
            ``logit_scale`` (scalar, with its gradient path) and ``logit_bias`` (scalar or None),
            e.g. :class:`~clipmath.multimodal.model.BimodalModel`, or that model wrapped in
            DistributedDataParallel.
        loss_fn: a registered loss, called once as ``loss_fn(z_u (B, n_e), z_v (B, n_e),
            logit_scale=..., logit_bias=..., **fields)`` with the fields of the whole batch named
            in its ``reads``; with ``tile_size`` set the ``clip`` loss never forms the B x B logits.
        batch: the batch, ``{"u": ..., "v": ..., other fields}``, on the model's device: ``u`` and
            ``v`` each a tensor (b, ...), a dict of such tensors (e.g. ``{"ids": (b, L)}``) or a
            list of b items; ``b`` rows on this rank (B = world_size * b in all).
        micro_batches: m, the number of contiguous micro-batches (sizes ``b // m`` or one more),
            1 <= m <= b.
        autocast: a context manager entered around every forward and the loss (e.g. the
            trainer's ``torch.autocast("cuda", dtype=torch.bfloat16)``), or None.

    Returns:
        :class:`AccumulatedOutput` with the detached loss of the whole batch, the scale and bias
        used, and the loss's diagnostics.

    Raises:
        ValueError: for a batch without ``u`` or ``v``, fields of different sizes, a bad
            ``micro_batches``, or a field the loss reads that the batch lacks.
    """
    if not isinstance(batch, dict) or "u" not in batch or "v" not in batch:
        shown = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"batch: expected a dict with fields 'u' and 'v', got {shown}")
    size = batch_size_of(batch["u"], "batch['u']")
    if batch_size_of(batch["v"], "batch['v']") != size:
        raise ValueError(f"batch: 'u' has {size} rows, 'v' has {batch_size_of(batch['v'])}; expected pairs")
    if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or not 1 <= micro_batches <= size:
        raise ValueError(f"micro_batches={micro_batches!r}: expected an integer in [1, {size}] (the batch's rows)")
    autocast = autocast if autocast is not None else contextlib.nullcontext()
    extras = loss_inputs(loss_fn, batch)
    rank, world_size = world_info()
    bounds = micro_batch_bounds(size, micro_batches)
    pieces = list(zip(split_value(batch["u"], bounds), split_value(batch["v"], bounds), strict=False))
    device = _device_of(batch["u"]) or _device_of(batch["v"])

    # 1. The cache: every micro-batch embedded without gradient, the RNG state before each kept.
    states, cache_u, cache_v = [], [], []
    scale = bias = None
    with torch.no_grad():
        for u, v in pieces:
            states.append(_rng_state(device))
            with autocast:
                out = model(u, v)
            cache_u.append(out.z_u.detach())
            cache_v.append(out.z_v.detach())
            if scale is None:
                scale = out.logit_scale.detach()
                bias = None if out.logit_bias is None else out.logit_bias.detach()
    after_cache = _rng_state(device)

    # 2. The loss of the whole batch, once, on the cache; its gradient with respect to every row.
    z_u, z_v = torch.cat(cache_u), torch.cat(cache_v)
    if world_size > 1:
        z_u, z_v = _gather(z_u), _gather(z_v)
        extras = {name: _gather(value) for name, value in check_gatherable(extras).items()}
    z_u.requires_grad_(True)
    z_v.requires_grad_(True)
    scale_leaf = scale.clone().requires_grad_(True)
    bias_leaf = None if bias is None else bias.clone().requires_grad_(True)
    with autocast:
        output = loss_fn(z_u, z_v, logit_scale=scale_leaf, logit_bias=bias_leaf, **extras)
    output.loss.backward()
    local = slice(rank * size, (rank + 1) * size)
    # The factor world_size cancels DDP's average over ranks (see the module docstring).
    grad_u = _rows(z_u.grad, local, world_size)
    grad_v = _rows(z_v.grad, local, world_size)

    # 3. Each micro-batch again, with gradient, its rows of dL/dz pushed through the encoders.
    no_sync = getattr(model, "no_sync", None) if world_size > 1 else None
    for k, ((u, v), (start, stop)) in enumerate(zip(pieces, bounds, strict=False)):
        last = k == len(pieces) - 1
        _set_rng_state(states[k], device)
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            with autocast:
                out = model(u, v)
            tensors, grads = [], []
            for tensor, grad in ((out.z_u, grad_u), (out.z_v, grad_v)):
                if grad is not None and tensor.requires_grad:
                    tensors.append(tensor)
                    grads.append(grad[start:stop].to(tensor.dtype))
            if last:
                for tensor, leaf in ((out.logit_scale, scale_leaf), (out.logit_bias, bias_leaf)):
                    if tensor is not None and leaf is not None and leaf.grad is not None and tensor.requires_grad:
                        tensors.append(tensor)
                        grads.append(leaf.grad.to(tensor.dtype).reshape(tensor.shape))
            if tensors:
                torch.autograd.backward(tensors, grads)
    _set_rng_state(after_cache, device)
    return AccumulatedOutput(
        loss=output.loss.detach(),
        logit_scale=scale,
        logit_bias=bias,
        output=output,
    )


def _rows(grad: Tensor | None, local: slice, world_size: int) -> Tensor | None:
    if grad is None:
        return None
    return grad[local] * world_size if world_size > 1 else grad


def check_gatherable(extras: dict[str, Any]) -> dict[str, Tensor]:
    """``extras`` unchanged if every value is a tensor (what torch.distributed can gather).

    Raises:
        ValueError: naming a field the loss reads that is not a tensor.
    """
    for name, value in extras.items():
        if not isinstance(value, Tensor):
            raise ValueError(
                f"batch[{name!r}]: a {type(value).__name__}; under torch.distributed a field the loss reads "
                "must be a tensor so that it can be gathered"
            )
    return extras
