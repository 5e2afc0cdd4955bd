"""BimodalModel and LinearEncoder: parameters, clamp, shapes, gradients, scores, bad input."""

import math

import pytest
import torch
from torch import nn

from clipmath.multimodal import losses, similarity
from clipmath.multimodal.encoders import LinearEncoder
from clipmath.multimodal.model import MAX_LOGIT_SCALE, BimodalModel, BimodalOutput


def _encoders(gen, n_u=4, n_v=3, n_e=2):
    g_u, g_v = LinearEncoder(n_u, n_e), LinearEncoder(n_v, n_e)
    with torch.no_grad():
        for g in (g_u, g_v):
            g.weight.copy_(torch.randn(g.weight.shape, generator=gen))
    return g_u, g_v


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def test_linear_encoder_is_g_times_x(gen):
    g_u, _ = _encoders(gen)
    assert g_u.weight.shape == (2, 4) and g_u.bias is None
    x = torch.randn(5, 4, generator=gen)
    torch.testing.assert_close(g_u(x), x @ g_u.weight.T, rtol=0, atol=0)


@pytest.mark.parametrize(("n_in", "n_e", "match"), [(0, 2, "n_in=0"), (3, 2.0, "n_e=2.0"), (True, 2, "n_in=True")])
def test_linear_encoder_bad_dimensions(n_in, n_e, match):
    with pytest.raises(ValueError, match=match):
        LinearEncoder(n_in, n_e)


def test_linear_encoder_bad_input(gen):
    g_u, _ = _encoders(gen)
    with pytest.raises(ValueError, match=r"x=\(5, 3\): expected shape \(B, 4\)"):
        g_u(torch.zeros(5, 3))


def test_defaults_learn_the_temperature_without_bias(gen):
    model = BimodalModel(*_encoders(gen))
    assert isinstance(model.logit_scale, nn.Parameter)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-7)
    assert model.logit_bias is None
    assert {name for name, _ in model.named_parameters()} == {"logit_scale", "g_u.weight", "g_v.weight"}


def test_fixed_temperature_and_bias_are_buffers(gen):
    model = BimodalModel(*_encoders(gen), tau=0.1, learn_tau=False, bias=-10.0, learn_bias=False)
    assert dict(model.named_buffers()).keys() == {"logit_scale", "logit_bias"}
    assert "logit_scale" not in dict(model.named_parameters())
    assert model.logit_bias.item() == -10.0
    assert set(model.state_dict()) >= {"logit_scale", "logit_bias"}


def test_learned_bias_is_a_parameter(gen):
    model = BimodalModel(*_encoders(gen), bias=-10.0)
    assert isinstance(model.logit_bias, nn.Parameter)


def test_forward_shapes(gen):
    model = BimodalModel(*_encoders(gen), metric="inner", bias=1.0)
    u, v = torch.randn(6, 4, generator=gen), torch.randn(6, 3, generator=gen)
    out = model(u, v)
    assert isinstance(out, BimodalOutput)
    assert out.z_u.shape == (6, 2) and out.z_v.shape == (6, 2)
    assert out.logit_scale.shape == () and out.logit_bias.shape == ()
    torch.testing.assert_close(out.z_u, model.encode_u(u))
    torch.testing.assert_close(out.z_v, model.encode_v(v))


def test_forward_clamps_the_scale_at_log_100(gen):
    model = BimodalModel(*_encoders(gen), tau=0.01)
    assert model(torch.zeros(2, 4), torch.zeros(2, 3)).logit_scale.item() == pytest.approx(math.log(100), rel=1e-7)
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    out = model(torch.randn(3, 4, generator=gen), torch.randn(3, 3, generator=gen))
    assert out.logit_scale.item() == pytest.approx(MAX_LOGIT_SCALE, rel=1e-7)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(MAX_LOGIT_SCALE, rel=1e-7)


def test_gradients_reach_encoders_scale_and_bias(gen):
    model = BimodalModel(*_encoders(gen), tau=0.1, bias=-10.0)
    u, v = torch.randn(8, 4, generator=gen), torch.randn(8, 3, generator=gen)
    out = model(u, v)
    loss = losses.build("siglip")(out.z_u, out.z_v, logit_scale=out.logit_scale, logit_bias=out.logit_bias).loss
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().max() > 0, name


