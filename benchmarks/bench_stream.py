"""Streaming throughput: Section 6.1 GP pairs read from webdataset shards vs sliced from memory.

Writes 200,000 GP samples (n_u = 12, n_v = 5, float32) into 8 shards, then times one full
epoch of batches of 512 from :class:`ShardStream` (seeded shard and sample shuffles, decode,
collation; with 2 DataLoader workers, and in-process) beside the anchor: the same samples held
as in-memory tensors, batched by a fresh random permutation per epoch. Each epoch is timed
twice, alternating ours and the anchor, and the median kept. The stream's goal is to outrun
the ~175k pairs/s that the gaussian-process trainer consumes (see ``bench_train_data.py``).

A last row prices the per-sample transform stage: the same epoch with 2 workers and a light
transform (noise on ``u`` from the sample's seeded generator), against in-memory batches given
the same noise batch-wise. It runs Python per sample, so it is far slower than the block path
that streams without a transform.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np
import torch

from clipmath.datasets import GaussianProcessSource, ShardStream, gaussian_samples, write_shards

from common import print_table

N_SAMPLES = 200_000
N_SHARDS = 8
BATCH = 512
REPEAT = 2


def _epoch_seconds(batches) -> tuple[float, int]:
    start = time.perf_counter()
    count = sum(len(batch["u"]) for batch in batches)
    return time.perf_counter() - start, count


def _in_memory(u: torch.Tensor, v: torch.Tensor, epoch: int, noise: bool = False):
    generator = torch.Generator().manual_seed(epoch)
    order = torch.randperm(len(u), generator=generator)
    for start in range(0, len(u) - BATCH + 1, BATCH):
        index = order[start : start + BATCH]
        u_batch = u[index]
        if noise:
            u_batch = u_batch + 0.01 * torch.randn(u_batch.shape, generator=generator)
        yield {"u": u_batch, "v": v[index]}


def noisy_u(sample: dict, generator: torch.Generator) -> dict:
    """A light transform: ``u`` (n_u,) plus a little Gaussian noise, ``v`` as it is."""
    return {"u": sample["u"] + 0.01 * torch.randn(sample["u"].shape, generator=generator), "v": sample["v"]}


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
        for num_workers, transform in ((2, None), (0, None), (2, noisy_u)):
            stream = ShardStream(shard_dir, batch_size=BATCH, num_workers=num_workers, transform=transform)
            ours, anchor = [], []
            for epoch in range(REPEAT):
                seconds, count = _epoch_seconds(stream.epoch(epoch))
                ours.append(seconds)
                anchor.append(_epoch_seconds(_in_memory(u, v, epoch, noise=transform is not None))[0])
            t_ours, t_anchor = statistics.median(ours), statistics.median(anchor)
            label = f"{num_workers} workers" + (", noise transform" if transform else "")
            print(
                f"{label}: {count / t_ours:,.0f} samples/s from shards, {count / t_anchor:,.0f} samples/s from memory"
            )
            rows.append(
                (
                    f"epoch of {N_SAMPLES // 1000}k GP pairs, B={BATCH}, {label}",
                    t_ours,
                    t_anchor,
                    "per-sample Python: informative" if transform else "stream well above 175k pairs/s",
                )
            )
    print_table("ShardStream vs in-memory batches (one epoch)", rows)


if __name__ == "__main__":
    main()
