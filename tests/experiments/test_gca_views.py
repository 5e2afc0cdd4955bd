"""``gca-views`` end to end on a few hundred digits (and a tiny CIFAR folder), its views, noise and measures."""

import json
import math
import pickle

import numpy as np
import pytest
import torch

from clipmath.datasets import ShardStream, write_shards
from clipmath.experiments import cli
from clipmath.experiments.gca_augment import VIEW_DRAWS, AugmentConfig, TwoViews, _warp, augment_view
from clipmath.experiments.gca_common import image_samples, plan_departure, verdict
from clipmath.experiments.rundir import RunDir
from clipmath.multimodal import encoders, losses
from clipmath.multimodal.model import BimodalModel
from clipmath.multimodal.trainer import TrainConfig, train

TINY = [
    "--set",
    "data.n_train=320",
    "--set",
    "data.n_test=200",
    "--set",
    "train.epochs=1",
    "--set",
    "seeds=1",
    "--set",
    "batch_size=64",
    "--set",
    "noise.rates=[0.0, 0.4]",
    "--set",
    "noise.pool=64",
    "--set",
    "small_tau_losses=[gca_uot]",
    "--set",
    "probe.l2_grid=[0.01]",
]
#: Every random step off: a view is its image, exactly.
IDENTITY = AugmentConfig(
    crop_scale=[1.0, 1.0],
    crop_ratio=[1.0, 1.0],
    rotation=0.0,
    translate=0.0,
    shear=0.0,
    jitter_p=0.0,
    grayscale_p=0.0,
    blur_p=0.0,
    erase_p=0.0,
)


