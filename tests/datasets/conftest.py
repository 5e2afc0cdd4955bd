"""A tiny shard directory for the datasets tests."""

import pytest
from shard_data import MAX_COUNT, make_samples

from clipmath.datasets import write_shards


@pytest.fixture
def samples() -> list[dict]:
    return make_samples()


@pytest.fixture
def shard_dir(tmp_path, samples):
    """40 samples in 8 shards of 5, written by write_shards."""
    path = tmp_path / "shards"
    write_shards(samples, path, max_count=MAX_COUNT, source={"name": "test"})
    return path
