"""Crossmodal inference with a trained contrastive model (Section 4 of Baptista, Stuart & Tran (2025)).

- :mod:`.retrieval`: Algorithm 1 (top-k retrieval), recall@k, and the empirical conditional (eq. 28);
- :mod:`.classification`: Algorithm 2 (zero-shot classifier) and prior fine-tuning (eqs. 32-35);
- :mod:`.generation`: sampling the empirical conditional (Fig. 12) and the Gaussian model's conditional.
"""

from clipmath.multimodal.inference.classification import (
    FineTunedClassifier,
    classifier_logits,
    classify,
    finetune_classifier,
    finetune_loss,
)
from clipmath.multimodal.inference.generation import sample_conditional, sample_gaussian_conditional
from clipmath.multimodal.inference.retrieval import conditional_weights, recall_at_k, retrieve

__all__ = [
    "FineTunedClassifier",
    "classifier_logits",
    "classify",
    "conditional_weights",
    "finetune_classifier",
    "finetune_loss",
    "recall_at_k",
    "retrieve",
    "sample_conditional",
    "sample_gaussian_conditional",
]
