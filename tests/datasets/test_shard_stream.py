"""ShardStream: seeded order, rank/worker split, resume, resampling, damaged data, bad input."""

import dataclasses
import io
import logging
import math
import os
import re
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from shard_data import MAX_COUNT, N_SAMPLES, shard_keys

from clipmath.datasets import ShardStream, read_manifest, write_shards
from clipmath.datasets import stream as stream_module
from clipmath.datasets.shards import MANIFEST_NAME, sha256_file


def keys_of(batches):
    return [key for batch in batches for key in batch["key"]]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a["key"] == b["key"]
        assert torch.equal(a["u"], b["u"]) and torch.equal(a["v"], b["v"])


# (2 workers, 3 ranks): rank 0 holds 3 shards, so one worker ends before the other.
@pytest.mark.parametrize(("num_workers", "world_size"), [(0, 1), (2, 1), (2, 3)])
def test_same_seed_and_epoch_reproduce_the_batches_and_epochs_differ(shard_dir, num_workers, world_size):
    def stream(seed):
        return ShardStream(
            shard_dir, batch_size=2, seed=seed, shuffle_buffer=10, num_workers=num_workers, world_size=world_size
        )

    first = list(stream(0).epoch(1))
    assert_same_batches(first, list(stream(0).epoch(1)))
    assert keys_of(list(stream(0).epoch(2))) != keys_of(first)
    assert keys_of(list(stream(1).epoch(1))) != keys_of(first)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("drop_last", [False, True])
def test_an_epoch_delivers_each_sample_at_most_once_and_all_without_drop_last(shard_dir, num_workers, drop_last):
    # 2 workers read 20 samples each: 3 batches of 6 and 2 left over each, pooled into one more.
    stream = ShardStream(shard_dir, batch_size=6, num_workers=num_workers, drop_last=drop_last)
    batches = list(stream.epoch(0))
    keys = keys_of(batches)
    expected_batches = N_SAMPLES // 6 if drop_last else math.ceil(N_SAMPLES / 6)
    assert len(batches) == stream.batches_per_epoch == expected_batches
    assert len(keys) == len(set(keys))
    assert all(len(batch["key"]) == 6 for batch in batches[:-1])
    if drop_last:
        assert len(keys) == 6 * expected_batches
    else:
        assert sorted(keys) == [f"sample-{i:04d}" for i in range(N_SAMPLES)]


@pytest.mark.parametrize("drop_last", [False, True])
def test_two_ranks_with_two_workers_see_disjoint_samples_covering_the_epoch(shard_dir, drop_last):
    per_rank = []
    for rank in (0, 1):
        stream = ShardStream(shard_dir, batch_size=4, num_workers=2, rank=rank, world_size=2, drop_last=drop_last)
        batches = list(stream.epoch(3))
        assert len(batches) == stream.batches_per_epoch
        per_rank.append(keys_of(batches))
    everything = per_rank[0] + per_rank[1]
    assert len(everything) == len(set(everything))
    if not drop_last:
        assert sorted(everything) == [f"sample-{i:04d}" for i in range(N_SAMPLES)]


def test_uneven_ranks_get_equal_batch_counts_with_drop_last_and_full_coverage_without(shard_dir):
    # 8 shards over 3 ranks: 15, 15 and 10 samples.
    counts = [ShardStream(shard_dir, batch_size=4, rank=r, world_size=3).batches_per_epoch for r in range(3)]
    assert counts == [2, 2, 2]
    keys = []
    for rank, expected in zip(range(3), (4, 4, 3), strict=True):
        stream = ShardStream(shard_dir, batch_size=4, rank=rank, world_size=3, drop_last=False)
        batches = list(stream.epoch(0))
        assert len(batches) == stream.batches_per_epoch == expected
        keys += keys_of(batches)
    assert sorted(keys) == [f"sample-{i:04d}" for i in range(N_SAMPLES)]


