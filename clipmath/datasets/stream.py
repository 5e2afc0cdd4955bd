"""Stream batches from a shard directory: seeded shuffles, split by rank and worker, resampling.

Each DataLoader worker runs one webdataset pipeline::

    shard list (this rank's shards, shuffled with (seed, epoch), dealt to workers;
                or, resampled, drawn with replacement)
      -> tar members -> samples (corrupt or truncated shards skipped and counted)
      -> decode the requested fields (corrupt samples skipped and counted)
      -> [resampled: the worker's quota of samples]
      -> sample shuffle (buffer, rng seeded from (seed, epoch, rank, worker))
      -> batches of B, then one "tail" item with the worker's last < B samples

and the main process pools the tails into further batches, so no sample is lost at worker
boundaries. Every random choice is drawn from a generator seeded by ``(seed, epoch, rank,
worker)``, never from global state, so an epoch's batches are the same on every call for fixed
``(seed, epoch, num_workers, rank, world_size)`` and differ between epochs.

**How samples are split.** Non-resampled, shard ``i`` (manifest order) belongs to rank
``i mod world_size`` in every epoch, so a rank's sample count ``N_r`` is fixed and known from
the manifest; only its order changes with the epoch. Within a rank the epoch's shuffled shards
are dealt to workers in turn (``num_workers`` above a rank's shard count leaves workers idle,
with a warning). Uneven splits: with ``drop_last=True`` every rank yields exactly
``min_r floor(N_r / B)`` batches of ``B`` (equal counts keep distributed ranks in step; a rank
with more samples drops its surplus); with ``drop_last=False`` rank ``r`` yields
``ceil(N_r / B)`` batches, the last one short, and the ranks together deliver every sample of
the epoch exactly once. Resampled, every worker draws shards with replacement from all shards
until it has its share of ``samples_per_epoch`` (split as evenly as integers allow over ranks,
then workers).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import tar_file_iterator

from clipmath.datasets.checks import check_int
from clipmath.datasets.fields import FieldInfo, decode_field
from clipmath.datasets.shards import read_manifest

logger = logging.getLogger(__name__)

# Entries a worker adds to what it sends to the main process (never seen by users).
_SKIPPED = "__skipped__"
_TAIL = "__tail__"
# Purposes of the seeded generators, so that they draw independent streams.
_SHARD_ORDER, _SAMPLE_ORDER, _RESAMPLE = 0, 1, 2


def _rng(*parts: int) -> random.Random:
    """A generator seeded from the tuple ``parts`` (NumPy's SeedSequence hashes it)."""
    return random.Random(int(np.random.SeedSequence(list(parts)).generate_state(2, np.uint64)[0]))


@dataclass(frozen=True)
class _Shard:
    name: str
    path: str
    count: int
    bytes: int


@dataclass(frozen=True)
class _Plan:
    """Everything a worker needs to produce its part of one epoch (picklable)."""

    shards: tuple[_Shard, ...]
    fields: tuple[tuple[str, FieldInfo], ...]  # the requested fields
    members: frozenset[str]  # "{field}.{ext}" of every field in the manifest
    batch_size: int
    seed: int
    epoch: int
    rank: int
    world_size: int
    shuffle_buffer: int
    rank_samples: int | None  # resampled: this rank's share of samples_per_epoch; else None


def _worker_shards(plan: _Plan, worker: int, num_workers: int, failed: set[str]) -> Iterator[_Shard]:
    """The shards this worker reads, in order: dealt from the rank's shuffled list, or resampled."""
    if plan.rank_samples is None:
        mine = list(plan.shards[plan.rank :: plan.world_size])
        _rng(plan.seed, plan.epoch, plan.rank, _SHARD_ORDER).shuffle(mine)
        yield from mine[worker::num_workers]
        return
    rng = _rng(plan.seed, plan.epoch, plan.rank, worker, _RESAMPLE)
    while True:
        # A shard that failed once is not drawn again, so all-corrupt data ends the epoch
        # instead of looping forever.
        pool = [shard for shard in plan.shards if shard.name not in failed]
        if not pool:
            logger.error("every shard failed to read; worker %d of rank %d stops early", worker, plan.rank)
            return
        yield rng.choice(pool)


def _read_shard(shard: _Shard, members: frozenset[str], skipped: Counter, failed: set[str]) -> Iterator[dict]:
    """The samples of one shard as raw member bytes, ``{"__key__", "__shard__", "u.npy": ...}``.

    A tar error, a file size other than the manifest's, or fewer samples than the manifest
    counts marks the shard damaged: the samples read before the damage are kept, the one in
    progress only if it holds every member of the manifest's ``members`` (it may have been cut),
    and the shortfall against the manifest count is added to ``skipped``.
    """
    delivered, sample, error, size = 0, None, None, -1
    try:
        size = os.path.getsize(shard.path)
        with open(shard.path, "rb") as handle:
            for member in tar_file_iterator(handle):
                key, _, suffix = member["fname"].partition(".")
                if sample is not None and key != sample["__key__"]:
                    yield sample
                    delivered += 1
                    sample = None
                if sample is None:
                    sample = {"__key__": key, "__shard__": shard.name}
                sample[suffix] = member["data"]
    except (tarfile.TarError, OSError) as err:
        error = err
    found = delivered + (sample is not None)
    intact = error is None and size == shard.bytes and found == shard.count
    if sample is not None and (intact or members <= sample.keys()):
        yield sample
        delivered += 1
    if intact:
        return
    lost = shard.count - delivered
    skipped[shard.name] += max(lost, 0)
    failed.add(shard.name)
    if error is None:
        error = f"{size} bytes, {found} samples; manifest says {shard.bytes}, {shard.count}"
    logger.warning(
        "shard %s is damaged (%s): skipped %d samples after the first %d", shard.name, error, lost, delivered
    )


def _read_shards(
    shards: Iterable[_Shard], members: frozenset[str], skipped: Counter, failed: set[str]
) -> Iterator[dict]:
    for shard in shards:
        yield from _read_shard(shard, members, skipped, failed)


def _decode(
    samples: Iterable[dict], fields: tuple[tuple[str, FieldInfo], ...], skipped: Counter
) -> Iterator[dict]:
    """Decode the requested fields; skip (and count) samples whose bytes do not decode."""
    for raw in samples:
        key, shard = raw["__key__"], raw["__shard__"]
        for name, info in fields:
            if f"{name}.{info.ext}" not in raw:
                present = sorted(member for member in raw if not member.startswith("__"))
                raise ValueError(
                    f"sample {key!r} in shard {shard!r}: required field {name!r} (member "
                    f"{key}.{name}.{info.ext}) is missing; the sample holds {present}"
                )
        try:
            sample = {name: decode_field(info.ext, raw[f"{name}.{info.ext}"]) for name, info in fields}
            for name, info in fields:
                if info.ext in ("npy", "png", "jpg") and tuple(sample[name].shape) != info.shape:
                    shape = tuple(sample[name].shape)
                    raise ValueError(f"field {name!r} has shape {shape}, manifest says {info.shape}")
        except Exception as err:  # any decoder failure means corrupt bytes: skip, never stop the epoch
            skipped[shard] += 1
            logger.warning("sample %r in shard %s is corrupt (%s); skipped", key, shard, err)
            continue
        sample["key"] = key
        yield sample


def _collate(samples: list[dict], names: Iterable[str]) -> dict:
    """The batch dict: tensors stacked to (B, ...), other values (str, JSON) and keys as lists."""
    batch = {}
    for name in names:
        values = [sample[name] for sample in samples]
        batch[name] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    batch["key"] = [sample["key"] for sample in samples]
    return batch


def _batches(samples: Iterable[dict], plan: _Plan, skipped: Counter) -> Iterator[dict]:
    """Full batches, then one tail item with the left-over samples; each carries the new skip counts."""

    def drain() -> dict[str, int]:
        counts = dict(skipped)
        skipped.clear()
        return counts

    names = [name for name, _ in plan.fields]
    chunk: list[dict] = []
    for sample in samples:
        chunk.append(sample)
        if len(chunk) == plan.batch_size:
            yield {**_collate(chunk, names), _SKIPPED: drain()}
            chunk = []
    yield {_TAIL: chunk, _SKIPPED: drain()}


class _EpochDataset(IterableDataset):
    """One epoch of one rank; each DataLoader worker iterates its own share."""

    def __init__(self, plan: _Plan) -> None:
        super().__init__()
        self.plan = plan

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        plan = self.plan
        skipped: Counter = Counter()
        failed: set[str] = set()
        stages: list[Any] = [
            lambda: _worker_shards(plan, worker, num_workers, failed),
            lambda shards: _read_shards(shards, plan.members, skipped, failed),
            lambda samples: _decode(samples, plan.fields, skipped),
        ]
        if plan.rank_samples is not None:
            quota = plan.rank_samples // num_workers + (worker < plan.rank_samples % num_workers)
            stages.append(wds.slice(quota))
        if plan.shuffle_buffer > 1:
            rng = _rng(plan.seed, plan.epoch, plan.rank, worker, _SAMPLE_ORDER)
            stages.append(wds.shuffle(plan.shuffle_buffer, initial=plan.shuffle_buffer, rng=rng))
        stages.append(lambda samples: _batches(samples, plan, skipped))
        return iter(wds.DataPipeline(*stages))


def _init_worker(worker_id: int) -> None:
    # Workers only decode; one intra-op thread each keeps them from oversubscribing the cores.
    torch.set_num_threads(1)


def _as_is(item: dict) -> dict:
    return item


class ShardStream:
    """Batches of a shard directory, epoch by epoch, reproducible and resumable.

    Batches are dicts ``{"u": Tensor (B, ...), "v": Tensor (B, ...), "key": list[str], ...}``
    holding the requested ``fields`` decoded as in :mod:`clipmath.datasets.fields` (arrays and
    images as float32). The split over ranks and workers and the handling of uneven splits are
    described in the module docstring.

    Args:
        path: shard directory written by :func:`~clipmath.datasets.shards.write_shards`.
        batch_size: B, samples per batch.
        seed: seeds the shard order, the sample shuffle and resampling, together with the epoch.
        shuffle_buffer: samples held by each worker's shuffle buffer (0 or 1: no sample shuffle).
        resampled: draw shards with replacement instead of reading each once per epoch.
        samples_per_epoch: with ``resampled``, the samples of one epoch over all ranks (required);
            must be ``None`` otherwise.
        num_workers: DataLoader worker processes (0: read in this process).
        rank: this process's index in ``[0, world_size)``.
        world_size: number of processes sharing the data.
        drop_last: drop the final short batch (and equalise the batch count over ranks).
        fields: the fields to deliver; each must be in the manifest and in every sample.

    Raises:
        ValueError: for a bad argument, a field the shards lack, or fewer shards than ranks.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        batch_size: int,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        resampled: bool = False,
        samples_per_epoch: int | None = None,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        fields: tuple[str, ...] = ("u", "v"),
    ) -> None:
        check_int("batch_size", batch_size, 1)
        check_int("seed", seed, 0)
        check_int("shuffle_buffer", shuffle_buffer, 0)
        check_int("num_workers", num_workers, 0)
        check_int("world_size", world_size, 1)
        check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"rank={rank}: expected a rank in [0, world_size={world_size})")
        if resampled:
            check_int("samples_per_epoch", samples_per_epoch, 1)
        elif samples_per_epoch is not None:
            raise ValueError(f"samples_per_epoch={samples_per_epoch!r}: expected None unless resampled=True")
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        fields = tuple(fields) if isinstance(fields, (list, tuple)) else fields
        if not isinstance(fields, tuple) or not fields or len(set(fields)) != len(fields):
            raise ValueError(f"fields={fields!r}: expected a non-empty tuple of distinct field names")
        for name in fields:
            if name not in self.manifest.fields:
                raise ValueError(
                    f"fields: {name!r} is not in the shards; they hold {sorted(self.manifest.fields)}"
                )
        if "key" in fields:
            raise ValueError("fields: 'key' is reserved for the batch's list of sample keys")
        shards = tuple(
            _Shard(s.name, str(self.path / s.name), s.count, s.bytes) for s in self.manifest.shards
        )
        if resampled:
            share, extra = divmod(samples_per_epoch, world_size)
            per_rank = [share + (r < extra) for r in range(world_size)]
        else:
            if len(shards) < world_size:
                raise ValueError(
                    f"world_size={world_size}: more ranks than the {len(shards)} shards in {self.path}"
                )
            per_rank = [sum(s.count for s in shards[r::world_size]) for r in range(world_size)]
            if len(shards[rank::world_size]) < num_workers:
                logger.warning(
                    "num_workers=%d exceeds the %d shards of rank %d; some workers stay idle",
                    num_workers, len(shards[rank::world_size]), rank,
                )
        self._per_rank = per_rank
        self._plan_args = dict(
            shards=shards,
            fields=tuple((name, self.manifest.fields[name]) for name in fields),
            members=frozenset(f"{name}.{info.ext}" for name, info in self.manifest.fields.items()),
            batch_size=batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            shuffle_buffer=shuffle_buffer,
            rank_samples=per_rank[rank] if resampled else None,
        )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.rank = rank
        self.drop_last = drop_last
        self._skipped: Counter = Counter()

    @property
    def batches_per_epoch(self) -> int:
        """Batches :meth:`epoch` yields (from the manifest, or from ``samples_per_epoch``).

        Exact unless damaged data removes samples: ``min_r floor(N_r / B)`` with ``drop_last``,
        else ``ceil(N_rank / B)``, where ``N_r`` is rank r's sample count.
        """
        if self.drop_last:
            return min(n // self.batch_size for n in self._per_rank)
        return math.ceil(self._per_rank[self.rank] / self.batch_size)

    @property
    def skipped(self) -> dict[str, int]:
        """Shard name -> samples skipped so far as corrupt or truncated (summed over workers)."""
        return dict(self._skipped)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        """The batches of one epoch, in an order fixed by (seed, epoch, num_workers, rank, world_size).

        Args:
            epoch: epoch index (>= 0); it reseeds every shuffle.
            start_batch: batches to skip, for resuming; the batches after them equal the tail
                of the full epoch (they are read and discarded, so resuming late costs reading).

        Raises:
            ValueError: for a negative epoch or a ``start_batch`` outside [0, batches_per_epoch];
                while iterating, for a sample that lacks a requested field (naming key and shard).
        """
        check_int("epoch", epoch, 0)
        check_int("start_batch", start_batch, 0)
        if start_batch > self.batches_per_epoch:
            raise ValueError(
                f"start_batch={start_batch}: expected at most batches_per_epoch={self.batches_per_epoch}"
            )
        return self._iterate(epoch, start_batch)

    def _iterate(self, epoch: int, start_batch: int) -> Iterator[dict]:
        loader = DataLoader(
            _EpochDataset(_Plan(epoch=epoch, **self._plan_args)),
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_as_is,
            worker_init_fn=_init_worker if self.num_workers else None,
        )
        tails: list[dict] = []
        batches = itertools.chain(self._worker_batches(loader, tails), self._tail_batches(tails))
        for index, batch in enumerate(itertools.islice(batches, self.batches_per_epoch)):
            if index >= start_batch:
                yield batch

    def _worker_batches(self, loader: DataLoader, tails: list[dict]) -> Iterator[dict]:
        iterator = iter(loader)
        try:
            for item in iterator:
                self._skipped.update(item.pop(_SKIPPED))
                if _TAIL in item:
                    tails.extend(item[_TAIL])
                else:
                    yield item
        finally:
            # Stop the workers now, on an early stop or an error too: a worker error's traceback
            # holds the iterator in a reference cycle, and when the garbage collector finalises
            # that cycle the worker queues may go first, so each worker waits out a 5 s timeout.
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    def _tail_batches(self, tails: list[dict]) -> Iterator[dict]:
        names = [name for name, _ in self._plan_args["fields"]]
        for start in range(0, len(tails), self.batch_size):
            chunk = tails[start : start + self.batch_size]
            if len(chunk) == self.batch_size or not self.drop_last:
                yield _collate(chunk, names)
