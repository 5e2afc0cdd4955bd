"""Sample data shared by the datasets tests (imported by conftest.py and the test modules)."""

import numpy as np

N_SAMPLES = 40
MAX_COUNT = 5  # the shard_dir fixture writes 8 shards of 5


def make_samples(n: int = N_SAMPLES, seed: int = 0) -> list[dict]:
    """Samples with array modalities plus int, str and JSON extras; keys sort in write order."""
    rng = np.random.default_rng(seed)
    return [
        {
            "__key__": f"sample-{i:04d}",
            "u": rng.standard_normal((3, 2)).astype(np.float32),
            "v": rng.standard_normal(4).astype(np.float32),
            "label": int(i % 7),
            "caption": f"caption {i}",
            "meta": {"index": i},
        }
        for i in range(n)
    ]


def shard_keys(index: int) -> list[str]:
    """Keys of shard ``index`` of the shard_dir fixture, in write order."""
    return [f"sample-{i:04d}" for i in range(index * MAX_COUNT, (index + 1) * MAX_COUNT)]