@pytest.mark.parametrize(("num_workers", "world_size"), [(0, 1), (2, 1), (2, 3)])
def test_start_batch_resumes_with_the_tail_of_the_full_epoch(shard_dir, num_workers, world_size):
    stream = ShardStream(
        shard_dir, batch_size=3, shuffle_buffer=8, num_workers=num_workers, world_size=world_size, drop_last=False
    )
    full = list(stream.epoch(5))
    rank_samples = {1: N_SAMPLES, 3: 3 * MAX_COUNT}[world_size]  # rank 0 of 3 holds shards 0, 3, 6
    assert len(full) == stream.batches_per_epoch == math.ceil(rank_samples / 3)
    for start in (1, len(full) - 1):  # from a worker batch, and from the pooled last batch
        assert_same_batches(list(stream.epoch(5, start_batch=start)), full[start:])
    assert list(stream.epoch(5, start_batch=len(full))) == []


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("drop_last", [False, True])
def test_resampled_epoch_has_samples_per_epoch_samples(shard_dir, num_workers, drop_last):
    stream = ShardStream(
        shard_dir,
        batch_size=8,
        resampled=True,
        samples_per_epoch=51,
        num_workers=num_workers,
        drop_last=drop_last,
    )
    batches = list(stream.epoch(0))
    assert len(batches) == stream.batches_per_epoch == (6 if drop_last else 7)
    assert sum(len(batch["key"]) for batch in batches) == (48 if drop_last else 51)
    assert set(keys_of(batches)) <= {f"sample-{i:04d}" for i in range(N_SAMPLES)}
    assert keys_of(list(stream.epoch(1))) != keys_of(batches)


def test_resampled_ranks_share_samples_per_epoch(shard_dir):
    sizes = []
    for rank in (0, 1):
        stream = ShardStream(
            shard_dir,
            batch_size=8,
            resampled=True,
            samples_per_epoch=51,
            rank=rank,
            world_size=2,
            drop_last=False,
        )
        sizes.append(sum(len(batch["key"]) for batch in stream.epoch(0)))
    assert sizes == [26, 25]


def _member_offsets(path):
    with tarfile.open(path) as tar:
        return [member.offset for member in tar.getmembers()]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_damaged_shards_are_skipped_and_counted_and_good_samples_all_delivered(shard_dir, num_workers, caplog):
    names = [shard.name for shard in read_manifest(shard_dir).shards]
    garbage, truncated, cut_at_member, corrupt_sample = (shard_dir / names[i] for i in (1, 4, 6, 7))
    garbage.write_bytes(np.random.default_rng(0).bytes(garbage.stat().st_size))
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2 + 100])  # inside a member
    # Cut exactly where the 3rd sample starts (5 members per sample): tarfile sees a clean end.
    cut_at_member.write_bytes(cut_at_member.read_bytes()[: _member_offsets(cut_at_member)[10]])
    data = bytearray(corrupt_sample.read_bytes())
    magic = [i for i in range(len(data)) if data.startswith(b"\x93NUMPY", i)]
    data[magic[2] : magic[2] + 6] = b"XXXXXX"  # sample 1's u.npy (members sort caption, label, meta, u, v)
    corrupt_sample.write_bytes(bytes(data))

    stream = ShardStream(shard_dir, batch_size=4, num_workers=num_workers, drop_last=False)
    with caplog.at_level(logging.WARNING, logger="clipmath.datasets.stream"):
        keys = keys_of(list(stream.epoch(0)))
    skipped = stream.skipped

    assert len(keys) == len(set(keys))
    for good in (0, 2, 3, 5):
        assert set(shard_keys(good)) <= set(keys)
    assert skipped[names[1]] == MAX_COUNT
    assert skipped[names[6]] == MAX_COUNT - 2  # complete samples before the cut are all kept
    assert skipped[names[7]] == 1
    assert set(shard_keys(7)) - set(keys) == {"sample-0036"}
    delivered = sorted(set(shard_keys(4)) & set(keys))
    assert 1 <= len(delivered) < MAX_COUNT
    assert delivered == shard_keys(4)[: len(delivered)]  # the samples before the damage
    assert skipped[names[4]] == MAX_COUNT - len(delivered)
    assert len(keys) + sum(skipped.values()) == N_SAMPLES
    if num_workers == 0:  # worker processes log to their own handlers
        logged = " ".join(record.getMessage() for record in caplog.records)
        assert all(names[i] in logged for i in (1, 4, 6, 7))


