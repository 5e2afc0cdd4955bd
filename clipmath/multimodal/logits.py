r"""The logits every bimodal loss starts from: the scaled, biased score matrix in float32.

The logits of a batch are

.. math::  S_{ij} = e^{\text{logit\_scale}}\,\mathrm{sim}(z_u^i, z_v^j) + b,
   \qquad \text{logit\_scale} = \log(1/\tau),

the exponent of the tilting :math:`\rho(u, v) \propto \exp(\mathrm{sim}(g_u(u), g_v(v))/\tau)`
(eqs. 13-14 and 25-26 of Baptista et al. (2025)); row i belongs to :math:`u_i`, column j to
:math:`v_j`, and the positive pairs lie on the diagonal. The bias :math:`b` is optional.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from clipmath.multimodal import similarity
from clipmath.multimodal.checks import PendingChecks


def check_scale(logit_scale: Tensor, logit_bias: Tensor | None) -> None:
    r"""Validate the temperature and bias handed to a loss or a model's score function.

    Args:
        logit_scale: scalar tensor (one element), :math:`\log(1/\tau)`.
        logit_bias: scalar tensor (one element) or None.

    Raises:
        ValueError: naming the argument when it is not a finite one-element tensor.
    """
    check_scale_shape(logit_scale, logit_bias)
    for name, value in (("logit_scale", logit_scale), ("logit_bias", logit_bias)):
        if value is not None and not torch.isfinite(value).all():
            raise ValueError(f"{name}={value.item()}: expected a finite value")


def check_scale_shape(logit_scale: Tensor, logit_bias: Tensor | None) -> None:
    r"""The part of :func:`check_scale` that reads no value: one-element tensors (the bias may be None).

    Raises:
        ValueError: naming the argument when it is not a one-element tensor.
    """
    for name, value in (("logit_scale", logit_scale), ("logit_bias", logit_bias)):
        if value is None and name == "logit_bias":
            continue
        if not isinstance(value, Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{name}={shape}: expected a scalar (one-element) tensor")


def overflow_error(logit_scale: Tensor, dtype: torch.dtype, detail: str) -> ValueError:
    r"""The error of logits too large for ``dtype``, saying what ``logit_scale`` means.

    Args:
        logit_scale: the scalar tensor the logits were scaled by, :math:`\log(1/\tau)`.
        dtype: the dtype the loss is computed in.
        detail: what overflowed.
    """
    value = logit_scale.detach().double().reshape(())
    return ValueError(
        f"logit_scale={value.item():.6g}: the logits exp(logit_scale) * sim + logit_bias overflow {dtype} "
        f"({detail}; exp(logit_scale) = {value.exp().item():.3g}); logit_scale is log(1/tau), e.g. "
        f"log(100) = 4.605 for tau = 0.01: pass the log of the scale, not the scale itself"
    )


def logit_limit(logits: Tensor) -> float:
    r"""The largest :math:`|S|` a loss over ``logits`` can sum in their dtype: finfo.max / (2 B_u B_v).

    A loss over (B_u, B_v) logits :math:`S` adds at most :math:`B_u B_v` terms of size
    :math:`\max|S|` (e.g. SigLIP's softplus sum) and its log-sum-exps subtract two logits, so it
    stays finite in the dtype while :math:`\max|S|` is at most this; beyond it the loss would be
    inf or NaN (in float32 with cosine logits and B = 256, from a logit_scale of about 76: e.g.
    100, the scale passed in place of its log).
    """
    return torch.finfo(logits.dtype).max / (2 * logits.numel())


def check_logits(logits: Tensor, logit_scale: Tensor) -> None:
    r"""Raise when the logits are too large for the sums every loss forms over them (see :func:`logit_limit`).

    One min-max pass over the logits, no temporary, and one device sync.

    Args:
        logits: (B_u, B_v) logits.
        logit_scale: the scalar tensor they were scaled by, named in the error.

    Raises:
        ValueError: naming ``logit_scale`` and its value (see :func:`overflow_error`), also for
            NaN logits, which finite embeddings give only when ``exp(logit_scale)`` overflowed.
    """
    largest = _largest_abs(logits).item()
    limit = logit_limit(logits)
    if not largest <= limit:
        raise overflow_error(logit_scale, logits.dtype, f"largest |logit| {largest:.3g} > {limit:.3g}")


def defer_input_checks(
    checks: PendingChecks,
    value: Tensor,
    limit: float,
    detail: Callable[[float], str],
    z_u: Tensor,
    z_v: Tensor,
    logit_scale: Tensor,
    logit_bias: Tensor | None,
) -> None:
    r"""Queue the value checks of a loss's inputs on one number the loss computed from all of them.

    ``value`` is the largest :math:`|S|` of the logits (or a loss that never keeps them): it is
    NaN or infinite whenever an embedding, the scale or the bias is, since each enters every
    logit. So one number (and ``logit_scale`` itself, whose :math:`-\infty` gives zero logits)
    stands for every finiteness check; only when it fails are the inputs examined, one by one,
    in the order :func:`~clipmath.multimodal.similarity.check_pair` then :func:`check_scale`
    would have raised, before the overflow is blamed on ``logit_scale``.

    Args:
        checks: where to queue the check (resolved by the caller).
        value: scalar tensor, the quantity whose magnitude ``limit`` bounds (NaN fails).
        limit: the largest acceptable magnitude.
        detail: what overflowed, from the value, for :func:`overflow_error`.
        z_u: the u embeddings, examined on failure.
        z_v: the v embeddings, examined on failure.
        logit_scale: scalar tensor :math:`\log(1/\tau)`, checked to be finite.
        logit_bias: scalar tensor or None, examined on failure.
    """
    dtype = value.dtype

    def error(values: list[float]) -> Exception | None:
        largest, scale = values
        if abs(largest) <= limit and math.isfinite(scale):
            return None
        try:
            for name, z in (("z_u", z_u), ("z_v", z_v)):
                similarity.check_finite(name, z)
            check_scale(logit_scale, logit_bias)
        except ValueError as err:
            return err
        return overflow_error(logit_scale, dtype, detail(largest))

    checks.add(torch.stack([value.detach().reshape(()).to(dtype), logit_scale.detach().reshape(()).to(dtype)]), error)


def defer_logit_checks(
    checks: PendingChecks, logits: Tensor, z_u: Tensor, z_v: Tensor, logit_scale: Tensor, logit_bias: Tensor | None
) -> None:
    """Queue every value check of a loss's inputs and logits (:func:`defer_input_checks`, :func:`check_logits`)."""
    limit = logit_limit(logits)
    defer_input_checks(
        checks,
        _largest_abs(logits),
        limit,
        lambda largest: f"largest |logit| {largest:.3g} > {limit:.3g}",
        z_u,
        z_v,
        logit_scale,
        logit_bias,
    )


def _largest_abs(logits: Tensor) -> Tensor:
    """Max |S| in one min-max pass (NaN if any logit is NaN)."""
    low, high = torch.aminmax(logits.detach())
    return torch.maximum(high, -low)


def no_autocast(like: Tensor) -> torch.autocast:
    """Context that switches autocast off on the device of ``like``, keeping losses in float32."""
    return torch.autocast(device_type=like.device.type, enabled=False)


def scaled_logits(
    sim: Callable[[Tensor, Tensor], Tensor],
    z_u: Tensor,
    z_v: Tensor,
    logit_scale: Tensor,
    logit_bias: Tensor | None = None,
) -> Tensor:
    r""":math:`S = e^{\text{logit\_scale}}\,\mathrm{sim}(z_u, z_v) + b` in float32 or wider.

    Autocast is switched off here: bf16 keeps 8 significant bits, so logits near the clamp
    (up to 100) would carry errors of about 0.4, i.e. softmax weights off by a factor 1.5.

    Args:
        sim: an alignment metric from :mod:`clipmath.multimodal.similarity`.
        z_u: (B_u, n_e) embeddings of modality u.
        z_v: (B_v, n_e) embeddings of modality v.
        logit_scale: scalar tensor, :math:`\log(1/\tau)`.
        logit_bias: scalar tensor or None.

    Returns:
        (B_u, B_v) logits, float64 if either embedding batch is float64, else float32.
    """
    dtype = torch.promote_types(torch.promote_types(z_u.dtype, z_v.dtype), torch.float32)
    with no_autocast(z_u):
        scale = logit_scale.to(dtype).reshape(()).exp()
        logits = scale * sim(z_u.to(dtype), z_v.to(dtype))
        if logit_bias is not None:
            logits = logits + logit_bias.to(dtype).reshape(())
    return logits
