r"""Crossmodal classification (Algorithm 2) and prior fine-tuning (eqs. 32-35).

Section 4 of Baptista, Stuart & Tran (2025). With label embeddings :math:`G_i` (rows of
``label_emb``, the columns of the paper's :math:`G \in \mathbb R^{n_e \times K}`) and prior
logits :math:`F \in \mathbb R^K` (eq. 32, :math:`\tilde\mu^K_v = \sum_i \mathrm{softmax}(F)_i \delta_{v^i}`),
the class probabilities of a feature :math:`\bar g_u(u)` are

.. math::  w_i(u) = \mathrm{softmax}_i\big(\mathrm{sim}(\bar g_u(u), G_i)/\tau + F_i\big)      \quad (33)

(normaliser over the K labels; (33) prints M, see the docs page on the papers' typos), and the prediction is
their argmax (35, corrected from "argmin"). ``F = 0`` is the zero-shot classifier (31).

Fine-tuning freezes the image encoder and minimises over :math:`\vartheta = (F)` or :math:`(G, F)`

.. math::  L^K_{fine}(\vartheta) = -\frac1M\sum_{m}\big(z_m\big)_{y_m}
    + \frac1M\sum_m \log\frac1K\sum_{i=1}^K e^{(z_m)_i},
    \qquad z_m = \mathrm{sim}(\bar g_u(u^m), G)/\tau + F,             \quad (34)

the softmax cross-entropy of a linear head on frozen features, minus :math:`\log K` (the expectation
over :math:`\hat\mu^K_v` is the uniform mean over the K labels).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from clipmath.multimodal.inference.retrieval import (
    as_logit_scale,
    check_embeddings,
    check_positive_int,
    tilted_logits,
)

logger = logging.getLogger(__name__)


def _check_prior(prior_logits: Tensor | None, n_labels: int) -> None:
    if prior_logits is None:
        return
    if not isinstance(prior_logits, Tensor) or tuple(prior_logits.shape) != (n_labels,):
        shape = tuple(prior_logits.shape) if isinstance(prior_logits, Tensor) else type(prior_logits).__name__
        raise ValueError(f"prior_logits: expected a ({n_labels},) tensor, one entry per label, got {shape}")
    if not torch.isfinite(prior_logits).all():
        raise ValueError("prior_logits: contains NaN or Inf")


def classifier_logits(
    emb_u: Tensor,
    label_emb: Tensor,
    logit_scale: Tensor | float,
    prior_logits: Tensor | None = None,
    metric: str = "cosine",
) -> Tensor:
    r"""The logits :math:`\mathrm{sim}(\bar g_u(u), G_i)/\tau + F_i` of eq. 33, differentiable in all inputs.

    Args:
        emb_u: (Q, n_e) features :math:`g_u(u)` (normalised by the ``cosine`` metric).
        label_emb: (K, n_e) label embeddings :math:`G_i = g_v(v^i)`.
        logit_scale: ``log(1/tau)``, a float or a one-element tensor.
        prior_logits: (K,) prior logits F; None for F = 0.
        metric: alignment metric, one of ``cosine``, ``inner``, ``neg_sq_l2``.

    Returns:
        (Q, K) logits.
    """
    logits = tilted_logits(emb_u, label_emb, logit_scale, metric)
    _check_prior(prior_logits, label_emb.shape[0])
    return logits if prior_logits is None else logits + prior_logits.to(logits.dtype)


def classify(
    emb_u: Tensor,
    label_emb: Tensor,
    logit_scale: Tensor | float,
    prior_logits: Tensor | None = None,
    metric: str = "cosine",
) -> tuple[Tensor, Tensor]:
    r"""Crossmodal classifier (Algorithm 2) with the probabilities of eq. 33.

    Args:
        emb_u: (Q, n_e) embeddings :math:`g_u(u)` of the inputs to classify.
        label_emb: (K, n_e) embeddings :math:`g_v(v^i)` of the K labels.
        logit_scale: ``log(1/tau)``, a float or a one-element tensor.
        prior_logits: (K,) prior logits F of eq. 32; None (F = 0) is zero-shot.
        metric: alignment metric, one of ``cosine``, ``inner``, ``neg_sq_l2``.

    Returns:
        ``(predicted, probabilities)``: (Q,) label indices (argmax, eq. 35) and (Q, K) rows of
        :math:`\mathrm{softmax}(s/\tau + F)`.

    Raises:
        ValueError: for malformed embeddings or prior, or an unknown metric.
    """
    probabilities = classifier_logits(emb_u, label_emb, logit_scale, prior_logits, metric).softmax(dim=1)
    return probabilities.argmax(dim=1), probabilities


def finetune_loss(
    features_u: Tensor,
    labels: Tensor,
    label_emb: Tensor,
    logit_scale: Tensor | float,
    prior_logits: Tensor | None = None,
    metric: str = "cosine",
) -> Tensor:
    r"""The fine-tuning loss :math:`L^K_{fine}` of eq. 34 (cross-entropy minus log K).

    Args:
        features_u: (M, n_e) frozen features :math:`\bar g_u(u^m)`.
        labels: (M,) integer labels :math:`y_m` in 0..K-1.
        label_emb: (K, n_e) label embeddings G (rows).
        logit_scale: ``log(1/tau)``, a float or a one-element tensor.
        prior_logits: (K,) prior logits F; None for F = 0.
        metric: alignment metric, one of ``cosine``, ``inner``, ``neg_sq_l2``.

    Returns:
        Scalar loss.
    """
    logits = classifier_logits(features_u, label_emb, logit_scale, prior_logits, metric)
    _check_labels(labels, features_u.shape[0], label_emb.shape[0])
    positives = logits.gather(1, labels.to(logits.device)[:, None]).squeeze(1)
    return (logits.logsumexp(dim=1) - math.log(label_emb.shape[0]) - positives).mean()


def _check_labels(labels: Tensor, n_samples: int, n_labels: int) -> None:
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or tuple(labels.shape) != (n_samples,):
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels: expected a ({n_samples},) integer tensor, got {shape}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(f"labels: expected values in 0..{n_labels - 1}, got {labels.min()}..{labels.max()}")


@dataclass
class FineTunedClassifier:
    """A crossmodal classifier with a learned prior (and optionally learned label embeddings).

    Attributes:
        label_emb: (K, n_e) label embeddings G.
        prior_logits: (K,) prior logits F, centred to mean zero (eq. 33 is invariant to a shift).
        logit_scale: ``log(1/tau)`` used in training, kept fixed.
        metric: alignment metric name.
        loss: final value of :math:`L^K_{fine}` on the fine-tuning set.
    """

    label_emb: Tensor
    prior_logits: Tensor
    logit_scale: float
    metric: str
    loss: float

    def classify(self, emb_u: Tensor) -> tuple[Tensor, Tensor]:
        """Predict with eq. 35: see :func:`classify`; ``emb_u`` is (Q, n_e)."""
        return classify(emb_u, self.label_emb, self.logit_scale, self.prior_logits, self.metric)


def finetune_classifier(
    features_u: Tensor,
    labels: Tensor,
    label_emb_init: Tensor,
    logit_scale: Tensor | float,
    *,
    learn_label_embeddings: bool = False,
    steps: int = 100,
    lr: float = 1.0,
    tol: float = 1e-7,
    metric: str = "cosine",
) -> FineTunedClassifier:
    r"""Minimise :math:`L^K_{fine}` (eq. 34) over F, or over (G, F), with the u encoder frozen.

    Only the frozen features are passed, so the encoder cannot move. The loss is smooth and, in F
    alone, convex, and the fine-tuning set is small (:math:`M \ll N`), so the whole set is one batch
    and L-BFGS with a strong-Wolfe line search runs to convergence. F starts at 0 and G at
    ``label_emb_init``.

    Args:
        features_u: (M, n_e) frozen features :math:`\bar g_u(u^m)` of the fine-tuning set.
        labels: (M,) integer labels in 0..K-1.
        label_emb_init: (K, n_e) label embeddings :math:`g_v(v^i)`, the zero-shot classifier.
        logit_scale: ``log(1/tau)``, a float or a one-element tensor; fixed during fine-tuning.
        learn_label_embeddings: also learn G (otherwise only F).
        steps: maximum L-BFGS iterations.
        lr: L-BFGS step length (1 is its natural scale).
        tol: stop once every gradient entry is below ``tol`` in absolute value (or after ``steps``).
            In F the gradient is :math:`\bar w - \hat\pi` (mean predicted minus empirical label
            frequencies), so ``tol`` bounds that gap directly.
        metric: alignment metric, one of ``cosine``, ``inner``, ``neg_sq_l2``.

    Returns:
        The :class:`FineTunedClassifier`.

    Raises:
        ValueError: for malformed features, labels or embeddings, or ``steps < 1``.
    """
    check_embeddings(features_u=features_u, label_emb_init=label_emb_init)
    _check_labels(labels, features_u.shape[0], label_emb_init.shape[0])
    check_positive_int("steps", steps)
    logit_scale = as_logit_scale(logit_scale).item()
    features_u = features_u.detach()
    dtype = torch.promote_types(features_u.dtype, torch.float32)
    label_emb = label_emb_init.detach().to(dtype).clone().requires_grad_(learn_label_embeddings)
    prior_logits = torch.zeros(label_emb.shape[0], dtype=dtype, device=label_emb.device, requires_grad=True)
    params = [prior_logits, label_emb] if learn_label_embeddings else [prior_logits]
    # No stop on a small change of the loss: near the optimum it shrinks like the squared gradient
    # and would end the run long before the gradient reaches ``tol``.
    optimizer = torch.optim.LBFGS(
        params, lr=lr, max_iter=steps, tolerance_grad=tol, tolerance_change=0.0, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = finetune_loss(features_u, labels, label_emb, logit_scale, prior_logits, metric)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
        final = closure().item()
    logger.info("fine-tuned classifier: L_fine = %.6g after at most %d L-BFGS steps", final, steps)
    prior_logits = prior_logits.detach()
    return FineTunedClassifier(label_emb.detach(), prior_logits - prior_logits.mean(), logit_scale, metric, final)
