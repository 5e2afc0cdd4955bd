r"""A backbone with the GCA projection head: :math:`f_\theta = p \circ h` (Chen et al. 2024, official code)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from clipmath.multimodal.encoders.base import build, check_positive_int, register


@register("projected")
class ProjectedEncoder(nn.Module):
    r"""Backbone features :math:`h(x)` followed by the GCA projector, :math:`f(x) = W_2\,\mathrm{relu}(W_1 h(x))`.

    The official GCA code (``cl_models/simclr.py`` of Chen et al. 2024) puts on its ResNet (``fc``
    replaced by the identity) the projector ``Linear(feat, 2048, bias=False) - ReLU -
    Linear(2048, 128, bias=False)``, without BatchNorm; the loss sees the 128-d output and the
    linear probe reads the backbone features :math:`h` (``linear_evaluation.py``). Here the
    backbone is any registered encoder, built from its config, and its ``n_e`` outputs are the
    features::

        x -> backbone -> h (n_features = backbone.n_e) -> Linear(n_features, wide, no bias)
          -> ReLU -> Linear(wide, n_e, no bias) -> z

    Used as the one shared encoder of both views (the same module passed as ``g_u`` and ``g_v``
    of :class:`~clipmath.multimodal.model.BimodalModel`).

    Args:
        backbone: the backbone's encoder config ``{"name": ..., **params}``, as for
            :func:`~clipmath.multimodal.encoders.build`, e.g. ``{"name": "small_resnet",
            "n_e": 64, "in_channels": 1, "width": 16}``.
        wide: hidden width of the projector (2048 in the paper).
        n_e: output (embedding) dimension (128 in the paper).

    Raises:
        ValueError: for a backbone config that is not a mapping with a ``name``, or one that
            :func:`~clipmath.multimodal.encoders.build` refuses, or a bad width.
    """

    def __init__(self, backbone: dict[str, Any], wide: int = 2048, n_e: int = 128):
        super().__init__()
        if not isinstance(backbone, dict) or not isinstance(backbone.get("name"), str):
            raise ValueError(f"backbone={backbone!r}: expected an encoder config mapping with a 'name'")
        if backbone["name"] == "projected":
            raise ValueError("backbone={'name': 'projected', ...}: expected a backbone, not another projected encoder")
        self.wide = check_positive_int("wide", wide)
        self.n_e = check_positive_int("n_e", n_e)
        params = {key: value for key, value in backbone.items() if key != "name"}
        self.backbone = build(backbone["name"], **params)
        self.n_features = int(self.backbone.n_e)
        self.projector = nn.Sequential(
            nn.Linear(self.n_features, wide, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(wide, n_e, bias=False),
        )

    def features(self, x: Tensor) -> Tensor:
        """The backbone features :math:`h(x)`, what a linear probe reads.

        Args:
            x: (B, ...) a batch the backbone takes (e.g. (B, C, H, W) uint8 or float images).

        Returns:
            (B, n_features) features.
        """
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """The projected embeddings :math:`z = f(x)`.

        Args:
            x: (B, ...) a batch the backbone takes.

        Returns:
            (B, n_e) embeddings.
        """
        return self.projector(self.features(x))

    def extra_repr(self) -> str:
        """The backbone's feature size, the projector's hidden width and the embedding size, for ``repr``."""
        return f"n_features={self.n_features}, wide={self.wide}, n_e={self.n_e}"
