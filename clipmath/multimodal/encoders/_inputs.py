"""Input handling shared by the encoders: uint8 scaling, dtype, shape checks, normalization."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from clipmath.multimodal.encoders.base import check_finite

#: The per-pixel mean and standard deviation of the MNIST training images in [0, 1],
#: the usual constants for ``normalize=MNIST_MEAN_STD``.
MNIST_MEAN_STD = (0.1307, 0.3081)


def as_float(x: Tensor, dtype: torch.dtype, name: str = "x") -> Tensor:
    """``x`` as a floating tensor of ``dtype``; uint8 (images) is scaled by 1/255 to [0, 1].

    Args:
        x: (B, ...) float tensor, or uint8 tensor of pixel values in [0, 255].
        dtype: the floating dtype of the encoder's parameters.
        name: the argument name used in error messages.

    Raises:
        ValueError: for a non-tensor, or an integer or bool dtype other than uint8.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.uint8:
        return x.to(dtype) / 255
    if not x.is_floating_point():
        raise ValueError(f"{name}: dtype {x.dtype}; expected a floating dtype or uint8 (images)")
    return x.to(dtype)


def check_normalize(normalize: Any, in_channels: int) -> tuple[list[float], list[float]] | None:
    """Validate ``normalize``: None, or ``(mean, std)`` each a number or one per channel.

    Returns:
        None, or the per-channel means and standard deviations as two lists of floats.
    """
    if normalize is None:
        return None
    if isinstance(normalize, (str, bytes)) or not isinstance(normalize, Sequence) or len(normalize) != 2:
        raise ValueError(f"normalize={normalize!r}: expected None or (mean, std)")
    out = []
    for part, value in zip(("mean", "std"), normalize, strict=True):
        values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * in_channels
        if len(values) != in_channels:
            raise ValueError(f"normalize={normalize!r}: {part} has {len(values)} values, expected {in_channels}")
        try:
            values = [check_finite("normalize", v, positive=(part == "std")) for v in values]
        except ValueError:
            raise ValueError(
                f"normalize={normalize!r}: expected finite means and positive standard deviations"
            ) from None
        out.append(values)
    return out[0], out[1]


class ImageInput(nn.Module):
    r"""Turn a batch of images into floats of the encoder's dtype, checked and normalized.

    The steps: uint8 pixels are scaled by 1/255 to [0, 1] (float input is taken as already in
    [0, 1]), a missing channel axis is added when ``in_channels == 1``, and, if ``normalize`` is
    given, :math:`(x - \text{mean}) / \text{std}` is applied per channel.

    Args:
        in_channels: expected number of channels C.
        normalize: None, or ``(mean, std)`` with each a number or a list of C numbers.
        size: required (H, W), or None to accept any size of at least ``min_size``.
        min_size: smallest accepted H and W when ``size`` is None.
    """

    def __init__(self, in_channels: int, normalize: Any = None, size: tuple[int, int] | None = None, min_size: int = 1):
        super().__init__()
        self.in_channels = in_channels
        self.size = size
        self.min_size = min_size
        stats = check_normalize(normalize, in_channels)
        self.normalized = stats is not None
        # Not persistent: the constants come from the config, not from a checkpoint.
        mean, std = stats if stats is not None else ([0.0] * in_channels, [1.0] * in_channels)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Preprocess images.

        Args:
            x: (B, C, H, W) images, uint8 in [0, 255] or float in [0, 1]; (B, H, W) when C = 1.

        Returns:
            (B, C, H, W) float images of the encoder's dtype.

        Raises:
            ValueError: for a wrong dtype, rank, channel count or size.
        """
        x = as_float(x, self.mean.dtype)
        if x.dim() == 3 and self.in_channels == 1:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x={tuple(x.shape)}: expected shape (B, {self.in_channels}, H, W)")
        height, width = x.shape[-2:]
        if self.size is not None and (height, width) != tuple(self.size):
            raise ValueError(f"x={tuple(x.shape)}: expected images of size {self.size[0]}x{self.size[1]}")
        if self.size is None and min(height, width) < self.min_size:
            raise ValueError(f"x={tuple(x.shape)}: expected images of at least {self.min_size}x{self.min_size}")
        if self.normalized:
            x = (x - self.mean) / self.std
        return x

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, normalized={self.normalized}"


def check_token_ids(text: Any, context_length: int, vocab_size: int) -> Tensor:
    """The (B, L) token ids of a text batch, checked (the text towers' input).

    Args:
        text: ``{"ids": (B, L) integer tensor}`` (the batch of
            :class:`~clipmath.datasets.tokens.TokenizeCaptions`) or the (B, L) tensor itself.
        context_length: L, the tower's tokens per caption.
        vocab_size: every id must lie in [0, vocab_size).

    Raises:
        ValueError: for a missing ``ids`` entry, a non-integer dtype, a shape other than
            (B, context_length), or ids outside [0, vocab_size).
    """
    ids = text.get("ids") if isinstance(text, dict) else text
    if ids is None:
        raise ValueError(f"text: a dict with fields {sorted(text)}; expected the token ids under 'ids'")
    if not isinstance(ids, Tensor):
        raise ValueError(f"text: expected a tensor of token ids or {{'ids': tensor}}, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"text: token ids of dtype {ids.dtype}; expected an integer dtype")
    if ids.dim() != 2 or ids.shape[1] != context_length:
        raise ValueError(
            f"text={tuple(ids.shape)}: expected token ids of shape (B, {context_length}) "
            "(tokenize with context_length equal to the tower's)"
        )
    if ids.numel() and bool(((ids < 0) | (ids >= vocab_size)).any()):
        raise ValueError(
            f"text: token ids in [{int(ids.min())}, {int(ids.max())}]; expected ids in [0, vocab_size={vocab_size})"
        )
    return ids
