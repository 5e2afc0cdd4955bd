"""Atomic writes: a failed write leaves the previous file and no temporary file behind."""

import pytest

from clipmath._atomic import atomic_open


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "data.txt"
    with atomic_open(target, mode="w") as handle:
        handle.write("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, mode="w") as handle:
            handle.write("half of the new")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.txt"]


def test_bad_mode_is_named(tmp_path):
    with pytest.raises(ValueError, match="mode='a'"):
        with atomic_open(tmp_path / "x", mode="a"):
            pass
