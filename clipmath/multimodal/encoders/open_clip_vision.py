r"""open_clip's image tower as the encoder :math:`g_u` of images (registered ``open_clip_vision``).

The tower is open_clip's own module (a ViT, or the modified ResNet of the ``RN*`` architectures),
built from a named open_clip architecture or from a small explicit config, exactly as
``open_clip.CLIP`` builds its ``visual`` attribute; its output is ``CLIP.encode_image`` (without
normalisation: the alignment metric, e.g. ``cosine``, decides that). In front of it the encoder
does open_clip's preprocessing of tensors: uint8 pixels scaled to [0, 1], grey images repeated
to three channels, an optional resize, and open_clip's per-channel mean and standard deviation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipmath.multimodal.encoders._inputs import as_float, check_normalize
from clipmath.multimodal.encoders.base import register
from clipmath.multimodal.encoders.open_clip_adapter import (
    load_tower,
    named_config,
    override,
    read_open_clip_state,
    refuse_remote,
    resolve_embed_dim,
    tower_state,
)

_REQUIRED = ("image_size", "patch_size", "width", "layers", "heads")


@register("open_clip_vision")
class OpenClipVision(nn.Module):
    r"""open_clip image tower :math:`g_u: [0, 255]^{3\times H\times W} \to \mathbb R^{n_e}`.

    Either ``model_name`` (an open_clip architecture such as ``"ViT-B-32"``, built from scratch:
    random initialisation as open_clip's, no download) or the explicit ViT config
    (``image_size``, ``patch_size``, ``width``, ``layers``, ``heads``) describes the tower; with
    both, the explicit values override the named ones (e.g. ``model_name="ViT-B-32", layers=2``).
    ``pretrained`` then loads local weights strictly (every entry must fit), from an open_clip
    checkpoint of the whole model (its ``visual.`` entries) or of the tower alone. The path is
    part of the config, so rebuilding the encoder from its config reads the file again.

    Args:
        model_name: an open_clip architecture name (``open_clip.list_models()``), or None.
        n_e: embedding dimension (open_clip's ``embed_dim``); None takes the named one.
        image_size: input height and width H = W the tower is built for.
        patch_size: ViT patch edge.
        width: ViT token width, or a ResNet's stem width (its features are ``32 * width``).
        layers: ViT transformer blocks, or four ints: the blocks of each stage of open_clip's
            ``ModifiedResNet`` (the ``RN*`` architectures; ``patch_size`` is then not needed, and
            ``image_size`` must be a multiple of 32, the ResNet's downsampling).
        heads: attention heads (``width`` must be a multiple); open_clip's ``head_width`` is
            ``width // heads`` (a ResNet's attention pool: ``32 * width // heads``).
        mlp_ratio: MLP hidden width over ``width`` (open_clip's default 4).
        pretrained: path of a local checkpoint (``.pt``, ``.bin``, ``.safetensors``), or None.
        normalize: ``"open_clip"`` (open_clip's ``OPENAI_DATASET_MEAN`` / ``_STD``, what its
            preprocessing uses for these architectures), None (no normalisation), or
            ``(mean, std)`` with a number or three numbers each.
        resize: resize images of another size to ``image_size`` (bilinear, antialiased) instead
            of refusing them.

    Raises:
        ValueError: for an unknown ``model_name``, a missing or non-positive size, ``width`` not
            a multiple of the head width, bad ``normalize``, or weights that do not fit.
    """

    def __init__(
        self,
        model_name: str | None = None,
        n_e: int | None = None,
        image_size: int | None = None,
        patch_size: int | None = None,
        width: int | None = None,
        layers: int | None = None,
        heads: int | None = None,
        mlp_ratio: float | None = None,
        pretrained: str | None = None,
        normalize: Any = "open_clip",
        resize: bool = False,
    ):
        super().__init__()
        import open_clip
        from open_clip.model import _build_vision_tower  # what open_clip.CLIP builds `visual` with

        config = named_config(model_name)
        self.n_e = resolve_embed_dim(config, n_e)
        vision_cfg = dict(config.get("vision_cfg", {}))
        refuse_remote(vision_cfg, model_name)
        explicit = {
            "image_size": image_size,
            "patch_size": patch_size,
            "width": width,
            "layers": layers,
            "mlp_ratio": mlp_ratio,
        }
        # A ResNet (four stage depths) has no patches.
        required = tuple(n for n in _REQUIRED if n != "patch_size" or isinstance(layers, int) or layers is None)
        vision_cfg = override(vision_cfg, {**explicit, "heads": heads}, required, named=model_name is not None)
        vision_cfg.pop("heads", None)
        if heads is not None:
            # A ViT's heads split its width; a ResNet's attention pool runs on 32 * width features.
            features = vision_cfg["width"] * (32 if isinstance(vision_cfg.get("layers"), tuple) else 1)
            if features % heads:
                raise ValueError(f"heads={heads}: expected a divisor of {features} (width={vision_cfg['width']})")
            vision_cfg["head_width"] = features // heads
        if not isinstance(vision_cfg.get("layers"), (list, tuple)):  # a ViT, not a modified ResNet
            head_width = vision_cfg.get("head_width", 64)
            if vision_cfg.get("width", 768) % head_width:
                raise ValueError(
                    f"width={vision_cfg.get('width')}: expected a multiple of the head width {head_width} "
                    "(set heads to a divisor of width)"
                )
        if not isinstance(resize, bool):
            raise ValueError(f"resize={resize!r}: expected True or False")
        self.resize = resize
        self.visual = _build_vision_tower(self.n_e, vision_cfg, quick_gelu=bool(config.get("quick_gelu", False)))
        size = vision_cfg.get("image_size", 224)
        self.image_size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        if pretrained is not None:
            state = read_open_clip_state(pretrained)
            load_tower(self.visual, tower_state(state, "visual"), f"pretrained={str(pretrained)!r} (vision tower)")

        if isinstance(normalize, str):
            if normalize != "open_clip":
                raise ValueError(f"normalize={normalize!r}: expected 'open_clip', None or (mean, std)")
            normalize = (list(open_clip.OPENAI_DATASET_MEAN), list(open_clip.OPENAI_DATASET_STD))
        stats = check_normalize(normalize, 3)
        mean, std = stats if stats is not None else ([0.0] * 3, [1.0] * 3)
        self.normalized = stats is not None
        # Not persistent: the constants come from the config, not from a checkpoint. Kept in
        # float64 and cast per call, so a float64 encoder normalises with open_clip's exact values.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: Tensor) -> Tensor:
        """open_clip's tensor preprocessing: scale, channels, size, normalisation.

        Args:
            x: (B, C, H, W) images with C = 3 or 1 (repeated to 3), or (B, H, W) grey images;
                uint8 in [0, 255] or float in [0, 1].

        Returns:
            (B, 3, image_size, image_size) float images of the encoder's dtype, normalised.

        Raises:
            ValueError: for a wrong dtype, rank or channel count, or another size without ``resize``.
        """
        dtype = next(self.visual.parameters()).dtype
        if not isinstance(x, Tensor) or not (x.dtype == torch.uint8 or x.is_floating_point()):
            as_float(x, dtype)  # raises the shared error for a non-tensor or a non-image dtype
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"x={tuple(x.shape)}: expected images of shape (B, 3, H, W), (B, 1, H, W) or (B, H, W)")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        pixels = x.dtype == torch.uint8
        if tuple(x.shape[-2:]) != self.image_size:
            if not self.resize:
                raise ValueError(
                    f"x={tuple(x.shape)}: expected images of size {self.image_size[0]}x{self.image_size[1]} "
                    "(or build the encoder with resize=True)"
                )
            x = F.interpolate(
                as_float(x, dtype), size=self.image_size, mode="bilinear", align_corners=False, antialias=True
            )
            pixels = False
        x = x.to(dtype)
        # (x / 255 - mean) / std as one fused multiply-add: x * (1 / (255 std)) - mean / std.
        scale = (1.0 / 255 if pixels else 1.0) / self.std.to(dtype)
        if self.normalized:
            return torch.addcmul((-self.mean / self.std).to(dtype), x, scale)
        return x * scale if pixels else x

    def forward(self, x: Tensor) -> Tensor:
        """Embed images, as ``open_clip.CLIP.encode_image`` on the preprocessed batch.

        Args:
            x: (B, 3, H, W) uint8 or [0, 1] float images (see :meth:`preprocess`).

        Returns:
            (B, n_e) image embeddings (not normalised).
        """
        out = self.visual(self.preprocess(x))
        return out[0] if isinstance(out, tuple) else out

    def extra_repr(self) -> str:
        """The embedding size and preprocessing settings, for the module's ``repr``."""
        return f"n_e={self.n_e}, image_size={self.image_size}, normalized={self.normalized}, resize={self.resize}"
