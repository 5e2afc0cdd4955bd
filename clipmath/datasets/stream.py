"""Stream batches from a shard directory: seeded shuffles, split by rank and worker, resampling.

Each DataLoader worker runs one pipeline of *blocks* ``{field: array (n, ...), "key": array (n,)}``::

    shard list (this rank's shards, shuffled with (seed, epoch), dealt to workers;
                or, resampled, drawn with replacement)
      -> one block per shard of fixed layout, read in one piece; otherwise tar members ->
         samples (corrupt or truncated shards skipped and counted) -> small blocks
      -> decode the requested fields (corrupt samples skipped and counted)
      -> [resampled: the worker's quota of samples]
      -> sample shuffle (a buffer of shuffle_buffer samples; each batch is B distinct random
         positions of it, refilled in place; rng seeded from (seed, epoch, rank, worker))
      -> batches of B, then one "tail" item with the worker's last < B samples

and the main process pools the tails into further batches, so no sample is lost at worker
boundaries. A stream keeps its workers between epochs; they read the next epoch ahead, and
are restarted when another epoch is asked for. Every random choice is drawn from a generator seeded by ``(seed, epoch, rank,
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

import collections
import itertools
import logging
import math
import os
import random
import tarfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import tar_file_iterator

from clipmath.datasets.checks import check_int
from clipmath.datasets.fields import FieldInfo, decode_field, read_npy_header
from clipmath.datasets.shards import read_manifest

logger = logging.getLogger(__name__)

# Entries a worker adds to what it sends to the main process (never seen by users).
_SKIPPED = "__skipped__"
_TAIL = "__tail__"
_GROUP = "__group__"
# A worker sends its full batches in groups of about this many bytes (at least one batch): each
# item through the DataLoader's queue costs a fixed ~0.5 ms, as much as reading 200 small pairs.
_GROUP_BYTES = 1 << 20
_WORKER = "__worker__"
# Purposes of the seeded generators, so that they draw independent streams.
_SHARD_ORDER, _SAMPLE_ORDER, _RESAMPLE = 0, 1, 2
# Tar blocks: a ustar header is one, member data is padded to whole ones.
_BLOCK = 512
# Header bytes (ustar offsets) that every record of a fixed-layout shard repeats exactly: all
# but the name, the size digits and the checksum digits.
_FIXED_HEADER_BYTES = (slice(100, 124), slice(135, 148), slice(154, _BLOCK))
# Samples per block from the generic (member by member) reader.
_GENERIC_BLOCK = 256


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


class _NotFixed(Exception):
    """Why a shard is not of fixed layout; the generic reader then reads it member by member."""


@dataclass(frozen=True)
class _Member:
    offset: int  # of its tar header within a sample's record
    suffix: str  # ".{field}.{ext}"
    size: int  # data bytes in the first sample


def _octal(columns: np.ndarray, what: str) -> np.ndarray:
    """The fixed-width octal numbers in the rows of ``columns`` (count, k) uint8, as int64 (count,)."""
    digits = columns.astype(np.int64) - ord("0")
    if ((digits < 0) | (digits > 7)).any():
        raise _NotFixed(f"a {what} field is not {columns.shape[1]} octal digits")
    return digits @ (8 ** np.arange(columns.shape[1] - 1, -1, -1, dtype=np.int64))


def _blocks_of(size: np.ndarray | int) -> np.ndarray | int:
    return -(-size // _BLOCK)


def _first_record(raw: np.ndarray) -> tuple[list[_Member], int]:
    """The members of the first sample, parsed from their ustar headers, and the record stride.

    A ustar header is one 512-byte block: name at bytes 0:100 (NUL-padded), size at 124:136
    (11 octal digits and a NUL, as Python's tarfile writes it), checksum at 148:156 (6 octal
    digits, a NUL, a space: the sum of the header bytes with this field read as spaces), type
    flag at 156 (``0``: a regular file), magic ``ustar`` at 257, name prefix at 345:500; the data
    follows, padded to whole blocks. The first sample ends where a member with another key, or
    the all-zero end-of-archive block, begins.

    Args:
        raw: (file bytes,) uint8, the shard.
    """
    members: list[_Member] = []
    offset, key = 0, None
    while offset + _BLOCK <= len(raw):
        header = raw[offset : offset + _BLOCK].tobytes()
        if header.count(0) == _BLOCK:
            break
        if header[257:262] != b"ustar" or header[156:157] != b"0" or header[345:500].count(0) != 155:
            raise _NotFixed(f"the member at byte {offset} is not a plain ustar file (a pax or long-name header?)")
        this_key, dot, suffix = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape").partition(".")
        if key is not None and this_key != key:
            break
        if any(member.suffix == dot + suffix for member in members):
            raise _NotFixed(f"member {dot + suffix} repeats within the first sample")
        key = this_key
        try:
            size, checksum = int(header[124:135], 8), int(header[148:154], 8)
        except ValueError:
            raise _NotFixed(f"the member at byte {offset} has a malformed size or checksum") from None
        if header[135] or header[154] or checksum != sum(header) - sum(header[148:156]) + 8 * ord(" "):
            raise _NotFixed(f"the member at byte {offset} has a malformed size or checksum")
        members.append(_Member(offset, dot + suffix, size))
        offset += _BLOCK * (1 + _blocks_of(size))
    if not members:
        raise _NotFixed("no member")
    return members, offset


def _check_records(view: np.ndarray, members: list[_Member]) -> tuple[list[np.ndarray], list[str]]:
    """Check that every record (row of ``view``) repeats the first one's tar layout.

    Each member header must equal the first record's outside the name, size and checksum
    digits; its size must take as many blocks; its checksum must hold (given the rest is equal,
    it differs from the first one's by the differences of the name and size byte sums); its
    name must be ``{key}{suffix}`` with the first record's suffix and one key per record, free
    of ``.``, ``/`` and NUL, and distinct from the previous record's. Then the generic reader
    would group the members into the same samples.

    Args:
        view: (count, stride) uint8, one sample's record per row.
        members: the first record's members.

    Returns:
        (each member's data sizes (count,) int64, the keys).
    """
    sizes, keys = [], None
    for member in members:
        header = view[:, member.offset : member.offset + _BLOCK]
        first = header[0]
        if any((header[:, span] != first[span]).any() for span in _FIXED_HEADER_BYTES):
            raise _NotFixed(f"member {member.suffix}: a header differs from the first sample's")
        size = _octal(header[:, 124:135], "size")
        if (_blocks_of(size) != _blocks_of(member.size)).any():
            raise _NotFixed(f"member {member.suffix}: the data block count differs between samples")
        # uint16 holds 111 byte values (at most 28,305) and sums about twice as fast as int64.
        varying = header[:, :100].sum(1, dtype=np.uint16) + header[:, 124:135].sum(1, dtype=np.uint16)
        varying = varying.astype(np.int64)
        if (_octal(header[:, 148:154], "checksum") - varying != int(first[148:154].tobytes(), 8) - varying[0]).any():
            raise _NotFixed(f"member {member.suffix}: a header checksum does not match")
        names = np.ascontiguousarray(header[:, :100]).view("S100").ravel()  # trailing NULs dropped
        suffix = member.suffix.encode("utf-8", "surrogateescape")
        no_nul = np.count_nonzero(header[:, :100], axis=1) == np.strings.str_len(names)
        if not (np.strings.endswith(names, suffix) & no_nul).all():
            raise _NotFixed(f"member {member.suffix}: a name has another suffix or holds a NUL")
        member_keys = np.strings.slice(names, 0, -len(suffix))
        if keys is None:
            keys = member_keys
            separator = (np.strings.find(keys, b".") >= 0) | (np.strings.find(keys, b"/") >= 0)
            if (np.strings.str_len(keys) == 0).any() or separator.any() or (keys[1:] == keys[:-1]).any():
                raise _NotFixed("a key is empty, holds '.' or '/', or repeats the previous sample's")
        elif (member_keys != keys).any():
            raise _NotFixed(f"member {member.suffix}: a key differs from its record's first member")
        sizes.append(size)
    return sizes, [key.decode("utf-8", "surrogateescape") for key in keys.tolist()]


def _npy_column(view: np.ndarray, start: int, size: np.ndarray, info: FieldInfo) -> np.ndarray:
    """Every record's ``.npy`` member at ``start`` decoded at once, as float32 (count, *shape).

    Requires the first record's header (format 1.0, C order, the manifest's shape) in every
    record, and equal sizes, so that the arrays sit at one column range of ``view``.
    """
    try:
        header = read_npy_header(view[0, start : start + int(size[0])].tobytes())
    except ValueError as err:
        raise _NotFixed(f"npy header: {err}") from None
    if header is None:
        raise _NotFixed("npy format version other than 1.0")
    offset, dtype, shape, order = header
    nbytes = math.prod(shape) * dtype.itemsize
    if order != "C" or dtype.hasobject or tuple(shape) != info.shape or nbytes == 0:
        raise _NotFixed(f"npy {dtype} {shape} in {order} order; manifest says {info.shape}")
    if (size != size[0]).any() or size[0] < offset + nbytes:
        raise _NotFixed("npy member sizes differ or are short")
    if (view[:, start : start + offset] != view[0, start : start + offset]).any():
        raise _NotFixed("npy headers differ between samples")
    # The copy owns its memory (a view would pin the whole shard); astype then only converts.
    raw = view[:, start + offset : start + offset + nbytes].copy()
    return raw.view(dtype).reshape(len(view), *shape).astype(np.float32, copy=False)


def _decode_value(name: str, info: FieldInfo, data: bytes) -> Any:
    """One member decoded by :func:`decode_field`; raises if an array's shape is not the manifest's."""
    value = decode_field(info.ext, data)
    if info.ext in ("npy", "png", "jpg") and tuple(value.shape) != info.shape:
        raise ValueError(f"field {name!r} has shape {tuple(value.shape)}, manifest says {info.shape}")
    return value


def _skip_corrupt(skipped: Counter, shard: str, key: str, err: Exception) -> None:
    skipped[shard] += 1
    logger.warning("sample %r in shard %s is corrupt (%s); skipped", key, shard, err)


def _column(values: list) -> np.ndarray:
    """Per-sample values as one array with a leading sample axis: tensors stacked, others as objects."""
    if isinstance(values[0], torch.Tensor):
        return np.stack([value.numpy() for value in values])
    return np.fromiter(values, dtype=object, count=len(values))


def _read_fixed(shard: _Shard, fields: tuple[tuple[str, FieldInfo], ...], skipped: Counter) -> list[dict] | None:
    """A fixed-layout shard as one block (``[]`` if every sample is corrupt), else ``None``.

    A shard whose size is the manifest's is read in one piece; when every sample repeats the
    first one's tar layout (:func:`_check_records`), the shard is a (count, stride) byte array
    and each fixed-shape ``npy`` field one column range of it, decoded for all samples at once.
    Other fields are decoded per sample, a corrupt sample skipped and counted. Anything else
    (damage, pax headers, a missing field) returns ``None`` for the generic reader, which
    handles and counts it.
    """
    try:
        if os.path.getsize(shard.path) != shard.bytes:
            raise _NotFixed(f"size other than the manifest's {shard.bytes} bytes")
        raw = np.fromfile(shard.path, dtype=np.uint8)  # (shard bytes,); faster than bytes from read()
        if len(raw) != shard.bytes:
            raise _NotFixed(f"size other than the manifest's {shard.bytes} bytes")
        members, stride = _first_record(raw)
        end = shard.count * stride
        if end > len(raw):
            raise _NotFixed(f"{shard.count} records of {stride} bytes exceed the file")
        if raw[end:].any():
            raise _NotFixed("bytes after the last record are not the zero end of the archive")
        view = raw[:end].reshape(shard.count, stride)
        sizes, keys = _check_records(view, members)
        found = {member.suffix: (member.offset + _BLOCK, size) for member, size in zip(members, sizes)}
        block, per_sample = {"key": np.fromiter(keys, dtype=object, count=len(keys))}, []
        for name, info in fields:
            if f".{name}.{info.ext}" not in found:
                raise _NotFixed(f"no member .{name}.{info.ext}")
            start, size = found[f".{name}.{info.ext}"]
            if info.ext == "npy":
                block[name] = _npy_column(view, start, size, info)
            else:
                per_sample.append((name, info, start, size.tolist()))
    except (_NotFixed, OSError) as err:
        logger.debug("shard %s is not of fixed layout (%s); reading it member by member", shard.name, err)
        return None
    keep = np.ones(shard.count, dtype=bool)
    values: dict[str, list] = {name: [] for name, *_ in per_sample}
    for index in range(shard.count if per_sample else 0):
        try:
            decoded = {
                name: _decode_value(name, info, raw[index * stride + start :][: size[index]].tobytes())
                for name, info, start, size in per_sample
            }
        except Exception as err:  # any decoder failure means corrupt bytes: skip, never stop the epoch
            _skip_corrupt(skipped, shard.name, keys[index], err)
            keep[index] = False
            continue
        for name, value in decoded.items():
            values[name].append(value)
    if not keep.any():
        return []
    if not keep.all():
        block = {name: column[keep] for name, column in block.items()}
    return [{**block, **{name: _column(column) for name, column in values.items()}}]


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
            sample = {name: _decode_value(name, info, raw[f"{name}.{info.ext}"]) for name, info in fields}
        except Exception as err:  # any decoder failure means corrupt bytes: skip, never stop the epoch
            _skip_corrupt(skipped, shard, key, err)
            continue
        sample["key"] = key
        yield sample


def _read_blocks(shards: Iterable[_Shard], plan: _Plan, skipped: Counter, failed: set[str]) -> Iterator[dict]:
    """The decoded samples of ``shards`` as blocks: one per fixed-layout shard, small ones otherwise."""
    names = [name for name, _ in plan.fields] + ["key"]
    for shard in shards:
        fixed = _read_fixed(shard, plan.fields, skipped)
        if fixed is not None:
            yield from fixed
            continue
        samples = _decode(_read_shard(shard, plan.members, skipped, failed), plan.fields, skipped)
        while chunk := list(itertools.islice(samples, _GENERIC_BLOCK)):
            yield {name: _column([sample[name] for sample in chunk]) for name in names}


def _size(block: dict) -> int:
    return len(block["key"])


def _select(block: dict, index: slice | np.ndarray) -> dict:
    return {name: column[index] for name, column in block.items()}


class _Fifo:
    """Samples in arrival order, held as blocks; :meth:`take` removes the first ones as one block."""

    def __init__(self) -> None:
        self._blocks: collections.deque[dict] = collections.deque()
        self.size = 0

    def put(self, block: dict) -> None:
        if _size(block):
            self._blocks.append(block)
            self.size += _size(block)

    def take(self, count: int) -> dict:
        """The first ``min(count, size)`` samples (``size`` must be positive)."""
        pieces = []
        while count > 0 and self._blocks:
            block = self._blocks.popleft()
            if _size(block) > count:
                self._blocks.appendleft(_select(block, slice(count, None)))
                block = _select(block, slice(count))
            pieces.append(block)
            count -= _size(block)
            self.size -= _size(block)
        if len(pieces) == 1:
            return pieces[0]
        return {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}


def _first_samples(blocks: Iterable[dict], quota: int) -> Iterator[dict]:
    """The first ``quota`` samples of ``blocks``, reading no block beyond them."""
    if quota <= 0:
        return
    for block in blocks:
        if _size(block) > quota:
            block = _select(block, slice(quota))
        quota -= _size(block)
        yield block
        if quota == 0:
            return


def _shuffle(blocks: Iterable[dict], capacity: int, batch_size: int, rng: np.random.Generator) -> Iterator[dict]:
    """The samples of ``blocks`` reordered by a shuffle buffer of ``capacity >= batch_size`` samples.

    The buffer is filled with the first ``capacity`` samples; each output block is
    ``batch_size`` distinct positions drawn uniformly from it, which the next ``batch_size``
    input samples then fill. When the input runs out, the samples left in the buffer follow in
    a random order (as one block).
    """
    fifo, source = _Fifo(), iter(blocks)

    def take(count: int) -> dict | None:
        while fifo.size < count and (block := next(source, None)) is not None:
            fifo.put(block)
        return fifo.take(count) if fifo.size else None

    pool = take(capacity)
    if pool is None:
        return
    # Refilled in place, so its columns must own their memory.
    pool = {name: column.copy() for name, column in pool.items()}
    while _size(pool) == capacity:
        picks = rng.choice(capacity, batch_size, replace=False)
        yield _select(pool, picks)
        incoming = take(batch_size)
        filled = 0 if incoming is None else _size(incoming)
        for name, column in pool.items():
            if filled:
                column[picks[:filled]] = incoming[name]
        if filled < batch_size:
            pool = _select(pool, np.setdiff1d(np.arange(capacity), picks[filled:]))
    yield _select(pool, rng.permutation(_size(pool)))


def _batches(blocks: Iterable[dict], batch_size: int) -> Iterator[dict]:
    """``blocks`` re-cut into blocks of ``batch_size`` samples; the last one may be shorter."""
    fifo = _Fifo()
    for block in blocks:
        fifo.put(block)
        while fifo.size >= batch_size:
            yield fifo.take(batch_size)
    if fifo.size:
        yield fifo.take(fifo.size)


def _to_batch(block: dict) -> dict:
    """The batch dict: numeric columns as tensors (B, ...), other values (str, JSON) and keys as lists."""
    # Copies, so that a batch cut from a larger block does not keep all of it alive. Workers
    # send blocks, not tensors: pickled numpy arrays travel faster than shared-memory tensors.
    return {
        name: column.tolist() if column.dtype == object else torch.from_numpy(column.copy())
        for name, column in block.items()
    }


def _worker_items(plan: _Plan, worker: int, num_workers: int) -> Iterator[dict]:
    """One worker's part of one epoch: groups of full batches, then one tail item; each with its new skip counts."""
    skipped: Counter = Counter()
    failed: set[str] = set()

    def drain() -> dict[str, int]:
        counts = dict(skipped)
        skipped.clear()
        return counts

    blocks = _read_blocks(_worker_shards(plan, worker, num_workers, failed), plan, skipped, failed)
    if plan.rank_samples is not None:
        blocks = _first_samples(blocks, plan.rank_samples // num_workers + (worker < plan.rank_samples % num_workers))
    if plan.shuffle_buffer > 1:
        rng = np.random.default_rng([plan.seed, plan.epoch, plan.rank, worker, _SAMPLE_ORDER])
        blocks = _shuffle(blocks, max(plan.shuffle_buffer, plan.batch_size), plan.batch_size, rng)
    tail, group, group_bytes = [], [], 0
    for batch in _batches(blocks, plan.batch_size):
        if _size(batch) < plan.batch_size:
            tail.append(batch)
            continue
        group.append(batch)
        group_bytes += sum(column.nbytes for column in batch.values())
        if group_bytes >= _GROUP_BYTES:
            yield {_GROUP: group, _SKIPPED: drain()}
            group, group_bytes = [], 0
    if group:
        yield {_GROUP: group, _SKIPPED: drain()}
    yield {_TAIL: tail, _SKIPPED: drain()}


class _EpochsDataset(IterableDataset):
    """Epochs of one rank, from the one in ``first_epoch`` on; each DataLoader worker iterates its share.

    Items carry their worker's index, so that the main process can put them in a fixed order.
    """

    def __init__(self, plan: _Plan, first_epoch: torch.Tensor) -> None:
        super().__init__()
        self.plan = plan
        self.first_epoch = first_epoch

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        for epoch in itertools.count(int(self.first_epoch)):
            for item in _worker_items(replace(self.plan, epoch=epoch), info.id, info.num_workers):
                yield {**item, _WORKER: info.id}


class _Workers:
    """DataLoader workers kept for the life of the stream: starting them costs about 0.1 s.

    Started (or restarted) at an epoch, they go on from epoch to epoch, so that the next epoch
    is read while this one is consumed. The items of an epoch are put in one fixed order,
    round-robin over the workers until each has sent its tail, whatever the order of arrival,
    so that an epoch's batches do not depend on where the workers started.
    """

    def __init__(self, plan: _Plan, num_workers: int) -> None:
        # Persistent workers keep their copy of the dataset; a restart tells them the epoch
        # through this shared memory, read when each begins its new iteration.
        self._first_epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._loader = DataLoader(
            _EpochsDataset(plan, self._first_epoch),
            batch_size=None,
            num_workers=num_workers,
            collate_fn=_as_is,
            worker_init_fn=_init_worker,
            persistent_workers=True,
        )
        self._iterator: Iterator[dict] | None = None
        self._next_epoch: int | None = None  # where the running iteration stands, if known
        self._early: list[collections.deque] = []

    def epoch_items(self, epoch: int) -> Iterator[dict]:
        """The items of ``epoch``, restarting the workers there unless they already stand at it."""
        if self._next_epoch != epoch:
            self._first_epoch.fill_(epoch)
            self._iterator = iter(self._loader)
            self._early = [collections.deque() for _ in range(self._loader.num_workers)]
        self._next_epoch = None  # unknown until this epoch is read to its end
        active = list(range(len(self._early)))
        while active:
            for worker in list(active):
                while not self._early[worker]:
                    item = next(self._iterator)
                    self._early[item.pop(_WORKER)].append(item)
                item = self._early[worker].popleft()
                if _TAIL in item:
                    active.remove(worker)
                yield item
        self._next_epoch = epoch + 1

    def close(self) -> None:
        # A worker error's traceback holds the iterator in a reference cycle, and when the
        # garbage collector finalises that cycle the worker queues may go first, so each worker
        # would wait out a 5 s timeout: stop them now.
        if self._iterator is not None:
            self._iterator._shutdown_workers()


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
        self._workers: _Workers | None = None

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
        items = self._epoch_items(epoch)
        tails: list[dict] = []
        batches = itertools.chain(self._worker_batches(items, tails), self._tail_batches(tails))
        try:
            for index, batch in enumerate(itertools.islice(batches, self.batches_per_epoch)):
                if index >= start_batch:
                    yield batch
            # Read the epoch to its end (a rank's surplus with drop_last), so the workers can go on.
            for item in items:
                self._skipped.update(item[_SKIPPED])
        finally:
            items.close()

    def _epoch_items(self, epoch: int) -> Iterator[dict]:
        """The worker items of one epoch: from this process, or from the stream's workers."""
        if not self.num_workers:
            yield from _worker_items(_Plan(epoch=epoch, **self._plan_args), 0, 1)
            return
        if self._workers is None:
            self._workers = _Workers(_Plan(epoch=epoch, **self._plan_args), self.num_workers)
        try:
            yield from self._workers.epoch_items(epoch)
        except Exception:
            self._workers.close()
            self._workers = None
            raise

    def _worker_batches(self, items: Iterator[dict], tails: list[dict]) -> Iterator[dict]:
        for item in items:
            self._skipped.update(item.pop(_SKIPPED))
            if _TAIL in item:
                tails.extend(item[_TAIL])
            else:
                yield from map(_to_batch, item[_GROUP])

    def _tail_batches(self, tails: list[dict]) -> Iterator[dict]:
        for batch in _batches(tails, self.batch_size):
            if _size(batch) == self.batch_size or not self.drop_last:
                yield _to_batch(batch)
