r"""Evaluation of frozen representations: a linear probe, and the alignment and uniformity of embeddings.

* :func:`fit_linear_probe`: multinomial logistic regression on frozen features, fitted by
  L-BFGS in float64 (:class:`LinearProbe`);
* :func:`select_l2`: its ridge penalty chosen on a stratified validation part of the *training*
  features only;
* :func:`linear_probe`: select, refit on all training features, and score a test set once
  (the final test accuracy; nothing is chosen on it);
* :func:`alignment`, :func:`uniformity`: the two properties of Wang & Isola (2020) that the GCA
  paper's uniformity claims are about (Chen et al. 2024, the theory results on its poster).

This is the protocol the GCA paper's ImageNet/SVHN path follows (frozen features, no
augmentation, final test accuracy; the official code's ``linear_evaluation.py``), and not its
CIFAR one, which fine-tunes the whole encoder (``requires_grad`` set on the module, not its
parameters) and reports the best test accuracy over epochs (the same file).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

logger = logging.getLogger(__name__)

#: Ridge penalties :func:`select_l2` tries by default (per-sample loss scale, on standardised features).
DEFAULT_L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class LinearProbe:
    r"""A fitted multinomial logistic regression :math:`p(k \mid h) = \mathrm{softmax}(W\hat h + c)_k`.

    :math:`\hat h = (h - m) / s` standardises each feature with the training mean and standard
    deviation.

    Attributes:
        weight: (K, d) float64 :math:`W`.
        bias: (K,) float64 :math:`c`.
        mean: (d,) training feature means :math:`m`.
        scale: (d,) training feature standard deviations :math:`s` (1 where a feature is constant).
        l2: the ridge penalty it was fitted with.
        n_iter: L-BFGS iterations used.
        train_loss: final penalised training loss.
    """

    weight: Tensor
    bias: Tensor
    mean: Tensor
    scale: Tensor
    l2: float
    n_iter: int
    train_loss: float

    def logits(self, features: Tensor) -> Tensor:
        """(N, K) float64 class logits of (N, d) features."""
        x = (_check_features(features, "features").double() - self.mean) / self.scale
        if x.shape[1] != self.weight.shape[1]:
            raise ValueError(f"features: {x.shape[1]} columns; the probe was fitted on {self.weight.shape[1]}")
        return x @ self.weight.T + self.bias

    def predict(self, features: Tensor) -> Tensor:
        """(N,) int64 predicted classes of (N, d) features."""
        return self.logits(features).argmax(dim=1)

    def accuracy(self, features: Tensor, labels: Tensor) -> float:
        """Fraction of (N, d) features whose predicted class is the (N,) label."""
        labels = _check_labels(labels, len(features))
        return float((self.predict(features) == labels.to(self.weight.device)).double().mean())


def _check_features(features: Tensor, name: str) -> Tensor:
    if not isinstance(features, Tensor) or features.dim() != 2 or not features.is_floating_point():
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{name}={shape}: expected a floating tensor (N, d)")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name}: holds NaN or infinite values; expected finite features")
    return features


def _check_labels(labels: Tensor, n: int, name: str = "labels") -> Tensor:
    integer = (torch.int64, torch.int32, torch.int16, torch.uint8)
    if not isinstance(labels, Tensor) or labels.shape != (n,) or labels.dtype not in integer:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name}={shape}: expected an integer tensor ({n},)")
    if n and labels.min() < 0:
        raise ValueError(f"{name}: holds negative classes; expected classes in [0, K)")
    return labels.long()


def fit_linear_probe(
    features: Tensor,
    labels: Tensor,
    *,
    l2: float = 1e-3,
    n_classes: int | None = None,
    max_iter: int = 500,
    tol: float = 1e-7,
) -> LinearProbe:
    r"""Fit multinomial logistic regression on frozen features.

    Minimises the mean cross-entropy plus a ridge penalty on the weights (not the bias),

    .. math::
        \frac1N\sum_{n=1}^N -\log\mathrm{softmax}(W\hat h_n + c)_{y_n} + \frac{\ell_2}{2}\|W\|_F^2,

    a strictly convex problem for :math:`\ell_2 > 0`, by L-BFGS with a strong-Wolfe line search in
    float64 from :math:`W = 0, c = 0`, so the result depends on the data alone.

    Args:
        features: (N, d) frozen features of the training images.
        labels: (N,) their classes in [0, K).
        l2: ridge penalty :math:`\ell_2 > 0`.
        n_classes: K (default: the largest label + 1).
        max_iter: L-BFGS iterations at most.
        tol: stop when the gradient's largest entry is below this.

    Returns:
        The :class:`LinearProbe`.

    Raises:
        ValueError: for features that are not finite (N, d) floats, labels that are not (N,)
            classes below ``n_classes``, or a bad ``l2``, ``max_iter`` or ``tol``.
    """
    features = _check_features(features, "features")
    labels = _check_labels(labels, len(features))
    if len(features) == 0:
        raise ValueError("features=(0, d): expected at least one training sample")
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not 0 < l2 < math.inf:
        raise ValueError(f"l2={l2!r}: expected a finite number > 0")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r}: expected an integer >= 1")
    if not tol > 0:
        raise ValueError(f"tol={tol!r}: expected a number > 0")
    k = int(labels.max()) + 1 if n_classes is None else n_classes
    if isinstance(k, bool) or not isinstance(k, int) or k < 2 or int(labels.max()) >= k:
        raise ValueError(
            f"n_classes={n_classes!r}: expected an integer >= 2 above every label (max {int(labels.max())})"
        )
    x = features.detach().double()
    mean = x.mean(0)
    scale = x.std(0, unbiased=False)
    scale = torch.where(scale > 1e-12 * (1 + mean.abs()), scale, torch.ones_like(scale))
    x = (x - mean) / scale
    y = labels.to(x.device)
    weight = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + 0.5 * l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        final = float(F.cross_entropy(x @ weight.T + bias, y) + 0.5 * l2 * weight.square().sum())
    n_iter = int(optimizer.state[optimizer._params[0]].get("n_iter", 0))
    return LinearProbe(weight.detach(), bias.detach(), mean, scale, float(l2), n_iter, final)


def stratified_holdout(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded split of indices into (fit, validation), each class split in the same proportion.

    Of the :math:`n_c` samples of class c, ``round(fraction * n_c)`` chosen at random (at most
    :math:`n_c - 1`, so every class keeps a fitting sample) go to the validation part.

    Args:
        labels: (N,) integer classes.
        fraction: in (0, 1).
        seed: the split's seed.

    Returns:
        (fit indices, validation indices): sorted int64 tensors, disjoint, together 0..N-1.
    """
    labels = _check_labels(labels, len(labels))
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction!r}: expected a number in (0, 1)")
    generator = torch.Generator().manual_seed(seed)
    held = []
    for label in torch.unique(labels.cpu()):
        members = torch.nonzero(labels.cpu() == label).flatten()
        count = min(round(fraction * len(members)), len(members) - 1)
        held.append(members[torch.randperm(len(members), generator=generator)[:count]])
    is_held = torch.zeros(len(labels), dtype=torch.bool)
    is_held[torch.cat(held)] = True
    return torch.nonzero(~is_held).flatten(), torch.nonzero(is_held).flatten()


