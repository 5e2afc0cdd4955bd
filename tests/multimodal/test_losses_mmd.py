"""The MMD losses (Example B.1 and Problem 3.11 of Baptista et al. 2025) against loops over index tuples."""

import itertools
import math

import pytest
import torch

from clipmath.multimodal import losses, similarity
from clipmath.multimodal.losses.mmd import gaussian_gram, mmd_conditional_loss, mmd_joint_loss

METRICS = similarity.names()
DIRECTION_WEIGHTS = {"two_sided": (1.0, 1.0), "u_given_v": (2.0, 0.0), "v_given_u": (0.0, 2.0)}
KERNELS = {
    "gaussian": (
        {"bandwidth": 1.5},
        lambda x, y: math.exp(-sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) / (2 * 1.5**2)),
    ),
    "polynomial": (
        {"degree": 3, "offset": 0.5},
        lambda x, y: (sum(a * b for a, b in zip(x, y, strict=True)) + 0.5) ** 3,
    ),
}


def _batch(dtype, seed=0, size=4, n_e=3):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(size, 2, 2, generator=gen, dtype=torch.float64)
    v = u.flatten(1)[:, :3] + 0.5 * torch.randn(size, 3, generator=gen, dtype=torch.float64)
    z_u = u.flatten(1)[:, :n_e] + 0.3 * torch.randn(size, n_e, generator=gen, dtype=torch.float64)
    z_v = v[:, :n_e] + 0.3 * torch.randn(size, n_e, generator=gen, dtype=torch.float64)
    scale = torch.tensor(math.log(1 / 0.5), dtype=dtype)
    return z_u.to(dtype), z_v.to(dtype), scale, u.to(dtype), v.to(dtype)


def _loop_gram(kernel, x):
    rows = x.double().flatten(1).tolist()
    return [[kernel(a, b) for b in rows] for a in rows]


def _loop_mmd_u_given_v(s, k_u):
    """The batch conditional MMD loss from its definition.

    1/2 E_{v, u, u' ~ mu_v x mu_u x mu_u}[k rho rho'] - E_{(u,v) ~ mu, u' ~ mu_u}[k rho'] with every
    measure replaced by the batch's empirical one; rho(u_j|v_i) = e^{S_ji} / ((1/B) sum_l e^{S_li}).
    """
    size = len(s)
    column_mean = [sum(math.exp(s[m][i]) for m in range(size)) / size for i in range(size)]
    rho = [[math.exp(s[j][i]) / column_mean[i] for i in range(size)] for j in range(size)]
    triple = sum(k_u[j][k] * rho[j][i] * rho[k][i] for i, j, k in itertools.product(range(size), repeat=3)) / size**3
    pair = sum(k_u[i][k] * rho[k][i] for i, k in itertools.product(range(size), repeat=2)) / size**2
    return 0.5 * triple - pair


def _loop_mmd_conditional(logits, k_u, k_v, lambda_u, lambda_v):
    s = logits.tolist()
    s_t = logits.T.tolist()
    return lambda_u * _loop_mmd_u_given_v(s, k_u) + lambda_v * _loop_mmd_u_given_v(s_t, k_v)


def _loop_mmd_joint(logits, k_u, k_v):
    """-2 E_{x ~ mu, y ~ nu} k(x, y) + E_{y, y' ~ nu} k(y, y'), k = k_u k_v, nu = rho mu_u^N x mu_v^N."""
    s = logits.tolist()
    size = len(s)
    norm = sum(math.exp(s[j][m]) for j, m in itertools.product(range(size), repeat=2)) / size**2
    rho = [[math.exp(s[j][m]) / norm for m in range(size)] for j in range(size)]
    cross = sum(rho[j][m] * k_u[i][j] * k_v[i][m] for i, j, m in itertools.product(range(size), repeat=3)) / size**3
    model = (
        sum(
            rho[j][m] * rho[jj][mm] * k_u[j][jj] * k_v[m][mm]
            for j, m, jj, mm in itertools.product(range(size), repeat=4)
        )
        / size**4
    )
    return -2 * cross + model


