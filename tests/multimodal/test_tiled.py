"""The tiled CLIP loss against a loop reference written from eq. 7 of Baptista, Stuart & Tran (2025)."""

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from clipmath.multimodal import losses, similarity
from clipmath.multimodal.tiled import tiled_clip_loss

# Every registered metric: a new one without a loop reference below fails here, never passes silently.
METRICS = tuple(similarity.names())


def _pair_sim(metric, a, b):
    if metric == "cosine":
        return (a @ b) / (a.norm() * b.norm())
    if metric == "inner":
        return a @ b
    if metric == "neg_sq_l2":
        return -0.5 * ((a - b) @ (a - b))
    raise AssertionError(f"metric {metric!r} has no loop reference in this test; write one from its formula")


def reference_loss(z_u, z_v, logit_scale, logit_bias, metric, weights):
    """lambda_u * mean_j CE(column j) + lambda_v * mean_i CE(row i), one logit at a time (float64)."""
    z_u, z_v = z_u.double(), z_v.double()
    B = z_u.shape[0]
    bias = 0.0 if logit_bias is None else logit_bias.double()
    logits = [
        [logit_scale.double().exp() * _pair_sim(metric, z_u[i], z_v[j]) + bias for j in range(B)] for i in range(B)
    ]
    row_ce = sum(torch.logsumexp(torch.stack(logits[i]), 0) - logits[i][i] for i in range(B)) / B
    col_ce = sum(torch.logsumexp(torch.stack([logits[i][j] for i in range(B)]), 0) - logits[j][j] for j in range(B)) / B
    lambda_u, lambda_v = weights
    return lambda_u * col_ce + lambda_v * row_ce


def _inputs(B, n_e, dtype, seed=0, scale=2.0, with_bias=True):
    gen = torch.Generator().manual_seed(seed)
    z_u = torch.randn(B, n_e, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    z_v = torch.randn(B, n_e, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    logit_scale = torch.tensor(math.log(scale), dtype=dtype, requires_grad=True)
    logit_bias = torch.tensor(-1.5, dtype=dtype, requires_grad=True) if with_bias else None
    return z_u, z_v, logit_scale, logit_bias


def _value_and_grads(loss_fn, inputs):
    loss = loss_fn(*inputs)
    leaves = [t for t in inputs if t is not None]
    return loss, torch.autograd.grad(loss, leaves)


def _compare(inputs, metric, weights, tile_size, tol):
    ours = _value_and_grads(lambda *x: tiled_clip_loss(*x, metric=metric, weights=weights, tile_size=tile_size), inputs)
    ref = _value_and_grads(lambda *x: reference_loss(*x, metric, weights), inputs)
    torch.testing.assert_close(ours[0].double(), ref[0], rtol=tol, atol=tol)
    for got, want in zip(ours[1], ref[1], strict=True):
        torch.testing.assert_close(got.double(), want.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("B", "tile_size"), [(23, 5), (16, 8), (9, 64)])
def test_matches_reference_float64(metric, B, tile_size):
    # float64 round-off on O(1)-O(10) sums of B^2 terms is ~1e-14; 1e-10 leaves room and still
    # catches any wrong term (they enter at O(1/B^2) ~ 1e-3).
    _compare(_inputs(B, 4, torch.float64), metric, (0.5, 0.5), tile_size, tol=1e-10)


@pytest.mark.parametrize("metric", METRICS)
def test_matches_reference_float32(metric):
    _compare(_inputs(29, 6, torch.float32, seed=1), metric, (0.5, 0.5), tile_size=8, tol=1e-5)


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0), (0.3, 1.2)])
def test_weights_select_the_conditional_terms(weights):
    _compare(_inputs(13, 3, torch.float64, seed=2), "inner", weights, tile_size=4, tol=1e-10)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("paper_weights", [(1.0, 1.0), (2.0, 0.0), (0.4, 1.4)])
def test_matches_the_registered_dense_losses(metric, paper_weights):
    # weights = paper lambdas / 2, and the conditional loss is offset by (l_u + l_v)/2 log B (Thm 2.8).
    inputs = _inputs(21, 5, torch.float64, seed=7)
    l_u, l_v = paper_weights
    dense = losses.build("conditional", metric=metric, weights=paper_weights)
    offset = 0.5 * (l_u + l_v) * math.log(21)
    ref = _value_and_grads(lambda *x: dense(*x).loss + offset, inputs)
    ours = _value_and_grads(
        lambda *x: tiled_clip_loss(*x, metric=metric, weights=(l_u / 2, l_v / 2), tile_size=6), inputs
    )
    for got, want in zip((ours[0], *ours[1]), (ref[0], *ref[1]), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    if paper_weights == (1.0, 1.0):
        torch.testing.assert_close(ours[0], losses.build("clip", metric=metric)(*inputs).loss, rtol=1e-12, atol=0)


def test_without_bias():
    _compare(_inputs(11, 3, torch.float64, seed=3, with_bias=False), "cosine", (0.5, 0.5), tile_size=4, tol=1e-10)


@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck(metric):
    z_u, z_v, logit_scale, logit_bias = _inputs(6, 3, torch.float64, seed=4)
    assert torch.autograd.gradcheck(
        lambda *x: tiled_clip_loss(*x, metric=metric, weights=(0.7, 0.4), tile_size=4),
        (z_u, z_v, logit_scale, logit_bias),
    )


def test_extreme_logits_stay_exact_in_float32():
    # Logits span about +-400, beyond float32's exp range (e^88): tiles must still merge exactly.
    z_u, z_v, logit_scale, logit_bias = _inputs(12, 4, torch.float32, seed=5, scale=100.0)
    with torch.no_grad():
        z_u.mul_(2.0)
    loss = tiled_clip_loss(z_u, z_v, logit_scale, logit_bias, metric="inner", tile_size=5)
    ref = reference_loss(z_u, z_v, logit_scale, logit_bias, "inner", (0.5, 0.5))
    assert torch.isfinite(loss)
    # float32 relative round-off ~1e-7 on logits of size ~400.
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-4)


