r"""The GCA loss family (Chen et al. 2024): contrastive losses as entropic optimal transport.

Generalized Contrastive Alignment (Chen et al. 2024, §3) writes a contrastive loss as

.. math::
    \min_\theta\ d_M\big(P_{tgt}\,\|\,P_\theta\big), \qquad
    P_\theta = \arg\min_{P\in\mathcal B}\ h(P) + d_\Gamma(P\,\|\,K_\theta),

a proximal step from the Gibbs kernel :math:`K = e^{S}` of the logits
:math:`S_{ij} = e^{\text{logit\_scale}}\mathrm{sim}(z_u^i, z_v^j)\,(+b)` (the paper's :math:`s_{ij}`
with :math:`\varepsilon = \tau`, cost :math:`C = -\mathrm{sim}`), followed by a distance to a
target plan. Row i is :math:`u_i`, column j is :math:`v_j`; the positives of the cross-view
:math:`B\times B` form are the diagonal (:func:`~clipmath.multimodal.losses.targets.identity_pairs`),
or any target from :mod:`clipmath.multimodal.losses.targets`.

========== ============ ===================================== =================
loss       :math:`d_M`  :math:`\mathcal B` (steps)            paper
========== ============ ===================================== =================
ince       KL           rows, one projection                  §4.1
gca_ince   KL           rows and columns, ``n_iter`` Sinkhorn §4.2
rince      RINCE        rows, one projection                  §2, §4.3
gca_rince  RINCE        rows and columns, ``n_iter`` steps    §4.3, §11.5
gca_uot    KL + RINCE   KL-relaxed marginals (UOT)            §4.5, §11.4-11.5
========== ============ ===================================== =================

This is the paper's form, not the released code's (``gca_loss_cifar.py``, ``gca_loss_imagenet.py``): no clamping of the
cosine at 1e-7 (which kills the gradient of negative similarities), no :math:`2N\times 2N`
matrix whose self-pairs get the largest cost (there are no self-pairs across views), true
column scaling in every Sinkhorn step (the ImageNet module's ``gca_rince``/``gca_uot`` only ever
scale rows), and explicit weights ``w_kl``/``w_rince`` (the code's ``r1``/``r2`` mean opposite
things in its two modules).

A target that is not doubly stochastic (``domain``, ``class``) is scored with the generalised
KL :math:`\sum_{ij} P_{tgt}\log(P_{tgt}/P) - P_{tgt} + P`, mass terms included; the official
code drops them (``F.kl_div``) and the paper does not say what it used on PACS. Every loss is
divided by B (a mean over rows).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from clipmath.multimodal.checks import PendingChecks, check_or_defer
from clipmath.multimodal.logits import no_autocast
from clipmath.multimodal.losses.base import LossOutput, register
from clipmath.multimodal.losses.pair import PairLoss
from clipmath.multimodal.losses.targets import check_domain_weights, class_positives, domain_prior
from clipmath.multimodal.ot import GRAD_MODES, sinkhorn

TARGETS = ("identity", "domain", "class")


def generalized_kl(log_plan: Tensor, plan: Tensor, target: Tensor | None = None) -> Tensor:
    r"""Generalised KL to the target, per row.

    .. math::
        \frac1B \sum_{ij} P^{tgt}_{ij}\log\frac{P^{tgt}_{ij}}{P_{ij}} - P^{tgt}_{ij} + P_{ij}.

    For :math:`P_{tgt} = I` it is :math:`\frac1B\big(-\sum_i \log P_{ii} + \sum_{ij} P_{ij}\big) - 1`,
    computed from the diagonal alone.

    Args:
        log_plan: (B, m) :math:`\log P`, finite.
        plan: (B, m) :math:`P`.
        target: (B, m) non-negative :math:`P_{tgt}`, or None for the identity.

    Returns:
        Scalar divergence.
    """
    batch = log_plan.shape[0]
    if target is None:
        return (plan.sum() - log_plan.diagonal().sum()) / batch - 1.0
    return (torch.special.xlogy(target, target) - target * log_plan - target + plan).sum() / batch


def robust_term(
    log_kv: Tensor,
    neg_log_u: Tensor,
    target: Tensor | None,
    lam: float,
    q: float,
    checks: PendingChecks | None = None,
) -> Tensor:
    r"""The RINCE-type (:math:`W_1`) term of §4.3 and §11.5 of Chen et al. (2024).

    .. math::
        \frac1B\sum_i \frac1q\Big[\Big(\lambda\,\frac{[P_{tgt}\mathbb 1]_i}{u_i}\Big)^q
            - \Big(\sum_j P^{tgt}_{ij} K_{ij} v_j\Big)^q\Big],

    where :math:`P = \mathrm{diag}(u) K \mathrm{diag}(v)`, so :math:`K_{ij}v_j = P_{ij}/u_i`. With
    :math:`P_{tgt} = I` the positive term is :math:`(P_{ii}/u_i)^q`; for a general target it
    is the target-weighted mass of row i (our reading of "positives" for several of them).

    Args:
        log_kv: (B, m) :math:`\log K_{ij} + \log v_j`.
        neg_log_u: (B,) :math:`-\log u_i`.
        target: (B, m) non-negative :math:`P_{tgt}`, or None for the identity.
        lam: :math:`\lambda > 0`.
        q: :math:`q \in (0, 1]`.
        checks: where to queue the overflow check, resolved by the caller with the step's other
            checks (one sync); None checks now.

    Returns:
        Scalar term.

    Raises:
        ValueError: naming the logits when a term :math:`e^{q\,\cdot}` overflows the dtype. The
            terms grow like :math:`e^{q \max S}`: e.g. in float32 the cosine logits with
            :math:`q = 0.6` overflow below :math:`\tau \approx 7\cdot 10^{-3}`.
    """
    if target is None:
        log_pos = log_kv.diagonal()
        log_norm = math.log(lam) + neg_log_u
    else:
        log_pos = torch.logsumexp(log_kv + target.log(), dim=-1)
        log_norm = math.log(lam) + target.sum(-1).log() + neg_log_u
    limit = math.log(torch.finfo(log_kv.dtype).max / log_kv.shape[0])
    dtype = log_kv.dtype

    def error(values: list[float]) -> Exception | None:
        top = q * values[0]
        if not top > limit:
            return None
        return ValueError(
            f"logits: the RINCE terms exp(q * .) overflow {dtype} (q times the largest log-term "
            f"is {top:.1f} > {limit:.1f}); lower logit_scale (a larger tau) or q"
        )

    check_or_defer(checks, torch.maximum(log_pos.max(), log_norm.max()), error)
    return ((q * log_norm).exp() - (q * log_pos).exp()).mean() / q


def ince_loss(logits: Tensor, target: Tensor | None = None) -> LossOutput:
    r"""INCE, :math:`\mathrm{KL}(P_{tgt}\,\|\,\mathrm{Prox}^{KL}_{C_1}(K))` (§4.1 of Chen et al. (2024)).

    The KL projection of :math:`K = e^S` onto the rows' constraint :math:`P\mathbb 1 = \mathbb 1`
    is the row softmax, one Sinkhorn row step, so with :math:`P_{tgt} = I` the loss is the
    InfoNCE cross-entropy :math:`-\frac1B\sum_i \log\frac{e^{S_{ii}}}{\sum_j e^{S_{ij}}}` of u→v
    (rows, ``v_given_u``). The ``clip`` loss is the average of this and the same on
    :math:`S^\top` (v→u).

    Paper vs code: the official ``hs_ince`` is the same cross-entropy, but on the
    :math:`2N\times 2N` matrix of both views with the cosine clamped at 1e-7 and each self-pair
    given the largest cost instead of being absent (``gca_loss_cifar.py``).

    Args:
        logits: (B, B) :math:`S`, positives on the diagonal.
        target: (B, B) :math:`P_{tgt}`, or None for the identity.

    Returns:
        :class:`LossOutput` with the loss, the logits and the row-softmax plan.
    """
    log_plan, _ = _row_step(logits)
    plan = log_plan.exp()
    return LossOutput(generalized_kl(log_plan, plan, target), logits, plan)


def gca_ince_loss(
    logits: Tensor,
    target: Tensor | None = None,
    *,
    n_iter: int = 10,
    grad: str = "unrolled",
    checks: PendingChecks | None = None,
) -> LossOutput:
    r"""GCA-INCE, :math:`\mathrm{KL}(P_{tgt}\,\|\,P^{(2T)})`, Sinkhorn plan (§4.2 of Chen et al. (2024)).

    :math:`P^{(2T)}` is :math:`T` = ``n_iter`` alternations of the row and column KL projections of
    :math:`K = e^S` onto :math:`P\mathbb 1 = \mathbb 1`, :math:`P^\top\mathbb 1 = \mathbb 1`
    (:func:`~clipmath.multimodal.ot.sinkhorn` with :math:`a = b = \mathbb 1`). For
    :math:`P_{tgt} = I` the loss is :math:`-\frac1B\sum_i\log P_{ii}` (the ImageNet module's "kl"
    form; the column step makes the mass term vanish), and by the Pythagorean property of
    KL projections it is at most :func:`ince_loss` (§5.2).

    Paper vs code: the CIFAR module scores the row-renormalised plan,
    :math:`-\frac1B\sum_i\log(P_{ii}/\sum_j P_{ij})`, and both modules use the clamped
    :math:`2N\times 2N` kernel with the self-pair at the largest cost (§8, §9.3-9.4).

    Args:
        logits: (B, B) :math:`S`, positives on the diagonal.
        target: (B, B) :math:`P_{tgt}`, or None for the identity.
        n_iter: :math:`T \ge 1`, Sinkhorn iterations.
        grad: ``"unrolled"`` (as the official code) or ``"envelope"``.
        checks: where to queue the value checks, resolved by the caller with the step's other
            checks (one sync); None checks now.

    Returns:
        :class:`LossOutput` with the loss, the logits, :math:`P^{(2T)}` and ``n_iter``.
    """
    _check_hyperparameters(n_iter=n_iter, grad=grad)
    ones = logits.new_zeros(logits.shape[0])
    result = sinkhorn(logits, log_a=ones, log_b=ones, max_iter=n_iter, tol=None, grad=grad, checks=checks)
    loss = generalized_kl(result.log_plan, result.plan, target)
    return LossOutput(loss, logits, result.plan, result.n_iter, result.converged)


def rince_loss(
    logits: Tensor,
    target: Tensor | None = None,
    *,
    lam: float = 0.01,
    q: float = 0.6,
    checks: PendingChecks | None = None,
) -> LossOutput:
    r"""RINCE (Chuang et al. 2022; §2 of Chen et al. (2024)).

    .. math::
        \frac1B\sum_i -\frac1q e^{q S_{ii}} + \frac1q\Big(\lambda \sum_j e^{S_{ij}}\Big)^q,

    :func:`robust_term` of the row-softmax plan (:math:`u_i = 1/\sum_j e^{S_{ij}}`, :math:`v = \mathbb 1`).
    Not invariant to ``logit_bias``: a shift :math:`b` multiplies the loss by :math:`e^{qb}`.

    With cosine logits :math:`S = \mathrm{sim}/\tau` a positive pair weighs :math:`e^{qS_{ii}} =
    e^{(q/\tau)\cos_{ii}}`: the robustness is set by :math:`q/\tau`, 1.2 in the paper (:math:`q = 0.6`,
    :math:`\varepsilon = \tau = 0.5`). At CLIP's :math:`\tau = 0.07`, :math:`q = 0.6` is :math:`q/\tau \approx 8.6`
    and the gradient goes to the few best-aligned pairs. Unbounded below on inner-product logits
    (:func:`check_bounded_robust_term`).

    Paper vs code: the ImageNet module's ``rince`` is this formula (on the :math:`2N\times 2N`
    matrix, self-pair excluded); the CIFAR module's is :math:`\mathrm{CE}^q/q`, its class
    weights being overwritten (§8.1-8.2, §9.7).

    Args:
        logits: (B, B) :math:`S`, positives on the diagonal.
        target: (B, B) :math:`P_{tgt}`, or None for the identity.
        lam: :math:`\lambda > 0`, weight of the normaliser.
        q: :math:`q \in (0, 1]`.
        checks: where to queue the value checks, resolved by the caller with the step's other
            checks (one sync); None checks now.

    Returns:
        :class:`LossOutput` with the loss, the logits and the row-softmax plan.
    """
    _check_hyperparameters(lam=lam, q=q)
    loss, plan = _robust_row_loss(logits, target, lam, q, checks)
    return LossOutput(loss, logits, plan)


def gca_rince_loss(
    logits: Tensor,
    target: Tensor | None = None,
    *,
    n_iter: int = 10,
    lam: float = 0.01,
    q: float = 0.6,
    grad: str = "unrolled",
    checks: PendingChecks | None = None,
) -> LossOutput:
    r"""GCA-RINCE, RINCE on :math:`K\mathrm{diag}(v^{(T-1)})` (§4.3, §11.5 of Chen et al. (2024)).

    .. math::
        \frac1B\sum_i -\frac1q\Big(\frac{P^{(2T-1)}_{ii}}{u^{(T)}_i}\Big)^q
            + \frac1q\Big(\frac{\lambda\,[P_{tgt}\mathbb 1]_i}{u^{(T)}_i}\Big)^q,
        \qquad \frac{P^{(2T-1)}_{ii}}{u^{(T)}_i} = K_{ii}v^{(T-1)}_i,\quad
        \frac1{u^{(T)}_i} = (K v^{(T-1)})_i,

    where :math:`P^{(2T-1)}` is the plan right after the T-th row step of balanced Sinkhorn with
    :math:`a = b = \mathbb 1`. With ``n_iter=1`` (:math:`v^{(0)} = \mathbb 1`) it is exactly
    :func:`rince_loss`. The CIFAR code instead computes :math:`\mathrm{CE}(\log P)^q/q` and the
    ImageNet code scales rows only (``gca_loss_imagenet.py``).

    Args:
        logits: (B, B) :math:`S`, positives on the diagonal.
        target: (B, B) :math:`P_{tgt}`, or None for the identity.
        n_iter: :math:`T \ge 1`.
        lam: :math:`\lambda > 0`.
        q: :math:`q \in (0, 1]`.
        grad: ``"unrolled"`` or ``"envelope"`` for the :math:`T-1` Sinkhorn iterations.
        checks: where to queue the value checks, resolved by the caller with the step's other
            checks (one sync); None checks now.

    Returns:
        :class:`LossOutput` with the loss, the logits, :math:`P^{(2T-1)}` and ``n_iter``.
    """
    _check_hyperparameters(n_iter=n_iter, lam=lam, q=q, grad=grad)
    if n_iter == 1:
        loss, plan = _robust_row_loss(logits, target, lam, q, checks)
    else:
        ones = logits.new_zeros(logits.shape[0])
        # With epsilon = 1 the potential g is log v^(T-1) itself.
        result = sinkhorn(logits, log_a=ones, log_b=ones, max_iter=n_iter - 1, tol=None, grad=grad, checks=checks)
        loss, plan = _robust_row_loss(logits + result.g, target, lam, q, checks)
    return LossOutput(loss, logits, plan, n_iter)


def gca_uot_loss(
    logits: Tensor,
    epsilon: float | Tensor,
    target: Tensor | None = None,
    *,
    n_iter: int = 10,
    rho: float = 0.2,
    lam: float = 0.01,
    q: float = 0.6,
    w_kl: float = 1.0,
    w_rince: float = 0.2,
    grad: str = "unrolled",
    checks: PendingChecks | None = None,
) -> LossOutput:
    r"""GCA-UOT: KL and RINCE-type terms on the unbalanced plan (§4.5, §11.4-11.5 of Chen et al. (2024)).

    .. math::
        w_{kl}\,\mathrm{KL}\big(P_{tgt}\,\|\,\mathrm{diag}(P\mathbb 1)^{-1}P\big)
        + w_{rince}\,\frac1B\sum_i \frac1q\Big[\Big(\frac{\lambda [P_{tgt}\mathbb 1]_i}{u_i}\Big)^q
            - \Big(\frac{P_{ii}}{u_i}\Big)^q\Big],

    the CIFAR form, with :math:`P = \mathrm{diag}(u)K\mathrm{diag}(v)` the KL-relaxed entropic
    plan after ``n_iter`` scaling steps :math:`u = (a/Kv)^{\rho/(\rho+\varepsilon)}`,
    :math:`v = (b/K^\top u)^{\rho/(\rho+\varepsilon)}` from :math:`v = \mathbb 1`, with
    :math:`a = b = \mathbb 1/B` and :math:`\varepsilon = \tau`. With :math:`P_{tgt} = I` the first
    term is the cross-entropy of the rows of :math:`\log P`. The defaults are the CIFAR-10
    README run: :math:`\rho = 0.2`, :math:`\lambda = 0.01`, :math:`q = 0.6`, ``r1=1``
    (``w_kl``), ``r2=0.2`` (``w_rince``).

    Paper vs code: the code's absorption and NaN-rollback branches are not needed in the log
    domain; its kernel is the clamped :math:`2N\times 2N` one; the ImageNet module's ``gca_uot``
    scales rows only and swaps the meaning of ``r1``/``r2`` (§8.1-8.2, §9.1-9.2).

    Args:
        logits: (B, B) :math:`S`, positives on the diagonal.
        epsilon: :math:`\varepsilon = \tau = e^{-\text{logit\_scale}}`, float or one-element
            tensor (differentiable: the exponent depends on it).
        target: (B, B) :math:`P_{tgt}`, or None for the identity.
        n_iter: :math:`T \ge 1`.
        rho: :math:`\rho_1 = \rho_2 > 0`.
        lam: :math:`\lambda > 0`.
        q: :math:`q \in (0, 1]`.
        w_kl: weight of the KL term, >= 0.
        w_rince: weight of the RINCE-type term, >= 0 (not both zero).
        grad: ``"unrolled"`` or ``"envelope"``.
        checks: where to queue the value checks, resolved by the caller with the step's other
            checks (one sync); None checks now.

    Returns:
        :class:`LossOutput` with the loss, the logits, the UOT plan and ``n_iter``.
    """
    _check_hyperparameters(n_iter=n_iter, rho=rho, lam=lam, q=q, weights=(w_kl, w_rince), grad=grad)
    log_mass = logits.new_full((logits.shape[0],), -math.log(logits.shape[0]))
    result = sinkhorn(
        logits,
        epsilon=epsilon,
        log_a=log_mass,
        log_b=log_mass,
        rho=rho,
        max_iter=n_iter,
        tol=None,
        grad=grad,
        checks=checks,
    )
    loss = logits.new_zeros(())
    if w_kl:
        log_rows, _ = _row_step(result.log_plan)
        loss = loss + w_kl * generalized_kl(log_rows, log_rows.exp(), target)
    if w_rince:
        log_kv = logits + result.g / epsilon
        loss = loss + w_rince * robust_term(log_kv, -result.f / epsilon, target, lam, q, checks)
    return LossOutput(loss, logits, result.plan, result.n_iter, result.converged)


def _row_step(log_kv: Tensor) -> tuple[Tensor, Tensor]:
    r"""Row projection onto :math:`P\mathbb 1 = \mathbb 1`: :math:`(\log P, -\log u = \mathrm{LSE}_j)`."""
    neg_log_u = torch.logsumexp(log_kv, dim=-1)
    return log_kv - neg_log_u.unsqueeze(-1), neg_log_u


def _robust_row_loss(
    log_kv: Tensor, target: Tensor | None, lam: float, q: float, checks: PendingChecks | None
) -> tuple[Tensor, Tensor]:
    """RINCE-type term after one row step of ``log_kv`` (a = 1): (loss, plan)."""
    log_plan, neg_log_u = _row_step(log_kv)
    return robust_term(log_kv, neg_log_u, target, lam, q, checks), log_plan.exp()


def _check_hyperparameters(**values) -> None:
    """Validate GCA hyperparameters by name; raises ValueError naming the first bad one."""
    for name, value in values.items():
        if name == "grad":
            if value not in GRAD_MODES:
                raise ValueError(f"grad={value!r}: expected one of {', '.join(GRAD_MODES)}")
        elif name == "n_iter":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"n_iter={value!r}: expected an integer >= 1")
        elif name == "weights":
            w_kl, w_rince = value
            for weight_name, weight in (("w_kl", w_kl), ("w_rince", w_rince)):
                if not _is_number(weight) or not 0 <= weight < math.inf:
                    raise ValueError(f"{weight_name}={weight!r}: expected a finite number >= 0")
            if w_kl == 0 and w_rince == 0:
                raise ValueError("w_kl=0, w_rince=0: expected at least one positive weight")
        elif name == "q":
            if not _is_number(value) or not 0 < value <= 1:
                raise ValueError(f"q={value!r}: expected a number in (0, 1]")
        elif not _is_number(value) or not 0 < value < math.inf:
            raise ValueError(f"{name}={value!r}: expected a finite number > 0")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_bounded_robust_term(metric: str, lam: float | None) -> None:
    r"""Refuse a RINCE-type term that has no minimum: ``metric="inner"`` with :math:`\lambda < 1` (or any λ).

    The term :math:`\frac1q[(\lambda[P_{tgt}\mathbb 1]_i/u_i)^q - (P_{ii}/u_i)^q]` of
    :func:`robust_term` tends to :math:`-\infty` as the logits :math:`S \to cS`, :math:`c \to \infty`,
    with the positives largest in their rows: for the row-softmax and balanced plans (``rince``,
    ``gca_rince``) when :math:`\lambda\,[P_{tgt}\mathbb 1]_i < 1` (e.g. :math:`\lambda = 0.01`, one
    positive per row; for :math:`\lambda \ge 1` it is :math:`\ge 0`), and for the unbalanced plan
    (``gca_uot``, ``lam=None``) at every λ, its :math:`1/u_i = (B\,(Kv)_i)^{\rho/(\rho+\varepsilon)}` growing
    slower than :math:`K_{ii}v_i`. Inner-product logits grow without bound with the embeddings'
    norms, so training drives a few pairs' norms up instead of aligning the batch; cosine (at a
    fixed temperature) and ``neg_sq_l2`` (:math:`S \le 0`) bound the logits. A learnt temperature
    has the same pull: it goes to its clamp.

    Raises:
        ValueError: naming ``metric``.
    """
    if metric == "inner" and (lam is None or lam < 1):
        which = "at every lam (unbalanced plan)" if lam is None else f"with lam={lam} < 1"
        raise ValueError(
            f"metric={metric!r}: the RINCE term {which} is unbounded below on unbounded logits; "
            "use 'cosine' (fixed temperature) or 'neg_sq_l2'" + ("" if lam is None else ", or lam >= 1")
        )


class _GcaLoss(PairLoss):
    r"""Shared module part: the metric, the target plan and its extra inputs.

    Args:
        metric: alignment metric name.
        target: ``"identity"`` (positives on the diagonal), ``"domain"``
            (:func:`~clipmath.multimodal.losses.targets.domain_prior`, needs ``alpha``, ``beta``
            and the ``domain_ids=`` input) or ``"class"``
            (:func:`~clipmath.multimodal.losses.targets.class_positives`, needs ``class_ids=``).
        alpha: same-domain weight, only with ``target="domain"``.
        beta: cross-domain weight, only with ``target="domain"``.
    """

    def __init__(
        self,
        metric: str = "cosine",
        target: str = "identity",
        alpha: float | None = None,
        beta: float | None = None,
    ):
        super().__init__(metric)
        if target not in TARGETS:
            raise ValueError(f"target={target!r}: expected one of {', '.join(TARGETS)}")
        for name, value in (("alpha", alpha), ("beta", beta)):
            if (value is None) == (target == "domain"):
                need = "a number >= 0 with" if target == "domain" else "None with"
                raise ValueError(f"{name}={value!r}: expected {need} target={target!r}")
        if target == "domain":
            check_domain_weights(alpha, beta)
        self.target, self.alpha, self.beta = target, alpha, beta

    @property
    def reads(self) -> tuple[str, ...]:
        """The batch field the target plan needs: ``domain_ids``, ``class_ids`` or none."""
        return {"domain": ("domain_ids",), "class": ("class_ids",)}.get(self.target, ())

    def forward(
        self,
        z_u: Tensor,
        z_v: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
        *,
        domain_ids: Tensor | None = None,
        class_ids: Tensor | None = None,
    ) -> LossOutput:
        r"""Loss of a paired batch.

        Args:
            z_u: (B, n_e) embeddings of modality u, row i paired with row i of ``z_v``.
            z_v: (B, n_e) embeddings of modality v.
            logit_scale: scalar tensor, :math:`\log(1/\tau)`.
            logit_bias: scalar tensor or None.
            domain_ids: (B,) integer domains, required by (and only by) ``target="domain"``.
            class_ids: (B,) integer classes, required by (and only by) ``target="class"``.

        Returns:
            :class:`LossOutput` with the loss, logits, plan and (iterative losses) ``n_iter``.

        Raises:
            ValueError: for bad embeddings, scale or bias, a missing or unexpected id input, or
                ids whose length is not B.
        """
        logits, checks = self.pending_logits(z_u, z_v, logit_scale, logit_bias)
        target = self._target_plan(logits, domain_ids, class_ids)
        with no_autocast(logits):
            output = self.gca_loss(logits, target, logit_scale, checks)
        checks.resolve()
        return output

    def gca_loss(self, logits: Tensor, target: Tensor | None, logit_scale: Tensor, checks: PendingChecks) -> LossOutput:
        """The loss of (B, B) float logits and a (B, B) target (None: identity), value checks queued on ``checks``."""
        raise NotImplementedError

    def _target_plan(self, logits: Tensor, domain_ids: Tensor | None, class_ids: Tensor | None) -> Tensor | None:
        needed = {"domain": "domain_ids", "class": "class_ids"}.get(self.target)
        for name, ids in (("domain_ids", domain_ids), ("class_ids", class_ids)):
            if ids is None and name == needed:
                raise ValueError(f"{name}: missing; target={self.target!r} needs it as a keyword input")
            if ids is not None and name != needed:
                raise ValueError(f"{name}: given, but target={self.target!r} does not use it")
        if self.target == "identity":
            return None
        if self.target == "domain":
            target = domain_prior(domain_ids, self.alpha, self.beta, dtype=logits.dtype)
        else:
            target = class_positives(class_ids)
        if target.shape[0] != logits.shape[0]:
            raise ValueError(f"{needed}: {target.shape[0]} ids for a batch of {logits.shape[0]}; expected one per pair")
        return target.to(logits)

    def extra_repr(self) -> str:
        extra = f", alpha={self.alpha}, beta={self.beta}" if self.target == "domain" else ""
        return f"metric={self.metric!r}, target={self.target!r}{extra}"


@register("ince")
class InceLoss(_GcaLoss):
    r"""INCE, one KL row projection (§4.1 of Chen et al. (2024)); see :func:`ince_loss`.

    With the identity target it equals InfoNCE u→v, half of ``clip``'s two directions, and is
    invariant to ``logit_bias``.

    Args:
        metric: alignment metric name.
        target: ``"identity"``, ``"domain"`` or ``"class"`` (see the module docstring).
        alpha: same-domain weight (``target="domain"`` only).
        beta: cross-domain weight (``target="domain"`` only).
    """

    def gca_loss(self, logits: Tensor, target: Tensor | None, logit_scale: Tensor, checks: PendingChecks) -> LossOutput:
        """:func:`ince_loss` of the logits."""
        return ince_loss(logits, target)


@register("gca_ince")
class GcaInceLoss(_GcaLoss):
    r"""GCA-INCE, KL to the balanced Sinkhorn plan (§4.2 of Chen et al. (2024)); see :func:`gca_ince_loss`.

    Args:
        metric: alignment metric name.
        n_iter: Sinkhorn iterations :math:`T \ge 1` (default 10, as the paper).
        grad: ``"unrolled"`` (default, as the official code) or ``"envelope"``.
        target: ``"identity"``, ``"domain"`` or ``"class"``.
        alpha: same-domain weight (``target="domain"`` only).
        beta: cross-domain weight (``target="domain"`` only).
    """

    def __init__(self, metric: str = "cosine", n_iter: int = 10, grad: str = "unrolled", **target_options):
        super().__init__(metric, **target_options)
        _check_hyperparameters(n_iter=n_iter, grad=grad)
        self.n_iter, self.grad = n_iter, grad

    def gca_loss(self, logits: Tensor, target: Tensor | None, logit_scale: Tensor, checks: PendingChecks) -> LossOutput:
        """:func:`gca_ince_loss` of the logits."""
        return gca_ince_loss(logits, target, n_iter=self.n_iter, grad=self.grad, checks=checks)


@register("rince")
class RinceLoss(_GcaLoss):
    r"""RINCE (Chuang et al. 2022), the one-step robust loss; see :func:`rince_loss`.

    Args:
        metric: alignment metric name.
        lam: :math:`\lambda > 0` (default 0.01).
        q: :math:`q \in (0, 1]` (default 0.6, the README runs).
        target: ``"identity"``, ``"domain"`` or ``"class"``.
        alpha: same-domain weight (``target="domain"`` only).
        beta: cross-domain weight (``target="domain"`` only).
    """

    def __init__(self, metric: str = "cosine", lam: float = 0.01, q: float = 0.6, **target_options):
        super().__init__(metric, **target_options)
        _check_hyperparameters(lam=lam, q=q)
        check_bounded_robust_term(metric, lam)
        self.lam, self.q = lam, q

    def gca_loss(self, logits: Tensor, target: Tensor | None, logit_scale: Tensor, checks: PendingChecks) -> LossOutput:
        """:func:`rince_loss` of the logits."""
        return rince_loss(logits, target, lam=self.lam, q=self.q, checks=checks)


@register("gca_rince")
class GcaRinceLoss(_GcaLoss):
    r"""GCA-RINCE, RINCE on :math:`K\mathrm{diag}(v^{(T-1)})` (§4.3 of Chen et al. 2024).

    See :func:`gca_rince_loss`.

    Args:
        metric: alignment metric name.
        n_iter: :math:`T \ge 1` (default 10); 1 gives ``rince``.
        lam: :math:`\lambda > 0` (default 0.01).
        q: :math:`q \in (0, 1]` (default 0.6).
        grad: ``"unrolled"`` (default) or ``"envelope"``.
        target: ``"identity"``, ``"domain"`` or ``"class"``.
        alpha: same-domain weight (``target="domain"`` only).
        beta: cross-domain weight (``target="domain"`` only).
    """

    def __init__(
        self,
        metric: str = "cosine",
        n_iter: int = 10,
        lam: float = 0.01,
        q: float = 0.6,
        grad: str = "unrolled",
        **target_options,
    ):
        super().__init__(metric, **target_options)
        _check_hyperparameters(n_iter=n_iter, lam=lam, q=q, grad=grad)
        check_bounded_robust_term(metric, lam)
        self.n_iter, self.lam, self.q, self.grad = n_iter, lam, q, grad

    def gca_loss(self, logits: Tensor, target: Tensor | None, logit_scale: Tensor, checks: PendingChecks) -> LossOutput:
        """:func:`gca_rince_loss` of the logits."""
        return gca_rince_loss(logits, target, n_iter=self.n_iter, lam=self.lam, q=self.q, grad=self.grad, checks=checks)


@register("gca_uot")
class GcaUotLoss(_GcaLoss):
    r"""GCA-UOT, KL and RINCE-type terms on the UOT plan (§4.5 of Chen et al. 2024); see :func:`gca_uot_loss`.

    :math:`\varepsilon = \tau = e^{-\text{logit\_scale}}` enters the scaling exponent
    :math:`\rho/(\rho+\varepsilon)`, so ``logit_scale`` gets a gradient through it too.

    Args:
        metric: alignment metric name.
        n_iter: :math:`T \ge 1` (default 10).
        rho: marginal penalty :math:`\rho > 0` (default 0.2; 0.5 for ImageNet-100).
        lam: :math:`\lambda > 0` (default 0.01).
        q: :math:`q \in (0, 1]` (default 0.6).
        w_kl: weight of the KL term (default 1, the CIFAR ``r1``).
        w_rince: weight of the RINCE-type term (default 0.2, the CIFAR-10 README ``r2``).
        grad: ``"unrolled"`` (default) or ``"envelope"``.
        target: ``"identity"``, ``"domain"`` or ``"class"``.
        alpha: same-domain weight (``target="domain"`` only).
        beta: cross-domain weight (``target="domain"`` only).
    """

    def __init__(
        self,
        metric: str = "cosine",
        n_iter: int = 10,
        rho: float = 0.2,
        lam: float = 0.01,
        q: float = 0.6,
        w_kl: float = 1.0,
        w_rince: float = 0.2,
        grad: str = "unrolled",
        **target_options,
    ):
        super().__init__(metric, **target_options)
        _check_hyperparameters(n_iter=n_iter, rho=rho, lam=lam, q=q, weights=(w_kl, w_rince), grad=grad)
        if w_rince > 0:
            check_bounded_robust_term(metric, None)
        self.n_iter, self.rho, self.lam, self.q, self.grad = n_iter, rho, lam, q, grad
        self.w_kl, self.w_rince = w_kl, w_rince

    def gca_loss(self, logits: Tensor, target: Tensor | None, logit_scale: Tensor, checks: PendingChecks) -> LossOutput:
        r""":func:`gca_uot_loss` of the logits, :math:`\varepsilon = e^{-\text{logit\_scale}}`."""
        epsilon = torch.exp(-logit_scale.to(logits.dtype).reshape(()))
        return gca_uot_loss(
            logits,
            epsilon,
            target,
            n_iter=self.n_iter,
            rho=self.rho,
            lam=self.lam,
            q=self.q,
            w_kl=self.w_kl,
            w_rince=self.w_rince,
            grad=self.grad,
            checks=checks,
        )
