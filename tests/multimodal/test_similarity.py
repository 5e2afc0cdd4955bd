"""Alignment metrics (Section 3.3 of Baptista et al. 2025) against explicit loops."""

import math

import pytest
import torch

from clipmath.multimodal import similarity


def _loop_metric(name, z_u, z_v):
    out = torch.empty(len(z_u), len(z_v), dtype=torch.float64)
    for i, a in enumerate(z_u.tolist()):
        for j, b in enumerate(z_v.tolist()):
            dot = sum(x * y for x, y in zip(a, b, strict=True))
            if name == "cosine":
                out[i, j] = dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
            elif name == "inner":
                out[i, j] = dot
            else:
                out[i, j] = -0.5 * sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    return out


@pytest.fixture
def pair():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(5, 3, generator=gen, dtype=torch.float64), torch.randn(4, 3, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("name", ["cosine", "inner", "neg_sq_l2"])
def test_metric_matches_loop(pair, name):
    z_u, z_v = pair
    scores = similarity.get(name)(z_u, z_v)
    assert scores.shape == (5, 4) and scores.dtype == torch.float64
    # float64 round-off on O(1) sums of three products
    torch.testing.assert_close(scores, _loop_metric(name, z_u, z_v), rtol=0, atol=1e-12)


def test_names_are_the_three_metrics():
    assert similarity.names() == ["cosine", "inner", "neg_sq_l2"]


def test_cosine_is_neg_sq_l2_plus_one_on_normalised_inputs(pair):
    z_u, z_v = (similarity.normalize(z) for z in pair)
    torch.testing.assert_close(similarity.cosine(z_u, z_v), similarity.neg_sq_l2(z_u, z_v) + 1, rtol=0, atol=1e-12)


def test_cosine_differs_from_neg_sq_l2_plus_one_without_normalisation(pair):
    gap = similarity.cosine(*pair) - similarity.neg_sq_l2(*pair) - 1
    assert gap.abs().max() > 0.1


def test_normalize_leaves_zero_rows_zero():
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    torch.testing.assert_close(similarity.normalize(z), torch.tensor([[0.0, 0.0], [0.6, 0.8]]))


@pytest.mark.parametrize("name", ["cosine", "inner", "neg_sq_l2"])
def test_half_precision_inputs_give_float32_scores(name):
    z = torch.randn(3, 4).to(torch.bfloat16)
    assert similarity.get(name)(z, z).dtype == torch.float32


def test_unknown_metric_names_the_argument():
    with pytest.raises(ValueError, match="metric='dot'"):
        similarity.get("dot")


@pytest.mark.parametrize(
    ("z_u", "z_v", "same_batch", "match"),
    [
        (torch.zeros(3), torch.zeros(3, 2), False, "z_u: expected shape"),
        (torch.zeros(3, 2), torch.zeros(3, 2, 1), False, "z_v: expected shape"),
        (torch.zeros(0, 2), torch.zeros(3, 2), False, "z_u: empty"),
        (torch.zeros(3, 2), torch.tensor([[0.0, math.nan]] * 3), False, "z_v: contains NaN"),
        (torch.zeros(3, 2), torch.zeros(3, 4), False, "embedding dimensions differ"),
        (torch.zeros(3, 2), torch.zeros(4, 2), True, "equal size"),
        ([[0.0]], torch.zeros(1, 1), False, "z_u: expected a torch.Tensor"),
    ],
)
def test_check_pair_rejects_bad_input(z_u, z_v, same_batch, match):
    with pytest.raises(ValueError, match=match):
        similarity.check_pair(z_u, z_v, same_batch=same_batch)


def test_check_pair_accepts_unpaired_sizes_by_default():
    similarity.check_pair(torch.zeros(3, 2), torch.zeros(4, 2))


@pytest.mark.parametrize("name", similarity.names())
def test_factored_maps_reproduce_every_metric(pair, name):
    map_u, map_v = similarity.factored(name)
    z_u, z_v = pair
    torch.testing.assert_close(map_u(z_u) @ map_v(z_v).T, similarity.get(name)(z_u, z_v), rtol=1e-12, atol=1e-12)