def select_l2(
    features: Tensor,
    labels: Tensor,
    grid: Sequence[float] = DEFAULT_L2_GRID,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    n_classes: int | None = None,
    max_iter: int = 500,
) -> tuple[float, dict[float, float]]:
    """The ridge penalty of ``grid`` with the best accuracy on a validation part of the training set.

    The training features are split by :func:`stratified_holdout`; a probe is fitted on the
    first part for each penalty and scored on the second. Ties go to the larger penalty.

    Args:
        features: (N, d) training features (never test features).
        labels: (N,) their classes.
        grid: candidate penalties, each > 0.
        val_fraction: share of each class held out for validation.
        seed: the split's seed.
        n_classes: K (default: the largest label + 1).
        max_iter: L-BFGS iterations per fit.

    Returns:
        (the chosen penalty, {penalty: validation accuracy}).
    """
    if not grid:
        raise ValueError("grid=[]: expected at least one penalty")
    labels = _check_labels(labels, len(features))
    k = int(labels.max()) + 1 if n_classes is None else n_classes
    fit, val = stratified_holdout(labels, val_fraction, seed)
    scores = {}
    for l2 in grid:
        probe = fit_linear_probe(features[fit], labels[fit], l2=float(l2), n_classes=k, max_iter=max_iter)
        scores[float(l2)] = probe.accuracy(features[val], labels[val])
    best = max(scores.values())
    return max(l2 for l2, score in scores.items() if score == best), scores


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    grid: Sequence[float] = DEFAULT_L2_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
    n_classes: int | None = None,
    max_iter: int = 500,
) -> dict[str, float]:
    """Linear-probe accuracy of frozen features: penalty chosen on training data, final test accuracy.

    The penalty is chosen by :func:`select_l2` on the training features, the probe refitted on
    all of them, and the test set scored once.

    Args:
        train_features: (N, d) features of the training images (no augmentation, encoder in eval mode).
        train_labels: (N,) their classes.
        test_features: (M, d) features of the test images, extracted the same way.
        test_labels: (M,) their classes.
        grid: candidate ridge penalties.
        val_fraction: share of each training class held out to choose the penalty.
        seed: the validation split's seed.
        n_classes: K (default: the largest training or test label + 1).
        max_iter: L-BFGS iterations per fit.

    Returns:
        ``{"test_accuracy", "train_accuracy", "val_accuracy" (of the chosen penalty), "l2"}``.
    """
    test_features = _check_features(test_features, "test_features")
    test_labels = _check_labels(test_labels, len(test_features), "test_labels")
    train_labels = _check_labels(train_labels, len(train_features), "train_labels")
    if test_features.shape[1] != train_features.shape[1]:
        raise ValueError(
            f"test_features: {test_features.shape[1]} columns; train_features have {train_features.shape[1]}"
        )
    k = n_classes or int(max(train_labels.max(), test_labels.max())) + 1
    l2, scores = select_l2(
        train_features, train_labels, grid, val_fraction=val_fraction, seed=seed, n_classes=k, max_iter=max_iter
    )
    probe = fit_linear_probe(train_features, train_labels, l2=l2, n_classes=k, max_iter=max_iter)
    return {
        "test_accuracy": probe.accuracy(test_features, test_labels),
        "train_accuracy": probe.accuracy(train_features, train_labels),
        "val_accuracy": scores[l2],
        "l2": l2,
    }


