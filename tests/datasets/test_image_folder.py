"""Captioned image folders and img2dataset tar shards, generated at test time."""

import io
import json
import logging
import tarfile

import numpy as np
import pytest
from PIL import Image

from clipmath.datasets import ShardStream, image_text_samples, load_image_text, read_manifest, write_shards
from clipmath.datasets.fields import FieldInfo
from clipmath.datasets.png import decode_png


def noise(height, width, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": None}[mode]
    shape = (height, width) if channels is None else (height, width, channels)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def encoded(image, fmt):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def img2dataset_members():
    """(name, bytes) of 4 samples as img2dataset writes them: {key}.jpg, {key}.txt, {key}.json."""
    members = []
    for i, (height, width) in enumerate([(20, 30), (24, 24), (40, 16), (18, 18)]):
        key = f"0000000{i:02d}"
        meta = {"url": f"https://example.org/{i}.jpg", "key": key, "status": "success", "width": width}
        members += [
            (f"{key}.jpg", encoded(noise(height, width, i), "JPEG")),
            (f"{key}.txt", f"  a picture number {i}\n".encode()),
            (f"{key}.json", json.dumps(meta).encode()),
        ]
    return members


def write_tar(path, members):
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def tar_dir(tmp_path):
    """An img2dataset webdataset output: two shards, a parquet and stats files beside them."""
    folder = tmp_path / "img2dataset"
    folder.mkdir()
    members = img2dataset_members()
    write_tar(folder / "00000.tar", members[:6])
    write_tar(folder / "00001.tar", members[6:])
    (folder / "00000.parquet").write_bytes(b"PAR1 not read")
    (folder / "00000_stats.json").write_text("{}")
    return folder


@pytest.fixture
def loose_dir(tmp_path):
    """The same 4 samples as loose files in an img2dataset 'files' layout (a 00000/ subfolder)."""
    folder = tmp_path / "files"
    (folder / "00000").mkdir(parents=True)
    for name, data in img2dataset_members():
        (folder / "00000" / name).write_bytes(data)
    return folder


def test_img2dataset_tar_shards(tar_dir):
    samples = list(image_text_samples(tar_dir))
    members = dict(img2dataset_members())
    assert [s["__key__"] for s in samples] == [f"0000000{i:02d}" for i in range(4)]
    for i, sample in enumerate(samples):
        key = sample["__key__"]
        assert sample["image"] == members[f"{key}.jpg"]  # an RGB JPEG passes unchanged
        assert sample["caption"] == f"a picture number {i}"  # stripped
        assert sample["meta"] == json.loads(members[f"{key}.json"])
    one = list(image_text_samples(tar_dir / "00001.tar"))
    assert [s["__key__"] for s in one] == ["000000002", "000000003"]


def test_loose_files_give_the_same_samples(loose_dir, tar_dir):
    loose = list(image_text_samples(loose_dir))
    shards = list(image_text_samples(tar_dir))
    assert [s["__key__"] for s in loose] == ["00000-" + s["__key__"] for s in shards]
    for a, b in zip(loose, shards, strict=False):
        assert (a["image"], a["caption"], a["meta"]) == (b["image"], b["caption"], b["meta"])


def test_a_mixed_folder_converts_and_skips(tmp_path, caplog):
    folder = tmp_path / "mixed"
    folder.mkdir()
    noise(10, 12, 1).save(folder / "a.jpg", quality=90)
    (folder / "a.txt").write_text("first")
    rgba = noise(8, 8, 2, "RGBA")
    pixels = np.asarray(rgba).copy()
    pixels[..., 3] = 0  # fully transparent: white over the background
    pixels[0, 0, 3] = 255
    Image.fromarray(pixels, "RGBA").save(folder / "b.png")
    (folder / "b.txt").write_text("transparent")
    (folder / "b.json").write_text('{"licence": "CC0"}')
    noise(6, 6, 3, "L").save(folder / "c.png")
    (folder / "c.txt").write_text("grey")
    (folder / "d.jpg").write_bytes(encoded(noise(10, 10, 4), "JPEG")[:200])  # truncated
    (folder / "d.txt").write_text("broken")
    noise(5, 5, 5).save(folder / "e.png")  # no caption
    (folder / "f.txt").write_text("no image")
    noise(5, 5, 6).save(folder / "g.png")
    (folder / "g.txt").write_text("   \n")  # an empty caption
    noise(5, 5, 7).save(folder / "h.png")
    (folder / "h.json").write_text('{"caption": "from the json"}')
    (folder / "notes.md").write_text("ignored")

    skipped = []
    with caplog.at_level(logging.WARNING, logger="clipmath.datasets.image_folder"):
        samples = list(image_text_samples(folder, skipped=skipped))
    assert [s["__key__"] for s in samples] == ["a", "b", "c", "h"]
    assert [s["caption"] for s in samples] == ["first", "transparent", "grey", "from the json"]
    assert [s["meta"] for s in samples] == [{}, {"licence": "CC0"}, {}, {"caption": "from the json"}]
    assert dict(skipped).keys() == {"d", "e", "f", "g"}
    assert "decode" in dict(skipped)["d"] and "caption" in dict(skipped)["e"]
    assert "no image" in dict(skipped)["f"] and "empty caption" in dict(skipped)["g"]
    assert "skipped 4" in caplog.text
    # the first image is a JPEG, so every image is stored as one (one image field per shard set)
    for sample in samples:
        assert sample["image"].startswith(b"\xff\xd8\xff")
    b = np.asarray(Image.open(io.BytesIO(samples[1]["image"])))
    assert b.shape == (8, 8, 3) and b[4:, 4:].min() > 240  # composited over white

    as_png = list(image_text_samples(folder, image_format="png"))
    np.testing.assert_array_equal(decode_png(as_png[1]["image"])[:, 1:, 1:], 255)
    assert decode_png(as_png[2]["image"]).shape == (3, 6, 6)  # grey -> RGB

    with pytest.raises(ValueError, match=r"d\.jpg.*'d'.*strict=True"):
        list(image_text_samples(folder, strict=True))


@pytest.mark.parametrize("mode", ["center_crop", "pad", "stretch"])
def test_resize_modes(tar_dir, mode):
    arrays = load_image_text(tar_dir, size=16, resize_mode=mode)
    assert arrays.images.shape == (4, 3, 16, 16) and arrays.images.dtype == np.uint8
    assert arrays.keys == tuple(f"0000000{i:02d}" for i in range(4))
    assert arrays.captions[2] == "a picture number 2"
    tall = arrays.images[2]  # 40 x 16 noise
    border = tall[:, :, :3]
    if mode == "pad":
        np.testing.assert_array_equal(border, 255)  # 16 x 6.4 content centred in white
        assert tall[:, :, 7:9].mean() < 200  # the (grey on average) noise, not the white border
    else:
        assert border.std() > 20  # content up to the edge
    samples = list(image_text_samples(tar_dir, size=16, resize_mode=mode))
    for sample in samples:
        with Image.open(io.BytesIO(sample["image"])) as decoded:
            assert decoded.format == "JPEG" and decoded.size == (16, 16)


def test_center_crop_keeps_the_centre(tmp_path):
    pixels = np.zeros((30, 90, 3), dtype=np.uint8)
    pixels[:, 30:60] = 200  # the middle third is light
    Image.fromarray(pixels).save(tmp_path / "x.png")
    (tmp_path / "x.txt").write_text("one")
    image = load_image_text(tmp_path, size=30, resize_mode="center_crop").images[0]
    assert image.shape == (3, 30, 30) and image.min() >= 190
    image = load_image_text(tmp_path, size=30, resize_mode="stretch").images[0]
    assert image[:, :, :5].max() < 10 and image[:, :, 12:18].min() >= 190


def test_through_write_shards_and_the_stream(tar_dir, tmp_path):
    write_shards(image_text_samples(tar_dir, size=16), tmp_path / "shards", max_count=3)
    manifest = read_manifest(tmp_path / "shards")
    assert manifest.total == 4
    assert manifest.fields == {
        "image": FieldInfo("jpg", (3, 16, 16), "uint8"),
        "caption": FieldInfo("txt", None, "str"),
        "meta": FieldInfo("json", None, "json"),
    }
    stream = ShardStream(tmp_path / "shards", batch_size=4, fields=("image", "caption"), drop_last=False)
    (batch,) = list(stream.epoch(0))
    assert tuple(batch["image"].shape) == (4, 3, 16, 16)
    assert sorted(batch["caption"]) == [f"a picture number {i}" for i in range(4)]

    # without a size the images keep theirs: the manifest records the varying axes
    write_shards(image_text_samples(tar_dir), tmp_path / "raw")
    assert read_manifest(tmp_path / "raw").fields["image"] == FieldInfo("jpg", (3, None, None), "uint8")


def test_load_without_size_needs_one_size(tar_dir, tmp_path):
    with pytest.raises(ValueError, match="pass size="):
        load_image_text(tar_dir)
    members = [m for m in img2dataset_members() if m[0].startswith("000000001")]
    members += [(name.replace("000000001", "000000009"), data) for name, data in members]
    arrays = load_image_text(write_tar(tmp_path / "same.tar", members))
    assert arrays.images.shape == (2, 3, 24, 24) and arrays.keys == ("000000001", "000000009")
    expected = np.asarray(Image.open(io.BytesIO(members[0][1]))).transpose(2, 0, 1)
    np.testing.assert_array_equal(arrays.images[0], expected)
    assert load_image_text(tar_dir, size=8, limit=3).images.shape == (3, 3, 8, 8)


def test_bad_sources_and_arguments(tmp_path, tar_dir):
    with pytest.raises(ValueError, match="neither a folder nor a .tar"):
        image_text_samples(tmp_path / "absent")
    with pytest.raises(ValueError, match=r"source=\[\]"):
        image_text_samples([])
    (tmp_path / "bad.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ValueError, match="not a readable tar"):
        list(image_text_samples(tmp_path / "bad.tar"))
    for kwargs, name in [
        ({"size": 0}, "size"),
        ({"resize_mode": "border"}, "resize_mode"),
        ({"image_format": "webp"}, "image_format"),
    ]:
        with pytest.raises(ValueError, match=name):
            image_text_samples(tar_dir, **kwargs)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no usable sample"):
        load_image_text(empty)
