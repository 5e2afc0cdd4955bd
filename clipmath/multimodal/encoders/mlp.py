"""A multilayer perceptron encoder on flattened inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from clipmath.multimodal.encoders._inputs import as_float
from clipmath.multimodal.encoders.base import activation as make_activation
from clipmath.multimodal.encoders.base import check_positive_int, register


@register("mlp")
class MLPEncoder(nn.Module):
    r"""MLP encoder :math:`g(x) = W_L\,\sigma(\cdots\sigma(W_1 \operatorname{vec}(x) + b_1)\cdots) + b_L`.

    A nonlinear :math:`g_u` or :math:`g_v` in the sense of Section 2 of Baptista, Stuart & Tran
    (2025): each (B, ...) input is flattened to (B, n_in), passed through ``len(hidden)`` affine
    layers each followed by the activation, and an affine output layer to n_e (no activation
    after it). uint8 inputs are images and are scaled by 1/255 to [0, 1] first.

    Args:
        n_in: flattened input dimension, the product of the non-batch dimensions.
        n_e: embedding dimension.
        hidden: widths of the hidden layers; ``[]`` gives an affine map.
        activation: ``relu``, ``gelu`` or ``tanh``.

    Raises:
        ValueError: for a non-positive dimension or width, or an unknown activation.
    """

    def __init__(self, n_in: int, n_e: int, hidden: Sequence[int] = (128,), activation: str = "relu"):
        super().__init__()
        self.n_in = check_positive_int("n_in", n_in)
        self.n_e = check_positive_int("n_e", n_e)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise ValueError(f"hidden={hidden!r}: expected a list of positive integers")
        for width in hidden:
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ValueError(f"hidden={hidden!r}: expected a list of positive integers")
        make_activation("activation", activation)
        widths = [n_in, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), make_activation("activation", activation)]
        layers.append(nn.Linear(widths[-1], n_e))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Embed a batch.

        Args:
            x: (B, ...) inputs whose non-batch dimensions multiply to n_in; float, or uint8
                (scaled by 1/255).

        Returns:
            (B, n_e) embeddings.

        Raises:
            ValueError: for a wrong size or dtype.
        """
        x = as_float(x, self.net[0].weight.dtype)
        if x.dim() < 2 or math.prod(x.shape[1:]) != self.n_in:
            raise ValueError(f"x={tuple(x.shape)}: expected shape (B, ...) with {self.n_in} values per item")
        return self.net(x.flatten(1))