def test_scale_above_the_clamp_gets_the_gradient_at_the_clamp(gen):
    """Straight-through clamp: the value is log 100 and the gradient is the loss's gradient there."""
    model = BimodalModel(*_encoders(gen))
    u, v = torch.randn(8, 4, generator=gen), torch.randn(8, 3, generator=gen)
    with torch.no_grad():
        model.logit_scale.fill_(6.0)
    out = model(u, v)
    clip = losses.build("clip")
    clip(out.z_u, out.z_v, logit_scale=out.logit_scale).loss.backward()
    at_clamp = torch.tensor(MAX_LOGIT_SCALE, requires_grad=True)
    clip(out.z_u.detach(), out.z_v.detach(), logit_scale=at_clamp).loss.backward()
    assert at_clamp.grad.abs() > 1e-3
    torch.testing.assert_close(model.logit_scale.grad, at_clamp.grad)


@pytest.mark.parametrize("metric", similarity.names())
def test_scores_are_scaled_metric_plus_bias(gen, metric):
    model = BimodalModel(*_encoders(gen), metric=metric, tau=0.5, bias=0.25)
    z_u, z_v = torch.randn(5, 2, generator=gen), torch.randn(3, 2, generator=gen)
    expected = 2.0 * similarity.get(metric)(z_u, z_v) + 0.25
    scores = model.scores(z_u, z_v)
    assert scores.shape == (5, 3) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected, rtol=1e-6, atol=1e-6)


def test_scores_match_the_loss_logits(gen):
    model = BimodalModel(*_encoders(gen))
    out = model(torch.randn(4, 4, generator=gen), torch.randn(4, 3, generator=gen))
    logits = losses.build("clip")(out.z_u, out.z_v, logit_scale=out.logit_scale).logits
    torch.testing.assert_close(model.scores(out.z_u, out.z_v), logits, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "dot"}, "metric='dot'"),
        ({"tau": 0.0}, "tau=0.0"),
        ({"tau": -1.0}, "tau=-1.0"),
        ({"tau": 0.005}, "tau=0.005: expected tau >= 0.01"),
        ({"tau": math.nan}, "tau=nan"),
        ({"tau": "0.07"}, "tau='0.07'"),
        ({"bias": math.inf}, "bias=inf"),
        ({"bias": True}, "bias=True"),
    ],
)
def test_bad_construction(gen, kwargs, match):
    with pytest.raises(ValueError, match=match):
        BimodalModel(*_encoders(gen), **kwargs)


def test_scores_bad_input(gen):
    model = BimodalModel(*_encoders(gen))
    with pytest.raises(ValueError, match="embedding dimensions differ"):
        model.scores(torch.zeros(3, 2), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="z_u: expected shape"):
        model.scores(torch.zeros(2), torch.zeros(3, 2))


def test_forward_rejects_unpaired_batches(gen):
    model = BimodalModel(*_encoders(gen))
    with pytest.raises(ValueError, match="paired batches"):
        model(torch.zeros(3, 4), torch.zeros(2, 3))


def test_a_checkpoint_alone_rebuilds_the_trained_model(tmp_path):
    from clipmath.experiments.rundir import RunDir
    from clipmath.multimodal import encoders, losses
    from clipmath.multimodal.trainer import TensorStream, TrainConfig, train

    torch.manual_seed(0)
    model = BimodalModel(
        encoders.build("mlp", n_in=4, n_e=3, hidden=[8]),
        encoders.build("linear", n_in=2, n_e=3),
        metric="neg_sq_l2",
        tau=0.5,
        bias=-1.0,
    )
    u, v = torch.randn(32, 4), torch.randn(32, 2)
    train(
        model,
        losses.build("siglip", metric="neg_sq_l2"),
        TensorStream(u, v, batch_size=16),
        TrainConfig(epochs=1, device="cpu"),
        RunDir("t", path=tmp_path),
    )
    rebuilt = BimodalModel.from_checkpoint(tmp_path / "checkpoints" / "train.pt")
    assert rebuilt.config == model.config and rebuilt.metric == "neg_sq_l2"
    a, b = model(u, v), rebuilt(u, v)
    assert torch.equal(a.z_u, b.z_u) and torch.equal(a.z_v, b.z_v)
    assert torch.equal(a.logit_scale, b.logit_scale) and torch.equal(a.logit_bias, b.logit_bias)


def test_from_checkpoint_names_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        BimodalModel.from_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="g_u"):
        BimodalModel.from_config({"metric": "cosine"})
