"""The joint loss (Problem 3.7 of Baptista et al. 2025): its three batch estimators and Theorem 3.10."""

import math

import pytest
import torch
from paired_batch import paired_batch

from clipmath.multimodal import losses, similarity
from clipmath.multimodal.encoders import LinearEncoder
from clipmath.multimodal.losses.conditional import conditional_loss
from clipmath.multimodal.losses.joint import joint_loss

METRICS = similarity.names()


def _batch(dtype, seed=0, size=5, n_e=3):
    return (*paired_batch(dtype, seed, size, n_e), torch.tensor(math.log(1 / 0.3), dtype=dtype))


def _loop_joint(logits, negatives, permutation=None):
    """-(1/B) sum_i S_ii + log of the chosen sample mean of e^S over mu_u x mu_v."""
    s = logits.tolist()
    size = len(s)
    if negatives == "off_diagonal":
        pairs = [(i, j) for i in range(size) for j in range(size) if i != j]
    elif negatives == "all_pairs":
        pairs = [(i, j) for i in range(size) for j in range(size)]
    else:
        pairs = [(i, int(permutation[i])) for i in range(size)]
    mean_exp = sum(math.exp(s[i][j]) for i, j in pairs) / len(pairs)
    return -sum(s[i][i] for i in range(size)) / size + math.log(mean_exp)


def _logits(metric, z_u, z_v, logit_scale):
    return math.exp(float(logit_scale)) * similarity.get(metric)(z_u.double(), z_v.double())


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("negatives", ["off_diagonal", "all_pairs", "shuffled"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_loop(metric, negatives, dtype, tol):
    z_u, z_v, scale = _batch(dtype)
    out = losses.build("joint", metric=metric, negatives=negatives)(z_u, z_v, logit_scale=scale)
    cyclic = [1, 2, 3, 4, 0]
    expected = _loop_joint(_logits(metric, z_u, z_v, scale), negatives, cyclic)
    assert abs(out.loss.item() - expected) < tol


def test_shuffled_uses_the_given_derangement():
    z_u, z_v, scale = _batch(torch.float64, seed=4)
    permutation = torch.tensor([3, 0, 4, 1, 2])
    out = losses.build("joint", negatives="shuffled")(z_u, z_v, logit_scale=scale, permutation=permutation)
    expected = _loop_joint(_logits("cosine", z_u, z_v, scale), "shuffled", permutation.tolist())
    assert abs(out.loss.item() - expected) < 1e-10
    default = losses.build("joint", negatives="shuffled")(z_u, z_v, logit_scale=scale).loss
    assert abs(out.loss.item() - default.item()) > 1e-3


@pytest.mark.parametrize("negatives", ["off_diagonal", "all_pairs", "shuffled"])
def test_gradcheck(negatives):
    z_u, z_v, scale = _batch(torch.float64, size=4)
    bias = torch.tensor(0.5, dtype=torch.float64)
    module = losses.build("joint", metric="inner", negatives=negatives)
    inputs = tuple(t.clone().requires_grad_() for t in (z_u, z_v, scale, bias))
    assert torch.autograd.gradcheck(lambda a, b, s, c: module(a, b, logit_scale=s, logit_bias=c).loss, inputs)


@pytest.mark.parametrize("scale", [0.05, 1.0, 20.0])
def test_batch_conditional_below_joint_with_all_pairs_for_any_logits(scale):
    """Theorem 3.10 at batch level.

    With the all-pairs plug-in mu_u^N x mu_v^N (diagonal included)
    for the product of marginals, Jensen (log is concave) gives
    (1/B) sum_i log((1/B) sum_j e^{S_ji}) <= log((1/B^2) sum_ij e^{S_ij}) and the same over rows,
    hence L^N_cond(two_sided) <= L^N_joint exactly, for every logits matrix.
    """
    gen = torch.Generator().manual_seed(7)
    for _ in range(50):
        logits = scale * torch.randn(6, 6, generator=gen, dtype=torch.float64)
        gap = joint_loss(logits, "all_pairs") - conditional_loss(logits, 1.0, 1.0)
        assert gap.item() >= -1e-13 * (1 + scale)


def test_batch_conditional_below_joint_on_gaussian_data_with_linear_encoders():
    """The same batch-level inequality on the setting of Section 5.

    Gaussian (u, v), linear encoders (eq. 38), inner metric at tau = 1. It is not the population
    statement: the batch losses approach -Tr(A C_vu) + Tr(A^T C_uu A C_vv)/2 and the population
    L_joint only as B -> inf.
    """
    gen = torch.Generator().manual_seed(11)
    g_u, g_v = LinearEncoder(3, 2).double(), LinearEncoder(2, 2).double()
    with torch.no_grad():
        for encoder in (g_u, g_v):
            encoder.weight.copy_(torch.randn(encoder.weight.shape, generator=gen, dtype=torch.float64))
    mixing = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    scale = torch.tensor(0.0, dtype=torch.float64)
    cond = losses.build("conditional", metric="inner")
    joint = losses.build("joint", metric="inner", negatives="all_pairs")
    with torch.no_grad():
        for _ in range(20):
            uv = torch.randn(64, 5, generator=gen, dtype=torch.float64) @ mixing.T
            z_u, z_v = g_u(uv[:, :3]), g_v(uv[:, 3:])
            gap = joint(z_u, z_v, logit_scale=scale).loss - cond(z_u, z_v, logit_scale=scale).loss
            assert gap.item() >= -1e-12


def test_bias_cancels():
    z_u, z_v, scale = _batch(torch.float64)
    module = losses.build("joint")
    shifted = module(z_u, z_v, logit_scale=scale, logit_bias=torch.tensor(4.0, dtype=torch.float64)).loss
    assert abs(shifted.item() - module(z_u, z_v, logit_scale=scale).loss.item()) < 1e-13


@pytest.mark.parametrize(
    ("permutation", "match"),
    [
        (torch.tensor([1, 0, 3, 2]), r"permutation=\(4,\)"),
        (torch.tensor([1, 2, 3, 4, 4]), "expected a permutation"),
        (torch.tensor([0, 2, 3, 4, 1]), "fixed points"),
        (torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0]), "integer tensor"),
        ([1, 2, 3, 4, 0], "permutation=list"),
    ],
)
def test_bad_permutation(permutation, match):
    z_u, z_v, scale = _batch(torch.float64)
    with pytest.raises(ValueError, match=match):
        losses.build("joint", negatives="shuffled")(z_u, z_v, logit_scale=scale, permutation=permutation)


def test_permutation_needs_shuffled():
    z_u, z_v, scale = _batch(torch.float64)
    with pytest.raises(ValueError, match="permutation: only used with negatives='shuffled'"):
        losses.build("joint")(z_u, z_v, logit_scale=scale, permutation=torch.tensor([1, 2, 3, 4, 0]))


def test_unknown_negatives():
    with pytest.raises(ValueError, match="negatives='random'"):
        losses.build("joint", negatives="random")


@pytest.mark.parametrize(("negatives", "fails"), [("off_diagonal", True), ("shuffled", True), ("all_pairs", False)])
def test_batch_of_one(negatives, fails):
    z, scale = torch.ones(1, 2), torch.tensor(1.0)
    module = losses.build("joint", negatives=negatives)
    if fails:
        with pytest.raises(ValueError, match="z_u: batch size 1"):
            module(z, z, logit_scale=scale)
    else:
        # exactly -S + log e^S = 0; float32 round-off of S = e * cos = 2.7 is a few 1e-7
        assert module(z, z, logit_scale=scale).loss.item() == pytest.approx(0.0, abs=1e-6)