def _logits(metric, z_u, z_v, logit_scale):
    return math.exp(float(logit_scale)) * similarity.get(metric)(z_u.double(), z_v.double())


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("direction", list(DIRECTION_WEIGHTS))
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_conditional_matches_loop(metric, kernel, direction, dtype, tol):
    z_u, z_v, scale, u, v = _batch(dtype)
    params, k = KERNELS[kernel]
    module = losses.build("mmd_conditional", metric=metric, direction=direction, kernel=kernel, **params)
    out = module(z_u, z_v, logit_scale=scale, u=u, v=v)
    expected = _loop_mmd_conditional(
        _logits(metric, z_u, z_v, scale), _loop_gram(k, u), _loop_gram(k, v), *DIRECTION_WEIGHTS[direction]
    )
    assert out.loss.dtype == dtype
    # the polynomial Gram entries reach ~1e2, so scale the tolerance with them
    assert abs(out.loss.item() - expected) < tol * max(1.0, abs(expected))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_joint_matches_loop(metric, kernel, dtype, tol):
    z_u, z_v, scale, u, v = _batch(dtype, seed=1)
    params, k = KERNELS[kernel]
    out = losses.build("mmd_joint", metric=metric, kernel=kernel, **params)(z_u, z_v, logit_scale=scale, u=u, v=v)
    expected = _loop_mmd_joint(_logits(metric, z_u, z_v, scale), _loop_gram(k, u), _loop_gram(k, v))
    assert abs(out.loss.item() - expected) < tol * max(1.0, abs(expected))


def test_explicit_weights_match_loop():
    z_u, z_v, scale, u, v = _batch(torch.float64, seed=2)
    out = losses.build("mmd_conditional", weights=(0.3, 1.2))(z_u, z_v, logit_scale=scale, u=u, v=v)
    k = lambda x, y: math.exp(-sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) / 2)  # noqa: E731 (default h = 1)
    logits = _logits("cosine", z_u, z_v, scale)
    expected = _loop_mmd_conditional(logits, _loop_gram(k, u), _loop_gram(k, v), 0.3, 1.2)
    assert abs(out.loss.item() - expected) < 1e-10


def _random_problem(seed, size=6):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(size, 3, generator=gen, dtype=torch.float64)
    v = torch.randn(size, 2, generator=gen, dtype=torch.float64)
    logits = 3.0 * torch.randn(size, size, generator=gen, dtype=torch.float64)
    return logits, gaussian_gram(u, 0.8), gaussian_gram(v, 0.8)


def test_conditional_is_half_mmd_to_the_partner_plus_constant():
    """L(1,0) + (1/2B) sum_i K_ii = (1/B) sum_i (1/2) MMD^2(delta_{u_i}, nu^N_{u|v_i}) >= 0 for a PD kernel."""
    for seed in range(20):
        logits, gram_u, gram_v = _random_problem(seed)
        u_given_v = mmd_conditional_loss(logits, gram_u, gram_v, 1.0, 0.0)
        v_given_u = mmd_conditional_loss(logits, gram_u, gram_v, 0.0, 1.0)
        assert (u_given_v + 0.5 * gram_u.diagonal().mean()).item() >= -1e-14
        assert (v_given_u + 0.5 * gram_v.diagonal().mean()).item() >= -1e-14
    # the bound is attained when each column of the softmax is the partner's indicator
    aligned = mmd_conditional_loss(60.0 * torch.eye(6, dtype=torch.float64), gram_u, gram_v, 1.0, 0.0)
    assert abs(aligned.item() + 0.5) < 1e-12


