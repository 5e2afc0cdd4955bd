r"""MMD losses: conditional (Appendix B, Example B.1) and joint (Problem 3.11) of Baptista et al. (2025).

The divergence is the maximum mean discrepancy (eq. 60),

.. math::
    D_{mmd}(\pi, \pi') = \mathbb E_{\pi\otimes\pi} k(x, x') - 2\,\mathbb E_{\pi\otimes\pi'} k(x, y)
      + \mathbb E_{\pi'\otimes\pi'} k(y, y'),

with kernels on the *raw modality data*, not on the embeddings: these losses therefore take
the batch inputs themselves as extra keyword inputs ``u=`` and ``v=`` (any shape (B, ...),
flattened to (B, d_u) and (B, d_v)). Class labels should be passed one-hot. Kernels
(one family and one set of parameters for both modalities):

- ``gaussian``: :math:`k(x, y) = \exp(-|x - y|^2 / (2h^2))`, ``bandwidth`` :math:`h` (default 1);
- ``polynomial``: :math:`k(x, y) = (\langle x, y\rangle + c)^p`, ``degree`` :math:`p` (default 2)
  and ``offset`` :math:`c \ge 0` (default 1).

**Batch estimators.** As eq. 12 does for :math:`L^N_{cond}`, the population measures
:math:`\mu, \mu_u, \mu_v` are replaced by the empirical measures of the batch, every index
tuple included (our normalisation, the paper's constants being illegible: :math:`\rho^N(u_j|v_i) = B\,P_{ji}` with
:math:`P = \mathrm{softmax}` of the logits over u, each tuple averaged). The model conditional is
then :math:`\nu^N_{u|v_i} = \sum_j P_{ji}\,\delta_{u_j}`. The paper's empirical form excludes the
tuples :math:`j = k` and :math:`i = k`; we keep them, because with those exclusions a uniform
:math:`P` scores :math:`-\tfrac12\,\overline{K}_{off} < 0` while perfect alignment
(:math:`P = I`) scores 0, so the excluded estimator rewards ignoring the pairing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from clipmath.multimodal.checks import PendingChecks, check_or_defer
from clipmath.multimodal.directions import resolve_weights
from clipmath.multimodal.logits import no_autocast
from clipmath.multimodal.losses.base import LossOutput, register
from clipmath.multimodal.losses.pair import PairLoss

KERNELS = ("gaussian", "polynomial")


def gaussian_gram(x: Tensor, bandwidth: float) -> Tensor:
    r"""Gram matrix :math:`K_{ij} = \exp(-|x_i - x_j|^2 / (2h^2))`.

    Args:
        x: (B, d) data points.
        bandwidth: :math:`h > 0`.

    Returns:
        (B, B) symmetric positive semi-definite matrix with unit diagonal.
    """
    return torch.exp(-torch.cdist(x, x).square() / (2 * bandwidth**2))


def polynomial_gram(x: Tensor, degree: int, offset: float) -> Tensor:
    r"""Gram matrix :math:`K_{ij} = (\langle x_i, x_j\rangle + c)^p`.

    Args:
        x: (B, d) data points.
        degree: :math:`p \ge 1`.
        offset: :math:`c \ge 0` (keeps the kernel positive semi-definite).

    Returns:
        (B, B) symmetric positive semi-definite matrix.
    """
    return (x @ x.T + offset) ** degree


def make_gram(
    kernel: str, bandwidth: float | None, degree: int | None, offset: float | None
) -> Callable[[Tensor], Tensor]:
    """The Gram-matrix function of ``kernel`` with its parameters checked and defaulted.

    Raises:
        ValueError: for an unknown kernel, a parameter of the other kernel, or a bad value.
    """
    if kernel == "gaussian":
        if degree is not None or offset is not None:
            raise ValueError(f"degree={degree!r}, offset={offset!r}: only used with kernel='polynomial'")
        bandwidth = 1.0 if bandwidth is None else bandwidth
        if not (isinstance(bandwidth, (int, float)) and math.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError(f"bandwidth={bandwidth!r}: expected a finite number > 0")
        return functools.partial(gaussian_gram, bandwidth=float(bandwidth))
    if kernel == "polynomial":
        if bandwidth is not None:
            raise ValueError(f"bandwidth={bandwidth!r}: only used with kernel='gaussian'")
        degree = 2 if degree is None else degree
        offset = 1.0 if offset is None else offset
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise ValueError(f"degree={degree!r}: expected an integer >= 1")
        if not (isinstance(offset, (int, float)) and math.isfinite(offset) and offset >= 0):
            raise ValueError(f"offset={offset!r}: expected a finite number >= 0")
        return functools.partial(polynomial_gram, degree=degree, offset=float(offset))
    raise ValueError(f"kernel={kernel!r} unknown; expected one of {', '.join(KERNELS)}")


def _mmd_u_given_v(logits: Tensor, gram_u: Tensor) -> Tensor:
    # Column i of P is nu^N_{u|v_i}; the v|u term is this function on the transposed problem.
    batch = logits.shape[0]
    p = torch.softmax(logits, dim=0)
    kp = gram_u @ p
    return (0.5 * (p * kp).sum() - kp.diagonal().sum()) / batch


def mmd_conditional_loss(
    logits: Tensor,
    gram_u: Tensor,
    gram_v: Tensor,
    weight_u_given_v: float,
    weight_v_given_u: float,
) -> Tensor:
    r"""Batch :math:`L^N_{cond,mmd}(\theta;\lambda_u,\lambda_v) = \lambda_u L(1,0) + \lambda_v L(0,1)` (Example B.1).

    With :math:`P = \mathrm{softmax}_{\text{over } u}(S)` (:math:`P_{ji}` the weight of
    :math:`u_j` given :math:`v_i`) and :math:`Q = \mathrm{softmax}_{\text{over } v}(S)`,

    .. math::
        L(1,0) = \frac1B\sum_i\Big[\tfrac12\sum_{j,k}K^u_{jk}P_{ji}P_{ki} - \sum_k K^u_{ik}P_{ki}\Big]
               = \frac1B\sum_i \tfrac12\Big\|\phi(u_i) - \sum_j P_{ji}\phi(u_j)\Big\|^2_{\mathcal H}
                 - \frac1{2B}\sum_i K^u_{ii},

    the batch form of :math:`\tfrac12\mathbb E[k_u\rho\rho'] - \mathbb E[k_u\rho']`, which is
    the θ-dependent part of :math:`\tfrac12\mathbb E_v D_{mmd}(\mu_{u|v}\|\nu_{u|v})`; so
    :math:`L(1,0) \ge -\frac1{2B}\sum_i K^u_{ii}`. :math:`L(0,1)` is the same with
    :math:`Q^\top` and :math:`K^v`.

    Args:
        logits: (B, B) scores :math:`S_{ij}` of :math:`(u_i, v_j)`, positives on the diagonal.
        gram_u: (B, B) kernel matrix :math:`K^u` of the u data (unused when ``weight_u_given_v`` is 0).
        gram_v: (B, B) kernel matrix :math:`K^v` of the v data (unused when ``weight_v_given_u`` is 0).
        weight_u_given_v: :math:`\lambda_u`.
        weight_v_given_u: :math:`\lambda_v`.

    Returns:
        Scalar loss.
    """
    loss = logits.new_zeros(())
    if weight_u_given_v:
        loss = loss + weight_u_given_v * _mmd_u_given_v(logits, gram_u)
    if weight_v_given_u:
        loss = loss + weight_v_given_u * _mmd_u_given_v(logits.T, gram_v)
    return loss


def mmd_joint_loss(logits: Tensor, gram_u: Tensor, gram_v: Tensor) -> Tensor:
    r"""Batch :math:`L_{joint,mmd}` (Optimization Problem 3.11) with the product kernel.

    .. math::
        L_{joint,mmd} = -2\,\mathbb E_{x\sim\mu,\,y\sim\nu} k(x, y) + \mathbb E_{y,y'\sim\nu\otimes\nu} k(y, y'),
        \qquad k((u,v),(u',v')) = k_u(u,u')\,k_v(v,v').

    Since :math:`\nu = \rho\,\mu_u\otimes\mu_v` with :math:`\rho = e^S/\mathbb E_{\mu_u\otimes\mu_v}e^S`,
    replacing :math:`\mu_u\otimes\mu_v` by the product of the batch marginals (all :math:`B^2`
    pairs :math:`(u_j, v_l)`) gives the self-normalised
    :math:`\nu^N = \sum_{j,l} W_{jl}\,\delta_{(u_j, v_l)}` with :math:`W = \mathrm{softmax}` of all
    :math:`B^2` logits. With :math:`\mu^N = \frac1B\sum_i\delta_{(u_i,v_i)}`,

    .. math::
        L = -\frac2B\sum_i\sum_{j,l}K^u_{ij}W_{jl}K^v_{li}
            + \sum_{j,l,j',l'}W_{jl}W_{j'l'}K^u_{jj'}K^v_{ll'}
          = -\frac2B\operatorname{tr}(K^uWK^v) + \langle W, K^uWK^v\rangle_F .

    Adding :math:`\frac1{B^2}\sum_{i,i'}K^u_{ii'}K^v_{ii'}` gives :math:`D_{mmd}(\mu^N,\nu^N)\ge0`.

    Args:
        logits: (B, B) scores :math:`S_{ij}` of :math:`(u_i, v_j)`, positives on the diagonal.
        gram_u: (B, B) kernel matrix :math:`K^u` of the u data.
        gram_v: (B, B) kernel matrix :math:`K^v` of the v data.

    Returns:
        Scalar loss.
    """
    batch = logits.shape[0]
    w = torch.softmax(logits.flatten(), 0).view_as(logits)
    kwk = gram_u @ w @ gram_v
    return (w * kwk).sum() - 2 * kwk.diagonal().sum() / batch


class _KernelLoss(PairLoss):
    """Shared parts of the MMD losses: the kernel and the data inputs ``u``, ``v``."""

    reads = ("u", "v")

    def __init__(
        self,
        metric: str = "cosine",
        kernel: str = "gaussian",
        bandwidth: float | None = None,
        degree: int | None = None,
        offset: float | None = None,
    ):
        super().__init__(metric)
        self._gram = make_gram(kernel, bandwidth, degree, offset)
        self.kernel = kernel

    def data(self, name: str, x: Tensor | None, like: Tensor, checks: PendingChecks | None = None) -> Tensor:
        """Check the modality data ``x`` (B, ...) and flatten it to (B, d) in the dtype of ``like``.

        The shape is checked now; the values (finite) on ``checks`` when given, else now.
        """
        if x is None:
            raise ValueError(f"{name}: required by the MMD losses (kernels act on the raw {name} data)")
        if not isinstance(x, Tensor) or x.dim() == 0 or x.shape[0] != like.shape[0]:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name}={shape}: expected a tensor with batch size {like.shape[0]} first")
        x = x.reshape(x.shape[0], -1).to(device=like.device, dtype=like.dtype)

        def error(values: list[float]) -> ValueError | None:
            return None if values[0] else ValueError(f"{name}: contains NaN or Inf")

        check_or_defer(checks, torch.isfinite(x).all(), error)
        return x

    def loss_from_grams(self, logits: Tensor, gram_u: Tensor, gram_v: Tensor) -> Tensor:
        """The scalar loss of (B, B) logits and the (B, B) Gram matrices of u and v."""
        raise NotImplementedError

    def forward(
        self,
        z_u: Tensor,
        z_v: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
        *,
        u: Tensor | None = None,
        v: Tensor | None = None,
    ) -> LossOutput:
        r"""Loss of a paired batch.

        Args:
            z_u: (B, n_e) embeddings of u, row i paired with row i of ``z_v``.
            z_v: (B, n_e) embeddings of v.
            logit_scale: scalar tensor, :math:`\log(1/\tau)`.
            logit_bias: scalar tensor or None.
            u: (B, ...) the u inputs the embeddings came from (required).
            v: (B, ...) the v inputs (required).

        Returns:
            :class:`LossOutput` with the scalar loss and the (B, B) logits.

        Raises:
            ValueError: for bad embeddings, or ``u``/``v`` missing, mis-sized or non-finite.
        """
        logits, checks = self.pending_logits(z_u, z_v, logit_scale, logit_bias)
        with no_autocast(logits):
            gram_u = self._gram(self.data("u", u, logits, checks))
            gram_v = self._gram(self.data("v", v, logits, checks))
            loss = self.loss_from_grams(logits, gram_u, gram_v)
        checks.resolve()
        return LossOutput(loss, logits)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel={self.kernel!r}"


@register("mmd_conditional")
class MMDConditionalLoss(_KernelLoss):
    r"""Conditional MMD loss :math:`L_{cond,mmd}` (Appendix B, Example B.1 of Baptista et al. (2025)).

    Minimising it minimises :math:`\frac{\lambda_u}2\mathbb E_v D_{mmd}(\mu_{u|v}\|\nu_{u|v})
    + \frac{\lambda_v}2\mathbb E_u D_{mmd}(\mu_{v|u}\|\nu_{v|u})` (see :func:`mmd_conditional_loss`).
    Works with every metric (``cosine``, ``inner``, ``neg_sq_l2``; Remark 3.3). Invariant to
    ``logit_bias`` (the softmax removes it), which gets a zero gradient.

    Args:
        metric: alignment metric name.
        direction: ``two_sided`` (default, weights (1, 1)), ``u_given_v`` (2, 0) or
            ``v_given_u`` (0, 2), as for ``conditional``.
        weights: explicit ``(lambda_u, lambda_v)`` instead of ``direction``; ``lambda_u``
            weights the u|v term (Problem 3.4).
        kernel: ``gaussian`` or ``polynomial`` (module docstring).
        bandwidth: Gaussian bandwidth :math:`h` (default 1).
        degree: polynomial degree (default 2).
        offset: polynomial offset (default 1).

    Raises:
        ValueError: for an unknown metric, direction or kernel, invalid parameters, or both
            ``direction`` and ``weights``.
    """

    def __init__(
        self,
        metric: str = "cosine",
        direction: str | None = None,
        weights: tuple[float, float] | None = None,
        kernel: str = "gaussian",
        bandwidth: float | None = None,
        degree: int | None = None,
        offset: float | None = None,
    ):
        super().__init__(metric, kernel, bandwidth, degree, offset)
        self.weight_u_given_v, self.weight_v_given_u = resolve_weights(direction, weights)

    def loss_from_grams(self, logits: Tensor, gram_u: Tensor, gram_v: Tensor) -> Tensor:
        """:func:`mmd_conditional_loss` with the module's weights."""
        return mmd_conditional_loss(logits, gram_u, gram_v, self.weight_u_given_v, self.weight_v_given_u)


