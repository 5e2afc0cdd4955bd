r"""The joint loss :math:`L_{joint}` (Optimization Problem 3.7 of Baptista et al. (2025)).

.. math::
    L_{joint}(\theta) = -\mathbb E_{(u,v)\sim\mu}[S(u, v)]
      + \log \mathbb E_{(u,v)\sim\mu_u\otimes\mu_v}\big[e^{S(u, v)}\big],

the θ-dependent part of :math:`D_{KL}(\mu\,\|\,\nu(\theta))` (Theorem 3.8). The first term uses
the positive pairs :math:`S_{ii}`; the second needs samples of the product of the marginals
(Remark 3.9), and the batch offers three estimators of it (``negatives``):

- ``off_diagonal``: every unpaired :math:`(u_i, v_j)`, :math:`i \ne j`:
  :math:`\log\frac{1}{B(B-1)}\sum_{i\ne j} e^{S_{ij}}`;
- ``all_pairs``: the product of the empirical marginals :math:`\mu^N_u\otimes\mu^N_v`,
  diagonal included: :math:`\log\frac1{B^2}\sum_{i,j} e^{S_{ij}}`. This is the plug-in that
  eq. 12 uses for :math:`L^N_{cond}`, so at batch level :math:`L^N_{cond} \le L^N_{joint}`
  exactly, by Jensen's inequality as in Theorem 3.10;
- ``shuffled``: one negative per row, :math:`u_i` with :math:`v_{\pi(i)}` for a derangement
  :math:`\pi`: :math:`\log\frac1B\sum_i e^{S_{i\pi(i)}}`, O(B) terms, the cheap estimator of
  Remark 3.9. Under Data Assumption 2.1 the batch pairs are i.i.d., so any fixed derangement
  gives product-of-marginals samples; the default is the cyclic shift
  :math:`\pi(i) = i + 1 \bmod B`, and a caller may pass its own ``permutation``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from clipmath.multimodal.losses.base import LossOutput, register
from clipmath.multimodal.losses.pair import PairLoss

NEGATIVES = ("off_diagonal", "all_pairs", "shuffled")


def check_negatives(negatives: str) -> None:
    """Raise ``ValueError`` unless ``negatives`` is one of :data:`NEGATIVES`."""
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives={negatives!r} unknown; expected one of {', '.join(NEGATIVES)}")


def cyclic_shift(batch_size: int, device: torch.device | str = "cpu") -> Tensor:
    r"""The derangement :math:`\pi(i) = i + 1 \bmod B` as a (B,) index tensor."""
    return torch.arange(1, batch_size + 1, device=device) % batch_size


def joint_loss(logits: Tensor, negatives: str = "off_diagonal", permutation: Tensor | None = None) -> Tensor:
    r"""Batch estimate of :math:`L_{joint}` (Problem 3.7) with the chosen product-of-marginals estimator.

    .. math::
        L = -\frac1B\sum_i S_{ii} + \log \widehat{\mathbb E}_{\mu_u\otimes\mu_v} e^{S}.

    Args:
        logits: (B, B) scores :math:`S_{ij}` of :math:`(u_i, v_j)`, positives on the diagonal.
        negatives: ``off_diagonal``, ``all_pairs`` or ``shuffled`` (see the module docstring).
        permutation: (B,) derangement for ``shuffled`` (default: the cyclic shift); must be
            None for the other estimators.

    Returns:
        Scalar loss.

    Raises:
        ValueError: for unknown ``negatives``, or ``permutation`` given without ``shuffled``.
    """
    check_negatives(negatives)
    if permutation is not None and negatives != "shuffled":
        raise ValueError(f"permutation: only used with negatives='shuffled', got negatives={negatives!r}")
    batch = logits.shape[0]
    positive = logits.diagonal().mean()
    if negatives == "all_pairs":
        return torch.logsumexp(logits.flatten(), 0) - 2 * math.log(batch) - positive
    if negatives == "off_diagonal":
        eye = torch.eye(batch, dtype=torch.bool, device=logits.device)
        off = logits.masked_fill(eye, -math.inf).flatten()
        return torch.logsumexp(off, 0) - math.log(batch * (batch - 1)) - positive
    if permutation is None:
        permutation = cyclic_shift(batch, logits.device)
    rows = torch.arange(batch, device=logits.device)
    return torch.logsumexp(logits[rows, permutation], 0) - math.log(batch) - positive


def check_permutation(permutation: Tensor, batch: int) -> None:
    """Raise ``ValueError`` unless ``permutation`` is a (B,) derangement of ``0 .. B-1``."""
    if not isinstance(permutation, Tensor) or permutation.shape != (batch,) or permutation.is_floating_point():
        shape = tuple(permutation.shape) if isinstance(permutation, Tensor) else type(permutation).__name__
        raise ValueError(f"permutation={shape}: expected an integer tensor of shape ({batch},)")
    index = permutation.to(torch.long).cpu()
    if not torch.equal(index.sort().values, torch.arange(batch)):
        raise ValueError(f"permutation={index.tolist()}: expected a permutation of 0..{batch - 1}")
    if (index == torch.arange(batch)).any():
        raise ValueError(f"permutation={index.tolist()}: has fixed points, which would use positive pairs as negatives")


@register("joint")
class JointLoss(PairLoss):
    r"""Joint loss :math:`L_{joint}` (Optimization Problem 3.7 of Baptista et al. (2025)).

    Minimising it minimises :math:`D_{KL}(\mu\,\|\,\nu(\theta))` (Theorem 3.8), and its
    population value bounds the conditional loss from above (Theorem 3.10). Works with every
    metric (``cosine``, ``inner``, ``neg_sq_l2``). Invariant to ``logit_bias`` (the bias adds
    :math:`b` to both terms and cancels), which gets a zero gradient.

    Args:
        metric: alignment metric name.
        negatives: estimator of :math:`\mathbb E_{\mu_u\otimes\mu_v}e^S`: ``off_diagonal``
            (default; needs B >= 2), ``all_pairs`` or ``shuffled`` (module docstring).

    Raises:
        ValueError: for an unknown metric or ``negatives``.
    """

    def __init__(self, metric: str = "cosine", negatives: str = "off_diagonal"):
        super().__init__(metric)
        check_negatives(negatives)
        self.negatives = negatives

    def forward(
        self,
        z_u: Tensor,
        z_v: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
        permutation: Tensor | None = None,
    ) -> LossOutput:
        r"""Loss of a paired batch.

        Args:
            z_u: (B, n_e) embeddings of u, row i paired with row i of ``z_v``.
            z_v: (B, n_e) embeddings of v.
            logit_scale: scalar tensor, :math:`\log(1/\tau)`.
            logit_bias: scalar tensor or None.
            permutation: (B,) integer derangement pairing :math:`u_i` with :math:`v_{\pi(i)}`,
                only with ``negatives="shuffled"``; default the cyclic shift.

        Raises:
            ValueError: for bad embeddings, a batch of one without ``all_pairs``, or a bad
                ``permutation``.
        """
        logits = self.logits(z_u, z_v, logit_scale, logit_bias)
        if self.negatives != "all_pairs" and logits.shape[0] < 2:
            raise ValueError(f"z_u: batch size 1 has no negative pairs for negatives={self.negatives!r}")
        if permutation is not None:
            check_permutation(permutation, logits.shape[0])
            permutation = permutation.to(device=logits.device, dtype=torch.long)
        return LossOutput(joint_loss(logits, self.negatives, permutation), logits)

    def extra_repr(self) -> str:
        """The metric and the negatives estimator, for ``repr``."""
        return f"{super().extra_repr()}, negatives={self.negatives!r}"
