"""Bimodal contrastive losses, one small module each, built by name.

>>> from clipmath.multimodal import losses
>>> loss = losses.build("clip", metric="cosine")
"""

from clipmath.multimodal.losses.base import LossOutput, build, names, register

__all__ = ["LossOutput", "build", "names", "register"]
