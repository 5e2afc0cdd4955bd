"""Encoders: registry and config round trip, shapes, uint8 input, bad input, per-encoder behaviour.

Behaviour specific to each encoder (one-hot, LeNet fitting, last-token pooling).
"""

import pytest
import torch
import yaml
from torch import nn

from clipmath.multimodal import encoders
from clipmath.multimodal.encoders import base

# name -> (params, a function of a generator giving a batch of 5 inputs)
CASES = {
    "linear": ({"n_in": 4, "n_e": 3}, lambda g: torch.randn(5, 4, generator=g)),
    "mlp": (
        {"n_in": 12, "n_e": 3, "hidden": [8, 6], "activation": "gelu"},
        lambda g: torch.randn(5, 3, 4, generator=g),
    ),
    "lenet": ({"n_e": 10}, lambda g: torch.rand(5, 1, 28, 28, generator=g)),
    "small_resnet": ({"n_e": 7, "width": 4}, lambda g: torch.rand(5, 3, 32, 32, generator=g)),
    "sequence_transformer": (
        {"d_in": 2, "n_e": 6, "d_model": 16, "n_blocks": 2, "n_heads": 2, "max_len": 12},
        lambda g: torch.randn(5, 10, 2, generator=g),
    ),
    "fixed": ({"kind": "one_hot", "n_classes": 4}, lambda g: torch.randint(0, 4, (5,), generator=g)),
    "projected": (
        {"backbone": {"name": "linear", "n_in": 4, "n_e": 6}, "wide": 8, "n_e": 3},
        lambda g: torch.randn(5, 4, generator=g),
    ),
    "open_clip_vision": (
        {"n_e": 3, "image_size": 8, "patch_size": 4, "width": 16, "layers": 1, "heads": 2},
        lambda g: torch.rand(5, 3, 8, 8, generator=g),
    ),
    "open_clip_text": (
        {"n_e": 3, "context_length": 6, "vocab_size": 50, "width": 16, "heads": 2, "layers": 1},
        lambda g: torch.randint(0, 50, (5, 6), generator=g),
    ),
    "bag_of_words": (
        {"n_e": 3, "width": 8, "context_length": 6, "vocab_size": 50},
        lambda g: torch.randint(0, 50, (5, 6), generator=g),
    ),
}


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def _build(name, **extra):
    torch.manual_seed(0)
    return encoders.build(name, **{**CASES[name][0], **extra}).eval()


def test_every_encoder_is_registered():
    assert encoders.names() == sorted(CASES)


def test_register_twice_is_an_error():
    with pytest.raises(ValueError, match="'linear' registered twice"):
        base.register("linear")(nn.Identity)


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_shape_and_n_e(name, gen):
    encoder = _build(name)
    x = CASES[name][1](gen)
    z = encoder(x)
    expected = {"lenet": 10, "small_resnet": 7, "sequence_transformer": 6, "fixed": 4}.get(name, 3)
    assert isinstance(encoder.n_e, int) and encoder.n_e == expected
    assert z.shape == (5, expected) and z.dtype == torch.float32
    assert torch.isfinite(z).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_rebuilds_the_same_architecture(name, gen):
    encoder = _build(name)
    assert encoder.config["name"] == name
    assert {k: encoder.config[k] for k in CASES[name][0]} == CASES[name][0]
    assert yaml.safe_load(yaml.safe_dump(encoder.config)) == encoder.config
    torch.manual_seed(1)
    rebuilt = encoders.build(**encoder.config).eval()
    assert type(rebuilt) is type(encoder) and rebuilt.config == encoder.config
    x = CASES[name][1](gen)
    if name != "fixed":
        assert not torch.allclose(rebuilt(x), encoder(x))  # different seed, different weights
    rebuilt.load_state_dict(encoder.state_dict())  # strict: same parameter names and shapes
    torch.testing.assert_close(rebuilt(x), encoder(x), rtol=0, atol=0)


def test_config_fills_in_defaults_and_plain_lists():
    encoder = encoders.build("lenet", normalize=encoders.MNIST_MEAN_STD)
    assert encoder.config == {
        "name": "lenet",
        "n_e": 10,
        "in_channels": 1,
        "activation": "relu",
        "pool": "max",
        "normalize": [0.1307, 0.3081],
    }
    assert encoders.build("mlp", n_in=3, n_e=2).config["hidden"] == [128]


