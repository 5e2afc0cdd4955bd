r"""Shared pieces of the GCA experiments (``gca-views``, ``gca-domains``): shard samples, the probe config, measures.

Not an experiment: the experiments import it (and never each other).

* :func:`image_samples`: (N, C, H, W) images as PNG shard samples with their label (and domain);
* :class:`ProbeConfig`: the frozen linear probe of :func:`clipmath.multimodal.probe.linear_probe`;
* :func:`plan_departure`: how far GCA-INCE's Sinkhorn plan is from InfoNCE's row softmax
  (barely at ε = 0.5, where the cosine kernel lies in [e^-2, e^2] and Sinkhorn converges in a
  few steps);
* :func:`plan_mass`: the loss plan's mass on noisy pairs against clean ones (the mechanism a
  third-party summary of Chen et al. 2024 gives for GCA-UOT: it "adaptively weights positive
  alignments");
* :func:`stats`, :func:`verdict`: mean ± std over seeds and a verdict on a difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from clipmath.datasets import stratified_split
from clipmath.datasets.png import encode_png
from clipmath.experiments.config import check_values
from clipmath.multimodal.model import BimodalModel
from clipmath.multimodal.ot import sinkhorn
from clipmath.multimodal.trainer import to_device


@dataclass
class ProbeConfig:
    """The frozen linear probe (:func:`clipmath.multimodal.probe.linear_probe`).

    Attributes:
        l2_grid: ridge penalties tried, chosen on a stratified part of the training features.
        val_fraction: share of each training class held out to choose the penalty.
        max_iter: L-BFGS iterations per fit.
        baselines: also probe the raw pixels and the untrained encoder (the floors of the table).
    """

    l2_grid: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1])
    val_fraction: float = 0.2
    max_iter: int = 500
    baselines: bool = True

    def __post_init__(self) -> None:
        check_values(
            (
                "probe.l2_grid",
                self.l2_grid,
                bool(self.l2_grid) and all(x > 0 for x in self.l2_grid),
                "a non-empty list of penalties > 0",
            ),
            ("probe.val_fraction", self.val_fraction, 0 < self.val_fraction < 1, "a number in (0, 1)"),
            ("probe.max_iter", self.max_iter, self.max_iter >= 1, "an integer >= 1"),
        )


def image_samples(
    images: np.ndarray, labels: np.ndarray, indices: np.ndarray, prefix: str = "img", domains: np.ndarray | None = None
):
    """Shard samples ``{"__key__": f"{prefix}-{i:07d}", "image": PNG, "label": int}`` of (N, C, H, W) images.

    The key carries the image's index i in ``images``, which :class:`~clipmath.experiments.gca_augment.TwoViews`
    reads to never pair a sample with itself as "unrelated". With ``domains`` ((N,) integers), each
    sample also holds ``"domain": int`` (stored as ``{key}.domain.cls``).
    """
    for i in indices.tolist():
        pixels = images[i].transpose(1, 2, 0)
        sample = {
            "__key__": f"{prefix}-{i:07d}",
            "image": encode_png(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels),
            "label": int(labels[i]),
        }
        if domains is not None:
            sample["domain"] = int(domains[i])
        yield sample


def subset(labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Indices of a stratified subset of ``size`` of the labels (all of them for None or a larger size)."""
    if size is None or size >= len(labels):
        return np.arange(len(labels))
    return stratified_split(labels, size / len(labels), seed=seed)[1]


@torch.no_grad()
def plan_departure(z_u: Tensor, z_v: Tensor, tau: float, n_iter: int = 10, batch_size: int = 256) -> float:
    r"""Mean total variation between the row-normalised Sinkhorn plan and the row softmax.

    On consecutive batches of B cross-view pairs, with logits :math:`\cos/\tau`:
    :math:`\frac1{2B}\sum_i\sum_j |\tilde P_{ij} - \mathrm{softmax}_j(S_{i\cdot})|`, where
    :math:`\tilde P` is the GCA-INCE plan after ``n_iter`` Sinkhorn iterations with each row scaled
    to sum 1. 0 means GCA-INCE's rows are InfoNCE's (expected near 0 at ε = 0.5: a flat kernel).

    Args:
        z_u: (N, n_e) embeddings of one view.
        z_v: (N, n_e) embeddings of the other.
        tau: ε.
        n_iter: Sinkhorn iterations.
        batch_size: B.
    """
    total, count = 0.0, 0
    for start in range(0, len(z_u) - batch_size + 1, batch_size):
        u = F.normalize(z_u[start : start + batch_size].double(), dim=1)
        v = F.normalize(z_v[start : start + batch_size].double(), dim=1)
        logits = u @ v.T / tau
        zeros = logits.new_zeros(batch_size)
        log_plan = sinkhorn(logits, log_a=zeros, log_b=zeros, max_iter=n_iter, tol=None).log_plan
        rows = torch.softmax(log_plan, dim=1)
        total += 0.5 * float((rows - torch.softmax(logits, dim=1)).abs().sum(1).mean())
        count += 1
    return total / max(count, 1)