def _rewrite_shard_without(shard_dir, index, key, member):
    """Rewrite shard ``index`` dropping one member of sample ``key``; fix the manifest to match."""
    manifest = read_manifest(shard_dir)
    path = shard_dir / manifest.shards[index].name
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    buffer = io.BytesIO()
    with wds.TarWriter(buffer, encoder=False, mtime=0) as writer:
        for name, data in members:
            sample_key, _, suffix = name.partition(".")
            if (sample_key, suffix) != (key, member):
                writer.write({"__key__": sample_key, suffix: data})
    path.write_bytes(buffer.getvalue())
    shard = dataclasses.replace(manifest.shards[index], bytes=path.stat().st_size, sha256=sha256_file(path))
    shards = manifest.shards[:index] + (shard,) + manifest.shards[index + 1 :]
    (shard_dir / MANIFEST_NAME).write_text(dataclasses.replace(manifest, shards=shards).to_json())


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_missing_required_field_raises_naming_key_and_shard(shard_dir, num_workers):
    _rewrite_shard_without(shard_dir, 1, "sample-0007", "v.npy")
    stream = ShardStream(shard_dir, batch_size=4, num_workers=num_workers)
    with pytest.raises(ValueError, match=r"sample-0007.*shard-000001\.tar.*'v'"):
        list(stream.epoch(0))


def test_a_field_not_requested_may_be_missing(shard_dir):
    _rewrite_shard_without(shard_dir, 1, "sample-0007", "v.npy")
    stream = ShardStream(shard_dir, batch_size=4, drop_last=False, fields=("u",))
    batches = list(stream.epoch(0))
    assert sorted(keys_of(batches)) == [f"sample-{i:04d}" for i in range(N_SAMPLES)]
    assert set(batches[0]) == {"u", "key"}


