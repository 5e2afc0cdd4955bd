"""Bimodal contrastive losses, one small module each, built by name.

>>> from clipmath.multimodal import losses
>>> loss = losses.build("clip", metric="cosine")
"""

from clipmath.multimodal.losses.base import LossOutput, build, loss_class, names, register
from clipmath.multimodal.losses.pair import PairLoss

# Importing a loss module registers its losses.
from clipmath.multimodal.losses import clip  # noqa: F401,E402
from clipmath.multimodal.losses import conditional  # noqa: F401,E402
from clipmath.multimodal.losses import gca, targets  # noqa: F401,E402
from clipmath.multimodal.losses import joint  # noqa: F401,E402
from clipmath.multimodal.losses import mmd  # noqa: F401,E402
from clipmath.multimodal.losses import siglip  # noqa: F401,E402

__all__ = ["LossOutput", "PairLoss", "build", "loss_class", "names", "register"]
