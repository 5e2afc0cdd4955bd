"""Bimodal contrastive losses, one small module each, built by name.

>>> from clipmath.multimodal import losses
>>> loss = losses.build("clip", metric="cosine")
"""

# Importing a loss module registers its losses; the modules are public (their functional forms).
from clipmath.multimodal.losses import clip, conditional, gca, joint, mmd, siglip, targets
from clipmath.multimodal.losses.base import LossOutput, build, loss_class, names, register
from clipmath.multimodal.losses.pair import PairLoss

__all__ = [
    "LossOutput",
    "PairLoss",
    "build",
    "clip",
    "conditional",
    "gca",
    "joint",
    "loss_class",
    "mmd",
    "names",
    "register",
    "siglip",
    "targets",
]