@pytest.mark.parametrize(
    ("name", "params", "shape"),
    [
        ("lenet", {"n_e": 10}, (4, 1, 28, 28)),
        ("lenet", {"n_e": 3, "normalize": [0.1307, 0.3081]}, (4, 1, 28, 28)),
        ("lenet", {"n_e": 3}, (4, 28, 28)),
        ("small_resnet", {"n_e": 5, "width": 4}, (4, 3, 32, 32)),
        ("small_resnet", {"n_e": 5, "in_channels": 1, "width": 4}, (4, 1, 28, 28)),
        ("mlp", {"n_in": 2 * 6 * 6, "n_e": 3}, (4, 2, 6, 6)),
        ("fixed", {"kind": "identity", "n_in": 2 * 6 * 6}, (4, 2, 6, 6)),
    ],
)
def test_uint8_images_are_scaled_to_unit_interval(name, params, shape, gen):
    torch.manual_seed(0)
    encoder = encoders.build(name, **params).eval()
    x = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    torch.testing.assert_close(encoder(x), encoder(x.float() / 255), rtol=0, atol=0)


def test_identity_is_the_flattened_input(gen):
    x = torch.randn(3, 2, 5, generator=gen)
    torch.testing.assert_close(encoders.build("fixed", kind="identity", n_in=10)(x), x.reshape(3, 10), rtol=0, atol=0)


def test_lenet_normalize_standardizes_after_scaling(gen):
    mean, std = encoders.MNIST_MEAN_STD
    torch.manual_seed(0)
    plain = encoders.build("lenet")
    normalized = encoders.build("lenet", normalize=[mean, std])
    normalized.load_state_dict(plain.state_dict())
    x = torch.randint(0, 256, (4, 1, 28, 28), generator=gen, dtype=torch.uint8)
    torch.testing.assert_close(normalized(x), plain((x.float() / 255 - mean) / std))
    assert not torch.allclose(normalized(x), plain(x))


def test_linear_encoder_is_g_times_x(gen):
    encoder = encoders.build("linear", n_in=4, n_e=2)
    assert isinstance(encoder, nn.Linear) and encoder.bias is None
    assert encoder.weight.shape == (2, 4) and encoder.n_in == 4
    x = torch.randn(5, 4, generator=gen)
    torch.testing.assert_close(encoder(x), x @ encoder.weight.T, rtol=0, atol=0)


def test_small_resnet_has_batchnorm_and_three_stages():
    encoder = encoders.build("small_resnet", n_e=5, width=4, blocks=2)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in encoder.modules()) == 1 + 3 * 2 * 2 + 2
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    assert {m.out_channels for m in convs} == {4, 8, 16}
    assert encoder.head.in_features == 16


def test_fixed_one_hot_is_exact_and_has_no_parameters():
    encoder = encoders.build("fixed", kind="one_hot", n_classes=10)
    assert list(encoder.parameters()) == [] and encoder.state_dict() == {}
    labels = torch.tensor([3, 0, 9, 3])
    z = encoder(labels)
    assert torch.equal(z, torch.eye(10)[labels]) and z.dtype == torch.float32
    assert encoder.double()(labels).dtype == torch.float64
    identity = encoders.build("fixed", kind="identity", n_in=4)
    assert list(identity.parameters()) == []


@pytest.mark.parametrize("labels", [[0, 10], [-1, 2]])
def test_fixed_one_hot_label_out_of_range(labels):
    encoder = encoders.build("fixed", kind="one_hot", n_classes=10)
    with pytest.raises(ValueError, match=rf"label {labels[0] if labels[0] < 0 else labels[1]} out of range"):
        encoder(torch.tensor(labels))


def test_fixed_one_hot_refuses_float_labels():
    with pytest.raises(ValueError, match="integer labels"):
        encoders.build("fixed", kind="one_hot", n_classes=3)(torch.tensor([0.0, 1.0]))


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(
        ValueError, match=r"name='resnet50' unknown; expected one of bag_of_words, fixed, lenet, linear"
    ):
        encoders.build("resnet50", n_e=3)


