"""write_shards / read_manifest / verify_shards: round trip, sharding, checksums, atomicity, bad input."""

import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest
from shard_data import MAX_COUNT, N_SAMPLES, make_samples

from clipmath.datasets import FieldInfo, ShardStream, read_manifest, verify_shards, write_shards
from clipmath.datasets.shards import MANIFEST_NAME, TarDamage, check_shards, tar_members


def test_write_then_read_round_trips_every_sample_and_field_bitwise(shard_dir, samples):
    stream = ShardStream(shard_dir, batch_size=7, drop_last=False, fields=("u", "v", "label", "caption", "meta"))
    by_key = {sample["__key__"]: sample for sample in samples}
    seen = []
    for batch in stream.epoch(0):
        for i, key in enumerate(batch["key"]):
            sample = by_key[key]
            assert batch["u"][i].numpy().tobytes() == sample["u"].tobytes()
            assert batch["v"][i].numpy().tobytes() == sample["v"].tobytes()
            assert batch["label"][i].item() == sample["label"]
            assert batch["caption"][i] == sample["caption"]
            assert batch["meta"][i] == sample["meta"]
            seen.append(key)
    assert sorted(seen) == sorted(by_key)


def test_manifest_records_counts_fields_checksums_and_source(shard_dir):
    manifest = read_manifest(shard_dir)
    assert manifest.total == N_SAMPLES
    assert [shard.count for shard in manifest.shards] == [MAX_COUNT] * (N_SAMPLES // MAX_COUNT)
    assert [shard.name for shard in manifest.shards] == [f"shard-{i:06d}.tar" for i in range(8)]
    assert manifest.fields == {
        "u": FieldInfo("npy", (3, 2), "float32"),
        "v": FieldInfo("npy", (4,), "float32"),
        "label": FieldInfo("cls", (), "int64"),
        "caption": FieldInfo("txt", None, "str"),
        "meta": FieldInfo("json", None, "json"),
    }
    assert manifest.source == {"name": "test"}
    raw = json.loads((shard_dir / MANIFEST_NAME).read_text())
    assert raw["total"] == N_SAMPLES and raw["format_version"] == 1
    for shard in manifest.shards:
        assert (shard_dir / shard.name).stat().st_size == shard.bytes
    assert set(verify_shards(shard_dir).values()) == {"ok"}
    with tarfile.open(shard_dir / manifest.shards[0].name) as tar:
        assert tar.getnames()[:5] == [
            "sample-0000.caption.txt",
            "sample-0000.label.cls",
            "sample-0000.meta.json",
            "sample-0000.u.npy",
            "sample-0000.v.npy",
        ]


def test_max_bytes_bounds_every_shard_file(tmp_path, samples):
    # A sample is 5 members of one header and one data block: 5 KiB. Tar files come in
    # 10 KiB records, so 3 samples (15 KiB + 1 KiB end) make 20 KiB and a 4th would make 30 KiB.
    manifest = write_shards(samples, tmp_path / "s", max_bytes=25 * 1024)
    sizes = [(tmp_path / "s" / shard.name).stat().st_size for shard in manifest.shards]
    assert max(sizes) <= 25 * 1024
    assert [shard.count for shard in manifest.shards] == [3] * 13 + [1]
    assert manifest.total == N_SAMPLES


def test_without_limits_everything_goes_into_one_shard(tmp_path, samples):
    manifest = write_shards(samples, tmp_path / "s")
    assert [shard.count for shard in manifest.shards] == [N_SAMPLES]


def test_same_samples_give_the_same_shard_bytes(tmp_path, samples):
    first = write_shards(samples, tmp_path / "a", max_count=MAX_COUNT)
    second = write_shards(make_samples(), tmp_path / "b", max_count=MAX_COUNT)
    assert [s.sha256 for s in first.shards] == [s.sha256 for s in second.shards]


def test_verify_shards_detects_a_modified_and_a_missing_shard(shard_dir):
    names = [shard.name for shard in read_manifest(shard_dir).shards]
    data = bytearray((shard_dir / names[2]).read_bytes())
    data[700] ^= 1  # one bit inside the first member's data
    (shard_dir / names[2]).write_bytes(bytes(data))
    (shard_dir / names[5]).unlink()
    status = verify_shards(shard_dir)
    assert status[names[2]] == "mismatch" and status[names[5]] == "missing"
    assert {name: state for name, state in status.items() if name not in (names[2], names[5])} == {
        name: "ok" for name in names if name not in (names[2], names[5])
    }


def test_a_failing_sample_iterable_leaves_no_files(tmp_path, samples):
    def broken():
        yield from samples[:12]
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        write_shards(broken(), tmp_path / "s", max_count=MAX_COUNT)
    assert os.listdir(tmp_path / "s") == []


def test_a_killed_writer_leaves_only_complete_shards_and_no_manifest(tmp_path):
    out = tmp_path / "s"
    script = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        import torch
        torch.set_num_threads(1)
        from clipmath.datasets import write_shards

        def samples():
            for i in range(100):
                if i == 12:  # mid-way through the third shard
                    os.kill(os.getpid(), signal.SIGKILL)
                yield {{"__key__": f"s{{i:03d}}", "u": np.full(3, i, np.float32), "v": np.zeros(2, np.float32)}}

        write_shards(samples(), {str(out)!r}, max_count=5)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL
    visible = sorted(name for name in os.listdir(out) if not name.startswith("."))
    assert visible == ["shard-000000.tar", "shard-000001.tar"]
    for index, name in enumerate(visible):
        with tarfile.open(out / name) as tar:
            names = tar.getnames()
        assert names == [f"s{i:03d}.{f}.npy" for i in range(5 * index, 5 * index + 5) for f in ("u", "v")]


def test_writing_into_a_shard_directory_is_refused(shard_dir, samples):
    with pytest.raises(ValueError, match="already holds shards"):
        write_shards(samples, shard_dir)


@pytest.mark.parametrize(
    ("bad", "kwargs", "named"),
    [
        ({"__key__": "a.b", "u": np.zeros(2)}, {}, r"__key__='a\.b'"),
        ({"__key__": "k", "u.x": np.zeros(2)}, {}, r"'u\.x'"),
        ({"__key__": "k", "u": np.array([object()])}, {}, "field 'u'"),
        ({"__key__": "k", "u": np.zeros(2), "v": b"not an image"}, {}, "field 'v'"),
        ({"u": np.zeros(2)}, {}, "__key__"),
        ({"__key__": "k", "u": np.zeros(2)}, {"max_count": 0}, "max_count=0"),
        ({"__key__": "k", "u": np.zeros(2)}, {"max_bytes": -1}, "max_bytes=-1"),
        ({"__key__": "k", "u": np.zeros(2)}, {"source": {"x": object()}}, "source="),
    ],
)
def test_bad_input_raises_naming_it_and_leaves_no_files(tmp_path, bad, kwargs, named):
    with pytest.raises(ValueError, match=named):
        write_shards([{"__key__": "first", "u": np.zeros(2)}, bad], tmp_path / "s", **kwargs)
    assert not (tmp_path / "s").exists() or os.listdir(tmp_path / "s") == []


def test_samples_must_store_fields_alike(tmp_path, samples):
    samples[9]["u"] = np.zeros((3, 2, 1), np.float32)  # shapes may vary, the number of axes not
    with pytest.raises(ValueError, match=r"sample-0009.*field 'u'"):
        write_shards(samples, tmp_path / "s", max_count=MAX_COUNT)
    del samples[9]["u"]
    with pytest.raises(ValueError, match=r"sample-0009.*fields"):
        write_shards(samples, tmp_path / "t", max_count=MAX_COUNT)
    assert os.listdir(tmp_path / "s") == [] and os.listdir(tmp_path / "t") == []


def test_empty_samples_and_missing_manifest_are_errors(tmp_path):
    with pytest.raises(ValueError, match="samples: empty"):
        write_shards([], tmp_path / "s")
    with pytest.raises(ValueError, match="manifest.json"):
        read_manifest(tmp_path / "s")


def test_tar_members_read_past_a_damaged_header_and_say_where(shard_dir):
    path = shard_dir / read_manifest(shard_dir).shards[0].name
    with tarfile.open(path) as tar:
        expected = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
        offsets = [m.offset for m in tar.getmembers()]
    data = path.read_bytes()
    assert list(tar_members(data)) == expected
    damaged = bytearray(data)
    damaged[offsets[6] + 20 : offsets[6] + 28] = bytes(b ^ 0xFF for b in damaged[offsets[6] + 20 : offsets[6] + 28])
    read = list(tar_members(bytes(damaged)))
    assert read == expected[:6] + [TarDamage(offsets[6], offsets[7], read[6].reason)] + expected[7:]
    assert "checksum" in read[6].reason
    # Cut inside the data of the last member: its header parsed, its data did not; nothing follows.
    cut = data[: offsets[-1] + 600]
    assert list(tar_members(cut))[:-1] == expected[:-1]
    assert list(tar_members(cut))[-1].offset == offsets[-1] and list(tar_members(cut))[-1].resumed_at is None


def test_check_shards_cheap_and_deep(shard_dir):
    names = [shard.name for shard in read_manifest(shard_dir).shards]
    assert check_shards(shard_dir) == []
    data = bytearray((shard_dir / names[2]).read_bytes())
    data[700] ^= 1
    (shard_dir / names[2]).write_bytes(bytes(data))
    (shard_dir / names[3]).write_bytes(b"")
    (shard_dir / names[5]).unlink()
    (shard_dir / "more.tar").write_bytes(b"")
    cheap = [(p.name, p.kind) for p in check_shards(shard_dir, deep=False)]
    assert cheap == [(names[3], "size"), (names[5], "missing"), ("more.tar", "unlisted")]
    deep = [(p.name, p.kind) for p in check_shards(shard_dir)]
    assert deep == [
        (names[2], "checksum"),
        (names[3], "size"),
        (names[3], "checksum"),
        (names[3], "count"),
        (names[5], "missing"),
        ("more.tar", "unlisted"),
    ]