@register("mmd_joint")
class MMDJointLoss(_KernelLoss):
    r"""Joint MMD loss :math:`L_{joint,mmd}` (Optimization Problem 3.11 of Baptista et al. (2025)).

    :math:`D_{mmd}(\mu\|\nu(\theta))` up to a θ-independent constant, with the product kernel
    :math:`k_u k_v` and ν's expectations as self-normalised, ρ-weighted expectations over the
    batch's :math:`\mu^N_u\otimes\mu^N_v` (see :func:`mmd_joint_loss`). Works with every metric
    (``cosine``, ``inner``, ``neg_sq_l2``). Invariant to ``logit_bias``, which gets a zero
    gradient.

    Args:
        metric: alignment metric name.
        kernel: ``gaussian`` or ``polynomial`` (module docstring).
        bandwidth: Gaussian bandwidth :math:`h` (default 1).
        degree: polynomial degree (default 2).
        offset: polynomial offset (default 1).

    Raises:
        ValueError: for an unknown metric or kernel, or invalid kernel parameters.
    """

    def loss_from_grams(self, logits: Tensor, gram_u: Tensor, gram_v: Tensor) -> Tensor:
        """:func:`mmd_joint_loss` of the logits and Gram matrices."""
        return mmd_joint_loss(logits, gram_u, gram_v)