def test_aligned_logits_beat_uninformative_ones_and_the_excluded_estimator_would_not():
    """Why the loss keeps the tuples j = k and i = k: without them uniform logits would win."""
    _, gram_u, gram_v = _random_problem(3)
    aligned, uniform = 60.0 * torch.eye(6, dtype=torch.float64), torch.zeros(6, 6, dtype=torch.float64)
    two_sided = [mmd_conditional_loss(logits, gram_u, gram_v, 1.0, 1.0) for logits in (aligned, uniform)]
    assert two_sided[0] < two_sided[1] - 0.1

    def excluded(logits, gram):
        size = len(gram)
        rho = size * torch.softmax(logits, dim=0)
        off = ~torch.eye(size, dtype=torch.bool)
        triple = sum((gram * off * torch.outer(rho[:, i], rho[:, i])).sum() for i in range(size))
        triple = triple / (size**2 * (size - 1))
        pair = (gram * off * rho.T).sum() / (size * (size - 1))
        return 0.5 * triple - pair

    # the module docstring's figures: 0 for the aligned logits, -(1/2) mean_{j != k} K_jk for uniform ones
    mean_off = (gram_u.sum() - gram_u.trace()) / (6 * 5)
    assert abs(excluded(aligned, gram_u).item()) < 1e-12
    assert abs(excluded(uniform, gram_u).item() + 0.5 * mean_off.item()) < 1e-12
    assert mean_off > 0.05


def test_joint_plus_constant_is_a_squared_mmd():
    """L + (1/B^2) sum_{i,i'} K^u_{ii'} K^v_{ii'} = MMD^2(mu^N, nu^N) >= 0, and 0 when nu^N = mu^N."""
    for seed in range(20):
        logits, gram_u, gram_v = _random_problem(seed)
        constant = (gram_u * gram_v).mean()
        assert (mmd_joint_loss(logits, gram_u, gram_v) + constant).item() >= -1e-14
    # e^{S} putting mass 1/B on each positive pair makes nu^N = mu^N
    aligned = mmd_joint_loss(80.0 * torch.eye(6, dtype=torch.float64), gram_u, gram_v)
    assert abs((aligned + constant).item()) < 1e-12


@pytest.mark.parametrize("name", ["mmd_conditional", "mmd_joint"])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_gradcheck(name, kernel):
    z_u, z_v, scale, u, v = _batch(torch.float64, size=3)
    module = losses.build(name, metric="cosine", kernel=kernel, **KERNELS[kernel][0])
    bias = torch.tensor(0.2, dtype=torch.float64)
    inputs = tuple(t.clone().requires_grad_() for t in (z_u, z_v, scale, bias))

    def loss(z_u, z_v, logit_scale, logit_bias):
        return module(z_u, z_v, logit_scale=logit_scale, logit_bias=logit_bias, u=u, v=v).loss

    assert torch.autograd.gradcheck(loss, inputs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel": "laplace"}, "kernel='laplace'"),
        ({"kernel": "gaussian", "degree": 2}, "degree=2"),
        ({"kernel": "polynomial", "bandwidth": 1.0}, "bandwidth=1.0"),
        ({"bandwidth": 0.0}, "bandwidth=0.0"),
        ({"bandwidth": math.inf}, "bandwidth=inf"),
        ({"kernel": "polynomial", "degree": 0}, "degree=0"),
        ({"kernel": "polynomial", "degree": 2.5}, "degree=2.5"),
        ({"kernel": "polynomial", "offset": -1.0}, "offset=-1.0"),
    ],
)
@pytest.mark.parametrize("name", ["mmd_conditional", "mmd_joint"])
def test_bad_kernel_parameters(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        losses.build(name, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"direction": "sideways"}, "direction='sideways'"), ({"direction": "u_given_v", "weights": (1, 0)}, "not both")],
)
def test_bad_direction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        losses.build("mmd_conditional", **kwargs)


@pytest.mark.parametrize("name", ["mmd_conditional", "mmd_joint"])
def test_bad_data(name):
    z_u, z_v, scale, u, v = _batch(torch.float64)
    module = losses.build(name)
    with pytest.raises(ValueError, match="u: required"):
        module(z_u, z_v, logit_scale=scale, v=v)
    with pytest.raises(ValueError, match="v: required"):
        module(z_u, z_v, logit_scale=scale, u=u)
    with pytest.raises(ValueError, match=r"v=\(3, 3\): expected a tensor with batch size 4"):
        module(z_u, z_v, logit_scale=scale, u=u, v=v[:3])
    with pytest.raises(ValueError, match="u: contains NaN"):
        module(z_u, z_v, logit_scale=scale, u=torch.full_like(u, math.nan), v=v)
