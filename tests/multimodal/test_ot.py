"""Log-domain Sinkhorn (clipmath.multimodal.ot) against POT, naive projections and its own limits."""

import math
import warnings

import ot as pot
import pytest
import torch

from clipmath.multimodal.ot import SinkhornConvergenceWarning, sinkhorn


def _cost(n, m, seed=0, batch=()):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(*batch, n, m, generator=gen, dtype=torch.float64)


def _cosine_cost(n, m, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z_u = torch.nn.functional.normalize(torch.randn(n, 8, generator=gen), dim=-1)
    z_v = torch.nn.functional.normalize(torch.randn(m, 8, generator=gen), dim=-1)
    return (-(z_u @ z_v.T)).to(dtype)


def _masses(n, seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
    return w / w.sum()


def _naive_sinkhorn(kernel, a, b, n_iter, exponent_u=1.0, exponent_v=1.0):
    """Exp-domain scaling iterations, row step first (Chen et al. 2024, §2; Chizat et al. 2018)."""
    v = torch.ones(kernel.shape[1], dtype=kernel.dtype)
    for _ in range(n_iter):
        u = (a / (kernel @ v)) ** exponent_u
        v = (b / (kernel.T @ u)) ** exponent_v
    return u[:, None] * kernel * v[None, :]


@pytest.mark.parametrize(("n", "m", "epsilon"), [(7, 5, 0.1), (6, 6, 0.03)])
def test_balanced_plan_equals_pot_sinkhorn_log(n, m, epsilon):
    cost, a, b = _cost(n, m), _masses(n, 1), _masses(m, 2)
    result = sinkhorn(cost=cost, epsilon=epsilon, log_a=a.log(), log_b=b.log(), tol=1e-13, max_iter=20000)
    reference = pot.bregman.sinkhorn_log(a, b, cost, epsilon, stopThr=1e-14, numItermax=20000)
    assert result.converged
    # both stop at a marginal error below 1e-13; the plans then agree to that order over epsilon
    torch.testing.assert_close(result.plan, reference, rtol=0, atol=1e-10)
    torch.testing.assert_close(result.plan.sum(-1), a, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.plan.sum(-2), b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("reg_type", ["entropy", "kl"])
def test_unbalanced_plan_equals_pot(reg_type):
    """POT's 'entropy' regulariser is our -eps H(P); its 'kl' one, eps KL(P || a b^T), shifts log K by log a + log b."""
    n, m, epsilon, rho_u, rho_v = 6, 5, 0.1, 0.3, 2.0
    cost, a, b = _cost(n, m, seed=3), 2.0 * _masses(n, 4), _masses(m, 5)
    log_kernel = -cost / epsilon
    if reg_type == "kl":
        log_kernel = log_kernel + a.log()[:, None] + b.log()[None, :]
    result = sinkhorn(
        log_kernel, epsilon=epsilon, log_a=a.log(), log_b=b.log(), rho_u=rho_u, rho_v=rho_v, tol=1e-14, max_iter=20000
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # POT notes that 'entropy' overwrites its reference c
        reference = pot.unbalanced.sinkhorn_unbalanced(
            a, b, cost, epsilon, (rho_u, rho_v), method="sinkhorn", reg_type=reg_type, stopThr=1e-15, numItermax=20000
        )
    assert result.converged
    torch.testing.assert_close(result.plan, reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rho", [None, 0.5])
def test_fixed_steps_equal_naive_alternating_scalings(rho):
    n, m, epsilon, n_iter = 5, 4, 0.2, 7
    cost, a, b = _cost(n, m, seed=6), _masses(n, 7), _masses(m, 8)
    exponent = 1.0 if rho is None else rho / (rho + epsilon)
    expected = _naive_sinkhorn(torch.exp(-cost / epsilon), a, b, n_iter, exponent, exponent)
    result = sinkhorn(cost=cost, epsilon=epsilon, log_a=a.log(), log_b=b.log(), rho=rho, tol=None, max_iter=n_iter)
    assert result.n_iter == n_iter and result.converged is None
    torch.testing.assert_close(result.plan, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("rho", [None, 0.4])
def test_batched_equals_per_item(rho):
    cost = _cost(5, 4, seed=9, batch=(3, 2))
    log_a = torch.stack([_masses(5, s).log() for s in range(6)]).reshape(3, 2, 5)
    log_b = torch.stack([_masses(4, 10 + s).log() for s in range(6)]).reshape(3, 2, 4)
    batched = sinkhorn(cost=cost, epsilon=0.1, log_a=log_a, log_b=log_b, rho=rho, tol=None, max_iter=30)
    for i in range(3):
        for j in range(2):
            single = sinkhorn(
                cost=cost[i, j], epsilon=0.1, log_a=log_a[i, j], log_b=log_b[i, j], rho=rho, tol=None, max_iter=30
            )
            for name in ("plan", "f", "g", "value"):
                torch.testing.assert_close(getattr(batched, name)[i, j], getattr(single, name), rtol=1e-13, atol=1e-15)


def test_marginals_reach_the_targets_to_tol():
    cost, tol = _cosine_cost(40, 30, torch.float64), 1e-9
    result = sinkhorn(cost=cost, epsilon=0.05, tol=tol, max_iter=5000, check_every=1)
    assert result.converged and result.marginal_error <= tol
    # the last column step makes the columns exact up to round-off
    torch.testing.assert_close(result.plan.sum(0), torch.full((30,), 1 / 30, dtype=torch.float64), rtol=1e-13, atol=0)
    # and moves the row totals by at most the column error it removes: |P1 - a|_1 <= |P^T 1 - b|_1 <= sqrt(m) tol
    assert (result.plan.sum(1) - 1 / 40).abs().sum() <= math.sqrt(30) * tol


def test_large_rho_equals_balanced():
    cost, epsilon = _cost(6, 6, seed=11), 0.1
    balanced = sinkhorn(cost=cost, epsilon=epsilon, tol=1e-13, max_iter=20000)
    relaxed = sinkhorn(cost=cost, epsilon=epsilon, rho=1e8, tol=1e-13, max_iter=20000)
    # the dampening 1 - rho/(rho+eps) = 1e-9 moves the fixed point by O(1e-9) in log P
    torch.testing.assert_close(relaxed.plan, balanced.plan, rtol=1e-7, atol=0)


def test_small_rho_returns_the_kernel():
    cost, epsilon, rho = _cost(5, 7, seed=12), 0.2, 1e-9
    result = sinkhorn(cost=cost, epsilon=epsilon, rho=rho, tol=1e-15, max_iter=100)
    log_k = -cost / epsilon
    # |log u| <= lam (|log a| + max |LSE log K|) with lam = rho / (rho + eps) = 5e-9, likewise log v
    lam = rho / (rho + epsilon)
    bound = 2 * lam * (math.log(7) + log_k.abs().max().item() + math.log(7))
    assert (result.log_plan - log_k).abs().max() <= bound


def test_value_is_the_primal_objective_at_convergence():
    cost, epsilon, rho = _cost(5, 4, seed=13), 0.1, 0.7
    for r in (None, rho):
        result = sinkhorn(cost=cost, epsilon=epsilon, rho=r, tol=1e-14, max_iter=20000)
        plan, a, b = (
            result.plan,
            torch.full((5,), 0.2, dtype=torch.float64),
            torch.full((4,), 0.25, dtype=torch.float64),
        )
        primal = (plan * cost).sum() + epsilon * (plan * (plan.log() - 1)).sum()
        if r is not None:
            for marginal, mass in ((plan.sum(1), a), (plan.sum(0), b)):
                primal = primal + r * (marginal * (marginal / mass).log() - marginal + mass).sum()
        torch.testing.assert_close(result.value, primal, rtol=1e-11, atol=0)


@pytest.mark.parametrize("rho", [None, 0.5])
def test_envelope_and_unrolled_gradients_agree_at_convergence(rho):
    gradients = []
    for grad in ("unrolled", "envelope"):
        cost = _cost(6, 5, seed=14).requires_grad_()
        result = sinkhorn(cost=cost, epsilon=0.2, rho=rho, tol=1e-13, max_iter=5000, check_every=1, grad=grad)
        result.value.backward()
        gradients.append(cost.grad)
        # envelope theorem: dD/dC = P*
        torch.testing.assert_close(cost.grad, result.plan.detach(), rtol=0, atol=1e-11)
    torch.testing.assert_close(gradients[0], gradients[1], rtol=0, atol=1e-11)


@pytest.mark.parametrize("rho", [None, 0.5])
def test_envelope_plan_gradient_is_that_of_the_last_column_step(rho):
    """The plan's envelope gradient flows through one column step from the detached row potential."""
    epsilon = 0.2
    lam = 1.0 if rho is None else rho / (rho + epsilon)
    cost = _cost(5, 4, seed=22).requires_grad_()
    result = sinkhorn(cost=cost, epsilon=epsilon, rho=rho, tol=None, max_iter=4, grad="envelope")
    (grad,) = torch.autograd.grad(result.log_plan.diagonal().sum(), cost)
    reference_cost = cost.detach().clone().requires_grad_()
    log_k = -reference_cost / epsilon
    log_u = result.f.detach()[:, None] / epsilon
    log_v = lam * (math.log(1 / 4) - torch.logsumexp(log_k + log_u, dim=0, keepdim=True))
    (expected,) = torch.autograd.grad((log_k + log_u + log_v).diagonal().sum(), reference_cost)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rho", [None, 0.5])
def test_gradcheck_unrolled(rho):
    cost = _cost(4, 3, seed=15).requires_grad_()
    epsilon = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)

    def plan(cost, epsilon):
        return sinkhorn(cost=cost, epsilon=epsilon, rho=rho, tol=None, max_iter=6).plan

    assert torch.autograd.gradcheck(plan, (cost, epsilon))


@pytest.mark.parametrize("rho", [None, 0.5])
def test_gradcheck_envelope_value_at_convergence(rho):
    cost = _cost(4, 3, seed=16).requires_grad_()

    def value(cost):
        return sinkhorn(
            cost=cost, epsilon=0.3, rho=rho, tol=1e-14, max_iter=20000, check_every=1, grad="envelope"
        ).value

    assert torch.autograd.gradcheck(value, (cost,))


def _saved_tensor_count(grad, max_iter):
    count = 0

    def pack(tensor):
        nonlocal count
        count += 1
        return tensor

    cost = _cost(6, 6, seed=17).requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        sinkhorn(cost=cost, epsilon=0.1, tol=None, max_iter=max_iter, grad=grad)
    return count


def test_envelope_graph_does_not_grow_with_iterations():
    assert _saved_tensor_count("envelope", 5) == _saved_tensor_count("envelope", 50)
    assert _saved_tensor_count("unrolled", 50) > _saved_tensor_count("unrolled", 5)


@pytest.mark.parametrize("rho", [None, 0.5])
@pytest.mark.parametrize("grad", ["unrolled", "envelope"])
def test_float32_small_epsilon_is_finite(rho, grad):
    cost = _cosine_cost(24, 20, torch.float32, seed=18).requires_grad_()
    result = sinkhorn(cost=cost, epsilon=1e-3, rho=rho, tol=None, max_iter=40, grad=grad)
    (result.value + result.log_plan.diagonal().sum()).backward()
    for tensor in (result.plan, result.log_plan, result.f, result.g, result.value, cost.grad):
        assert torch.isfinite(tensor).all()
    assert result.plan.sum() > 0


def test_non_convergence_warns_exactly_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sinkhorn(cost=_cost(8, 8, seed=19), epsilon=0.01, tol=1e-12, max_iter=3, check_every=1)
    assert result.converged is False and result.n_iter == 3
    assert [w.category for w in caught] == [SinkhornConvergenceWarning]


def test_fixed_steps_never_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = sinkhorn(cost=_cost(8, 8, seed=19), epsilon=0.01, tol=None, max_iter=3)
    assert result.converged is None and result.marginal_error > 0


def test_warm_start_from_a_converged_potential():
    cost = _cost(6, 5, seed=20)
    first = sinkhorn(cost=cost, epsilon=0.1, tol=1e-10, max_iter=5000)
    second = sinkhorn(cost=cost, epsilon=0.1, tol=1e-10, max_iter=5000, check_every=1, init=first.g)
    assert second.converged and second.n_iter == 1
    # The one extra iteration moves the plan by about half the marginal error it removes (0.4-0.6
    # measured on these costs), and first stopped with that error anywhere below tol = 1e-10: an
    # atol of tol itself would sit at the edge; 1e-9 is the bound with a margin of 20.
    torch.testing.assert_close(second.plan, first.plan, rtol=0, atol=1e-9)


@pytest.mark.parametrize("grad", ["unrolled", "envelope"])
def test_restores_the_callers_grad_mode(grad):
    cost = _cost(4, 4, seed=21).requires_grad_()
    with torch.no_grad():
        result = sinkhorn(cost=cost, tol=None, max_iter=3, grad=grad)
        assert not torch.is_grad_enabled()
    assert result.plan.grad_fn is None
    assert torch.is_grad_enabled()
    result = sinkhorn(cost=cost, tol=None, max_iter=3, grad=grad)
    assert torch.is_grad_enabled() and result.plan.requires_grad


def test_autocast_does_not_reach_the_solver():
    cost = _cosine_cost(6, 6, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = sinkhorn(cost=cost.bfloat16(), epsilon=0.1, tol=None, max_iter=5)
    assert result.plan.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"epsilon": math.nan}, "epsilon"),
        ({"epsilon": torch.ones(2)}, "epsilon"),
        ({"rho": 0.0}, "rho"),
        ({"rho_v": -1.0}, "rho_v"),
        ({"rho": 1.0, "rho_u": 1.0}, "rho"),
        ({"log_a": torch.zeros(5)}, "log_a"),
        ({"log_b": torch.zeros(2, 3)}, "log_b"),
        ({"log_a": torch.full((4,), math.nan)}, "log_a"),
        ({"log_a": torch.zeros(4), "log_b": torch.zeros(3)}, "log_b"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1e-9}, "tol"),
        ({"tol": math.inf}, "tol"),
        ({"rho": torch.ones(2)}, "rho"),
        ({"rho_u": torch.tensor(-1.0)}, "rho_u"),
        ({"epsilon": True}, "epsilon"),
        ({"check_every": 0}, "check_every"),
        ({"grad": "implicit"}, "grad"),
        ({"init": torch.zeros(4)}, "init"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sinkhorn(cost=torch.rand(4, 3), **kwargs)


def test_bad_kernels_are_named():
    with pytest.raises(ValueError, match="log_kernel, cost"):
        sinkhorn()
    with pytest.raises(ValueError, match="log_kernel, cost"):
        sinkhorn(torch.rand(3, 3), cost=torch.rand(3, 3))
    with pytest.raises(ValueError, match="cost"):
        sinkhorn(cost=torch.rand(3))
    with pytest.raises(ValueError, match="log_kernel: contains NaN"):
        sinkhorn(torch.tensor([[0.0, math.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="log_kernel: contains \\+inf"):
        sinkhorn(torch.tensor([[0.0, math.inf], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="cost: contains -inf"):
        sinkhorn(cost=torch.tensor([[0.0, -math.inf], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="log_kernel: a row or column"):
        sinkhorn(torch.tensor([[0.0, 0.0], [-math.inf, -math.inf]]))


@pytest.mark.parametrize("rho", [None, 0.4])
@pytest.mark.parametrize("grad", ["unrolled", "envelope"])
def test_batched_histograms_share_one_2d_kernel_without_resizing(rho, grad):
    """(3, n) masses against one (n, m) kernel: the work buffer has the broadcast shape (no resize warning)."""
    cost = _cost(5, 4, seed=23).requires_grad_()
    log_a = torch.stack([_masses(5, s).log() for s in range(3)])
    log_b = torch.stack([_masses(4, 10 + s).log() for s in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batched = sinkhorn(cost=cost, epsilon=0.1, log_a=log_a, log_b=log_b, rho=rho, tol=None, max_iter=30, grad=grad)
        batched.value.sum().backward()
    assert batched.plan.shape == (3, 5, 4)
    for i in range(3):
        single = sinkhorn(
            cost=cost.detach(), epsilon=0.1, log_a=log_a[i], log_b=log_b[i], rho=rho, tol=None, max_iter=30
        )
        # the same operations on the same numbers: round-off alike, as in test_batched_equals_per_item
        torch.testing.assert_close(batched.plan[i], single.plan, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("rho", [None, 0.5])
def test_tol_zero_runs_every_iteration_like_pots_stopthr_zero(rho):
    cost = _cost(6, 5, seed=24)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asking for every iteration is not a failure to converge
        result = sinkhorn(cost=cost, epsilon=0.1, rho=rho, tol=0, max_iter=500, check_every=1)
    assert result.n_iter == 500 and result.marginal_error < 1e-12
    fixed = sinkhorn(cost=cost, epsilon=0.1, rho=rho, tol=None, max_iter=500)
    torch.testing.assert_close(result.plan, fixed.plan, rtol=0, atol=0)  # the same iterations, measured


def test_rho_may_be_a_one_element_tensor_like_epsilon():
    cost, epsilon = _cost(5, 4, seed=25), 0.2
    as_float = sinkhorn(cost=cost, epsilon=epsilon, rho=0.5, tol=None, max_iter=20)
    rho = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    as_tensor = sinkhorn(cost=cost, epsilon=epsilon, rho=rho, tol=None, max_iter=20)
    torch.testing.assert_close(as_tensor.plan, as_float.plan, rtol=1e-14, atol=0)
    as_tensor.value.backward()
    # the dual value depends on rho through the dampening rho / (rho + eps) and the conjugate term
    assert rho.grad is not None and torch.isfinite(rho.grad).all() and rho.grad.abs().item() > 0
    sides = sinkhorn(cost=cost, epsilon=epsilon, rho_u=torch.tensor(0.5), rho_v=2.0, tol=None, max_iter=20)
    floats = sinkhorn(cost=cost, epsilon=epsilon, rho_u=0.5, rho_v=2.0, tol=None, max_iter=20)
    torch.testing.assert_close(sides.plan, floats.plan, rtol=1e-14, atol=0)
