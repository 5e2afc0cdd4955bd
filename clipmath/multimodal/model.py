r"""The bimodal model: two encoders, an alignment metric, a temperature and an optional bias.

It defines the tilting of Baptista et al. (2025), eqs. 13-14 and 25-26,

.. math::
    \nu(du, dv; \theta) \propto \exp\big(\mathrm{sim}(g_u(u), g_v(v)) / \tau + b\big)\,\mu_u(du)\,\mu_v(dv),

through its score matrix :math:`S_{ij} = e^{\text{logit\_scale}}\mathrm{sim}(z_u^i, z_v^j) + b`
with :math:`z_u = g_u(u)`, :math:`z_v = g_v(v)` and ``logit_scale`` :math:`= \log(1/\tau)`.
The losses in :mod:`clipmath.multimodal.losses` take the model's outputs::

    out = model(batch["u"], batch["v"])
    loss_module(out.z_u, out.z_v, logit_scale=out.logit_scale, logit_bias=out.logit_bias)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from clipmath.multimodal import similarity
from clipmath.multimodal.logits import scaled_logits

#: Upper clamp of the logit scale, i.e. tau >= 0.01 (open_clip's and CLIP's choice): beyond it
#: the softmax saturates and training turns unstable.
MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class BimodalOutput:
    r"""What :meth:`BimodalModel.forward` returns.

    Attributes:
        z_u: (B, n_e) embeddings :math:`g_u(u)`.
        z_v: (B, n_e) embeddings :math:`g_v(v)`.
        logit_scale: scalar tensor :math:`\log(1/\tau)`, clamped to at most ``log 100``.
        logit_bias: scalar tensor or None.
    """

    z_u: Tensor
    z_v: Tensor
    logit_scale: Tensor
    logit_bias: Tensor | None


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
        for name, value in (("n_in", n_in), ("n_e", n_e)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        super().__init__(n_in, n_e, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        r"""Embed a batch.

        Args:
            x: (B, n_in) inputs.

        Returns:
            (B, n_e) embeddings :math:`x G^\top`.
        """
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x={tuple(x.shape)}: expected shape (B, {self.in_features})")
        return super().forward(x)


class BimodalModel(nn.Module):
    r"""Two encoders and the tilting parameters (eqs. 13-14 of Baptista et al. (2025)).

    Defaults follow CLIP (:math:`\tau = 0.07`, learned, no bias). For the ``siglip`` loss use
    ``tau=0.1, bias=-10.0`` (Zhai et al. 2023).

    Args:
        g_u: encoder of modality u, mapping a batch of u to (B, n_e).
        g_v: encoder of modality v, mapping a batch of v to (B, n_e).
        metric: alignment metric, ``cosine``, ``inner`` or ``neg_sq_l2``.
        tau: initial temperature, in [0.01, inf) since ``logit_scale`` is clamped to ``log 100``.
        learn_tau: learn ``logit_scale`` (an ``nn.Parameter``) or keep it fixed (a buffer).
        bias: initial logit bias, or None for no bias.
        learn_bias: learn the bias or keep it fixed (ignored when ``bias`` is None).

    Raises:
        ValueError: for an unknown metric, a bad ``tau`` or a non-finite ``bias``.
    """

    def __init__(
        self,
        g_u: nn.Module,
        g_v: nn.Module,
        metric: str = "cosine",
        tau: float = 0.07,
        learn_tau: bool = True,
        bias: float | None = None,
        learn_bias: bool = True,
    ):
        super().__init__()
        self._sim = similarity.get(metric)
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau):
            raise ValueError(f"tau={tau!r}: expected a finite number")
        if not tau >= 1.0 / 100.0:
            raise ValueError(f"tau={tau!r}: expected tau >= 0.01 (logit_scale is clamped to log 100)")
        if bias is not None and (
            isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias)
        ):
            raise ValueError(f"bias={bias!r}: expected a finite number or None")
        self.g_u = g_u
        self.g_v = g_v
        self.metric = metric
        self._register("logit_scale", math.log(1.0 / tau), learn_tau)
        if bias is None:
            self.logit_bias = None
        else:
            self._register("logit_bias", float(bias), learn_bias)

    def _register(self, name: str, value: float, learn: bool) -> None:
        tensor = torch.tensor(value, dtype=torch.float32)
        if learn:
            self.register_parameter(name, nn.Parameter(tensor))
        else:
            self.register_buffer(name, tensor)

    def encode_u(self, u: Tensor) -> Tensor:
        """(B, n_e) embeddings :math:`g_u(u)` of a batch ``u`` (B, ...)."""
        return self.g_u(u)

    def encode_v(self, v: Tensor) -> Tensor:
        """(B, n_e) embeddings :math:`g_v(v)` of a batch ``v`` (B, ...)."""
        return self.g_v(v)

    def clamped_logit_scale(self) -> Tensor:
        """``logit_scale`` with its value clamped to at most ``log 100`` and its gradient kept.

        The gradient passes the clamp unchanged (a straight-through clamp), so a scale at
        the clamp can still move down; this is the gradient open_clip gets from clamping the
        parameter after each step. Call :meth:`clamp_logit_scale_` after each optimizer step
        so the stored parameter does not drift above the clamp.
        """
        excess = (self.logit_scale - MAX_LOGIT_SCALE).clamp(min=0).detach()
        return self.logit_scale - excess

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the stored ``logit_scale`` in place to at most ``log 100`` (as open_clip)."""
        self.logit_scale.clamp_(max=MAX_LOGIT_SCALE)

    def forward(self, u: Tensor, v: Tensor) -> BimodalOutput:
        """Embed a paired batch.

        Args:
            u: (B, ...) batch of modality u.
            v: (B, ...) batch of modality v.

        Returns:
            :class:`BimodalOutput` with (B, n_e) embeddings, the clamped scale and the bias.
        """
        z_u, z_v = self.encode_u(u), self.encode_v(v)
        similarity.check_pair(z_u, z_v, same_batch=True)
        return BimodalOutput(z_u, z_v, self.clamped_logit_scale(), self.logit_bias)

    def scores(self, z_u: Tensor, z_v: Tensor) -> Tensor:
        r"""Score matrix :math:`S_{ij} = e^{\text{logit\_scale}}\mathrm{sim}(z_u^i, z_v^j) + b`.

        Args:
            z_u: (B_u, n_e) embeddings of u.
            z_v: (B_v, n_e) embeddings of v.

        Returns:
            (B_u, B_v) logits in float32 or wider; row i is :math:`u_i`, column j is :math:`v_j`.
        """
        similarity.check_pair(z_u, z_v)
        return scaled_logits(self._sim, z_u, z_v, self.clamped_logit_scale(), self.logit_bias)

    def extra_repr(self) -> str:
        return f"metric={self.metric!r}"