@torch.no_grad()
def plan_mass(model: BimodalModel, loss_fn: torch.nn.Module, stream: Any, epoch: int, device: torch.device) -> dict:
    r"""How a trained model's loss plan weighs noisy pairs against clean ones, over one epoch of batches.

    Each batch's plan :math:`P` (the loss's ``LossOutput.plan``) is scaled to total mass B. Sums
    over the epoch give, for noisy and clean pairs, the mean diagonal entry :math:`P_{ii}`, the
    mean marginal mass :math:`\frac12((P\mathbb 1)_i + (P^\top\mathbb 1)_i)`, and the mean
    diagonal of the row softmax of the same logits (InfoNCE's plan, the reference).

    Returns:
        ``{"noisy_fraction", "n_pairs", "diag_ratio", "softmax_diag_ratio", "marginal_ratio",
        "diag_noisy", "diag_clean"}``; the ratios are noisy over clean (nan without noisy pairs).
    """
    model.eval()
    sums = {key: 0.0 for key in ("diag_n", "diag_c", "soft_n", "soft_c", "marg_n", "marg_c")}
    n_noisy = n_pairs = 0
    for batch in stream.epoch(epoch):
        batch = to_device(batch, device)
        out = model(batch["u"], batch["v"])
        result = loss_fn(out.z_u, out.z_v, logit_scale=out.logit_scale, logit_bias=out.logit_bias)
        plan = result.plan.double()
        plan = plan * (plan.shape[0] / plan.sum())
        soft = torch.softmax(result.logits.double(), dim=1)
        marginal = 0.5 * (plan.sum(1) + plan.sum(0))
        noisy = batch["noisy"].bool()
        for name, values in (("diag", plan.diagonal()), ("soft", soft.diagonal()), ("marg", marginal)):
            sums[f"{name}_n"] += float(values[noisy].sum())
            sums[f"{name}_c"] += float(values[~noisy].sum())
        n_noisy += int(noisy.sum())
        n_pairs += len(noisy)
    n_clean = n_pairs - n_noisy

    def ratio(name: str) -> float:
        if not n_noisy or not n_clean:
            return math.nan
        return (sums[f"{name}_n"] / n_noisy) / (sums[f"{name}_c"] / n_clean)

    return {
        "noisy_fraction": n_noisy / max(n_pairs, 1),
        "n_pairs": n_pairs,
        "diag_ratio": ratio("diag"),
        "softmax_diag_ratio": ratio("soft"),
        "marginal_ratio": ratio("marg"),
        "diag_noisy": sums["diag_n"] / n_noisy if n_noisy else math.nan,
        "diag_clean": sums["diag_c"] / n_clean if n_clean else math.nan,
    }


def stats(values: list[float]) -> dict:
    """Mean, sample standard deviation (ddof = 1; 0 for one value) and count of the values.

    Args:
        values: per-seed results; ``None`` and NaN entries are dropped first.

    Returns:
        ``{"mean": float, "std": float, "n": int}``; NaN mean and std when no value is left.
    """
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0, "n": len(array)}


def verdict(delta: float, se: float) -> str:
    """Whether a predicted positive difference held, judged against two standard errors.

    Args:
        delta: the measured difference, positive when the prediction holds.
        se: its standard error; NaN for one seed (then only the sign of the mean is judged).

    Returns:
        A phrase for the report: "held" (delta > 2 se), "held in the mean" (0 < delta <= 2 se),
        "NOT held in the mean" (-2 se <= delta <= 0) or "NOT held" (delta < -2 se), with the reason.
    """
    if math.isnan(se):
        return "held in the mean (one seed: no s.e.)" if delta > 0 else "NOT held in the mean (one seed: no s.e.)"
    if delta > 0:
        return "held" if delta > 2 * se else "held in the mean, within 2 s.e."
    return "NOT held (reversed beyond 2 s.e.)" if delta < -2 * se else "NOT held in the mean (within 2 s.e.)"


@torch.no_grad()
def encoder_outputs(model: BimodalModel, images: Tensor, chunk: int = 512) -> tuple[Tensor, Tensor]:
    """(h, z) of images through the model's u encoder in eval mode, on the CPU.

    h is the backbone features of the ``projected`` encoder (what a linear probe reads) and z
    its projection; for any other encoder both are its output.

    Args:
        model: the trained model (both views share ``g_u``).
        images: (N, C, H, W) uint8 images, un-augmented.
        chunk: images per forward pass.

    Returns:
        ((N, n_features), (N, n_e)) float tensors.
    """
    model.eval()
    encoder = model.g_u
    device = next(model.parameters()).device
    projected = hasattr(encoder, "projector")  # the ``projected`` encoder; any other: h = z = its output
    features, projections = [], []
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(device)
        h = encoder.features(x) if projected else encoder(x)
        features.append(h.cpu())
        projections.append((encoder.projector(h) if projected else h).cpu())
    return torch.cat(features), torch.cat(projections)
