"""Retrieval (Algorithm 1), recall@k and the empirical conditional (eq. 28) against brute force."""

import math

import pytest
import torch

from clipmath.multimodal.inference import conditional_weights, recall_at_k, retrieve

METRICS = ("cosine", "inner", "neg_sq_l2")


def _sim(metric, a, b):
    if metric == "cosine":
        return float(a @ b / (a.norm() * b.norm()))
    if metric == "inner":
        return float(a @ b)
    return float(-0.5 * (a - b) @ (a - b))


def _dense(metric, queries, bank):
    return torch.tensor([[_sim(metric, q, b) for b in bank] for q in queries], dtype=torch.float64)


def _embeddings(n, n_e, seed):
    return torch.randn(n, n_e, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("metric", METRICS)
def test_retrieve_matches_brute_force(metric):
    queries, bank = _embeddings(13, 4, 0), _embeddings(50, 4, 1)
    scores, indices = retrieve(queries, bank, k=6, metric=metric, chunk_size=7)
    dense = _dense(metric, queries, bank)
    want_scores, want_indices = dense.sort(dim=1, descending=True)
    assert torch.equal(indices, want_indices[:, :6])
    torch.testing.assert_close(scores, want_scores[:, :6], rtol=0, atol=1e-12)


def test_retrieve_whole_bank_is_a_permutation():
    _, indices = retrieve(_embeddings(3, 2, 2), _embeddings(9, 2, 3), k=9, chunk_size=4)
    assert torch.equal(indices.sort(dim=1).values, torch.arange(9).expand(3, 9))


@pytest.mark.parametrize("metric", METRICS)
def test_conditional_weights_match_eq_28(metric):
    queries, bank, logit_scale = _embeddings(4, 3, 4), _embeddings(11, 3, 5), math.log(1 / 0.3)
    weights = conditional_weights(queries, bank, torch.tensor(logit_scale, dtype=torch.float64), metric)
    for q in range(4):
        tilts = [math.exp(_sim(metric, queries[q], b) / 0.3) for b in bank]
        want = torch.tensor(tilts, dtype=torch.float64) / sum(tilts)
        torch.testing.assert_close(weights[q], want, rtol=1e-12, atol=0)


def test_top_one_retrieval_is_the_map_of_the_conditional():
    # Theorem 4.2: the K = 1 retrieval is the mode of nu^N.
    queries, bank = _embeddings(20, 5, 6), _embeddings(30, 5, 7)
    _, indices = retrieve(queries, bank, k=1)
    assert torch.equal(indices[:, 0], conditional_weights(queries, bank, 2.0).argmax(dim=1))


def _brute_force_recall(metric, emb_u, emb_v, ks):
    dense = _dense(metric, emb_u, emb_v)
    partner = dense.diagonal()
    rank_u = (dense > partner[:, None]).sum(1)
    rank_v = (dense > partner[None, :]).sum(0)
    out = {}
    for k in ks:
        out[f"u_to_v@{k}"] = (rank_u < k).double().mean().item()
        out[f"v_to_u@{k}"] = (rank_v < k).double().mean().item()
    return out


@pytest.mark.parametrize("metric", METRICS)
def test_recall_matches_brute_force(metric):
    emb_u = _embeddings(40, 3, 8)
    emb_v = emb_u + 0.8 * _embeddings(40, 3, 9)
    got = recall_at_k(emb_u, emb_v, ks=(1, 3, 10), metric=metric, chunk_size=7)
    assert list(got) == ["u_to_v@1", "v_to_u@1", "u_to_v@3", "v_to_u@3", "u_to_v@10", "v_to_u@10"]
    assert got == _brute_force_recall(metric, emb_u, emb_v, (1, 3, 10))
    assert 0 < got["u_to_v@1"] < got["u_to_v@10"] < 1


def test_recall_ties_do_not_push_the_partner_down():
    # Small integer embeddings make exact ties among inner products common.
    gen = torch.Generator().manual_seed(10)
    emb_u = torch.randint(-1, 2, (30, 2), generator=gen).double()
    emb_v = torch.randint(-1, 2, (30, 2), generator=gen).double()
    got = recall_at_k(emb_u, emb_v, ks=(1, 2), metric="inner", chunk_size=8)
    assert got == _brute_force_recall("inner", emb_u, emb_v, (1, 2))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: retrieve(torch.randn(2, 3), torch.randn(4, 3), k=5), "k=5"),
        (lambda: retrieve(torch.randn(2, 3), torch.randn(4, 3), k=0), "k=0"),
        (lambda: retrieve(torch.randn(2, 3), torch.randn(4, 2), k=1), "dimensions differ"),
        (lambda: retrieve(torch.randn(3), torch.randn(4, 3), k=1), "query_emb"),
        (lambda: retrieve(torch.randn(2, 3), torch.randn(4, 3), k=1, chunk_size=0), "chunk_size=0"),
        (lambda: recall_at_k(torch.randn(4, 3), torch.randn(5, 3)), "paired"),
        (lambda: recall_at_k(torch.randn(4, 3), torch.randn(4, 3), ks=(0,)), "ks=0"),
        (lambda: recall_at_k(torch.randn(4, 3), torch.full((4, 3), float("nan")), ks=(1,)), "emb_v"),
        (lambda: conditional_weights(torch.randn(2, 3), torch.randn(4, 3), torch.zeros(2)), "logit_scale"),
        (lambda: conditional_weights(torch.randn(2, 3), torch.randn(4, 3), 0.0, metric="l1"), "metric='l1'"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.slow
def test_recall_on_a_100k_pool():
    # u_i = (1, 0) and v_j = (j, 0): u_i ranks v by j, so its partner has B-1-i candidates strictly
    # above it and u_to_v@k = k/B exactly; every v_j sees all u tied, so v_to_u@k = 1.
    size = 100_000
    emb_u = torch.zeros(size, 2)
    emb_u[:, 0] = 1.0
    emb_v = torch.zeros(size, 2)
    emb_v[:, 0] = torch.arange(size, dtype=torch.float32)
    got = recall_at_k(emb_u, emb_v, ks=(1, 5), metric="inner")
    assert got == {"u_to_v@1": 1 / size, "v_to_u@1": 1.0, "u_to_v@5": 5 / size, "v_to_u@5": 1.0}