def test_quick_preset_through_the_cli_on_a_few_hundred_digits(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["run", "gca-views", "--out", str(out), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 320 and metrics["n_test"] == 200 and metrics["n_classes"] == 10
    runs = metrics["runs"]
    labels = ["ince", "gca_ince", "rince", "gca_rince", "gca_uot", "gca_uot (ε=0.1)"]
    assert [r["label"] for r in runs] == labels * 2 and [r["p"] for r in runs] == [0.0] * 6 + [0.4] * 6
    for r in runs:
        assert r["steps"] == 320 // 64
        # Chance is 0.1; even 4 steps leave the features of LeNet linearly separable enough (measured 0.6-0.8).
        assert r["probe_accuracy"] > 0.3 and 0 <= r["alignment"] <= 4 and r["uniformity"] <= 0
        assert 0 <= r["plan_departure"] <= 1
    for r in runs[6:]:
        # 320 pairs per plan epoch (5 batches of 64): the measured noisy fraction is binomial around 0.4.
        assert r["plan_n_pairs"] == 320 and abs(r["plan_noisy_fraction"] - 0.4) < 4 * math.sqrt(0.24 / 320)
        assert r["plan_diag_ratio"] > 0 and r["plan_softmax_diag_ratio"] > 0
    ince = runs[6]
    # InfoNCE's plan is the row softmax itself (the loss's in float32, the reference's in float64).
    assert ince["plan_diag_ratio"] == pytest.approx(ince["plan_softmax_diag_ratio"], rel=1e-5)
    assert set(metrics["baselines"]) == {"raw pixels", "untrained encoder"}
    assert metrics["claims"] and all(isinstance(c["verdict"], str) for c in metrics["claims"])
    report = (out / "report.md").read_text()
    for section in ("# gca-views", "Linear-probe test accuracy", "Plan mass on noisy pairs", "The paper's claims"):
        assert section in report
    for figure in ("probe_accuracy.png", "plan_mass.png", "views.png"):
        assert (out / figure).stat().st_size > 0


def _cifar_folder(root, rng):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, n in [*[(f"data_batch_{i}", 12) for i in range(1, 6)], ("test_batch", 20)]:
        labels = [i % 10 for i in range(n)]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": data, b"labels": labels}, handle, protocol=2)
    return root


def test_a_cifar_folder_trains_a_colour_resnet(tmp_path):
    root = _cifar_folder(tmp_path / "c", np.random.default_rng(0))
    args = [
        "--set",
        f"data.source=cifar10:{root}",
        "--set",
        "losses=[gca_uot]",
        "--set",
        "small_tau_losses=[]",
        "--set",
        "noise.rates=[0.2]",
        "--set",
        "noise.pool=10",
        "--set",
        "seeds=1",
        "--set",
        "batch_size=16",
        "--set",
        "train.epochs=1",
        "--set",
        "augment.flip_p=0.5",
        "--set",
        "probe.l2_grid=[0.1]",
        "--set",
        "probe.baselines=false",
        "--set",
        "encoder.params={backbone: {name: small_resnet, n_e: 8, in_channels: 3, width: 4}, wide: 32, n_e: 16}",
    ]
    assert cli.main(["run", "gca-views", "--out", str(tmp_path / "run"), *args]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_train"] == 60 and metrics["n_test"] == 20 and len(metrics["runs"]) == 1
    assert metrics["runs"][0]["steps"] == 60 // 16


@pytest.mark.parametrize(
    "override, named",
    [
        ("losses=[ince, nope]", "'nope' unknown"),
        ("noise.rates=[0.0, 1.0]", "noise.rates"),
        ("params={gca_uot: {rho: 0.2, bogus: 1}}", "bogus"),
        ("small_tau=0.5", "small_tau=0.5"),
        ("augment.crop_scale=[0.9, 0.5]", "augment.crop_scale"),
        ("data.source=svhn:/x", "data.source='svhn:/x'"),
    ],
)
def test_bad_config_is_refused_before_the_run_directory_is_touched(tmp_path, capsys, override, named):
    out = tmp_path / "never"
    assert cli.main(["run", "gca-views", "--out", str(out), "--set", override]) != 0
    assert named in capsys.readouterr().err
    assert not out.exists()


# --- views and noise -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    rng = np.random.default_rng(0)
    images = np.zeros((60, 1, 28, 28), dtype=np.uint8)
    images[:, :, 6:22, 6:22] = rng.integers(0, 256, (60, 1, 16, 16), dtype=np.uint8)
    return images, np.arange(60) % 10


@pytest.fixture(scope="module")
def shards(tmp_path_factory, digits):
    folder = tmp_path_factory.mktemp("views")
    images, labels = digits
    write_shards(image_samples(images, labels, np.arange(60)), folder, max_count=15)
    return folder


def _transform(digits, rate, augment=None, kind="replace"):
    images, _ = digits
    pool = list(range(0, 60, 3))
    return TwoViews(augment or AugmentConfig(), rate, kind, torch.from_numpy(images[pool]), pool)


def _stream(shards, transform, workers, **kwargs):
    return ShardStream(
        shards, batch_size=8, seed=4, fields={"image": "image"}, transform=transform, num_workers=workers, **kwargs
    )


def _by_key(batches, name):
    return {key: batch[name][row] for batch in batches for row, key in enumerate(batch["key"])}


def test_views_and_flags_are_the_same_with_0_and_1_workers(shards, digits):
    transform = _transform(digits, 0.4)
    runs = [list(_stream(shards, transform, workers).epoch(3)) for workers in (0, 1)]
    assert runs[0][0]["u"].shape == (8, 1, 28, 28) and runs[0][0]["u"].dtype == torch.uint8
    assert runs[0][0]["noisy"].dtype == torch.int64
    for name in ("u", "v", "noisy"):
        first, second = _by_key(runs[0], name), _by_key(runs[1], name)
        assert first.keys() == second.keys() and len(first) == 56
        assert all(torch.equal(first[key], second[key]) for key in first), name
    u, v = _by_key(runs[0], "u"), _by_key(runs[0], "v")
    assert not any(torch.equal(u[key], v[key]) for key in u)  # two random views differ


def test_resuming_mid_epoch_gives_the_same_views(shards, digits):
    stream = _stream(shards, _transform(digits, 0.4), 1, shuffle_buffer=20)
    full = list(stream.epoch(2))
    tail = list(stream.epoch(2, start_batch=3))
    assert len(tail) == len(full) - 3
    for a, b in zip(full[3:], tail, strict=False):
        assert a["key"] == b["key"] and all(torch.equal(a[n], b[n]) for n in ("u", "v", "noisy"))
    other = list(stream.epoch(3))
    first, later = _by_key(full, "u"), _by_key(other, "u")
    common = first.keys() & later.keys()  # drop_last leaves out other samples in other epochs
    assert len(common) > 40 and not any(torch.equal(first[key], later[key]) for key in common)  # new views


class _Interrupted(Exception):
    pass


class _StopAfter:
    def __init__(self, stream, limit):
        self.stream, self.limit, self.served = stream, limit, 0
        self.batches_per_epoch = stream.batches_per_epoch

    def epoch(self, epoch, start_batch=0):
        for batch in self.stream.epoch(epoch, start_batch):
            if self.served == self.limit:
                raise _Interrupted
            self.served += 1
            yield batch


def _model(seed):
    torch.manual_seed(seed)
    encoder = encoders.build("projected", backbone={"name": "lenet", "n_e": 16}, wide=32, n_e=8)
    return BimodalModel(encoder, encoder, metric="cosine", tau=0.5, learn_tau=False)


def test_training_resumed_from_a_checkpoint_is_bitwise_identical(shards, digits, tmp_path):
    transform = _transform(digits, 0.4)
    config = TrainConfig(epochs=2, lr=1e-3, checkpoint_every=4, device="cpu", threads=1)
    loss = losses.build("gca_uot", metric="cosine")
    full_model = _model(0)
    full = train(full_model, loss, _stream(shards, transform, 1), config, RunDir("t", path=tmp_path / "full"))
    cut = RunDir("t", path=tmp_path / "cut")
    with pytest.raises(_Interrupted):
        train(_model(0), loss, _StopAfter(_stream(shards, transform, 1), 10), config, cut)
    cut.resuming = True
    resumed_model = _model(5)
    resumed = train(resumed_model, loss, _stream(shards, transform, 0), config, cut)  # and another worker count
    assert resumed.resumed_at == 8 and resumed.steps == full.steps == 14
    assert resumed.epoch_losses == full.epoch_losses
    assert all(torch.equal(p, q) for p, q in zip(full_model.parameters(), resumed_model.parameters(), strict=False))


def test_noisy_flag_rate_is_p_and_a_noisy_view_is_another_pool_image(digits):
    images, _ = digits
    transform = _transform(digits, 0.3, IDENTITY)
    pool = {i: torch.from_numpy(images[i]) for i in range(0, 60, 3)}
    n, noisy = 3000, 0
    for trial in range(n):
        index = trial % 60
        image = torch.from_numpy(images[index])
        out = transform({"image": image, "key": f"img-{index:07d}"}, torch.Generator().manual_seed(trial))
        if not out["noisy"]:
            assert torch.equal(out["u"], image) and torch.equal(out["v"], image)
            continue
        noisy += 1
        kept, other = (out["v"], out["u"]) if not torch.equal(out["u"], image) else (out["u"], out["v"])
        assert torch.equal(kept, image)
        assert any(torch.equal(other, picture) for j, picture in pool.items() if j != index)
    assert abs(noisy / n - 0.3) < 4 * math.sqrt(0.21 / n)
    clean = _transform(digits, 0.0)
    assert not any(
        clean({"image": torch.from_numpy(images[0]), "key": "img-0000000"}, torch.Generator().manual_seed(s))["noisy"]
        for s in range(200)
    )


def test_a_corrupted_view_keeps_little_of_the_image(digits):
    images, _ = digits
    transform = _transform(digits, 0.99, IDENTITY, kind="corrupt")
    image = torch.from_numpy(images[1])
    out = transform({"image": image, "key": "img-0000001"}, torch.Generator().manual_seed(0))
    assert out["noisy"]
    changed = out["v"] if torch.equal(out["u"], image) else out["u"]
    assert not torch.equal(changed, image) and changed.shape == image.shape


def test_a_view_is_a_function_of_the_generator_alone():
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    config = AugmentConfig(flip_p=0.5)
    one, two = (augment_view(image, config, torch.Generator().manual_seed(7)) for _ in range(2))
    assert torch.equal(one, two) and one.dtype == torch.uint8 and one.shape == (3, 32, 32)
    assert not torch.equal(one, augment_view(image, config, torch.Generator().manual_seed(8)))
    generator = torch.Generator().manual_seed(7)
    augment_view(image, config, generator)
    # A view uses exactly its block of draws, whichever branches it took.
    reference = torch.Generator().manual_seed(7)
    torch.rand(VIEW_DRAWS, generator=reference, dtype=torch.float64)
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=reference))


def test_the_warp_is_torchvision_crop_then_affine():
    functional = pytest.importorskip("torchvision.transforms.v2.functional")
    # A linear ramp: bilinear resampling reproduces it exactly, so torchvision's two resamplings
    # (resize, then affine) and the one composed warp must agree wherever both read the image.
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    x = ((3 * rows + 2 * cols) / 200)[None]
    box, angle, shift, shear = (4, 6, 14, 16), 15.0, (2, -1), 8.0
    ours = _warp(x, box, True, angle, (float(shift[0]), float(shift[1])), shear)
    crop = functional.resized_crop(x, *box, [28, 28], antialias=False).flip(-1)
    theirs = functional.affine(
        crop,
        angle=angle,
        translate=list(shift),
        scale=1.0,
        shear=[shear, 0.0],
        interpolation=functional.InterpolationMode.BILINEAR,
    )
    # Away from the border, where torchvision pads the crop by replication and the warp reads the image.
    assert torch.allclose(ours[:, 7:-7, 7:-7], theirs[:, 7:-7, 7:-7], atol=1e-5)
    noise = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(1))
    for step, reference in (
        (
            _warp(noise, box, False, 0.0, (0.0, 0.0), 0.0),
            functional.resized_crop(noise, *box, [28, 28], antialias=False),
        ),
        (
            _warp(noise, (0, 0, 28, 28), False, angle, (2.0, -1.0), shear),
            functional.affine(
                noise,
                angle=angle,
                translate=[2, -1],
                scale=1.0,
                shear=[shear, 0.0],
                interpolation=functional.InterpolationMode.BILINEAR,
            ),
        ),
    ):
        assert torch.allclose(step[:, 6:-6, 6:-6], reference[:, 6:-6, 6:-6], atol=1e-5)
    identity = _warp(x, (0, 0, 28, 28), False, 0.0, (0.0, 0.0), 0.0)
    assert torch.allclose(identity, x, atol=1e-5)


