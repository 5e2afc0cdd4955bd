r"""Entropic optimal transport in the log domain: batched balanced and unbalanced Sinkhorn.

The solver (:func:`sinkhorn`) works on dual potentials with ``logsumexp`` soft C-transforms,
never on the exponentiated kernel, so it stays finite in float32 for temperatures far below
those used in training. The GCA losses (Chen et al. 2024, :mod:`clipmath.multimodal.losses.gca`)
read contrastive losses as KL projections of the Gibbs kernel of the logits, i.e. as
truncated runs of this solver.

References:
    - Cuturi, Sinkhorn distances, NeurIPS 2013.
    - Chizat, Peyré, Schmitzer & Vialard, Scaling algorithms for unbalanced optimal transport
      problems, Math. Comp. 2018 (Algorithm 1, the KL-relaxed scaling iteration).
    - Chen, Lin, Liu, Xiao & Dyer, Your contrastive learning problem is secretly a
      distribution alignment problem, NeurIPS 2024 (GCA; §2 and §4.5).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from clipmath.multimodal.checks import PendingChecks

GRAD_MODES = ("unrolled", "envelope")


class SinkhornConvergenceWarning(UserWarning):
    """Sinkhorn stopped at ``max_iter`` with its marginal error above ``tol``."""


@dataclass
class SinkhornResult:
    r"""The entropic transport plan and its dual potentials.

    Attributes:
        plan: (..., n, m) plan :math:`P = \exp((f \oplus g - C)/\varepsilon)`.
        log_plan: (..., n, m) its logarithm, exact where ``plan`` underflows.
        f: (..., n) dual potential of the rows (modality u), in units of the cost.
        g: (..., m) dual potential of the columns (modality v), in units of the cost.
        value: (...,) dual objective :math:`D(f, g)` at the returned potentials; equal to the
            primal optimum at convergence, and its gradient with respect to the cost is the plan.
        n_iter: iterations run (one iteration = one row step and one column step).
        converged: whether the error met ``tol``; None when run without a tolerance.
        marginal_error: the last measured error, the largest over the batch (see :func:`sinkhorn`);
            a float read from the device when first asked for (so a run with ``tol=None`` never
            waits for it unless it is read).
    """

    plan: Tensor
    log_plan: Tensor
    f: Tensor
    g: Tensor
    value: Tensor
    n_iter: int
    converged: bool | None
    error: Tensor = field(repr=False)

    @property
    def marginal_error(self) -> float:
        """The last measured error as a float (see the class attributes)."""
        return self.error.item()


def sinkhorn(
    log_kernel: Tensor | None = None,
    *,
    cost: Tensor | None = None,
    epsilon: float | Tensor = 1.0,
    log_a: Tensor | None = None,
    log_b: Tensor | None = None,
    rho: float | Tensor | None = None,
    rho_u: float | Tensor | None = None,
    rho_v: float | Tensor | None = None,
    max_iter: int = 100,
    tol: float | None = 1e-6,
    check_every: int = 10,
    grad: str = "unrolled",
    init: Tensor | None = None,
    checks: PendingChecks | None = None,
) -> SinkhornResult:
    r"""Entropic (un)balanced optimal transport by log-domain Sinkhorn iterations.

    Solves, independently for every leading index,

    .. math::
        \min_{P \ge 0}\ \langle P, C\rangle - \varepsilon H(P)
            + \rho_u\,\mathrm{KL}(P\mathbb 1 \,\|\, a) + \rho_v\,\mathrm{KL}(P^\top\mathbb 1 \,\|\, b),

        H(P) = -\sum_{ij} P_{ij}(\log P_{ij} - 1), \qquad
        \mathrm{KL}(x \| y) = \sum_i x_i \log\frac{x_i}{y_i} - x_i + y_i,

    where a side with :math:`\rho = \infty` (``None``, the balanced problem) becomes the
    constraint :math:`P\mathbb 1 = a` or :math:`P^\top\mathbb 1 = b`. The cost enters through
    the Gibbs kernel :math:`\log K = -C/\varepsilon`; pass either ``cost`` or ``log_kernel``
    (then :math:`C = -\varepsilon \log K`; for the GCA losses ``log_kernel`` is the logits and
    :math:`\varepsilon = \tau`). Because of the :math:`-1` in :math:`H`, the unconstrained
    minimiser (:math:`\rho \to 0`) is :math:`P = K`.

    The iteration, on the log scalings :math:`\log u = f/\varepsilon`, :math:`\log v = g/\varepsilon`,
    starts at :math:`\log v = 0` (or ``init``) and repeats

    .. math::
        \log u_i \leftarrow \lambda_u\big(\log a_i - \mathrm{LSE}_j(\log K_{ij} + \log v_j)\big),\qquad
        \log v_j \leftarrow \lambda_v\big(\log b_j - \mathrm{LSE}_i(\log K_{ij} + \log u_i)\big),
        \qquad \lambda = \frac{\rho}{\rho + \varepsilon},

    with :math:`\lambda = 1` on a balanced side: the balanced step is the KL projection onto
    the row (then column) constraint, :math:`u = a \oslash Kv` (Cuturi 2013; Chen et al. 2024,
    §2), and the unbalanced step is the same one raised to :math:`\lambda`,
    :math:`u = (a \oslash Kv)^{\rho/(\rho+\varepsilon)}` (Chizat et al. 2018, Algorithm 1;
    Chen et al. 2024, §4.5), POT's ``reg_m/(reg_m + reg)``. The plan is
    :math:`P = \mathrm{diag}(u) K \mathrm{diag}(v)`.

    The error is measured every ``check_every`` iterations and at the last one. Balanced: the
    Euclidean norm of :math:`P^\top\mathbb 1 - b` right after a row step (as POT's
    ``sinkhorn_log``; it costs nothing, the column step computes those sums anyway).
    Unbalanced or semi-relaxed: the largest change over the iteration of
    :math:`\log P_{ij} - \log K_{ij} = (f_i + g_j)/\varepsilon`, the potentials up to the
    constant shift that is nearly free when :math:`\rho \gg \varepsilon`. The loop stops once
    the largest error over the batch is at most ``tol > 0``; with ``tol=0`` or ``tol=None`` it
    runs exactly ``max_iter`` iterations (as GCA does, with None) and never warns.

    Gradients. ``grad="unrolled"``: autograd through every iteration; each soft C-transform
    keeps only its vectors (the kernel is shared and its backward recomputes the weights), so
    memory grows by O(n + m) per iteration while the backward costs about one forward
    iteration per iteration. ``grad="envelope"``: the iterations run under ``torch.no_grad()`` and
    one last column step runs with autograd from the detached :math:`\log u`; since the
    column step maximises the dual :math:`D` in :math:`g` exactly, the gradient of ``value``
    with respect to the cost is the plan (envelope theorem), exact at convergence; the plan
    itself gets the gradient of that last step only. Its memory and backward cost do not depend
    on the iteration count. Both give first derivatives only (a double backward raises).

    Args:
        log_kernel: (..., n, m) :math:`\log K = -C/\varepsilon`; ``-inf`` allowed, but every
            row and column needs a finite entry. Give this or ``cost``.
        cost: (..., n, m) cost :math:`C`. Give this or ``log_kernel``.
        epsilon: :math:`\varepsilon > 0`, float or one-element tensor (differentiable).
        log_a: (..., n) or (n,) log row masses; default uniform :math:`a_i = 1/n`.
        log_b: (..., m) or (m,) log column masses; default uniform :math:`b_j = 1/m`.
        rho: :math:`\rho_u = \rho_v > 0`, float or one-element tensor (differentiable, like
            ``epsilon``); None (default) for balanced OT.
        rho_u: :math:`\rho_u > 0` for the rows alone (None: balanced rows); not with ``rho``.
        rho_v: :math:`\rho_v > 0` for the columns alone (None: balanced columns); not with ``rho``.
        max_iter: iterations at most, at least 1.
        tol: error at which to stop, >= 0; 0 (POT's ``stopThr=0``) runs all ``max_iter``
            iterations and still measures the error, None runs them without measuring.
        check_every: measure the error every this many iterations (each check syncs the device).
        grad: ``"unrolled"`` or ``"envelope"``.
        init: (..., m) or (m,) warm start for the column potential :math:`g` (e.g. a previous
            result's ``g``); the first row step computes :math:`f` from it.
        checks: None (default) checks the values of the inputs before iterating and the
            potentials after, two host syncs; a loss's :class:`~clipmath.multimodal.checks.PendingChecks`
            takes those checks instead, to resolve them with its own (with ``tol=None`` the
            solver then never waits for the device).

    Returns:
        :class:`SinkhornResult`, in float32 (float64 for float64 input) even under autocast.

    Raises:
        ValueError: naming the argument, for non-positive ``epsilon``/``rho``, mismatched shapes,
            NaN (or a cost of ``-inf``), unequal masses in the balanced problem, ``max_iter < 1``,
            an unknown ``grad``, or a row or column of the kernel without a finite entry.

    Warns:
        SinkhornConvergenceWarning: once, when ``tol > 0`` is not met after ``max_iter``.

    Examples:
        >>> cost = torch.rand(2, 5, 4)
        >>> result = sinkhorn(cost=cost, epsilon=0.1, tol=1e-6, max_iter=1000)
        >>> result.plan.shape, torch.allclose(result.plan.sum(-2), torch.full((2, 4), 0.25), atol=1e-5)
        (torch.Size([2, 5, 4]), True)
    """
    pending = PendingChecks() if checks is None else checks
    log_k = _log_kernel(log_kernel, cost, pending)
    n, m = log_k.shape[-2:]
    eps = _positive_scalar("epsilon", epsilon, log_k, pending)
    if cost is not None:
        log_k = -log_k / eps
    rho_u, rho_v = _rhos(rho, rho_u, rho_v, log_k, pending)
    log_a = _log_masses("log_a", log_a, n, log_k, pending)
    log_b = _log_masses("log_b", log_b, m, log_k, pending)
    _check_loop(max_iter, tol, check_every, grad)
    balanced = rho_u is None and rho_v is None
    if balanced:
        _check_equal_mass(log_a, log_b, pending)
    log_v = log_k.new_zeros(m) if init is None else _log_masses("init", init, m, log_k, pending) / eps
    if checks is None:
        pending.resolve()
    # The dampening exponent of the unbalanced step; 1 makes it the balanced projection.
    lam_u = 1.0 if rho_u is None else rho_u / (rho_u + eps)
    lam_v = 1.0 if rho_v is None else rho_v / (rho_v + eps)

    with torch.autocast(device_type=log_k.device.type, enabled=False):
        if grad == "envelope":
            with torch.no_grad():
                log_u, log_v, n_iter, error = _iterate(
                    log_k, log_a, log_b, lam_u, lam_v, log_v, max_iter, tol, check_every, balanced
                )
            # The one differentiable step: log v maximises D(f, .) exactly, so dD/dC = P.
            log_v = lam_v * (log_b - _logsumexp(log_k, log_u.unsqueeze(-1), -2))
        else:
            log_u, log_v, n_iter, error = _iterate(
                log_k, log_a, log_b, lam_u, lam_v, log_v, max_iter, tol, check_every, balanced
            )
        pending.add(torch.isfinite(log_u).all() & torch.isfinite(log_v).all(), _empty_line_error)
        if checks is None:
            pending.resolve()
        log_plan = log_k + log_u.unsqueeze(-1)
        log_plan = log_plan + log_v.unsqueeze(-2)
        plan = log_plan.exp()
        f, g = eps * log_u, eps * log_v
        value = _marginal_dual(f, log_a, rho_u) + _marginal_dual(g, log_b, rho_v) - eps * plan.sum(dim=(-2, -1))

    converged = None if tol is None else error.item() <= tol
    if converged is False and tol > 0:
        warnings.warn(
            f"sinkhorn: error {error.item():.3g} > tol={tol:g} after max_iter={max_iter} iterations; "
            "raise max_iter or epsilon",
            SinkhornConvergenceWarning,
            stacklevel=2,
        )
    return SinkhornResult(plan, log_plan, f, g, value, n_iter, converged, error)


def _empty_line_error(values: list[float]) -> ValueError | None:
    """The error of non-finite potentials: a row or column of the kernel without a finite entry."""
    if values[0]:
        return None
    return ValueError("log_kernel: a row or column has no finite entry (a zero kernel row or column)")


def _iterate(
    log_k: Tensor,
    log_a: Tensor,
    log_b: Tensor,
    lam_u: float | Tensor,
    lam_v: float | Tensor,
    log_v: Tensor,
    max_iter: int,
    tol: float | None,
    check_every: int,
    balanced: bool,
) -> tuple[Tensor, Tensor, int, Tensor]:
    """The Sinkhorn loop of :func:`sinkhorn`: (log u, log v, iterations run, last error as a scalar tensor).

    The error is read on the host only to decide whether to stop (``tol > 0``).
    """
    n, m = log_k.shape[-2:]
    batch = torch.broadcast_shapes(log_k.shape[:-2], log_a.shape[:-1], log_b.shape[:-1], log_v.shape[:-1])
    # One preallocated buffer serves every logsumexp: no (..., n, m) allocation per step. Its
    # shape is that of the batch, which batched histograms can give a shared 2-D kernel, and
    # log v starts with it, so that every step fills the whole buffer.
    buffer = log_k.new_empty(*batch, n, m)
    log_v = log_v.expand(*batch, m)
    b = log_b.exp() if balanced else None
    log_u = log_k.new_zeros(n)
    error = log_k.new_full((), math.inf)
    for it in range(1, max_iter + 1):
        measure = it == max_iter or (tol is not None and it % check_every == 0)
        log_u_prev, log_v_prev = log_u, log_v
        # Row step, u = (a / K v)^lam_u: the KL projection onto P 1 = a when lam_u = 1.
        log_u = lam_u * (log_a - _logsumexp(log_k, log_v.unsqueeze(-2), -1, buffer))
        # Column sums of K diag(u): log K^T u, shared by the error and the column step.
        log_ktu = _logsumexp(log_k, log_u.unsqueeze(-1), -2, buffer)
        if measure and balanced:
            # Column marginal of the plan after the row step, P^T 1 = v * K^T u.
            error = (torch.exp(log_v + log_ktu) - b).norm(dim=-1).max()
        # Column step, v = (b / K^T u)^lam_v.
        log_v = lam_v * (log_b - log_ktu)
        if measure and not balanced:
            # sup_ij |change of log u_i + log v_j|: the change of log P, blind to the shift
            # (u c, v / c) that is nearly free when rho >> epsilon and makes u, v drift slowly.
            d_u, d_v = log_u - log_u_prev, log_v - log_v_prev
            top = d_u.amax(-1) + d_v.amax(-1)
            bottom = d_u.amin(-1) + d_v.amin(-1)
            error = torch.maximum(top.abs(), bottom.abs()).max()
        if measure and tol and error.item() <= tol:
            break
    return log_u, log_v, it, error


def _logsumexp(log_k: Tensor, shift: Tensor, dim: int, buffer: Tensor | None = None) -> Tensor:
    """``logsumexp(log_k + shift, dim)`` (the soft C-transform), differentiable, O(n) saved state."""
    if buffer is None:
        buffer = log_k.new_empty(torch.broadcast_shapes(log_k.shape, shift.shape))
    return _ShiftedLogSumExp.apply(log_k, shift, dim, buffer)


class _ShiftedLogSumExp(torch.autograd.Function):
    r"""``logsumexp(log_k + shift, dim)`` computed in a reusable buffer of their broadcast shape.

    Autograd's own logsumexp keeps its (n, m) input per call, so unrolling T iterations would
    hold 2T kernel-sized tensors; this one keeps the shared ``log_k`` and two vectors, and the
    backward recomputes the weights :math:`e^{\log K + s - \mathrm{LSE}}` (first order only).
    """

    @staticmethod
    def forward(ctx, log_k: Tensor, shift: Tensor, dim: int, buffer: Tensor) -> Tensor:
        torch.add(log_k, shift, out=buffer)
        peak = buffer.amax(dim=dim, keepdim=True)
        buffer.sub_(peak).exp_()
        result = buffer.sum(dim=dim).log_().add_(peak.squeeze(dim))
        ctx.save_for_backward(log_k, shift, result)
        ctx.dim = dim
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        log_k, shift, result = ctx.saved_tensors
        # d LSE_i / d x_ij is the softmax weight of x_ij = log_k_ij + shift_j.
        weights = (log_k + shift).sub_(result.unsqueeze(ctx.dim)).exp_().mul_(grad.unsqueeze(ctx.dim))
        grad_shift = weights.sum_to_size(shift.shape) if ctx.needs_input_grad[1] else None
        grad_k = weights.sum_to_size(log_k.shape) if ctx.needs_input_grad[0] else None
        return grad_k, grad_shift, None, None


def _marginal_dual(potential: Tensor, log_mass: Tensor, rho: float | Tensor | None) -> Tensor:
    r"""One side's term of the dual D.

    :math:`\langle f, a\rangle` on a balanced side, :math:`-\rho\langle a, e^{-f/\rho} - 1\rangle`
    on a relaxed one (the conjugate of :math:`\rho\,\mathrm{KL}(\cdot\,\|\,a)`).
    """
    mass = log_mass.exp()
    if rho is None:
        return (potential * mass).sum(-1)
    return -rho * (mass * torch.expm1(-potential / rho)).sum(-1)


def _log_kernel(log_kernel: Tensor | None, cost: Tensor | None, checks: PendingChecks) -> Tensor:
    """The (..., n, m) input in float32 or float64 (a cost not yet divided by epsilon), values checked on ``checks``."""
    if (log_kernel is None) == (cost is None):
        raise ValueError("log_kernel, cost: give exactly one of the two")
    name, x = ("log_kernel", log_kernel) if cost is None else ("cost", cost)
    if not isinstance(x, Tensor) or x.dim() < 2 or 0 in x.shape[-2:]:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}={shape}: expected a tensor of shape (..., n, m) with n, m >= 1")
    x = x if x.dtype in (torch.float32, torch.float64) else x.float()
    bad = "+inf" if cost is None else "-inf"

    def error(values: list[float]) -> ValueError | None:
        peak = values[0]
        if math.isnan(peak):
            return ValueError(f"{name}: contains NaN")
        if peak == math.inf:
            return ValueError(f"{name}: contains {bad}; expected a finite upper bound")
        return None

    # One reduction finds both failures: max propagates NaN, and +inf (log K) / -inf (C) is the peak.
    checks.add((x if cost is None else -x).max(), error)
    return x


def _positive_scalar(
    name: str, value: float | Tensor, like: Tensor, checks: PendingChecks, alternative: str = ""
) -> float | Tensor:
    """A finite positive float, or a one-element tensor of ``like``'s dtype (differentiable, checked on ``checks``).

    ``alternative`` ends the error's "expected" clause (e.g. ``", or None for ..."``).
    """

    def error(scalar: float | list[float]) -> ValueError | None:
        scalar = scalar[0] if isinstance(scalar, list) else scalar
        if isinstance(scalar, bool) or not isinstance(scalar, (int, float)) or not 0 < scalar < math.inf:
            return ValueError(f"{name}={scalar!r}: expected a finite number > 0{alternative}")
        return None

    if not isinstance(value, Tensor):
        found = error(value)
        if found is not None:
            raise found
        return float(value)
    if value.numel() != 1:
        raise ValueError(f"{name}={tuple(value.shape)}: expected a scalar (one-element) tensor")
    checks.add(value, error)
    return value.to(like.dtype).reshape(())


def _rhos(
    rho: float | Tensor | None,
    rho_u: float | Tensor | None,
    rho_v: float | Tensor | None,
    like: Tensor,
    checks: PendingChecks,
) -> tuple[float | Tensor | None, float | Tensor | None]:
    """The marginal penalties (rho_u, rho_v), each None (balanced side) or as :func:`_positive_scalar`."""
    if rho is not None and (rho_u is not None or rho_v is not None):
        raise ValueError(f"rho={rho!r} with rho_u={rho_u!r}, rho_v={rho_v!r}: give rho or rho_u/rho_v, not both")
    balanced = ", or None for a balanced marginal"
    if rho is not None:
        return (_positive_scalar("rho", rho, like, checks, balanced),) * 2
    return tuple(
        None if value is None else _positive_scalar(name, value, like, checks, balanced)
        for name, value in (("rho_u", rho_u), ("rho_v", rho_v))
    )


def _log_masses(name: str, log_w: Tensor | None, size: int, like: Tensor, checks: PendingChecks) -> Tensor:
    """Log masses (..., size) in ``like``'s dtype, their values checked on ``checks``; uniform 1/size when None."""
    if log_w is None:
        return like.new_full((size,), -math.log(size))
    if not isinstance(log_w, Tensor) or log_w.dim() < 1 or log_w.shape[-1] != size:
        shape = tuple(log_w.shape) if isinstance(log_w, Tensor) else type(log_w).__name__
        raise ValueError(f"{name}={shape}: expected shape (..., {size}) to match the kernel")
    try:
        torch.broadcast_shapes(log_w.shape[:-1], like.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"{name}={tuple(log_w.shape)}: leading dimensions do not broadcast with the "
            f"kernel's {tuple(like.shape[:-2])}"
        ) from None
    log_w = log_w.to(like.dtype)

    def error(values: list[float]) -> ValueError | None:
        return None if values[0] else ValueError(f"{name}: contains NaN or Inf; expected finite values")

    checks.add(torch.isfinite(log_w).all(), error)
    return log_w


def _check_equal_mass(log_a: Tensor, log_b: Tensor, checks: PendingChecks) -> None:
    """Balanced OT needs sum(a) = sum(b) (to float32 round-off) for every batch item (checked on ``checks``)."""

    def error(values: list[float]) -> ValueError | None:
        gap = values[0]
        if not gap > 1e-4:
            return None
        return ValueError(
            f"log_b: total mass differs from log_a's by a factor exp({gap:.3g}); balanced OT needs "
            "equal masses (or pass rho for unbalanced OT)"
        )

    checks.add((torch.logsumexp(log_a, -1) - torch.logsumexp(log_b, -1)).abs().max(), error)


def _check_loop(max_iter: int, tol: float | None, check_every: int, grad: str) -> None:
    """Validate the loop controls of :func:`sinkhorn`."""
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r}: expected an integer >= 1")
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < math.inf):
        raise ValueError(f"tol={tol!r}: expected a finite number >= 0 (0: all max_iter iterations), or None")
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every={check_every!r}: expected an integer >= 1")
    if grad not in GRAD_MODES:
        raise ValueError(f"grad={grad!r}: expected one of {', '.join(GRAD_MODES)}")