def test_unknown_and_missing_parameters_are_named():
    with pytest.raises(ValueError, match=r"'lenet': unknown parameter\(s\) \['n_out'\]"):
        encoders.build("lenet", n_out=3)
    with pytest.raises(ValueError, match="missing a required argument: 'n_in'"):
        encoders.build("linear", n_e=3)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("linear", {"n_in": 0, "n_e": 2}, "n_in=0"),
        ("linear", {"n_in": 3, "n_e": 2.0}, "n_e=2.0"),
        ("linear", {"n_in": True, "n_e": 2}, "n_in=True"),
        ("mlp", {"n_in": 3, "n_e": 2, "hidden": [4, 0]}, "hidden="),
        ("mlp", {"n_in": 3, "n_e": 2, "hidden": 4}, "hidden=4"),
        ("mlp", {"n_in": 3, "n_e": 2, "activation": "sigmoid"}, "activation='sigmoid'"),
        ("lenet", {"n_e": 0}, "n_e=0"),
        ("lenet", {"in_channels": 0}, "in_channels=0"),
        ("lenet", {"activation": "elu"}, "activation='elu'"),
        ("lenet", {"pool": "min"}, "pool='min'"),
        ("lenet", {"normalize": 0.5}, "normalize=0.5"),
        ("lenet", {"normalize": [0.1, 0.0]}, "normalize="),
        ("lenet", {"in_channels": 3, "normalize": [[0.1, 0.2], [1.0, 1.0, 1.0]]}, "normalize=.*mean has 2 values"),
        ("small_resnet", {"n_e": 3, "width": 0}, "width=0"),
        ("small_resnet", {"n_e": 3, "blocks": -1}, "blocks=-1"),
        ("sequence_transformer", {"d_in": 2, "n_e": 3, "d_model": 10, "n_heads": 4}, "n_heads=4"),
        ("sequence_transformer", {"d_in": 2, "n_e": 3, "n_blocks": -1}, "n_blocks=-1"),
        ("sequence_transformer", {"d_in": 2, "n_e": 3, "positional": "rotary"}, "positional='rotary'"),
        ("sequence_transformer", {"d_in": 0, "n_e": 3}, "d_in=0"),
        ("sequence_transformer", {"d_in": 2, "n_e": 3, "steps": 1}, "steps=1"),
        ("fixed", {"kind": "zeros", "n_in": 3}, "kind='zeros'"),
        ("fixed", {"kind": "one_hot"}, "n_classes=None"),
        ("fixed", {"kind": "one_hot", "n_classes": 3, "n_in": 3}, "n_in=3"),
        ("fixed", {"kind": "identity", "n_in": 0}, "n_in=0"),
        ("bag_of_words", {"n_e": 3, "width": 0}, "width=0"),
        ("bag_of_words", {"n_e": 3, "vocab_size": 1.5}, "vocab_size=1.5"),
    ],
)
def test_bad_arguments_are_named(name, params, match):
    with pytest.raises(ValueError, match=match):
        encoders.build(name, **params)


@pytest.mark.parametrize(
    ("name", "params", "x", "match"),
    [
        ("linear", {"n_in": 4, "n_e": 2}, torch.zeros(5, 3), r"x=\(5, 3\): expected shape \(B, 4\)"),
        ("mlp", {"n_in": 4, "n_e": 2}, torch.zeros(5, 3), r"x=\(5, 3\)"),
        ("mlp", {"n_in": 4, "n_e": 2}, torch.zeros(5, 4, dtype=torch.int64), "dtype torch.int64"),
        ("lenet", {}, torch.zeros(2, 1, 32, 32), "size 28x28"),
        ("lenet", {}, torch.zeros(2, 3, 28, 28), r"expected shape \(B, 1, H, W\)"),
        ("small_resnet", {"n_e": 3, "width": 4}, torch.zeros(2, 3, 2, 2), "at least 4x4"),
        ("sequence_transformer", {"d_in": 2, "n_e": 3, "max_len": 8}, torch.zeros(2, 9, 2), "exceeds max_len=8"),
        ("sequence_transformer", {"d_in": 2, "n_e": 3}, torch.zeros(2, 9, 3), r"expected shape \(B, L, 2\)"),
        ("fixed", {"kind": "one_hot", "n_classes": 3}, torch.zeros(2, 1, dtype=torch.int64), r"\(B,\) integer"),
        ("fixed", {"kind": "identity", "n_in": 3}, torch.zeros(2, 4), r"x=\(2, 4\)"),
        ("bag_of_words", {"n_e": 3, "context_length": 6}, torch.zeros(2, 5, dtype=torch.int64), r"\(B, 6\)"),
        ("bag_of_words", {"n_e": 3, "context_length": 2}, torch.zeros(2, 2), "dtype torch.float32"),
        ("bag_of_words", {"n_e": 3, "context_length": 2, "vocab_size": 9}, torch.full((1, 2), 9), "vocab_size=9"),
        ("bag_of_words", {"n_e": 3, "context_length": 2}, {"tokens": torch.zeros(1, 2)}, "'ids'"),
    ],
)
def test_bad_input_is_named(name, params, x, match):
    with pytest.raises(ValueError, match=match):
        encoders.build(name, **params)(x)