# --- measures ------------------------------------------------------------------------------------


def test_plan_departure_is_zero_for_a_doubly_stochastic_kernel_and_grows_as_tau_falls():
    # Orthonormal rows: cos = I, the kernel is symmetric with equal row sums, Sinkhorn changes nothing.
    z = torch.eye(8, dtype=torch.float64)
    assert plan_departure(z, z, 0.5, batch_size=8) == pytest.approx(0.0, abs=1e-12)
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(64, 4, generator=g), torch.randn(64, 4, generator=g)
    assert plan_departure(u, v, 0.1, batch_size=64) > plan_departure(u, v, 0.5, batch_size=64) > 0


def test_verdicts_need_the_difference_beyond_twice_its_standard_error():
    assert verdict(0.03, 0.01) == "held"
    assert verdict(0.01, 0.01).startswith("held in the mean")
    assert verdict(-0.01, 0.01).startswith("NOT held in the mean")
    assert verdict(-0.03, 0.01).startswith("NOT held (reversed")
    assert "one seed" in verdict(0.01, math.nan)


def test_the_projected_encoder_is_a_backbone_and_a_bias_free_projector():
    encoder = encoders.build("projected", backbone={"name": "lenet", "n_e": 12}, wide=20, n_e=6)
    x = torch.rand(3, 1, 28, 28)
    assert encoder.features(x).shape == (3, 12) and encoder(x).shape == (3, 6) and encoder.n_e == 6
    assert all(layer.bias is None for layer in encoder.projector if isinstance(layer, torch.nn.Linear))
    rebuilt = encoders.build(**encoder.config)
    rebuilt.load_state_dict(encoder.state_dict())
    assert torch.equal(rebuilt(x), encoder(x))
    with pytest.raises(ValueError, match="backbone="):
        encoders.build("projected", backbone="lenet")
    with pytest.raises(ValueError, match="wide=0"):
        encoders.build("projected", backbone={"name": "lenet"}, wide=0)