def test_batch_dict_layout(shard_dir):
    batch = next(iter(ShardStream(shard_dir, batch_size=4, fields=("u", "v", "label", "caption")).epoch(0)))
    assert set(batch) == {"u", "v", "label", "caption", "key"}
    assert batch["u"].shape == (4, 3, 2) and batch["u"].dtype == torch.float32
    assert batch["v"].shape == (4, 4) and batch["v"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (4,)
    assert isinstance(batch["caption"], list) and len(batch["key"]) == 4


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": 4, "rank": 2, "world_size": 2}, "rank=2"),
        ({"batch_size": 4, "world_size": 9}, "world_size=9"),
        ({"batch_size": 4, "resampled": True}, "samples_per_epoch=None"),
        ({"batch_size": 4, "samples_per_epoch": 10}, "samples_per_epoch=10"),
        ({"batch_size": 4, "fields": ("u", "w")}, "'w'"),
        ({"batch_size": 4, "fields": ()}, "fields=()"),
        ({"batch_size": 4, "seed": -1}, "seed=-1"),
    ],
)
def test_bad_arguments_raise_naming_them(shard_dir, kwargs, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        ShardStream(shard_dir, **kwargs)


def test_bad_epoch_arguments_and_missing_manifest(shard_dir, tmp_path):
    stream = ShardStream(shard_dir, batch_size=4)
    with pytest.raises(ValueError, match="start_batch=11"):
        stream.epoch(0, start_batch=11)
    with pytest.raises(ValueError, match="epoch=-1"):
        stream.epoch(-1)
    with pytest.raises(ValueError, match="manifest.json"):
        ShardStream(tmp_path, batch_size=4)


# The fast reader of fixed-layout shards against the generic member-by-member reader.


def _plan(shard_dir, fields):
    stream = ShardStream(shard_dir, batch_size=4, fields=fields)
    return stream_module._Plan(epoch=0, **stream._plan_args)


def _generic_samples(plan, shard):
    skipped = Counter()
    raw = stream_module._read_shard(shard, plan.members, skipped)
    return list(stream_module._decode(raw, plan.fields, skipped)), skipped


def test_fixed_layout_reader_matches_the_generic_reader_bitwise(tmp_path):
    rng = np.random.default_rng(1)
    samples = [
        {
            "__key__": f"k{i}",  # keys of varying length
            "u": rng.standard_normal((2, 3)).astype(">f8"),  # big-endian float64: converted to float32
            "v": rng.integers(-300, 300, 5).astype(np.int16),
            "label": int(i),
            "caption": "x" * i,  # sizes vary within one data block
            "meta": {"i": [i, i + 1]},
            "image": Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)),  # a PNG in one block
            "seq": np.arange(i % 4 + 1, dtype=np.float32),  # a shape that varies: (None,)
        }
        for i in range(1, 12)
    ]
    write_shards(samples, tmp_path / "s", max_count=6)
    plan = _plan(tmp_path / "s", ("u", "v", "label", "caption", "meta", "image", "seq"))
    for shard in plan.shards:
        skipped = Counter()
        (block,) = stream_module._read_fixed(shard, plan.fields, skipped)
        generic, generic_skipped = _generic_samples(plan, shard)
        assert not skipped and not generic_skipped
        assert list(block["key"]) == [sample["key"] for sample in generic]
        for name in ("u", "v", "label", "image"):
            expected = np.stack([sample[name].numpy() for sample in generic])
            assert block[name].dtype == expected.dtype and block[name].tobytes() == expected.tobytes()
        assert block["image"].dtype == np.uint8
        for name in ("caption", "meta"):
            assert list(block[name]) == [sample[name] for sample in generic]
        assert block["seq"].dtype == object and len({len(seq) for seq in block["seq"]}) > 1
        assert all(np.array_equal(a, b.numpy()) for a, b in zip(block["seq"], [s["seq"] for s in generic], strict=True))


def _set_octal(data, at, width, value):
    data[at : at + width] = f"{value:0{width}o}".encode()


def test_a_tampered_header_falls_back_to_the_generic_reader_and_counts(shard_dir):
    plan = _plan(shard_dir, ("u", "v"))
    shard = plan.shards[2]
    with tarfile.open(shard.path) as tar:
        member = next(m for m in tar.getmembers() if m.name == "sample-0012.u.npy")
    data = bytearray(open(shard.path, "rb").read())
    header = member.offset
    _set_octal(data, header + 124, 11, member.size - 1)  # one byte short: same data blocks
    data[header + 148 : header + 156] = b" " * 8
    checksum = sum(data[header : header + 512])
    data[header + 148 : header + 156] = f"{checksum:06o}".encode() + b"\0 "  # valid again, as tarfile writes it
    open(shard.path, "wb").write(bytes(data))

    assert stream_module._read_fixed(shard, plan.fields, Counter()) is None
    assert stream_module._read_fixed(plan.shards[3], plan.fields, Counter()) is not None
    stream = ShardStream(shard_dir, batch_size=4, drop_last=False)
    keys = keys_of(list(stream.epoch(0)))
    assert sorted(keys) == [f"sample-{i:04d}" for i in range(N_SAMPLES) if i != 12]
    assert stream.skipped == {shard.name: 1}


def test_a_damaged_checksum_alone_is_not_taken_by_the_fast_reader(shard_dir):
    plan = _plan(shard_dir, ("u", "v"))
    shard = plan.shards[0]
    data = bytearray(open(shard.path, "rb").read())
    offsets = [m.offset for m in tarfile.open(shard.path).getmembers()]
    data[offsets[7] + 108] ^= 1  # the uid field of a later sample's member, checksum left stale
    open(shard.path, "wb").write(bytes(data))
    assert stream_module._read_fixed(shard, plan.fields, Counter()) is None


def _numbered_blocks(sizes):
    start = 0
    for size in sizes:
        yield {"key": np.arange(start, start + size)}
        start += size


