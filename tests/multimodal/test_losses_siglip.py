"""The sigmoid loss (Zhai et al. 2023) against a loop, open_clip's SigLipLoss, and gradcheck."""

import math

import pytest
import torch
from open_clip.loss import SigLipLoss as OpenSigLipLoss
from paired_batch import paired_batch

from clipmath.multimodal import losses, similarity

METRICS = similarity.names()


def _batch(dtype, seed=0, size=5, n_e=3):
    return (
        *paired_batch(dtype, seed, size, n_e),
        torch.tensor(math.log(10.0), dtype=dtype),
        torch.tensor(-3.0, dtype=dtype),
    )


def _loop_siglip(logits):
    """-(1/B) sum_ij log sigmoid(y_ij S_ij) with labels y = 2I - 1."""
    s = logits.tolist()
    size = len(s)
    total = 0.0
    for i in range(size):
        for j in range(size):
            label = 1.0 if i == j else -1.0
            total += -math.log(1.0 / (1.0 + math.exp(-label * s[i][j])))
    return total / size


def _logits(metric, z_u, z_v, logit_scale, logit_bias):
    return math.exp(float(logit_scale)) * similarity.get(metric)(z_u.double(), z_v.double()) + float(logit_bias)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_loop(metric, dtype, tol):
    z_u, z_v, scale, bias = _batch(dtype)
    out = losses.build("siglip", metric=metric)(z_u, z_v, logit_scale=scale, logit_bias=bias)
    assert out.loss.dtype == dtype
    assert abs(out.loss.item() - _loop_siglip(_logits(metric, z_u, z_v, scale, bias))) < tol


def test_without_bias_matches_loop():
    z_u, z_v, scale, _ = _batch(torch.float64, seed=3)
    out = losses.build("siglip")(z_u, z_v, logit_scale=scale)
    assert abs(out.loss.item() - _loop_siglip(_logits("cosine", z_u, z_v, scale, 0.0))) < 1e-10


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_equals_open_clip(dtype, rtol):
    z_u, z_v, scale, bias = _batch(dtype, seed=1, size=16, n_e=8)
    z_u, z_v = similarity.normalize(z_u), similarity.normalize(z_v)
    ours = losses.build("siglip")(z_u, z_v, logit_scale=scale, logit_bias=bias).loss
    theirs = OpenSigLipLoss()(z_u, z_v, scale.exp(), bias)
    # both sum B^2 terms in the given precision; the loss is O(10), so compare relatively
    assert abs(ours.item() - theirs.item()) < rtol * abs(theirs.item())


@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck(metric):
    z_u, z_v, scale, bias = _batch(torch.float64, size=4)
    module = losses.build("siglip", metric=metric)
    inputs = tuple(t.clone().requires_grad_() for t in (z_u, z_v, scale, bias))
    assert torch.autograd.gradcheck(lambda a, b, s, c: module(a, b, logit_scale=s, logit_bias=c).loss, inputs)


def test_bias_gets_the_gradient_of_the_loop():
    """d/db of (1/B) sum_ij softplus(-y_ij S_ij) is (1/B) sum_ij (sigmoid(S_ij) - [i == j])."""
    z_u, z_v, scale, bias = _batch(torch.float64)
    bias.requires_grad_()
    losses.build("siglip")(z_u, z_v, logit_scale=scale, logit_bias=bias).loss.backward()
    s = _logits("cosine", z_u, z_v, scale, bias.detach())
    expected = (torch.sigmoid(s).sum() - len(s)) / len(s)
    assert abs(bias.grad.item() - expected.item()) < 1e-12
    assert abs(expected.item()) > 0.1
