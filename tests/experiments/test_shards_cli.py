"""``clipmath shards write|inspect`` on tiny data."""

import dataclasses

import pytest

from clipmath.datasets import ShardStream, read_manifest
from clipmath.experiments.cli import main


def test_write_then_inspect_a_tiny_gp_shard_set(tmp_path, capsys):
    out = tmp_path / "gp"
    argv = [
        "shards",
        "write",
        "gaussian-process",
        "--out",
        str(out),
        "--n",
        "50",
        "--max-count",
        "20",
        "--seed",
        "3",
        "--set",
        "n_modes=40",
        "--set",
        "sigma=0.1",
    ]
    assert main(argv) == 0
    manifest = read_manifest(out)
    assert [shard.count for shard in manifest.shards] == [20, 20, 10]
    assert manifest.source == {"name": "gaussian-process", "params": {"n_modes": 40, "sigma": 0.1}, "n": 50, "seed": 3}
    assert manifest.fields["u"].shape == (12,) and manifest.fields["v"].shape == (5,)
    batch = next(iter(ShardStream(out, batch_size=50, shuffle_buffer=0).epoch(0)))
    assert batch["u"].shape == (50, 12)
    capsys.readouterr()

    assert main(["shards", "inspect", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "samples: 50 in 3 shards" in printed
    assert "u: .npy, shape (12,), float32" in printed
    assert "checksums: 3/3 ok" in printed
    assert '"sigma": 0.1' in printed


def test_inspect_flags_a_modified_shard(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["shards", "write", "gaussian", "--out", str(out), "--n", "10", "--max-count", "5"]) == 0
    shard = out / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 1
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["shards", "inspect", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "checksums: 1/2 ok" in printed and "shard-000001.tar: checksum: sha256" in printed
    assert "disagreements with the manifest: 1\n" in printed


def test_inspect_reports_every_disagreement_with_the_manifest(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["shards", "write", "gaussian", "--out", str(out), "--n", "30", "--max-count", "5"]) == 0
    manifest = read_manifest(out)
    shards = list(manifest.shards)
    (out / "shard-000001.tar").unlink()  # listed, missing
    size = out / "shard-000002.tar"
    size.write_bytes(size.read_bytes() + bytes(512))  # size (and so checksum) differ
    shards[3] = dataclasses.replace(shards[3], count=4)  # the manifest counts 4, the shard holds 5
    (out / "extra.tar").write_bytes((out / "shard-000004.tar").read_bytes())  # on disk, not listed
    shards = shards[:5]  # shard-000005.tar: not listed any more
    (out / "manifest.json").write_text(dataclasses.replace(manifest, shards=tuple(shards)).to_json())
    (out / ".shard-000009.tar.tmp").write_bytes(b"a writer's temporary file is no shard")
    capsys.readouterr()
    assert main(["shards", "inspect", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "disagreements with the manifest: 6\n" in printed
    for line in (
        "shard-000001.tar: missing: not on disk; the manifest lists 5 samples",
        f"shard-000002.tar: size: {size.stat().st_size} bytes; the manifest says {size.stat().st_size - 512}",
        "shard-000002.tar: checksum: sha256",
        "shard-000003.tar: count: 5 samples found; the manifest says 4",
        "extra.tar: unlisted: a shard file the manifest does not list",
        "shard-000005.tar: unlisted:",
    ):
        assert "  " + line in printed
    assert ".tmp" not in printed and "checksums: 3/5 ok" in printed


def test_inspect_names_where_a_damaged_header_stops_parsing(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["shards", "write", "gaussian", "--out", str(out), "--n", "10", "--max-count", "10"]) == 0
    shard = out / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    at = 3 * 2048  # sample 3's first header (two members of one header and one data block each)
    data[at : at + 8] = bytes(b ^ 0xFF for b in data[at : at + 8])
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["shards", "inspect", str(out)]) == 1
    printed = capsys.readouterr().out
    assert (
        "shard-000000.tar: count: 10 samples found, 1 of them lacking members; the manifest says 10; "
        f"unreadable from byte {at} to {at + 1024}"
    ) in printed


def test_write_a_given_covariance(tmp_path):
    out = tmp_path / "c"
    assert (
        main(
            [
                "shards",
                "write",
                "gaussian",
                "--out",
                str(out),
                "--n",
                "4",
                "--set",
                "cov=[[2, 1], [1, 2]]",
                "--set",
                "n_u=1",
            ]
        )
        == 0
    )
    assert read_manifest(out).source["params"] == {"cov": [[2, 1], [1, 2]], "n_u": 1}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "foo=1"], "unknown parameter 'foo'"),
        (["--set", "a.b=1"], "source parameters are flat"),
        (["--n", "0"], "n=0"),
    ],
)
def test_bad_write_arguments_are_reported(tmp_path, capsys, argv, message):
    assert main(["shards", "write", "gaussian", "--out", str(tmp_path / "x"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_inspect_of_a_directory_without_manifest(tmp_path, capsys):
    assert main(["shards", "inspect", str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["write", "inspect"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["shards", command, "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "usage: clipmath shards " + command in printed
    if command == "write":
        assert "gaussian-process: tau, alpha, n_modes, n_u, n_v, sigma" in printed
