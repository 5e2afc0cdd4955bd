"""Is training data-bound on ``gaussian-process``? Shards against an in-memory tensor.

The quick preset's central setting (Section 6.1: n_u = 12, n_v = 5, n_e = 5, N = 10,000, B = 512,
two-sided conditional loss) trained as the preset trains it (its optimiser, schedule and 40
epochs) from webdataset shards (1 and 2 DataLoader workers, and in-process reading) and from
the same pairs in memory (:class:`TensorStream`, the anchor). Printed: the fraction of each step
spent waiting for the next batch, steps per second, the ratio of wall times shards / memory, and the
reading rate of the shard stream alone against
the rate at which the trainer consumes pairs. Goal: waiting < 10 % of a step.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from clipmath.datasets import GaussianProcessSource, ShardStream, gaussian_samples, write_shards
from clipmath.experiments.gaussian_process import GaussianProcessConfig
from clipmath.experiments.toolkit import LossConfig, linear_model
from clipmath.multimodal.trainer import TensorStream, TrainResult, train

from common import compare, print_table

N, B, N_E, SHARDS = 10_000, 512, 5, 4
CONFIG = GaussianProcessConfig().train
EPOCHS = CONFIG.epochs


def _train(stream) -> TrainResult:
    model = linear_model(12, 5, N_E, "inner", seed=0)
    return train(model, LossConfig("conditional", "inner", {"direction": "two_sided"}).build(), stream, CONFIG)


def _read_rate(stream: ShardStream) -> float:
    """Pairs per second the stream delivers with nothing else running (one epoch)."""
    seconds, _ = compare(lambda: sum(1 for _ in stream.epoch(0)), lambda: None, repeat=3, warmup=1)
    return stream.batches_per_epoch * B / seconds


def main() -> None:
    torch.set_num_threads(1)
    src = GaussianProcessSource()
    u, v = src.sample(N, 0)
    memory = TensorStream(torch.from_numpy(u.astype(np.float32)), torch.from_numpy(v.astype(np.float32)), batch_size=B)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gp"
        write_shards(gaussian_samples(src, N, 0), folder, max_count=N // SHARDS)
        streams = {w: ShardStream(folder, batch_size=B, num_workers=w) for w in (1, 2, 0)}
        rows, rates = [], []
        for workers, stream in streams.items():
            results: dict[str, TrainResult] = {}
            t_shards, t_memory = compare(
                lambda results=results, stream=stream: results.__setitem__("shards", _train(stream)),
                lambda results=results: results.__setitem__("memory", _train(memory)),
                repeat=3,
                warmup=1,
            )
            steps = EPOCHS * memory.batches_per_epoch
            case = f"{EPOCHS} epochs, shards with {workers} workers vs memory"
            rows.append((case, t_shards, t_memory, "ratio near 1"))
            rates.append(
                (
                    workers,
                    results["shards"].data_fraction,
                    results["memory"].data_fraction,
                    steps / t_shards,
                    steps / t_memory,
                    _read_rate(stream),
                )
            )
        consumed = EPOCHS * memory.batches_per_epoch * B / t_memory
    print_table(f"gaussian-process training step, N={N}, B={B}, n_e={N_E} (wall time)", rows)
    print("\n| stream | waiting for data | steps/s | pairs/s read (stream alone) | pairs/s consumed (memory) | goal |")
    print("|---|---|---|---|---|---|")
    for workers, wait_shards, _wait_memory, sps_shards, _sps_memory, read in rates:
        print(
            f"| shards, {workers} workers | {wait_shards:.1%} | {sps_shards:.1f} | {read:.0f} | {consumed:.0f} "
            "| waiting < 10 % |"
        )
    print(f"| memory (TensorStream) | {rates[0][2]:.1%} | {rates[0][4]:.1f} | | {consumed:.0f} | waiting < 10 % |")


if __name__ == "__main__":
    main()
