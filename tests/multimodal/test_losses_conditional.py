"""The conditional loss (eq. 12, Problem 3.13 of Baptista et al. 2025): loops, Theorem 2.8, directions."""

import math

import pytest
import torch
from paired_batch import paired_batch

from clipmath.multimodal import losses, similarity
from clipmath.multimodal.losses.clip import clip_loss
from clipmath.multimodal.losses.conditional import conditional_loss

METRICS = similarity.names()
DIRECTION_WEIGHTS = {"two_sided": (1.0, 1.0), "u_given_v": (2.0, 0.0), "v_given_u": (0.0, 2.0)}


def _batch(dtype, seed=0, size=5, n_e=3):
    return (*paired_batch(dtype, seed, size, n_e), torch.tensor(math.log(1 / 0.3), dtype=dtype))


def _loop_conditional(logits, lambda_u, lambda_v):
    """Eq. 12 / Problem 3.13 with the empirical densities rho^N = p / (1/B) (Remark 2.3)."""
    s = logits.tolist()
    size = len(s)
    total = 0.0
    for i in range(size):
        # u|v_i: normalise over u, i.e. down column i; v|u_i: along row i
        rho_u_given_v = math.exp(s[i][i]) / (sum(math.exp(s[j][i]) for j in range(size)) / size)
        rho_v_given_u = math.exp(s[i][i]) / (sum(math.exp(s[i][j]) for j in range(size)) / size)
        total += 0.5 * lambda_u * math.log(rho_u_given_v) + 0.5 * lambda_v * math.log(rho_v_given_u)
    return -total / size


def _loop_clip(logits):
    s = logits.tolist()
    size = len(s)
    log_p = [
        2 * s[i][i]
        - math.log(sum(math.exp(s[j][i]) for j in range(size)))
        - math.log(sum(math.exp(s[i][j]) for j in range(size)))
        for i in range(size)
    ]
    return -0.5 * sum(log_p) / size


def _logits(metric, z_u, z_v, logit_scale):
    return math.exp(float(logit_scale)) * similarity.get(metric)(z_u.double(), z_v.double())


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("direction", list(DIRECTION_WEIGHTS))
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_loop(metric, direction, dtype, tol):
    z_u, z_v, scale = _batch(dtype)
    out = losses.build("conditional", metric=metric, direction=direction)(z_u, z_v, logit_scale=scale)
    expected = _loop_conditional(_logits(metric, z_u, z_v, scale), *DIRECTION_WEIGHTS[direction])
    assert out.loss.dtype == dtype
    assert abs(out.loss.item() - expected) < tol


@pytest.mark.parametrize("weights", [(0.3, 1.7), (1.0, 0.0), (0.0, 0.5)])
def test_explicit_weights_match_loop(weights):
    z_u, z_v, scale = _batch(torch.float64, seed=2)
    out = losses.build("conditional", metric="inner", weights=weights)(z_u, z_v, logit_scale=scale)
    assert abs(out.loss.item() - _loop_conditional(_logits("inner", z_u, z_v, scale), *weights)) < 1e-10


@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0])
@pytest.mark.parametrize("size", [1, 2, 7])
def test_theorem_2_8_clip_is_conditional_plus_log_b(scale, size):
    gen = torch.Generator().manual_seed(size)
    logits = scale * torch.randn(size, size, generator=gen, dtype=torch.float64)
    gap = clip_loss(logits) - conditional_loss(logits, 1.0, 1.0)
    # round-off of logsumexp on entries of size ~3 * scale
    assert abs(gap.item() - math.log(size)) < 1e-13 * (1 + scale)
    # the identity holds between the paper's formulas too, not only between our functions
    assert abs(_loop_clip(logits) - _loop_conditional(logits, 1.0, 1.0) - math.log(size)) < 1e-12 * (1 + scale)


def test_one_sided_terms_use_columns_for_u_given_v():
    logits = torch.tensor([[2.0, 0.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    u_given_v = conditional_loss(logits, 2.0, 0.0)
    v_given_u = conditional_loss(logits, 0.0, 2.0)
    # the logits are not symmetric, so the two directions differ ...
    assert abs(u_given_v - v_given_u) > 0.1
    # ... and swapping u and v swaps them, up to round-off: the transposed (strided) log-softmax
    # may sum in another order, a few ulps of logits up to 3 (ulp 4.4e-16), so not below 1e-15
    assert abs(conditional_loss(logits.T, 0.0, 2.0) - u_given_v) < 1e-14
    assert abs(u_given_v.item() - _loop_conditional(logits, 2.0, 0.0)) < 1e-12


def test_weights_combine_linearly():
    logits = 2.0 * torch.randn(6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    combined = conditional_loss(logits, 0.4, 1.5)
    parts = 0.2 * conditional_loss(logits, 2.0, 0.0) + 0.75 * conditional_loss(logits, 0.0, 2.0)
    assert abs(combined - parts) < 1e-14


@pytest.mark.parametrize("direction", list(DIRECTION_WEIGHTS))
def test_gradcheck(direction):
    z_u, z_v, scale = _batch(torch.float64, size=4)
    bias = torch.tensor(0.5, dtype=torch.float64)
    module = losses.build("conditional", metric="neg_sq_l2", direction=direction)
    inputs = tuple(t.clone().requires_grad_() for t in (z_u, z_v, scale, bias))
    assert torch.autograd.gradcheck(lambda a, b, s, c: module(a, b, logit_scale=s, logit_bias=c).loss, inputs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"direction": "u|v"}, "direction='u|v'"),
        ({"direction": "two_sided", "weights": (1, 1)}, "not both"),
        ({"weights": (1.0, -1.0)}, "weights="),
        ({"weights": (0.0, 0.0)}, "not both zero"),
        ({"weights": (math.nan, 1.0)}, "weights="),
        ({"weights": 1.0}, "weights=1.0"),
        ({"weights": (1.0, 2.0, 3.0)}, "weights="),
        ({"metric": "l1"}, "metric='l1'"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        losses.build("conditional", **kwargs)


def test_default_is_two_sided():
    assert (losses.build("conditional").weight_u_given_v, losses.build("conditional").weight_v_given_u) == (1.0, 1.0)