def test_low_precision_inputs_compute_in_float32():
    z_u, z_v, logit_scale, _ = _inputs(10, 4, torch.float32, seed=6)
    half = tiled_clip_loss(z_u.bfloat16(), z_v.bfloat16(), logit_scale, tile_size=4)
    full = tiled_clip_loss(z_u.bfloat16().float(), z_v.bfloat16().float(), logit_scale, tile_size=4)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"z_v": torch.randn(5, 3)}, "paired batches"),
        ({"tile_size": 0}, "tile_size=0"),
        ({"weights": (-1.0, 1.0)}, "weights="),
        ({"weights": (0.0, 0.0)}, "weights="),
        ({"weights": (1.0,)}, "weights="),
        ({"logit_scale": torch.zeros(2)}, "logit_scale="),
        ({"logit_scale": torch.tensor(float("nan"))}, "logit_scale=nan"),
        ({"logit_bias": 1.0}, "logit_bias="),
        ({"metric": "l1"}, "metric='l1'"),
    ],
)
def test_bad_input(change, match):
    kwargs = {"z_u": torch.randn(4, 3), "z_v": torch.randn(4, 3), "logit_scale": torch.tensor(0.0)}
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        tiled_clip_loss(**kwargs)


_BIG_BATCH = textwrap.dedent(
    """
    import json, torch
    from clipmath.multimodal.tiled import tiled_clip_loss
    torch.set_num_threads(1)
    B, n_e = 65536, 128
    gen = torch.Generator().manual_seed(0)
    z_u = torch.randn(B, n_e, generator=gen).requires_grad_()
    z_v = torch.randn(B, n_e, generator=gen).requires_grad_()
    logit_scale = torch.tensor(2.0, requires_grad=True)
    def peak_kib():
        # VmHWM, not ru_maxrss, which inherits the peak of the parent (pytest) at exec.
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    base = peak_kib()
    loss = tiled_clip_loss(z_u, z_v, logit_scale)
    loss.backward()
    growth_kib = peak_kib() - base
    with torch.no_grad():
        # Independent check of the value: whole rows of the logits, 1024 at a time.
        s = logit_scale.exp()
        u, v = torch.nn.functional.normalize(z_u, dim=1), torch.nn.functional.normalize(z_v, dim=1)
        def block_lse(a, b):
            return torch.cat([(s * a[i:i + 1024] @ b.T).logsumexp(1) for i in range(0, B, 1024)])
        ref = 0.5 * (block_lse(u, v).mean() + block_lse(v, u).mean()) - s * (u * v).sum(1).mean()
    grads_finite = all(bool(torch.isfinite(t.grad).all()) for t in (z_u, z_v, logit_scale))
    print(json.dumps({"peak_kib": growth_kib, "loss": loss.item(), "ref": ref.item(), "finite": grads_finite}))
    """
)


@pytest.mark.slow
def test_batch_65536_runs_in_under_3_gib():
    out = subprocess.run([sys.executable, "-c", _BIG_BATCH], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["finite"]
    assert result["peak_kib"] < 3 * 1024**2
    # Both are float32 means of 65,536 log-sum-exps of size ~log(B) + 7.
    assert result["loss"] == pytest.approx(result["ref"], rel=1e-5)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    ("name", "hyper"),
    [("clip", {}), ("conditional", {"direction": "u_given_v"}), ("conditional", {"weights": (0.4, 1.4)})],
)
def test_tile_size_option_of_the_registered_losses_equals_their_dense_path(metric, name, hyper):
    inputs = _inputs(19, 4, torch.float64, seed=3)
    dense = losses.build(name, metric=metric, **hyper)
    tiled = losses.build(name, metric=metric, tile_size=5, **hyper)
    out = tiled(*inputs)
    assert out.logits is None
    ref = _value_and_grads(lambda *x: dense(*x).loss, inputs)
    ours = _value_and_grads(lambda *x: tiled(*x).loss, inputs)
    for got, want in zip((ours[0], *ours[1]), (ref[0], *ref[1]), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tile_size", [0, -3, 2.5, True])
def test_bad_tile_size_option_is_named(tile_size):
    with pytest.raises(ValueError, match="tile_size"):
        losses.build("clip", tile_size=tile_size)
