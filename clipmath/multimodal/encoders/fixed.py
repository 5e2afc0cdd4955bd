r"""Fixed, non-learned encoders.

The one-hot label map :math:`g_v(v) = e_v` of the labelled-MNIST experiment (Section 6.2 of
Baptista, Stuart & Tran (2025)) and the identity embedding :math:`g_u(u) = \{\psi_k\}` of the ocean
experiment (Section 6.3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clipmath.multimodal.encoders._inputs import as_float
from clipmath.multimodal.encoders.base import check_choice, check_positive_int, register


@register("fixed")
class FixedEncoder(nn.Module):
    r"""A fixed map with no trainable parameters.

    - ``kind="one_hot"``: integer labels :math:`v \in \{0, \dots, K-1\}` to
      :math:`g_v(v) = e_v \in \mathbb{R}^K`, n_e = K = ``n_classes``. With the inner-product
      tilting and a LeNet :math:`g_u`, the label-given-image conditional is the usual softmax
      classifier (Proposition 6.1 of Baptista et al. (2025)).
    - ``kind="identity"``: flattens (B, ...) to (B, n_in), n_e = ``n_in``; e.g. the 2K = 98
      streamfunction coefficients of Section 6.3. uint8 inputs are images and are scaled by 1/255.

    The output follows the module's dtype and (for ``identity``) the input's device, so
    ``.to(...)`` and ``.double()`` act as on a learned encoder; the state dict is empty.

    Args:
        kind: ``one_hot`` or ``identity``.
        n_classes: number of labels K (``one_hot`` only).
        n_in: flattened input dimension (``identity`` only).

    Raises:
        ValueError: for an unknown kind, or a missing, extra or non-positive dimension.
    """

    def __init__(self, kind: str, n_classes: int | None = None, n_in: int | None = None):
        super().__init__()
        self.kind = check_choice("kind", kind, ("one_hot", "identity"))
        needed, other = ("n_classes", "n_in") if kind == "one_hot" else ("n_in", "n_classes")
        values = {"n_classes": n_classes, "n_in": n_in}
        if values[other] is not None:
            raise ValueError(f"{other}={values[other]!r}: not a parameter of kind={kind!r}; expected None")
        self.n_e = check_positive_int(needed, values[needed])
        self.n_classes, self.n_in = n_classes, n_in
        # Carries the output dtype through .to(dtype) / .double() without being a parameter.
        self.register_buffer("_dtype", torch.empty(0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Embed a batch.

        Args:
            x: ``one_hot``: (B,) integer labels in [0, n_classes). ``identity``: (B, ...) inputs
                with n_in values per item, float or uint8.

        Returns:
            (B, n_e) embeddings, exact one-hot rows for ``one_hot``.

        Raises:
            ValueError: for a wrong shape or dtype, or a label out of range.
        """
        if not isinstance(x, Tensor):
            raise ValueError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if self.kind == "identity":
            x = as_float(x, self._dtype.dtype)
            if x.dim() < 2 or math.prod(x.shape[1:]) != self.n_in:
                raise ValueError(f"x={tuple(x.shape)}: expected shape (B, ...) with {self.n_in} values per item")
            return x.flatten(1)
        if x.dim() != 1:
            raise ValueError(f"x={tuple(x.shape)}: expected (B,) integer labels")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"x: dtype {x.dtype}; expected integer labels")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.n_classes):
            bad = x[(x < 0) | (x >= self.n_classes)][0].item()
            raise ValueError(f"x: label {bad} out of range; expected labels in [0, {self.n_classes})")
        return nn.functional.one_hot(x.long(), self.n_classes).to(self._dtype.dtype)

    def extra_repr(self) -> str:
        """The kind and the embedding size, for ``repr``."""
        return f"kind={self.kind!r}, n_e={self.n_e}"
