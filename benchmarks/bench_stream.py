"""Streaming throughput: Section 6.1 GP pairs read from webdataset shards vs sliced from memory.

Writes 200,000 GP samples (n_u = 12, n_v = 5, float32) into 8 shards, then times one full
epoch of batches of 512 from :class:`ShardStream` (seeded shard and sample shuffles, decode,
collation; with 2 DataLoader workers, and in-process) beside the anchor: the same samples held
as in-memory tensors, batched by a fresh random permutation per epoch. Each epoch is timed
twice, alternating ours and the anchor, and the median kept. The stream's goal is to outrun
the ~175k pairs/s that the gaussian-process trainer consumes (see ``bench_train_data.py``).
"""

from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np
import torch
from common import print_table

from clipmath.datasets import GaussianProcessSource, ShardStream, gaussian_samples, write_shards

N_SAMPLES = 200_000
N_SHARDS = 8
BATCH = 512
REPEAT = 2


def _epoch_seconds(batches) -> tuple[float, int]:
    start = time.perf_counter()
    count = sum(len(batch["u"]) for batch in batches)
    return time.perf_counter() - start, count


def _in_memory(u: torch.Tensor, v: torch.Tensor, epoch: int):
    order = torch.randperm(len(u), generator=torch.Generator().manual_seed(epoch))
    for start in range(0, len(u) - BATCH + 1, BATCH):
        index = order[start : start + BATCH]
        yield {"u": u[index], "v": v[index]}


def main() -> None:
    # Gathering 512 short rows is too small to split over threads; on a loaded 2-core machine
    # two spinning intra-op threads made the anchor about 60x slower.
    torch.set_num_threads(1)
    source = GaussianProcessSource()
    u, v = (torch.from_numpy(a.astype(np.float32)) for a in source.sample(N_SAMPLES, seed=0))
    rows = []
    with tempfile.TemporaryDirectory() as shard_dir:
        start = time.perf_counter()
        write_shards(gaussian_samples(source, N_SAMPLES, seed=0), shard_dir, max_count=N_SAMPLES // N_SHARDS)
        print(f"wrote {N_SAMPLES} samples in {N_SHARDS} shards: {time.perf_counter() - start:.1f} s")
        for num_workers in (2, 0):
            stream = ShardStream(shard_dir, batch_size=BATCH, num_workers=num_workers)
            ours, anchor = [], []
            for epoch in range(REPEAT):
                seconds, count = _epoch_seconds(stream.epoch(epoch))
                ours.append(seconds)
                anchor.append(_epoch_seconds(_in_memory(u, v, epoch))[0])
            t_ours, t_anchor = statistics.median(ours), statistics.median(anchor)
            print(
                f"{num_workers} workers: {count / t_ours:,.0f} samples/s from shards, "
                f"{count / t_anchor:,.0f} samples/s from memory"
            )
            rows.append((
                f"epoch of {N_SAMPLES // 1000}k GP pairs, B={BATCH}, {num_workers} workers",
                t_ours, t_anchor, "stream well above 175k pairs/s",
            ))
    print_table("ShardStream vs in-memory batches (one epoch)", rows)


if __name__ == "__main__":
    main()