def test_lenet_fits_random_labels():
    """LeNet memorizes 64 random MNIST-like uint8 images with random labels (Section 6.2 setup)."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (64,))
    g_u = encoders.build("lenet", normalize=encoders.MNIST_MEAN_STD)
    g_v = encoders.build("fixed", kind="one_hot", n_classes=10)
    optimizer = torch.optim.Adam(g_u.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        # Cross-entropy written with the inner-product tilting <g_u(u), g_v(v)> (Prop. 6.1).
        logits = g_u(images)
        loss = (torch.logsumexp(logits, dim=1) - (logits * g_v(labels)).sum(1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 2.0  # about log 10 at initialization
    assert losses[-1] < 0.2 * losses[0]
    with torch.no_grad():
        assert (g_u(images).argmax(1) == labels).float().mean() > 0.9


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_sequence_transformer_last_token_sees_every_position(positional, gen):
    torch.manual_seed(0)
    encoder = encoders.build("sequence_transformer", d_in=2, n_e=4, d_model=16, n_heads=2, positional=positional)
    if positional == "learned":  # larger than the 0.01 init so the test is well conditioned
        nn.init.normal_(encoder.position, std=1.0)
    x = torch.randn(3, 8, 2, generator=gen)
    z = encoder(x)
    for t in (0, 3):
        perturbed = x.clone()
        perturbed[:, t] += 1.0
        assert (encoder(perturbed) - z).abs().max() > 1e-3, f"token {t}"
    swapped = x[:, [1, 0, *range(2, 8)]]  # attention alone is blind to this order
    assert (encoder(swapped) - z).abs().max() > 1e-3
    # The batch items are encoded independently.
    torch.testing.assert_close(encoder(x[1:2]), z[1:2])


def test_sequence_transformer_pools_the_last_token(gen):
    torch.manual_seed(0)
    encoder = encoders.build("sequence_transformer", d_in=2, n_e=4, d_model=16, n_heads=2, n_blocks=0)
    x = torch.randn(3, 8, 2, generator=gen)
    z = encoder(x)
    earlier, last = x.clone(), x.clone()
    earlier[:, :-1] += 1.0
    last[:, -1] += 1.0
    torch.testing.assert_close(encoder(earlier), z, rtol=0, atol=0)
    assert (encoder(last) - z).abs().max() > 1e-3


def test_sequence_transformer_steps_join_each_token_by_its_scaled_step(gen):
    torch.manual_seed(0)
    shape = {"n_e": 4, "d_model": 16, "n_heads": 2, "max_len": 8}
    with_steps = encoders.build("sequence_transformer", d_in=2, steps=True, **shape)
    explicit = encoders.build("sequence_transformer", d_in=4, **shape)
    explicit.load_state_dict(with_steps.state_dict())
    x = torch.randn(3, 8, 2, generator=gen)
    steps = torch.zeros_like(x)
    for t in range(1, 8):
        steps[:, t] = 7 * (x[:, t] - x[:, t - 1])
    torch.testing.assert_close(with_steps(x), explicit(torch.cat([x, steps], dim=2)))
    # A constant shift of every position moves the positions, not the steps.
    shifted = x + 1.0
    torch.testing.assert_close(
        with_steps(shifted), explicit(torch.cat([shifted, steps], dim=2)), msg="steps of shifted positions"
    )


def test_sinusoidal_positions_any_length(gen):
    torch.manual_seed(0)
    encoder = encoders.build(
        "sequence_transformer", d_in=2, n_e=4, d_model=15, n_heads=3, max_len=4, positional="sinusoidal"
    )
    assert not any("position" in name for name, _ in encoder.named_parameters())
    assert encoder(torch.randn(2, 20, 2, generator=gen)).shape == (2, 4)


def test_bag_of_words_is_the_projected_mean_of_its_tokens_in_any_order(gen):
    encoder = _build("bag_of_words")
    ids = torch.tensor([[7, 3, 3, 9, 0, 0], [9, 3, 7, 3, 0, 0], [7, 0, 3, 3, 0, 9], [0, 0, 0, 0, 0, 0]])
    z = encoder({"ids": ids})
    close = {"rtol": 1e-5, "atol": 1e-6}  # float32 round-off of a sum in another order is ~1e-7
    torch.testing.assert_close(z[1], z[0], **close)  # a bag: the order of the words does not matter
    torch.testing.assert_close(z[2], z[0], **close)  # nor where the padding is
    vectors = encoder.token_embedding.weight[[7, 3, 3, 9]].mean(dim=0)
    torch.testing.assert_close(z[0], encoder.proj(encoder.norm(vectors)), **close)
    torch.testing.assert_close(z[3], encoder.proj(encoder.norm(torch.zeros(8))), **close)  # padding alone
    assert not torch.allclose(z[0], z[3], **close)