@pytest.mark.parametrize(("capacity", "batch_size"), [(10, 4), (7, 7), (64, 5)])
def test_vectorised_shuffle_is_reproducible_and_a_permutation(capacity, batch_size):
    def shuffled(seed):
        blocks = stream_module._shuffle(
            _numbered_blocks([3, 17, 1, 25]), capacity, batch_size, np.random.default_rng(seed)
        )
        return [block["key"].tolist() for block in blocks]

    first = shuffled(0)
    assert first == shuffled(0) and first != shuffled(1)
    assert sorted(sum(first, [])) == list(range(46))
    if capacity < 46:
        assert all(len(block) == batch_size for block in first[:-1])
        # A buffer of `capacity` samples: the first batch comes from the first `capacity` samples.
        assert max(first[0]) < capacity


def test_vectorised_shuffle_mixes_like_a_buffer():
    # A buffer of 8 drawing batches of 2: a sample stays for capacity / batch_size = 4 draws on
    # average, so it moves a few positions (measured: 5.0 to 5.3 over seeds 0-4); no shuffle
    # moves none, a full shuffle of 4000 about 1333.
    blocks = stream_module._shuffle(_numbered_blocks([4000]), 8, 2, np.random.default_rng(0))
    order = np.concatenate([block["key"] for block in blocks])
    displacement = np.abs(order - np.arange(4000)).mean()
    assert 2 < displacement < 40


@pytest.mark.parametrize("world_size", [1, 3])  # 3 ranks: rank 0's two workers read 2 and 1 shards
def test_workers_kept_between_epochs_give_the_batches_of_new_workers(shard_dir, world_size):
    def stream():
        return ShardStream(shard_dir, batch_size=2, shuffle_buffer=4, num_workers=2, world_size=world_size)

    kept = stream()
    first = list(kept.epoch(0))
    workers = kept._workers
    assert_same_batches(list(kept.epoch(1)), list(stream().epoch(1)))  # read ahead while epoch 0 was consumed
    partial = kept.epoch(2)
    next(partial)
    partial.close()  # an early stop: the workers restart at the next epoch asked for
    assert_same_batches(list(kept.epoch(0)), first)
    assert_same_batches(list(kept.epoch(1)), list(stream().epoch(1)))
    assert kept._workers is workers


# Damaged data: NaN or Inf, flipped header bytes, checksums, disagreements with the manifest.


