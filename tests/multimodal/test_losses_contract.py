"""The loss contract (clipmath.multimodal.losses.base), checked for every registered loss and metric.

Each loss built by ``losses.build(name, metric=...)`` with its defaults must: return a LossOutput
with a finite scalar loss and the (B, B) logits exp(logit_scale) * sim + bias (or None); work in
float32 under bf16 autocast and in float64; give logit_scale a nonzero gradient (and the bias a
finite one); not depend on the order of the pairs in the batch; reject bad input with a
ValueError naming the argument; and wait for the device at most once per training step (its
value checks resolved together). Losses that need extra keyword inputs declare them in ``reads``.
"""

import math

import pytest
import torch

from clipmath.multimodal import encoders, losses, similarity
from clipmath.multimodal.checks import count_host_syncs
from clipmath.multimodal.model import BimodalModel

SIZE = 6
# The RINCE-type losses have no minimum on inner-product logits (rince, gca_rince at lam < 1, gca_uot at any lam).
UNBOUNDED = [(name, "inner") for name in ("rince", "gca_rince", "gca_uot")]
CASES = [(name, metric) for name in losses.names() for metric in similarity.names() if (name, metric) not in UNBOUNDED]
# The exact tiled path of the conditional losses, checked like a loss of its own.
TILED = [(name, {"tile_size": 4}) for name in ("clip", "conditional")]


def _inputs(name, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z_u = torch.randn(SIZE, 4, generator=gen, dtype=torch.float64)
    z_v = z_u + 0.8 * torch.randn(SIZE, 4, generator=gen, dtype=torch.float64)
    data = {"u": torch.randn(SIZE, 2, 3, generator=gen), "v": torch.randn(SIZE, 5, generator=gen)}
    extras = {key: data[key].to(dtype) for key in losses.build(name).reads}
    scale = torch.tensor(math.log(1 / 0.2), dtype=dtype)
    bias = torch.tensor(-1.5, dtype=dtype)
    return z_u.to(dtype), z_v.to(dtype), scale, bias, extras


@pytest.mark.parametrize(("name", "metric"), CASES)
def test_output_and_logits(name, metric):
    z_u, z_v, scale, bias, extras = _inputs(name, torch.float64)
    out = losses.build(name, metric=metric)(z_u, z_v, logit_scale=scale, logit_bias=bias, **extras)
    assert isinstance(out, losses.LossOutput)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    if out.logits is not None:
        expected = scale.exp() * similarity.get(metric)(z_u, z_v) + bias
        torch.testing.assert_close(out.logits, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "metric"), CASES)
def test_float32_agrees_with_float64(name, metric):
    module = losses.build(name, metric=metric)
    results = []
    for dtype in (torch.float32, torch.float64):
        z_u, z_v, scale, bias, extras = _inputs(name, dtype)
        out = module(z_u, z_v, logit_scale=scale, logit_bias=bias, **extras)
        assert out.loss.dtype == dtype
        results.append(out.loss.item())
    # float32 round-off of O(B^2) terms of size O(10)
    assert abs(results[0] - results[1]) < 1e-5 * max(1.0, abs(results[1]))


@pytest.mark.parametrize(("name", "metric"), CASES)
def test_float32_under_bf16_autocast(name, metric):
    z_u, z_v, scale, bias, extras = _inputs(name)
    module = losses.build(name, metric=metric)
    reference = module(z_u, z_v, logit_scale=scale, logit_bias=bias, **extras).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(z_u, z_v, logit_scale=scale, logit_bias=bias, **extras)
        from_bf16 = module(z_u.bfloat16(), z_v.bfloat16(), logit_scale=scale, logit_bias=bias, **extras)
    assert out.loss.dtype == torch.float32 and from_bf16.loss.dtype == torch.float32
    assert out.logits is None or out.logits.dtype == torch.float32
    # autocast must not reach the logits: same float32 result up to float32 round-off
    assert abs(out.loss.item() - reference.item()) < 1e-6 * max(1.0, abs(reference.item()))


@pytest.mark.parametrize(("name", "metric"), CASES)
def test_gradients(name, metric):
    z_u, z_v, scale, bias, extras = _inputs(name, torch.float64)
    leaves = [t.clone().requires_grad_() for t in (z_u, z_v, scale, bias)]
    module = losses.build(name, metric=metric)
    module(leaves[0], leaves[1], logit_scale=leaves[2], logit_bias=leaves[3], **extras).loss.backward()
    for leaf, label in zip(leaves, ("z_u", "z_v", "logit_scale", "logit_bias"), strict=True):
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all(), label
    assert leaves[0].grad.abs().max() > 0 and leaves[1].grad.abs().max() > 0
    assert abs(leaves[2].grad.item()) > 1e-6, "logit_scale gets no gradient"


@pytest.mark.parametrize("name", losses.names())
def test_invariant_to_the_order_of_pairs(name):
    z_u, z_v, scale, bias, extras = _inputs(name, torch.float64)
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    module = losses.build(name)
    loss = module(z_u, z_v, logit_scale=scale, logit_bias=bias, **extras).loss
    shuffled = {key: value[order] for key, value in extras.items()}
    permuted = module(z_u[order], z_v[order], logit_scale=scale, logit_bias=bias, **shuffled).loss
    assert abs(loss.item() - permuted.item()) < 1e-12 * max(1.0, abs(loss.item()))


