"""Contrastive learning in torch: alignment metrics, losses, optimal transport, models, training.

- :mod:`.similarity`: the alignment metrics ``cosine``, ``inner``, ``neg_sq_l2`` (Section 3.3 of
  Baptista, Stuart & Tran (2025));
- :mod:`.losses`: every bimodal loss by name (``losses.names()``, ``losses.build``);
- :mod:`.ot`: log-domain, batched, balanced and unbalanced Sinkhorn (Chen et al. 2024);
- :mod:`.encoders`: the encoders by name (linear, MLP, LeNet, small ResNet, sequence transformer,
  fixed maps; ``encoders.build``);
- :mod:`.model`: :class:`BimodalModel` (two encoders, a metric, a temperature, an optional bias);
- :mod:`.tiled`, :mod:`.distributed`: the exact O(B)-memory CLIP loss and the gathered loss
  for data-parallel training;
- :mod:`.trainer`, :mod:`.checkpoint`, :mod:`.seeding`: one training loop, atomic resumable
  checkpoints, one seed for everything;
- :mod:`.inference`: retrieval, recall@k, classification, fine-tuning and generation (Section 4).
"""

from clipmath.multimodal import encoders, inference, losses, similarity
from clipmath.multimodal.encoders import LinearEncoder
from clipmath.multimodal.model import BimodalModel, BimodalOutput
from clipmath.multimodal.ot import SinkhornResult, sinkhorn
from clipmath.multimodal.trainer import TensorStream, TrainConfig, TrainResult, train

__all__ = [
    "BimodalModel",
    "BimodalOutput",
    "LinearEncoder",
    "SinkhornResult",
    "TensorStream",
    "TrainConfig",
    "TrainResult",
    "encoders",
    "inference",
    "losses",
    "similarity",
    "sinkhorn",
    "train",
]
