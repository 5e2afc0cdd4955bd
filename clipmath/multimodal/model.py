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

from clipmath.multimodal import encoders, similarity
from clipmath.multimodal.checkpoint import load_checkpoint
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


class BimodalModel(nn.Module):
    r"""Two encoders and the tilting parameters (eqs. 13-14 of Baptista et al. (2025)).

    Defaults follow CLIP (:math:`\tau = 0.07`, learned, no bias). For the ``siglip`` loss use
    ``tau=0.1, bias=-10.0`` (Zhai et al. 2023). When both encoders come from
    :func:`clipmath.multimodal.encoders.build`, ``config`` describes the whole model, the trainer
    stores it in every checkpoint, and :meth:`from_checkpoint` rebuilds the trained model.

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
        self.config = self._config(tau=tau, learn_tau=learn_tau, bias=bias, learn_bias=learn_bias)

    def _config(self, **tilting) -> dict | None:
        """What :meth:`from_config` rebuilds the model from, or None when an encoder has no config."""
        if not (hasattr(self.g_u, "config") and hasattr(self.g_v, "config")):
            return None
        return {"g_u": dict(self.g_u.config), "g_v": dict(self.g_v.config), "metric": self.metric, **tilting}

    @classmethod
    def from_config(cls, config: dict) -> BimodalModel:
        """A freshly initialised model of the architecture ``config`` describes (see ``self.config``).

        Args:
            config: ``{"g_u": encoder config, "g_v": encoder config, "metric": ..., "tau": ...,
                "learn_tau": ..., "bias": ..., "learn_bias": ...}`` as stored in ``model.config``;
                each encoder config is ``{"name": ..., **params}`` of :func:`encoders.build`.

        Raises:
            ValueError: for a config that is not such a mapping, or a bad entry in it.
        """
        if not isinstance(config, dict) or not {"g_u", "g_v"} <= config.keys():
            raise ValueError(f"config={config!r:.80}: expected a mapping with 'g_u' and 'g_v' encoder configs")
        tilting = {key: value for key, value in config.items() if key not in ("g_u", "g_v")}
        return cls(encoders.build(**config["g_u"]), encoders.build(**config["g_v"]), **tilting)

    @classmethod
    def from_checkpoint(cls, path: str) -> BimodalModel:
        """The trained model stored in a checkpoint of :func:`clipmath.multimodal.trainer.train`.

        Raises:
            ValueError: for a missing checkpoint, or one saved from a model without a config.
        """
        state = load_checkpoint(path)
        if state is None:
            raise ValueError(f"path={str(path)!r}: no checkpoint there")
        if state.get("model_config") is None:
            raise ValueError(
                f"path={str(path)!r}: the checkpoint holds no model config (encoders built outside the registry)"
            )
        model = cls.from_config(state["model_config"])
        model.load_state_dict(state["model"])
        return model

    def _register(self, name: str, value: float, learn: bool) -> None:
        tensor = torch.tensor(value, dtype=torch.float32)
        if learn:
            self.register_parameter(name, nn.Parameter(tensor))
        else:
            self.register_buffer(name, tensor)

    def encode_u(self, u: Tensor) -> Tensor:
        """(B, n_e) embeddings :math:`g_u(u)` of a batch ``u`` (B, ...; or a dict of fields the encoder takes)."""
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

        Raises:
            ValueError: for embeddings of the wrong shape. Their values are checked once, by the
                loss that takes them (one device sync per step).
        """
        z_u, z_v = self.encode_u(u), self.encode_v(v)
        similarity.check_pair_shapes(z_u, z_v, same_batch=True)
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
        """The metric, for ``repr``."""
        return f"metric={self.metric!r}"
