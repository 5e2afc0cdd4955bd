"""open_clip towers as clipmath encoders, the logit-scale adapter, and local weights.

Cross-implementation checks (DESIGN, tests 4): a BimodalModel loaded from an open_clip model's
state dict gives the logits of open_clip's ``CLIP.forward`` and the loss of its ``ClipLoss``;
float64 on both sides, so the tolerance is round-off (the same operations in the same order
agree to ~1e-15; 1e-12 leaves margin).
"""

import math

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from open_clip.loss import SigLipLoss  # noqa: E402

from clipmath.multimodal import encoders, losses  # noqa: E402
from clipmath.multimodal.accumulation import accumulated_step  # noqa: E402
from clipmath.multimodal.encoders.open_clip_adapter import (  # noqa: E402
    clipmath_logit_scale,
    load_open_clip_weights,
    read_open_clip_state,
    tower_state,
)
from clipmath.multimodal.model import BimodalModel  # noqa: E402
from clipmath.multimodal.trainer import TensorStream, TrainConfig, train  # noqa: E402

EMBED = 8
VISION = {"image_size": 8, "patch_size": 4, "width": 16, "layers": 1, "heads": 2}
TEXT = {"context_length": 6, "vocab_size": 50, "width": 16, "heads": 2, "layers": 1}
B = 6


def _open_clip_model(bias=None, tau=0.05, dtype=torch.float64):
    torch.manual_seed(0)
    vision_cfg = {**{k: v for k, v in VISION.items() if k != "heads"}, "head_width": VISION["width"] // VISION["heads"]}
    model = open_clip.CLIP(EMBED, vision_cfg, dict(TEXT), init_logit_scale=math.log(1 / tau), init_logit_bias=bias)
    return model.to(dtype).eval()


def _encoders(**extra):
    g_u = encoders.build("open_clip_vision", n_e=EMBED, **VISION, **extra.get("vision", {}))
    g_v = encoders.build("open_clip_text", n_e=EMBED, **TEXT, **extra.get("text", {}))
    return g_u, g_v


def _inputs(seed=1):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (B, 3, 8, 8), generator=gen, dtype=torch.uint8)
    ids = torch.zeros(B, TEXT["context_length"], dtype=torch.int64)
    for i in range(B):  # start, tokens, end (the row's largest id), padding
        n = 1 + i % 3
        ids[i, 0] = 47
        ids[i, 1 : 1 + n] = torch.randint(1, 47, (n,), generator=gen)
        ids[i, 1 + n] = 49
    return images, ids


def _normalised(images):
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return (images.double() / 255 - mean) / std


def test_logits_and_loss_equal_open_clips():
    reference = _open_clip_model()
    images, ids = _inputs()
    image_features, text_features, scale = reference(_normalised(images), ids)
    logits_per_image = scale * image_features @ text_features.T

    model = BimodalModel(*_encoders(), metric="cosine").double()
    load_open_clip_weights(model, reference.state_dict())
    out = model(images, {"ids": ids})
    torch.testing.assert_close(model.scores(out.z_u, out.z_v), logits_per_image, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.logit_scale, clipmath_logit_scale(scale), rtol=1e-12, atol=0)

    ours = losses.build("clip")(out.z_u, out.z_v, logit_scale=out.logit_scale).loss
    theirs = open_clip.ClipLoss()(image_features, text_features, scale)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)
    # The scale as open_clip passes it, given to clipmath unconverted, means another temperature.
    wrong = losses.build("clip")(out.z_u, out.z_v, logit_scale=scale).loss
    assert abs(float((wrong - theirs).detach())) > 1e-3


def test_siglip_bias_passes_unchanged():
    reference = _open_clip_model(bias=-3.0, tau=0.1)
    images, ids = _inputs()
    image_features, text_features, scale, bias = reference(_normalised(images), ids)
    model = BimodalModel(*_encoders(), metric="cosine", tau=0.5, bias=0.0).double()
    load_open_clip_weights(model, reference)
    out = model(images, ids)
    torch.testing.assert_close(model.logit_bias, bias.detach(), rtol=0, atol=0)
    logits = scale * image_features @ text_features.T + bias
    torch.testing.assert_close(model.scores(out.z_u, out.z_v), logits, rtol=1e-12, atol=1e-12)
    ours = losses.build("siglip")(out.z_u, out.z_v, logit_scale=out.logit_scale, logit_bias=out.logit_bias).loss
    theirs = SigLipLoss()(image_features, text_features, scale, bias)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="no bias"):
        load_open_clip_weights(BimodalModel(*_encoders()).double(), reference)


