r"""Data-parallel contrastive training: an all-gather that carries gradients, and process-group setup.

A contrastive loss needs every negative in the global batch, so each rank gathers the embeddings of
all ranks and computes the *global* loss :math:`L(z^1, \dots, z^W)` on them (``W`` ranks, local
slices :math:`z^r = g_\theta(x^r)` of equal size).

Gradient scaling (why the result equals single-process training on the global batch). Every rank
computes the same number :math:`L`. On rank ``r`` autograd reaches the gathered tensor with
:math:`\partial L/\partial z^q` for every slice ``q``; the backward of :func:`gather_with_grad`
sums this over ranks (all-reduce) and keeps slice ``r``:

.. math::

    \sum_{q=1}^{W} \frac{\partial L}{\partial z^r}\Big|_{\text{rank } q} = W\,\frac{\partial L}{\partial z^r},
    \qquad\text{so rank } r \text{ holds}\quad W\,\frac{\partial L}{\partial z^r}\frac{\partial z^r}{\partial \theta}.

DDP then sums over ranks and divides by ``W``:
:math:`\frac1W\sum_r W\,\frac{\partial L}{\partial z^r}\frac{\partial z^r}{\partial\theta}
= \sum_r \frac{\partial L}{\partial z^r}\frac{\partial z^r}{\partial\theta} = \frac{dL}{d\theta}`,
the global-batch gradient, exactly: the factor ``W`` from the all-reduce cancels DDP's ``1/W``.
Parameters used only after the gather (``logit_scale``, ``logit_bias``) get the same
:math:`\partial L/\partial s` on every rank, which DDP's average leaves unchanged. Without the
all-reduce (keeping only the local slice of the incoming gradient) each rank would hold only the
part of :math:`\partial L/\partial z^r` that flows through its own copy, and the encoder gradient
would come out ``W`` times too small.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)

_ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def world_info() -> tuple[int, int]:
    """(rank, world_size) of the default process group; (0, 1) when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Initialise the default process group from the variables ``torchrun`` sets.

    Reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` (and ``LOCAL_RANK`` for the
    CUDA device). Without ``WORLD_SIZE`` in the environment this is a single-process run and
    nothing is initialised; an already initialised group is left as it is.

    Args:
        backend: ``None`` picks ``nccl`` when CUDA is available and ``gloo`` otherwise; or any
            backend name ``torch.distributed`` supports here.

    Returns:
        (rank, world_size).

    Raises:
        ValueError: if a required variable is missing, or ``backend`` is not available.
    """
    if dist.is_available() and dist.is_initialized():
        return world_info()
    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    missing = [name for name in _ENV_VARS if name not in os.environ]
    if missing:
        raise ValueError(f"environment: {', '.join(missing)} not set; expected all of {', '.join(_ENV_VARS)}")
    use_cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if use_cuda else "gloo")
    if not dist.is_available() or not dist.is_backend_available(backend):
        raise ValueError(f"backend={backend!r}: not available in this torch build")
    if use_cuda and backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, init_method="env://")
    rank, world_size = world_info()
    logger.info("process group %s: rank %d of %d", backend, rank, world_size)
    return rank, world_size


def gather_with_grad(x: Tensor) -> Tensor:
    """All-gather ``x`` along dim 0 over the default group, with gradients back to each rank's slice.

    See the module docstring for why computing the loss on the gathered batch on every rank, then
    averaging gradients as DDP does, reproduces the single-process global-batch gradient.

    Args:
        x: (B_local, ...) this rank's slice; every rank must pass the same shape and dtype.

    Returns:
        (world_size * B_local, ...) the slices of ranks 0, 1, ... in order; ``x`` itself when there
        is a single process.
    """
    if world_info()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: D102
        rank, world_size = world_info()
        slices = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(slices, x.contiguous())
        ctx.rank, ctx.local_size = rank, x.shape[0]
        return torch.cat(slices)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        # A copy: the all-reduce works in place, and autograd may share the incoming buffer.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.local_size
        return grad[start : start + ctx.local_size]