@pytest.mark.parametrize(("name", "params"), [(name, {}) for name in losses.names()] + TILED)
@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda z_u, z_v, s, b: (z_u[:, :, None], z_v, s, b), "z_u"),
        (lambda z_u, z_v, s, b: (z_u, z_v[:, :3], s, b), "z_u and z_v"),
        (lambda z_u, z_v, s, b: (z_u, z_v[:4], s, b), "z_u and z_v"),
        (lambda z_u, z_v, s, b: (z_u, torch.full_like(z_v, math.nan), s, b), "z_v: contains NaN"),
        (lambda z_u, z_v, s, b: (_poison(z_u), z_v, s, b), "z_u: contains NaN or Inf"),
        (lambda z_u, z_v, s, b: (_poison(z_u), _poison(z_v), s, b), "z_u: contains NaN or Inf"),
        (lambda z_u, z_v, s, b: (z_u, z_v, torch.ones(2), b), "logit_scale"),
        (lambda z_u, z_v, s, b: (z_u, z_v, torch.tensor(math.nan), b), "logit_scale=nan"),
        # exp(-inf) = 0 makes every logit the bias: finite, so the scale itself must be checked.
        (lambda z_u, z_v, s, b: (z_u, z_v, torch.tensor(-math.inf), b), "logit_scale=-inf"),
        (lambda z_u, z_v, s, b: (z_u, z_v, s, torch.tensor(math.inf)), "logit_bias=inf"),
        (lambda z_u, z_v, s, b: (z_u, z_v, s, torch.tensor(-math.inf)), "logit_bias=-inf"),
    ],
)
def test_bad_input_names_the_argument(name, params, change, match):
    z_u, z_v, scale, bias, extras = _inputs(name)
    z_u, z_v, scale, bias = change(z_u, z_v, scale, bias)
    with pytest.raises(ValueError, match=match):
        losses.build(name, **params)(z_u, z_v, logit_scale=scale, logit_bias=bias, **extras)


def _poison(z):
    """``z`` with one +inf entry."""
    z = z.clone()
    z[2, 1] = math.inf
    return z


@pytest.mark.parametrize(("name", "params"), [(name, {}) for name in losses.names()] + TILED)
def test_one_host_sync_per_training_step(name, params):
    """model(u, v), the loss and its backward read one value on the host: the loss's checks, together.

    Each read (``.item()``, ``bool(t)``, ...) is a device wait on a GPU and a graph break for
    torch.compile; before the checks were gathered a GCA step made 13 of them.
    """
    gen = torch.Generator().manual_seed(0)
    model = BimodalModel(encoders.build("linear", n_in=5, n_e=4), encoders.build("linear", n_in=5, n_e=4))
    u = torch.randn(SIZE, 5, generator=gen)
    v = u + torch.randn(SIZE, 5, generator=gen)
    extras = {"u": u, "v": v}
    module = losses.build(name, **params)
    with count_host_syncs() as syncs:
        out = model(u, v)
        module(
            out.z_u, out.z_v, logit_scale=out.logit_scale, **{key: extras[key] for key in module.reads}
        ).loss.backward()
    assert sum(syncs.values()) == 1, dict(syncs)


@pytest.mark.parametrize("name", losses.names())
def test_bad_construction(name):
    with pytest.raises(ValueError, match="metric='manhattan'"):
        losses.build(name, metric="manhattan")
    with pytest.raises(ValueError, match="bad hyperparameters"):
        losses.build(name, no_such_option=1)


OVERFLOW_CASES = [(name, {}) for name in losses.names()] + TILED


@pytest.mark.parametrize(("name", "params"), OVERFLOW_CASES)
def test_logit_scale_passed_as_the_scale_is_an_error_not_nan(name, params):
    """logit_scale = 100 (open_clip's scale, not its log) makes exp(100) overflow float32."""
    z_u, z_v, _, bias, extras = _inputs(name)
    module = losses.build(name, **params)
    with pytest.raises(ValueError, match=r"logit_scale=100: .*logit_scale is log\(1/tau\)"):
        module(z_u, z_v, logit_scale=torch.tensor(100.0), logit_bias=bias, **extras)
    # The model's clamp, tau = 0.01, is fine: finite loss and gradients.
    leaves = [t.clone().requires_grad_() for t in (z_u, z_v)]
    scale = torch.tensor(math.log(100.0), requires_grad=True)
    out = module(*leaves, logit_scale=scale, logit_bias=bias, **extras)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(scale.grad)
    assert all(torch.isfinite(leaf.grad).all() for leaf in leaves)


@pytest.mark.parametrize("name", ["rince", "gca_rince"])
def test_a_balanced_robust_term_on_unbounded_logits_is_refused_naming_the_metric_below_lam_one(name):
    with pytest.raises(ValueError, match=r"^metric='inner': the RINCE term with lam=0.01 < 1 is unbounded below"):
        losses.build(name, metric="inner")
    assert losses.build(name, metric="inner", lam=1.0).metric == "inner"  # bounded below (by 0) for lam >= 1


def test_the_unbalanced_robust_term_on_unbounded_logits_is_refused_at_every_lam_unless_its_weight_is_zero():
    with pytest.raises(ValueError, match=r"^metric='inner': the RINCE term at every lam \(unbalanced plan\)"):
        losses.build("gca_uot", metric="inner", lam=1.0)
    assert losses.build("gca_uot", metric="inner", w_rince=0.0).metric == "inner"