def _messages(caplog):
    return " ".join(record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("reader", ["fixed", "generic"])
def test_nan_or_inf_in_the_data_is_a_corrupt_sample_skipped_counted_and_named(tmp_path, monkeypatch, caplog, reader):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(12):
        u, v = rng.standard_normal(3).astype(np.float32), rng.standard_normal(2)  # v float64
        seq = np.ones((i % 3 + 1, 2), dtype=np.float32)  # a shape that varies: checked per sample
        if i == 2:
            u[1] = np.nan
        if i == 5:
            v[0] = np.inf
        if i == 7:
            v[1] = 1e300  # finite in float64, Inf in float32
        if i == 9:
            seq[0, 1] = -np.inf
        samples.append({"__key__": f"s{i:02d}", "u": u, "v": v, "seq": seq})
    write_shards(samples, tmp_path / "s", max_count=6)
    if reader == "generic":
        monkeypatch.setattr(stream_module, "_read_fixed", lambda *args: None)
    stream = ShardStream(tmp_path / "s", batch_size=4, drop_last=False, fields=("u", "v", "seq"))
    with caplog.at_level(logging.WARNING, logger="clipmath.datasets.stream"):
        batches = list(stream.epoch(0))
    assert sorted(keys_of(batches)) == [f"s{i:02d}" for i in range(12) if i not in (2, 5, 7, 9)]
    assert all(torch.isfinite(batch[name]).all() for batch in batches for name in ("u", "v"))
    assert stream.skipped == {"shard-000000.tar": 2, "shard-000001.tar": 2}
    logged = _messages(caplog)
    for key, shard, field in (("s02", 0, "u"), ("s05", 0, "v"), ("s07", 1, "v"), ("s09", 1, "seq")):
        assert re.search(rf"shard-00000{shard}\.tar: 1 samples hold NaN or Inf in field '{field}' \('{key}'\)", logged)


def _flip_header(path, member_name, start=0, count=8):
    """XOR ``count`` bytes of the named member's tar header, from byte ``start`` of it."""
    with tarfile.open(path) as tar:
        offset = next(m.offset for m in tar.getmembers() if m.name == member_name)
    data = bytearray(path.read_bytes())
    for i in range(offset + start, offset + start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize(
    ("member", "start"),
    [
        ("sample-0011.u.npy", 0),  # the name of a member inside a sample
        ("sample-0011.caption.txt", 124),  # the size of a sample's first member
        ("sample-0010.caption.txt", 148),  # the checksum of the shard's first header
    ],
)
def test_eight_flipped_header_bytes_lose_only_that_sample(shard_dir, caplog, num_workers, member, start):
    names = [shard.name for shard in read_manifest(shard_dir).shards]
    _flip_header(shard_dir / names[2], member, start)
    stream = ShardStream(shard_dir, batch_size=4, num_workers=num_workers, drop_last=False)
    with caplog.at_level(logging.WARNING, logger="clipmath.datasets.stream"):
        keys = keys_of(list(stream.epoch(0)))
    lost = member.partition(".")[0]
    assert sorted(keys) == [f"sample-{i:04d}" for i in range(N_SAMPLES) if f"sample-{i:04d}" != lost]
    assert stream.skipped == {names[2]: 1}
    if num_workers == 0:
        logged = _messages(caplog)
        assert f"{names[2]}: its sha256 differs from the manifest's" in logged
        damaged = rf"{names[2]} is damaged \(unreadable from byte \d+ .*resumed at byte \d+\): 1 of its 5"
        assert re.search(damaged, logged)


def test_a_zeroed_header_and_garbage_between_members_are_read_past(shard_dir):
    names = [shard.name for shard in read_manifest(shard_dir).shards]
    path = shard_dir / names[3]
    with tarfile.open(path) as tar:
        offsets = {m.name: m.offset for m in tar.getmembers()}
    data = bytearray(path.read_bytes())
    at = offsets["sample-0016.caption.txt"]
    data[at : at + 512] = bytes(512)  # tarfile takes a zero block for the end of the archive
    at = offsets["sample-0018.v.npy"]
    data[at : at + 1024] = np.random.default_rng(0).bytes(1024)  # the header and data of the last member
    path.write_bytes(bytes(data))
    stream = ShardStream(shard_dir, batch_size=4, drop_last=False)
    keys = keys_of(list(stream.epoch(0)))
    assert set(shard_keys(3)) - set(keys) == {"sample-0016", "sample-0018"}
    assert stream.skipped == {names[3]: 2} and len(keys) == N_SAMPLES - 2


@pytest.mark.parametrize("threaded", [False, True])  # hashed while decoding (large shards), or before
def test_a_changed_value_that_still_decodes_is_caught_by_the_checksum_once_per_file_version(
    shard_dir, monkeypatch, caplog, threaded
):
    monkeypatch.setattr(stream_module, "_HASH_IN_THREAD_BYTES", 0 if threaded else 1 << 40)
    names = [shard.name for shard in read_manifest(shard_dir).shards]
    path = shard_dir / names[4]
    data = bytearray(path.read_bytes())
    magic = data.index(b"\x93NUMPY")
    data[magic + 128 + 2] ^= 0x01  # a low mantissa bit of the first float: decodes, finite
    path.write_bytes(bytes(data))
    hashed = Counter()
    real = stream_module.hashlib.sha256

    def counting(buffer):
        hashed[len(buffer)] += 1
        return real(buffer)

    monkeypatch.setattr(stream_module.hashlib, "sha256", counting)
    monkeypatch.setattr(stream_module, "_VERIFIED", {})
    stream = ShardStream(shard_dir, batch_size=4, drop_last=False)
    with caplog.at_level(logging.WARNING, logger="clipmath.datasets.stream"):
        assert len(keys_of(list(stream.epoch(0)))) == N_SAMPLES
        list(stream.epoch(1))
    assert sum(hashed.values()) == len(names)  # each shard once, not once per epoch
    assert _messages(caplog).count("sha256 differs") == 1 and names[4] in _messages(caplog)
    assert stream.skipped == {}

    path.write_bytes(bytes(data))  # a new file version (mtime): checked again
    os.utime(path, ns=(1, 1))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="clipmath.datasets.stream"):
        list(stream.epoch(2))
    assert sum(hashed.values()) == len(names) + 1 and "sha256 differs" in _messages(caplog)


def test_workers_hash_each_shard_once_and_share_the_verdicts(shard_dir):
    names = [shard.name for shard in read_manifest(shard_dir).shards]
    path = shard_dir / names[6]
    data = bytearray(path.read_bytes())
    data[data.index(b"\x93NUMPY") + 130] ^= 1
    path.write_bytes(bytes(data))
    stream = ShardStream(shard_dir, batch_size=4, num_workers=2, drop_last=False)
    list(stream.epoch(0))
    verdicts = stream._plan_args["verdicts"]
    expected = [stream_module._DIFFERS if i == 6 else stream_module._MATCHED for i in range(len(names))]
    assert verdicts[:, 0].tolist() == expected
    assert verdicts[:, 1].tolist() == [(shard_dir / name).stat().st_size for name in names]


def _edit_manifest(shard_dir, index, **changes):
    manifest = read_manifest(shard_dir)
    shards = list(manifest.shards)
    shards[index] = dataclasses.replace(shards[index], **changes)
    (shard_dir / MANIFEST_NAME).write_text(dataclasses.replace(manifest, shards=tuple(shards)).to_json())


def _drop_from_manifest(shard_dir, index):
    manifest = read_manifest(shard_dir)
    shards = manifest.shards[:index] + manifest.shards[index + 1 :]
    (shard_dir / MANIFEST_NAME).write_text(dataclasses.replace(manifest, shards=shards).to_json())


@pytest.mark.parametrize("case", ["unlisted", "missing", "size", "count"])
def test_every_disagreement_with_the_manifest_is_warned_naming_the_shard(shard_dir, caplog, case):
    names = [shard.name for shard in read_manifest(shard_dir).shards]
    path = shard_dir / names[5]
    if case == "unlisted":  # a shard file the manifest lacks: its samples are not streamed
        _drop_from_manifest(shard_dir, 5)
        expected, skipped = N_SAMPLES - MAX_COUNT, {}
        warned = rf"{names[5]}: unlisted: a shard file the manifest does not list"
    elif case == "missing":
        path.unlink()
        expected, skipped = N_SAMPLES - MAX_COUNT, {names[5]: MAX_COUNT}
        warned = rf"{names[5]}: missing: not on disk.*{names[5]} is damaged .*5 of its 5 samples lost"
    elif case == "size":  # zeros appended: the samples all parse, the size and checksum differ
        path.write_bytes(path.read_bytes() + bytes(10240))
        expected, skipped = N_SAMPLES, {}
        warned = rf"{names[5]}: size: {path.stat().st_size} bytes; the manifest says .*sha256 differs"
    else:  # the manifest counts one sample more than the shard holds
        _edit_manifest(shard_dir, 5, count=MAX_COUNT + 1)
        expected, skipped = N_SAMPLES, {names[5]: 1}
        warned = rf"{names[5]} is damaged \(\d+ bytes, 5 samples; the manifest says \d+, 6\): 1 of its 6 samples lost"
    with caplog.at_level(logging.WARNING, logger="clipmath.datasets.stream"):
        stream = ShardStream(shard_dir, batch_size=4, drop_last=False)
        keys = keys_of(list(stream.epoch(0)))
    assert len(keys) == expected and stream.skipped == skipped
    assert re.search(warned, _messages(caplog))