def test_logit_scale_adapter():
    # open_clip hands its losses exp(logit_scale) = 1/tau; clipmath wants log(1/tau).
    torch.testing.assert_close(clipmath_logit_scale(torch.tensor(100.0)), torch.tensor(math.log(100.0)))
    torch.testing.assert_close(clipmath_logit_scale(1 / 0.07), torch.tensor(math.log(1 / 0.07)))
    assert clipmath_logit_scale(torch.tensor([2.0], dtype=torch.float64)).shape == ()
    reference = _open_clip_model(tau=0.05)
    # A model or state dict stores log(1/tau) already: returned as it is.
    torch.testing.assert_close(clipmath_logit_scale(reference), reference.logit_scale.detach())
    torch.testing.assert_close(
        clipmath_logit_scale(reference.state_dict()), torch.tensor(math.log(20.0), dtype=torch.float64)
    )
    for bad in (0.0, -1.0, math.inf, math.nan, torch.ones(2), "1"):
        with pytest.raises(ValueError, match="open_clip_scale"):
            clipmath_logit_scale(bad)
    with pytest.raises(ValueError, match="logit_scale"):
        clipmath_logit_scale({"visual.conv1.weight": torch.zeros(1)})


def test_pretrained_weights_loaded_strictly_per_tower(tmp_path):
    # Saved in float32 (the encoders load into float32 before .double(), so the weights agree exactly).
    reference = _open_clip_model(dtype=torch.float32)
    images, ids = _inputs()
    path = tmp_path / "clip.pt"
    torch.save(reference.state_dict(), path)
    reference = reference.double()
    g_u, g_v = _encoders(vision={"pretrained": str(path)}, text={"pretrained": str(path)})
    g_u, g_v = g_u.double(), g_v.double()
    with torch.no_grad():
        torch.testing.assert_close(g_u(images), reference.encode_image(_normalised(images)), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g_v({"ids": ids}), reference.encode_text(ids), rtol=1e-12, atol=1e-12)
    assert g_u.config["pretrained"] == str(path)
    # A training checkpoint ({"state_dict": ...} with DDP's "module." prefix) and a tower alone.
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, tmp_path / "ddp.pt")
    assert read_open_clip_state(tmp_path / "ddp.pt").keys() == reference.state_dict().keys()
    torch.save(reference.visual.state_dict(), tmp_path / "visual.pt")
    encoders.build("open_clip_vision", n_e=EMBED, **VISION, pretrained=str(tmp_path / "visual.pt"))
    # A rebuilt encoder's own state dict goes through the same selection.
    assert tower_state(g_v.state_dict(), "text").keys() == g_v.text.state_dict().keys()

    with pytest.raises(ValueError, match="do not fit"):
        encoders.build("open_clip_vision", n_e=EMBED, **{**VISION, "width": 32}, pretrained=str(path))
    with pytest.raises(ValueError, match="do not fit"):
        encoders.build("open_clip_text", n_e=EMBED + 1, **TEXT, pretrained=str(path))
    with pytest.raises(ValueError, match="no such file"):
        encoders.build("open_clip_text", n_e=EMBED, **TEXT, pretrained=str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        encoders.build("open_clip_text", n_e=EMBED, **TEXT, pretrained=str(tmp_path / "junk.pt"))


def test_named_architecture_from_scratch():
    reference = open_clip.create_model("ViT-B-32", pretrained=None)
    g_u = encoders.build("open_clip_vision", model_name="ViT-B-32")
    g_v = encoders.build("open_clip_text", model_name="ViT-B-32")
    assert g_u.n_e == g_v.n_e == 512 and g_u.image_size == (224, 224) and g_v.context_length == 77
    for encoder, tower in ((g_u, "visual"), (g_v, "text")):
        expected = {k: v.shape for k, v in tower_state(reference.state_dict(), tower).items()}
        assert {k: v.shape for k, v in getattr(encoder, tower).state_dict().items()} == expected
    # Explicit values override the named config; the config rebuilds the same architecture.
    small = encoders.build(
        "open_clip_vision", model_name="ViT-B-32", layers=1, width=64, heads=2, image_size=32, n_e=16
    )
    rebuilt = encoders.build(**small.config)
    rebuilt.load_state_dict(small.state_dict())
    assert small(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 16)
    assert len(small.visual.transformer.resblocks) == 1


def test_explicit_resnet_tower_is_open_clips_modified_resnet():
    from open_clip.modified_resnet import ModifiedResNet

    resnet = {"image_size": 32, "width": 8, "layers": [1, 1, 1, 1], "heads": 4}  # no patch_size: no patches
    g_u = encoders.build("open_clip_vision", n_e=EMBED, **resnet).double().eval()
    assert isinstance(g_u.visual, ModifiedResNet) and g_u.visual.attnpool.num_heads == 4
    # open_clip's CLIP with the same stages: 4 heads of width 32 * 8 / 4 = 64 in the attention pool.
    torch.manual_seed(3)
    vision_cfg = {"image_size": 32, "layers": (1, 1, 1, 1), "width": 8, "head_width": 64}
    reference = open_clip.CLIP(EMBED, vision_cfg, dict(TEXT)).visual.double().eval()
    g_u.visual.load_state_dict(reference.state_dict())  # strict: the same modules and shapes
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(g_u(images), reference(_normalised(images)))
    assert encoders.build(**g_u.config)(images.float() / 255).shape == (2, EMBED)  # its config rebuilds it
    with pytest.raises(ValueError, match=r"layers=\[1, 1, 1\]"):
        encoders.build("open_clip_vision", n_e=EMBED, **{**resnet, "layers": [1, 1, 1]})
    with pytest.raises(ValueError, match="heads=3"):
        encoders.build("open_clip_vision", n_e=EMBED, **{**resnet, "heads": 3})


def test_images_preprocessed_as_open_clip():
    g_u, _ = _encoders()
    g_u = g_u.double()
    images, _ = _inputs()
    with torch.no_grad():
        direct = g_u.visual(_normalised(images))
        torch.testing.assert_close(g_u(images), direct)
        torch.testing.assert_close(g_u(images.double() / 255), direct)  # floats in [0, 1]
        grey = images[:, :1]
        torch.testing.assert_close(g_u(grey), g_u(grey.expand(-1, 3, -1, -1)))
        assert g_u(grey[:, 0]).shape == (B, EMBED)
    resizing = encoders.build("open_clip_vision", n_e=EMBED, **VISION, resize=True)
    assert resizing(torch.zeros(2, 3, 28, 28, dtype=torch.uint8)).shape == (2, EMBED)
    raw = encoders.build("open_clip_vision", n_e=EMBED, **VISION, normalize=None).double()
    raw.load_state_dict(g_u.state_dict())
    torch.testing.assert_close(raw(images), g_u.visual(images.double() / 255))


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="model_name='ViT-Q-99'"):
        encoders.build("open_clip_vision", model_name="ViT-Q-99")
    with pytest.raises(ValueError, match="patch_size=None"):
        encoders.build("open_clip_vision", n_e=4, image_size=8, width=16, layers=1, heads=2)
    with pytest.raises(ValueError, match="n_e=None"):
        encoders.build("open_clip_text", width=16, heads=2, layers=1)
    with pytest.raises(ValueError, match="heads=3"):
        encoders.build("open_clip_text", n_e=4, width=16, heads=3, layers=1)
    with pytest.raises(ValueError, match="heads=3"):
        encoders.build("open_clip_vision", n_e=4, **{**VISION, "heads": 3})
    with pytest.raises(ValueError, match="layers=0"):
        encoders.build("open_clip_text", n_e=4, width=16, heads=2, layers=0)
    with pytest.raises(ValueError, match="normalize"):
        encoders.build("open_clip_vision", n_e=4, **VISION, normalize="imagenet")
    with pytest.raises(ValueError, match="Hugging Face"):
        encoders.build("open_clip_text", model_name="mt5-base-ViT-B-32")
    g_u, g_v = _encoders()
    images, ids = _inputs()
    with pytest.raises(ValueError, match="size 8x8"):
        g_u(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="expected images of shape"):
        g_u(torch.zeros(2, 4, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="dtype"):
        g_u(images.long())
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        g_v(ids[:, :5])
    with pytest.raises(ValueError, match="integer dtype"):
        g_v(ids.float())
    with pytest.raises(ValueError, match="vocab_size=50"):
        g_v(ids + 10)
    with pytest.raises(ValueError, match="'ids'"):
        g_v({"tokens": ids})


def test_accumulated_gradient_through_the_towers():
    model = BimodalModel(*_encoders(), metric="cosine").double()
    load_open_clip_weights(model, _open_clip_model())
    images, ids = _inputs()
    batch = {"u": images, "v": {"ids": ids}}
    loss_fn = losses.build("clip", tile_size=4)
    out = model(images, {"ids": ids})
    loss_fn(out.z_u, out.z_v, logit_scale=out.logit_scale).loss.backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    accumulated_step(model, loss_fn, batch, 4)
    for name, p in model.named_parameters():
        atol = 1e-11 * float(reference[name].abs().max().clamp(min=1e-300))
        torch.testing.assert_close(p.grad, reference[name], rtol=0, atol=atol, msg=name)


def test_trains_through_the_trainer():
    torch.manual_seed(0)
    model = BimodalModel(*_encoders(), metric="cosine")
    images, ids = _inputs()
    stream = TensorStream(images.repeat(2, 1, 1, 1), ids.repeat(2, 1), batch_size=4)
    before = model.g_v.text.token_embedding.weight.detach().clone()
    result = train(model, losses.build("clip"), stream, TrainConfig(epochs=1, lr=1e-3, device="cpu", threads=1))
    assert result.steps == 3 and math.isfinite(result.last_loss)
    assert not torch.equal(model.g_v.text.token_embedding.weight, before)
    rebuilt = BimodalModel.from_config(model.config)
    rebuilt.load_state_dict(model.state_dict())