def alignment(z_u: Tensor, z_v: Tensor, alpha: float = 2.0) -> float:
    r"""Alignment of positive pairs, :math:`\mathbb E\,\|\hat z_u - \hat z_v\|_2^\alpha` (Wang & Isola 2020).

    On L2-normalised embeddings :math:`\hat z = z/\|z\|`; 0 when each pair coincides, 4 (for
    :math:`\alpha = 2`) when each pair is antipodal. Lower is better aligned.

    Args:
        z_u: (N, n_e) embeddings of one view.
        z_v: (N, n_e) embeddings of the other view, row i the positive of row i of ``z_u``.
        alpha: the exponent :math:`\alpha > 0`.

    Returns:
        The mean over the N pairs.
    """
    z_u, z_v = _check_features(z_u, "z_u"), _check_features(z_v, "z_v")
    if z_u.shape != z_v.shape:
        raise ValueError(f"z_v={tuple(z_v.shape)}: expected the shape of z_u {tuple(z_u.shape)}")
    if not alpha > 0:
        raise ValueError(f"alpha={alpha!r}: expected a number > 0")
    u, v = F.normalize(z_u.double(), dim=1), F.normalize(z_v.double(), dim=1)
    return float((u - v).norm(dim=1).pow(alpha).mean())


def uniformity(z: Tensor, t: float = 2.0) -> float:
    r"""Uniformity, :math:`\log \mathbb E_{i\ne j}\, e^{-t\|\hat z_i - \hat z_j\|_2^2}` (Wang & Isola 2020).

    Over the distinct pairs of the N L2-normalised embeddings; it is 0 when they all coincide and
    decreases as they spread over the sphere (for many points uniform on :math:`S^{n_e-1}` with
    large :math:`n_e` it tends to :math:`-2t`). Lower is more uniform.

    Args:
        z: (N, n_e) embeddings, N >= 2.
        t: the kernel's scale :math:`t > 0`.

    Returns:
        The log of the mean Gaussian potential.
    """
    z = _check_features(z, "z")
    if len(z) < 2:
        raise ValueError(f"z={tuple(z.shape)}: expected at least two embeddings")
    if not t > 0:
        raise ValueError(f"t={t!r}: expected a number > 0")
    x = F.normalize(z.double(), dim=1)
    sq = torch.pdist(x).square()
    return float(torch.logsumexp(-t * sq, dim=0) - math.log(len(sq)))


@torch.no_grad()
def extract(fn: Callable[[Tensor], Tensor], inputs: Tensor, batch_size: int = 512) -> Tensor:
    """``fn`` applied to ``inputs`` in chunks without gradients, concatenated.

    Args:
        fn: e.g. an encoder's ``features`` (put the module in eval mode first).
        inputs: (N, ...) inputs.
        batch_size: rows per call.

    Returns:
        (N, ...) outputs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected an integer >= 1")
    return torch.cat([fn(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])
