r"""The linear encoder :math:`g(x) = Gx` of the Gaussian experiments.

Section 5, eq. 38 of Baptista, Stuart & Tran (2025).
"""

from __future__ import annotations

from torch import Tensor, nn

from clipmath.multimodal.encoders.base import check_positive_int, register


@register("linear")
class LinearEncoder(nn.Linear):
    r"""Linear encoder :math:`g(x) = Gx` without offset (eq. 38 of Baptista et al. (2025)).

    ``weight`` is the matrix :math:`G` of shape (n_e, n_in); for the Gaussian experiments
    :math:`g_u(u) = Gu`, :math:`g_v(v) = Hv` and :math:`A = G^\top H`.

    Args:
        n_in: input dimension (``n_u`` or ``n_v``).
        n_e: embedding dimension.

    Raises:
        ValueError: if a dimension is not a positive integer.
    """

    def __init__(self, n_in: int, n_e: int):
        check_positive_int("n_in", n_in)
        check_positive_int("n_e", n_e)
        super().__init__(n_in, n_e, bias=False)
        self.n_in = n_in
        self.n_e = n_e

    def forward(self, x: Tensor) -> Tensor:
        r"""Embed a batch.

        Args:
            x: (B, n_in) inputs.

        Returns:
            (B, n_e) embeddings :math:`x G^\top`.

        Raises:
            ValueError: for a shape other than (B, n_in).
        """
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x={tuple(x.shape)}: expected shape (B, {self.in_features})")
        return super().forward(x)
