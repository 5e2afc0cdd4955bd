"""The CLIP loss (eq. 7 of Baptista et al. 2025) against a loop, open_clip's ClipLoss, and gradcheck."""

import math

import pytest
import torch
from open_clip.loss import ClipLoss as OpenClipLoss
from paired_batch import paired_batch

from clipmath.multimodal import losses, similarity
from clipmath.multimodal.losses.clip import clip_loss

METRICS = similarity.names()


def _batch(dtype, seed=0, size=5, n_e=3):
    return (*paired_batch(dtype, seed, size, n_e), torch.tensor(math.log(1 / 0.3), dtype=dtype))


def _loop_clip(logits):
    """Eq. 7: -1/(2B) sum_i [log p(u_i|v_i) + log p(v_i|u_i)], eqs. 5a/6a written out."""
    s = logits.tolist()
    size = len(s)
    total = 0.0
    for i in range(size):
        p_u_given_v = math.exp(s[i][i]) / sum(math.exp(s[j][i]) for j in range(size))
        p_v_given_u = math.exp(s[i][i]) / sum(math.exp(s[i][j]) for j in range(size))
        total += math.log(p_u_given_v) + math.log(p_v_given_u)
    return -0.5 * total / size


def _loop_logits(metric, z_u, z_v, logit_scale, logit_bias=0.0):
    sim = similarity.get(metric)(z_u.double(), z_v.double())
    return math.exp(float(logit_scale)) * sim + float(logit_bias)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_loop(metric, dtype, tol):
    z_u, z_v, scale = _batch(dtype)
    out = losses.build("clip", metric=metric)(z_u, z_v, logit_scale=scale)
    assert out.loss.dtype == dtype
    assert abs(out.loss.item() - _loop_clip(_loop_logits(metric, z_u, z_v, scale))) < tol


@pytest.mark.parametrize("bias", [None, -2.5])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-13), (torch.float32, 1e-6)])
def test_equals_open_clip(bias, dtype, tol):
    z_u, z_v, scale = _batch(dtype, seed=1, size=16, n_e=8)
    z_u, z_v = similarity.normalize(z_u), similarity.normalize(z_v)
    logit_bias = None if bias is None else torch.tensor(bias, dtype=dtype)
    ours = losses.build("clip")(z_u, z_v, logit_scale=scale, logit_bias=logit_bias).loss
    theirs = OpenClipLoss()(z_u, z_v, scale.exp(), logit_bias=logit_bias)
    assert abs(ours.item() - theirs.item()) < tol


def test_perfectly_separated_logits_give_near_zero_loss():
    # exact value log(1 + 3 e^-40); the logsumexp of entries of size 40 costs ~40 float64 ulps
    loss = clip_loss(40.0 * torch.eye(4, dtype=torch.float64)).item()
    assert abs(loss - math.log1p(3 * math.exp(-40))) < 100 * 40 * 2.2e-16


@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck(metric):
    z_u, z_v, scale = _batch(torch.float64, size=4)
    bias = torch.tensor(-1.0, dtype=torch.float64)
    module = losses.build("clip", metric=metric)
    inputs = tuple(t.clone().requires_grad_() for t in (z_u, z_v, scale, bias))
    assert torch.autograd.gradcheck(lambda a, b, s, c: module(a, b, logit_scale=s, logit_bias=c).loss, inputs)


def test_bias_cancels_exactly():
    z_u, z_v, scale = _batch(torch.float64)
    bias = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    module = losses.build("clip")
    with_bias = module(z_u, z_v, logit_scale=scale, logit_bias=bias).loss
    with_bias.backward()
    assert abs(with_bias.item() - module(z_u, z_v, logit_scale=scale).loss.item()) < 1e-13
    # d/db of a softmax cross-entropy is sum(softmax) - 1 = 0 up to B float64 round-offs
    assert abs(bias.grad.item()) < 1e-14
