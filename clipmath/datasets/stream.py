"""Stream batches from a shard directory: seeded shuffles, split by rank and worker, resampling.

Each DataLoader worker runs one pipeline of *blocks* ``{field: array (n, ...), "key": array (n,)}``::

    shard list (this rank's shards, shuffled with (seed, epoch), dealt to workers;
                or, resampled, drawn with replacement)
      -> each shard read in one piece, its sha256 checked once per file (a mismatch warned)
      -> one block per shard of fixed layout; otherwise tar members, resuming past damage at
         the next valid header -> samples (lost ones skipped and counted) -> small blocks
      -> decode the requested fields (corrupt samples, NaN or Inf included, skipped and counted)
      -> [resampled: the worker's quota of samples]
      -> sample shuffle (a buffer of shuffle_buffer samples; each batch is B distinct random
         positions of it, refilled in place; rng seeded from (seed, epoch, rank, worker))
      -> batches of B, then one "tail" item with the worker's last < B samples
      -> [transform: each sample through the user's transform, seeded by (seed, epoch, key);
          transform or collate: full batches collated]

and the main process pools the tails into further batches (with a transform or collate, of
transformed samples, collated alike), so no sample is lost at worker boundaries. A stream
keeps its workers between epochs; they read the next epoch ahead, and are restarted when
another epoch is asked for. Every random choice is drawn from a generator seeded by ``(seed,
epoch, rank, worker)`` (a transform's, by ``(seed, epoch, key)``), never from global state, so
an epoch's batches are the same on every call for fixed ``(seed, epoch, num_workers, rank,
world_size)`` and differ between epochs.

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
import ctypes
import functools
import hashlib
import itertools
import logging
import math
import os
import pickle
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from clipmath.datasets.checks import check_int
from clipmath.datasets.fields import FieldInfo, decode_field, read_npy_header
from clipmath.datasets.png import decode_png_batch
from clipmath.datasets.shards import TarDamage, check_shards, read_manifest, tar_members

logger = logging.getLogger(__name__)

# Entries a worker adds to what it sends to the main process (never seen by users).
_SKIPPED = "__skipped__"
_TAIL = "__tail__"
_GROUP = "__group__"
# A column of the shard each sample came from, for transform errors (only with a transform).
_SHARD = "__shard__"
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
    sha256: str = ""
    index: int = 0  # in the manifest, and in the plan's shared table of checksum verdicts


@dataclass(frozen=True)
class _Plan:
    """Everything a worker needs to produce its part of one epoch (picklable)."""

    shards: tuple[_Shard, ...]
    fields: tuple[tuple[str, FieldInfo], ...]  # the stored fields read
    names: tuple[tuple[str, str], ...]  # (batch name, stored field) of every delivered field
    members: frozenset[str]  # "{field}.{ext}" of every field in the manifest
    batch_size: int
    seed: int
    epoch: int
    rank: int
    world_size: int
    shuffle_buffer: int
    rank_samples: int | None  # resampled: this rank's share of samples_per_epoch; else None
    transform: Callable[[dict, torch.Generator], dict] | None = None
    collate: Callable[[list[dict]], dict] | None = None
    # With workers: (shards, 3) int64 in shared memory, [verdict, size, mtime_ns] per shard, so
    # that a shard is hashed once for all the workers (see _read_verified); else None.
    verdicts: torch.Tensor | None = None

    @property
    def per_sample(self) -> bool:
        """Whether batches are formed from per-sample dicts (a transform or a collate), not blocks."""
        return self.transform is not None or self.collate is not None


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
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes Inf, dropped as corrupt
        return raw.view(dtype).reshape(len(view), *shape).astype(np.float32, copy=False)


def _varies(info: FieldInfo) -> bool:
    """Whether a field's shape varies between samples (the manifest records ``None`` axes)."""
    return info.shape is not None and None in info.shape


def _decode_value(name: str, info: FieldInfo, data: bytes) -> Any:
    """One member decoded by :func:`decode_field`; raises if an array's shape is not the manifest's.

    Axes the manifest records as ``None`` may have any length; the number of axes must match.
    """
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes Inf, dropped as corrupt
        value = decode_field(info.ext, data)
    if info.ext in ("npy", "png", "jpg"):
        shape = tuple(value.shape)
        if len(shape) != len(info.shape) or any(
            want is not None and got != want for got, want in zip(shape, info.shape, strict=True)
        ):
            raise ValueError(f"field {name!r} has shape {shape}, manifest says {info.shape}")
    return value


def _skip_corrupt(skipped: Counter, shard: str, key: str, err: Exception) -> None:
    skipped[shard] += 1
    logger.warning("sample %r in shard %s is corrupt (%s); skipped", key, shard, err)


def _column(values: list, varying: bool = False) -> np.ndarray:
    """Per-sample values as one array with a leading sample axis.

    Tensors of a field of fixed shape are stacked, (n, ...); those of a field whose shape varies
    become an object array (n,) of NumPy arrays, as do other values (str, JSON).
    """
    if isinstance(values[0], torch.Tensor):
        if not varying:
            return np.stack([value.numpy() for value in values])
        values = [value.numpy() for value in values]
    return np.fromiter(values, dtype=object, count=len(values))


def _member_column(info: FieldInfo, datas: list[bytes]) -> np.ndarray | None:
    """Every sample's member of a ``png`` or ``cls`` field decoded at once, or None (then per sample).

    PNGs as :func:`~clipmath.datasets.png.encode_png` writes them, of the manifest's fixed shape,
    decode by one ``zlib.decompress`` each (:func:`~clipmath.datasets.png.decode_png_batch`); class
    labels are ASCII integers. Anything else, a corrupt member included, returns None, and the
    per-sample decoder then skips and counts what does not decode.
    """
    if info.ext == "png" and not _varies(info):
        pixels = decode_png_batch(datas)
        return pixels if pixels is not None and pixels.shape[1:] == info.shape else None
    if info.ext == "cls":
        if all(data.isascii() and data.strip().lstrip(b"-").isdigit() for data in datas):
            return np.array([int(data) for data in datas], dtype=np.int64)
    return None


# Checksum verdicts of this process: (path, size, mtime_ns) -> whether the sha256 matched the manifest's.
_VERIFIED: dict[tuple[str, int, int], bool] = {}
# Verdicts in a plan's shared table (0: not yet known).
_MATCHED, _DIFFERS = 1, 2
# Shards at least this large are hashed in a thread while they are decoded (hashlib releases the GIL).
_HASH_IN_THREAD_BYTES = 1 << 20


def _no_check() -> None:
    return None


def _read_verified(shard: _Shard, verdicts: torch.Tensor | None) -> tuple[np.ndarray, Callable[[], None]]:
    """A shard's bytes (file size,) uint8, and ``finish()``, which completes their sha256 check.

    The digest is taken of the bytes read anyway, once per ``(path, size, mtime_ns)`` in this
    process, or, with workers, once for all of them (the plan's shared table of verdicts); a
    large shard is hashed in a thread while it is decoded, and ``finish()``, called once the
    shard is read, waits for it. A mismatch is logged as a warning naming the shard; the shard
    is still read, as far as its samples decode (a digest cannot say which bytes changed).

    Raises:
        OSError: if the file cannot be read.
    """
    with open(shard.path, "rb") as handle:
        raw = np.fromfile(handle, dtype=np.uint8)  # faster than bytes from read()
        stat = os.fstat(handle.fileno())
    version = (shard.path, stat.st_size, stat.st_mtime_ns)
    if version in _VERIFIED or not shard.sha256:
        return raw, _no_check
    if verdicts is not None:
        verdict, size, mtime = verdicts[shard.index].tolist()
        if verdict and (size, mtime) == version[1:]:
            _VERIFIED[version] = verdict == _MATCHED
            return raw, _no_check
    digests: list[str] = []

    def digest() -> None:
        digests.append(hashlib.sha256(raw).hexdigest())  # the buffer, without a copy

    def finish() -> None:
        if thread is not None:
            thread.join()
        if not digests:  # the hash itself failed (and said so on stderr): try again next time
            return
        matched = digests[0] == shard.sha256
        if not matched:
            logger.warning(
                "shard %s: its sha256 differs from the manifest's, so the file changed after it was written "
                "(%d bytes, the manifest says %d); reading what is readable, samples that fail to parse or "
                "decode are skipped and counted, but changed values that still decode cannot be detected",
                shard.path,
                stat.st_size,
                shard.bytes,
            )
        if verdicts is not None:
            verdicts[shard.index, 1:] = torch.tensor(version[1:])
            verdicts[shard.index, 0] = _MATCHED if matched else _DIFFERS
        _VERIFIED[version] = matched

    thread = None
    if len(raw) >= _HASH_IN_THREAD_BYTES:
        thread = threading.Thread(target=digest, name=f"sha256 {shard.name}", daemon=True)
        thread.start()
    else:
        digest()
    return raw, finish


def _read_fixed(
    shard: _Shard, fields: tuple[tuple[str, FieldInfo], ...], skipped: Counter, raw: np.ndarray | None = None
) -> list[dict] | None:
    """A fixed-layout shard as one block (``[]`` if every sample is corrupt), else ``None``.

    A shard whose size is the manifest's is read in one piece (or given as ``raw``, its bytes);
    when every sample repeats the first one's tar layout (:func:`_check_records`), the shard is
    a (count, stride) byte array and each fixed-shape ``npy`` field one column range of it,
    decoded for all samples at once. Other fields are decoded per sample, a corrupt sample
    skipped and counted. Anything else (damage, pax headers, a missing field) returns ``None``
    for the generic reader, which handles and counts it.
    """
    try:
        if raw is None:
            if os.path.getsize(shard.path) != shard.bytes:
                raise _NotFixed(f"size other than the manifest's {shard.bytes} bytes")
            raw = np.fromfile(shard.path, dtype=np.uint8)  # (shard bytes,)
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
        found = {member.suffix: (member.offset + _BLOCK, size) for member, size in zip(members, sizes, strict=True)}
        block, per_sample = {"key": np.fromiter(keys, dtype=object, count=len(keys))}, []
        for name, info in fields:
            if f".{name}.{info.ext}" not in found:
                raise _NotFixed(f"no member .{name}.{info.ext}")
            start, size = found[f".{name}.{info.ext}"]
            if info.ext == "npy" and not _varies(info):
                block[name] = _npy_column(view, start, size, info)
                continue
            datas = [view[index, start : start + length].tobytes() for index, length in enumerate(size.tolist())]
            column = _member_column(info, datas)
            if column is None:
                per_sample.append((name, info, start, size.tolist()))
            else:
                block[name] = column
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
    varying = {name: _varies(info) for name, info, *_ in per_sample}
    return [{**block, **{name: _column(column, varying[name]) for name, column in values.items()}}]


def _read_shard(shard: _Shard, members: frozenset[str], skipped: Counter, data: bytes | None = None) -> Iterator[dict]:
    """The samples of one shard as raw member bytes, ``{"__key__", "__shard__", "u.npy": ...}``.

    Reads the file (or its bytes ``data``) member by member (:func:`~clipmath.datasets.shards.tar_members`),
    resuming past damage at the next valid tar header. A shard is damaged when it cannot be
    read, its size differs from the manifest's, tar parsing stopped early anywhere, or it holds
    fewer samples than the manifest counts. A sample that was in progress where parsing stopped,
    or began where it resumed, is kept only if it holds every member of the manifest's
    ``members`` (its lost member may have been one of them); the shortfall against the manifest
    count, the samples actually lost, is added to ``skipped`` and logged.
    """
    delivered, found, sample, suspect, damage = 0, 0, None, False, []
    try:
        if data is None:
            with open(shard.path, "rb") as handle:
                data = handle.read()
        entries = tar_members(data)
    except OSError as err:
        entries, damage = iter(()), [str(err)]
    next_suspect = False
    for entry in entries:
        if isinstance(entry, TarDamage):
            resumed = "not resumed" if entry.resumed_at is None else f"resumed at byte {entry.resumed_at}"
            damage.append(f"unreadable from byte {entry.offset} ({entry.reason}), {resumed}")
            suspect = sample is not None
            next_suspect = True
            continue
        name, content = entry
        key, _, suffix = name.partition(".")
        if sample is not None and key != sample["__key__"]:
            if not suspect or members <= sample.keys():
                yield sample
                delivered += 1
            sample = None
        if sample is None:
            sample, suspect, next_suspect = {"__key__": key, "__shard__": shard.name}, next_suspect, False
            found += 1
        sample[suffix] = content
    size = -1 if data is None else len(data)
    intact = not damage and size == shard.bytes and found == shard.count
    if sample is not None and ((intact and not suspect) or members <= sample.keys()):
        yield sample
        delivered += 1
    if intact:
        return
    lost = max(shard.count - delivered, 0)
    if lost:
        skipped[shard.name] += lost
    if not damage:
        damage = [f"{size} bytes, {found} samples; the manifest says {shard.bytes}, {shard.count}"]
    logger.warning(
        "shard %s is damaged (%s): %d of its %d samples lost and counted as skipped, %d delivered",
        shard.path,
        "; ".join(damage[:3]) + (f"; and {len(damage) - 3} more" if len(damage) > 3 else ""),
        lost,
        shard.count,
        delivered,
    )


def _decode(samples: Iterable[dict], fields: tuple[tuple[str, FieldInfo], ...], skipped: Counter) -> Iterator[dict]:
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


def _drop_nonfinite(block: dict, shard: str, fields: tuple[tuple[str, FieldInfo], ...], skipped: Counter) -> dict:
    """``block`` without its samples whose ``npy`` fields hold NaN or Inf (corrupt: skipped, counted, logged).

    Float arrays are checked after their conversion to float32, so a float64 value beyond its
    range counts too. A whole column is checked at once; a field whose shape varies, per sample.
    """
    bad = None
    for name, info in fields:
        if info.ext != "npy":
            continue
        column = block[name]
        if column.dtype == object:
            finite = np.fromiter((np.isfinite(a).all() for a in column), dtype=bool, count=len(column))
        else:
            finite = np.isfinite(column.reshape(len(column), -1)).all(1)
        if finite.all():
            continue
        keys = block["key"][~finite].tolist()
        logger.warning(
            "shard %s: %d samples hold NaN or Inf in field %r (%s%s); skipped as corrupt",
            shard,
            len(keys),
            name,
            ", ".join(map(repr, keys[:5])),
            ", ..." if len(keys) > 5 else "",
        )
        bad = ~finite if bad is None else bad | ~finite
    if bad is None:
        return block
    skipped[shard] += int(bad.sum())
    return _select(block, ~bad)


def _read_blocks(shards: Iterable[_Shard], plan: _Plan, skipped: Counter, failed: set[str]) -> Iterator[dict]:
    """The decoded samples of ``shards`` as blocks: one per fixed-layout shard, small ones otherwise.

    A shard that delivers no sample is added to ``failed``.
    """
    varying = {name: _varies(info) for name, info in plan.fields} | {"key": False}

    def generic(shard: _Shard, data: bytes | None) -> Iterator[dict]:
        samples = _decode(_read_shard(shard, plan.members, skipped, data), plan.fields, skipped)
        while chunk := list(itertools.islice(samples, _GENERIC_BLOCK)):
            yield {name: _column([sample[name] for sample in chunk], vary) for name, vary in varying.items()}

    for shard in shards:
        try:
            raw, finish = _read_verified(shard, plan.verdicts)
        except OSError:
            raw, finish = None, _no_check  # the generic reader meets the error again, and reports and counts it
        try:
            blocks = None if raw is None else _read_fixed(shard, plan.fields, skipped, raw)
            if blocks is None:
                data, raw = (None if raw is None else raw.tobytes()), None
                blocks = generic(shard, data)
            raw = None  # a fixed-layout block owns its memory; the file's bytes may go (once hashed)
            delivered = 0
            for block in blocks:
                block = _drop_nonfinite(block, shard.name, plan.fields, skipped)
                if not _size(block):
                    continue
                delivered += _size(block)
                if plan.transform is not None:
                    block[_SHARD] = np.full(_size(block), shard.name, dtype=object)
                yield block
        finally:
            finish()
        if not delivered:
            failed.add(shard.name)


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
    """The batch dict of a block: numeric columns as tensors (B, ...), other values as lists.

    A column of per-sample arrays (a field whose shape varies) is stacked if the arrays share
    one shape and dtype, else a list of tensors; str and JSON values and the keys stay lists.
    """
    # Copies, so that a batch cut from a larger block does not keep all of it alive. Workers
    # send blocks, not tensors: pickled numpy arrays travel faster than shared-memory tensors.
    batch = {}
    for name, column in block.items():
        if column.dtype != object:
            batch[name] = torch.from_numpy(column.copy())
            continue
        values = column.tolist()  # an object array's elements as they are
        batch[name] = _stack_or_list(values) if isinstance(values[0], np.ndarray) else values
    return batch


def _stack_or_list(values: list) -> Any:
    """Per-sample values of one field as a batch value.

    Tensors (or NumPy arrays) of one shape and dtype are stacked into a tensor (B, ...); of
    differing shapes or dtypes they stay a list of B tensors; other values stay a list.
    """
    if not all(isinstance(value, (torch.Tensor, np.ndarray)) for value in values):
        return list(values)
    tensors = [torch.as_tensor(value) for value in values]
    first = tensors[0]
    if all(tensor.shape == first.shape and tensor.dtype == first.dtype for tensor in tensors):
        return torch.stack(tensors)
    return tensors


def _sample_seed(seed: int, epoch: int, key: str) -> int:
    """The 64-bit seed of a sample's transform generator, from (stream seed, epoch, key) alone.

    A stable hash (blake2b, never Python's salted ``hash``) of the three, so a sample's
    generator is the same whatever the worker count, shuffle order or resume point. (Hashing
    ``"{seed} {epoch} {key}"`` is one to one, as the integers hold no space; it costs a 20th
    of NumPy's SeedSequence, which took a third of a light transform's time.)
    """
    data = f"{seed} {epoch} {key}".encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=b"transform").digest(), "little")


def _samples(block: dict) -> list[dict]:
    """A block as per-sample dicts ``{field: value, "key": str}``, numeric values as tensors."""
    columns = {}
    for name, column in block.items():
        if column.dtype != object:
            columns[name] = torch.from_numpy(column).unbind(0)
        else:
            columns[name] = [torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in column.tolist()]
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _transformed(block: dict, plan: _Plan) -> list[dict]:
    """The samples of a block, each passed through ``plan.transform`` (if any) with its seeded generator.

    Raises:
        ValueError: if the transform returns something other than a dict.
        Exception: whatever the transform raises, with a note naming the sample's key and shard.
    """
    shards = block.get(_SHARD)
    samples = _samples({name: column for name, column in block.items() if name != _SHARD})
    if plan.transform is None:
        return samples
    results = []
    for sample, shard in zip(samples, shards, strict=True):
        key = sample["key"]
        generator = torch.Generator().manual_seed(_sample_seed(plan.seed, plan.epoch, key))
        try:
            result = plan.transform(sample, generator)
        except Exception as err:  # a bug in the transform, not corrupt data: it stops the epoch
            err.add_note(f"raised by transform={plan.transform!r} on sample {key!r} of shard {shard}")
            raise
        if not isinstance(result, dict):
            raise ValueError(
                f"transform={plan.transform!r}: returned {type(result).__name__} for sample {key!r}; "
                "expected a dict of fields"
            )
        result = {name: value for name, value in result.items() if name != "key"}
        result["key"] = key
        results.append(result)
    return results


def _collate(samples: list[dict], collate: Callable[[list[dict]], dict] | None) -> dict:
    """One batch from its samples: by ``collate``, or each field by :func:`_stack_or_list`.

    The batch's ``"key"`` is always the list of the samples' keys.

    Raises:
        ValueError: if the samples differ in their fields (default), or ``collate`` returns
            something other than a dict.
    """
    keys = [sample["key"] for sample in samples]
    if collate is not None:
        try:
            batch = collate(samples)
        except Exception as err:
            err.add_note(f"raised by collate={collate!r} on the batch of samples {keys[0]!r} to {keys[-1]!r}")
            raise
        if not isinstance(batch, dict):
            raise ValueError(f"collate={collate!r}: returned {type(batch).__name__}; expected a dict")
        return {**{name: value for name, value in batch.items() if name != "key"}, "key": keys}
    names = samples[0].keys()
    for sample in samples:
        if sample.keys() != names:
            raise ValueError(
                f"transform: sample {sample['key']!r} has fields {sorted(sample)}, but sample "
                f"{keys[0]!r} has {sorted(names)}; expected the same fields from every sample"
            )
    return {name: keys if name == "key" else _stack_or_list([sample[name] for sample in samples]) for name in names}


@dataclass(frozen=True)
class _Packed:
    """A tensor on its way from a worker, as its NumPy array.

    Pickled arrays travel faster than tensors, which the DataLoader moves through shared memory
    at a fixed cost each: a list of B variable-length tensors would pay it B times.
    """

    array: np.ndarray


def _pack(value: Any) -> Any:
    """``value`` with the tensors in it (within dicts, lists and tuples) as :class:`_Packed`."""
    if isinstance(value, torch.Tensor):
        try:
            return _Packed(value.numpy())
        except (TypeError, RuntimeError):  # a dtype NumPy lacks (bfloat16), or requires_grad
            return value
    if type(value) in (list, tuple):
        return type(value)(map(_pack, value))
    if type(value) is dict:
        return {name: _pack(item) for name, item in value.items()}
    return value


def _unpack(value: Any) -> Any:
    """The inverse of :func:`_pack`."""
    if isinstance(value, _Packed):
        return torch.from_numpy(value.array)
    if type(value) in (list, tuple):
        return type(value)(map(_unpack, value))
    if type(value) is dict:
        return {name: _unpack(item) for name, item in value.items()}
    return value


def _nbytes(value: Any) -> int:
    """Bytes of the arrays and tensors in ``value`` (within dicts, lists and tuples)."""
    if isinstance(value, _Packed):
        return value.array.nbytes
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.nbytes
    if isinstance(value, (list, tuple)):
        return sum(map(_nbytes, value))
    if isinstance(value, dict):
        return sum(map(_nbytes, value.values()))
    return 0


def _worker_items(plan: _Plan, worker: int, num_workers: int) -> Iterator[dict]:
    """One worker's part of one epoch: groups of full batches, then one tail item; each with its new skip counts.

    Without a transform or collate, batches and the tail are blocks (the main process makes
    tensors of them). With one, each sample is transformed here, a full batch is collated
    here, and the tail is a list of transformed samples that the main process pools and
    collates alike; tensors travel packed (:func:`_pack`).
    """
    skipped: Counter = Counter()
    failed: set[str] = set()

    def drain() -> dict[str, int]:
        counts = dict(skipped)
        skipped.clear()
        return counts

    blocks = _read_blocks(_worker_shards(plan, worker, num_workers, failed), plan, skipped, failed)
    # Renamed (a stored field may serve several names); the key and shard columns pass through.
    blocks = (
        {**{name: block[stored] for name, stored in plan.names}, **{k: block[k] for k in ("key", _SHARD) if k in block}}
        for block in blocks
    )
    if plan.rank_samples is not None:
        blocks = _first_samples(blocks, plan.rank_samples // num_workers + (worker < plan.rank_samples % num_workers))
    if plan.shuffle_buffer > 1:
        rng = np.random.default_rng([plan.seed, plan.epoch, plan.rank, worker, _SAMPLE_ORDER])
        blocks = _shuffle(blocks, max(plan.shuffle_buffer, plan.batch_size), plan.batch_size, rng)
    tail, group, group_bytes, first = [], [], 0, True
    for batch in _batches(blocks, plan.batch_size):
        full = _size(batch) == plan.batch_size
        if plan.per_sample:
            samples = _transformed(batch, plan)
            if not full:
                tail.extend(_pack(samples))
                continue
            batch = _pack(_collate(samples, plan.collate))
        elif not full:
            tail.append(batch)
            continue
        group.append(batch)
        group_bytes += _nbytes(batch)
        # The epoch's first batch goes alone, so that training starts before a group is full.
        if group_bytes >= _GROUP_BYTES or first:
            yield {_GROUP: group, _SKIPPED: drain()}
            group, group_bytes, first = [], 0, False
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
            # The workers start in this thread: a parent-death signal fires when it ends, so it is
            # armed only from the main thread (which ends with the process); else a watchdog.
            worker_init_fn=functools.partial(
                _init_worker, parent=os.getpid(), pdeathsig=threading.current_thread() is threading.main_thread()
            ),
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


def _check_function(name: str, function: Callable | None, num_workers: int) -> None:
    """Raise unless ``function`` is ``None`` or callable, and picklable when workers receive it."""
    if function is None:
        return
    if not callable(function):
        raise ValueError(f"{name}={function!r}: expected a callable or None")
    if num_workers:
        try:
            pickle.dumps(function)
        except Exception as err:
            raise ValueError(
                f"{name}={function!r}: expected a picklable callable with num_workers > 0 (a top-level "
                f"function, a functools.partial of one, or an instance of a top-level class): {err}"
            ) from None


def _init_worker(worker_id: int, parent: int | None = None, pdeathsig: bool = True) -> None:
    # Workers only decode; one intra-op thread each keeps them from oversubscribing the cores.
    torch.set_num_threads(1)
    if parent is not None:
        _exit_with_parent(parent, pdeathsig)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_WATCHDOG_SECONDS = 0.5


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed process its parent has not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b")")[2].split()[0] != b"Z"
    except OSError:  # no /proc (not Linux): kill(pid, 0) has answered
        return True


def _exit_with_parent(parent: int, pdeathsig: bool) -> None:
    """End this worker process when ``parent``, the process that started it, dies, even by SIGKILL.

    Otherwise a worker outlives it forever: torch's worker loop looks at its parent only between
    tasks, and then waits to flush its last results into a pipe whose read end its sibling
    workers still hold open. On Linux the kernel sends this process SIGKILL when its parent
    (exactly: the thread that forked it; ``pdeathsig`` says that was the main thread) ends
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere, or if that fails, a daemon thread polls
    ``os.getppid()`` every 0.5 s, which changes when the parent dies (the orphan is adopted).
    """
    ppid = os.getppid()
    armed = False
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    # A parent that died before the signal was armed has left this process adopted already. (With
    # forkserver the direct parent is the fork server, which exits with the parent.)
    if ppid != parent and not _alive(parent):
        os._exit(1)
    if armed:
        return

    def watch() -> None:
        while os.getppid() == ppid:
            time.sleep(_WATCHDOG_SECONDS)
        os._exit(1)  # no cleanup: the results have nobody to go to

    threading.Thread(target=watch, name="clipmath-parent-watchdog", daemon=True).start()


def _warn_disagreements(path: Path) -> None:
    """Log a warning for each cheap-to-see disagreement of a shard directory with its manifest.

    A directory listing and a ``stat`` per shard (:func:`~clipmath.datasets.shards.check_shards`
    without ``deep``): ``.tar`` files the manifest does not list (never streamed), listed shards
    missing on disk and sizes other than the manifest's (read as far as they parse, their lost
    samples skipped and counted). Checksums are checked as each shard is read.
    """
    problems = check_shards(path, deep=False)
    if problems:
        logger.warning(
            "shard directory %s disagrees with its manifest (%d problems; `clipmath shards inspect %s` lists "
            "them all): %s. Unlisted files are not streamed; the samples lost from listed shards are skipped and "
            "counted.",
            path,
            len(problems),
            path,
            "; ".join(map(str, problems[:10])),
        )


def _as_is(item: dict) -> dict:
    return item


class ShardStream:
    """Batches of a shard directory, epoch by epoch, reproducible and resumable.

    Batches are dicts ``{"u": Tensor (B, ...), "v": Tensor (B, ...), "key": list[str], ...}``
    holding the requested ``fields`` decoded as in :mod:`clipmath.datasets.fields` (arrays as
    float32, images as uint8 (B, C, H, W), labels as int64 (B,), str and JSON values as lists).
    A field whose shape varies between samples (``None`` axes in the manifest) is stacked when
    the batch's samples share one shape, else it is a list of B tensors. The split over ranks
    and workers and the handling of uneven splits are described in the module docstring.

    **Transform.** ``transform(sample, generator) -> dict`` runs in the DataLoader workers (in
    this process with ``num_workers=0``) on every decoded sample, ``{field: value, "key": str}``
    with values as they would be in a batch (a field of shape (3, 2) as a tensor (3, 2), a label
    as an int64 scalar tensor, str and JSON as they are), and returns the sample's fields; it
    may change shapes, drop fields or add new ones (say two augmented views ``"u"`` and ``"v"``
    of one ``"image"``). ``generator`` is a fresh ``torch.Generator`` seeded from
    ``(seed, epoch, key)``: draw all randomness from it, and a sample gets the same
    augmentation in an epoch whatever ``num_workers``, shuffle order, rank split or
    ``start_batch``, and another in every epoch. An error in the transform stops the epoch; it
    propagates with a note naming the sample's key and shard.

    **Collation.** By default each field of the (transformed) samples is stacked into a tensor
    (B, ...) when its tensors (or NumPy arrays) share one shape and dtype, is a list of B tensors
    when they differ, and is a list of B values otherwise (str, JSON, Python numbers).
    ``collate(samples) -> dict`` replaces this: it receives the batch's list of transformed
    samples (each with its ``"key"``) and returns the batch, e.g. token ids padded to the
    longest with an attention mask. It runs in the workers, and in this process for the last
    batches pooled from the workers' leftover samples; both give the same batch for the same
    samples. The batch's ``"key"`` is always the list of its samples' keys.

    ``transform`` and ``collate`` must be picklable when ``num_workers > 0``: top-level
    functions, ``functools.partial`` of them, or instances of top-level classes (no lambdas or
    nested functions).

    **Damaged data** is skipped, counted in :attr:`skipped` and logged (a warning naming the
    shard and, for a sample, its key), never delivered and never a crash: a sample whose
    member does not decode, or whose float arrays hold NaN or Inf (after conversion to
    float32); a shard that is missing or unreadable (all its samples); a shard whose tar
    structure is damaged (it is read past the damage, from the next valid tar header on, so
    only the samples that lost a member count). Each shard's sha256 is compared with the
    manifest's once per file version and process (once for all workers), on the bytes read
    anyway; a mismatch is a warning, as changed bytes that still decode cannot be told from
    good ones. At construction, a shard directory that disagrees with its manifest is a
    warning (not a refusal): ``.tar`` files the manifest does not list are never streamed;
    missing shards and sizes other than the manifest's lose samples, counted when read. A
    training run that skips too many samples fails
    (:attr:`clipmath.multimodal.trainer.TrainConfig.max_skipped_fraction`); ``clipmath shards
    inspect`` lists every disagreement (:func:`~clipmath.datasets.shards.check_shards`).

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
        fields: the fields to deliver, each in the manifest and in every sample: a tuple of stored
            field names, delivered under those names, or a mapping ``{batch name: stored field}``
            that renames them (several names may read one field), e.g.
            ``{"u": "image", "v": "label", "class_ids": "label"}``; renaming costs nothing per
            sample, unlike a transform.
        transform: ``transform(sample: dict, generator: torch.Generator) -> dict`` applied to
            every sample (see above), or ``None``.
        collate: ``collate(samples: list[dict]) -> dict`` forming each batch (see above), or
            ``None`` for the default.

    Raises:
        ValueError: for a bad argument (a ``transform`` or ``collate`` that is not callable, or
            not picklable with workers), a field the shards lack, or fewer shards than ranks.
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
        fields: tuple[str, ...] | dict[str, str] = ("u", "v"),
        transform: Callable[[dict, torch.Generator], dict] | None = None,
        collate: Callable[[list[dict]], dict] | None = None,
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
        for name, function in (("transform", transform), ("collate", collate)):
            _check_function(name, function, num_workers)
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        given = fields
        if isinstance(fields, (list, tuple)):
            fields = {name: name for name in fields} if len(set(fields)) == len(fields) else None
        if (
            not isinstance(fields, dict)
            or not fields
            or not all(isinstance(n, str) for n in (*fields, *fields.values()))
        ):
            raise ValueError(
                f"fields={given!r}: expected a non-empty tuple of distinct field names or a mapping of names to fields"
            )
        for stored in fields.values():
            if stored not in self.manifest.fields:
                raise ValueError(f"fields: {stored!r} is not in the shards; they hold {sorted(self.manifest.fields)}")
        if "key" in fields:
            raise ValueError("fields: 'key' is reserved for the batch's list of sample keys")
        stored_fields = tuple(dict.fromkeys(fields.values()))
        shards = tuple(
            _Shard(s.name, str(self.path / s.name), s.count, s.bytes, s.sha256, index)
            for index, s in enumerate(self.manifest.shards)
        )
        _warn_disagreements(self.path)
        if resampled:
            share, extra = divmod(samples_per_epoch, world_size)
            per_rank = [share + (r < extra) for r in range(world_size)]
        else:
            if len(shards) < world_size:
                raise ValueError(f"world_size={world_size}: more ranks than the {len(shards)} shards in {self.path}")
            per_rank = [sum(s.count for s in shards[r::world_size]) for r in range(world_size)]
            if len(shards[rank::world_size]) < num_workers:
                logger.warning(
                    "num_workers=%d exceeds the %d shards of rank %d; some workers stay idle",
                    num_workers,
                    len(shards[rank::world_size]),
                    rank,
                )
        self._per_rank = per_rank
        self._per_sample = transform is not None or collate is not None
        self._collate = collate
        self._plan_args = dict(
            shards=shards,
            fields=tuple((name, self.manifest.fields[name]) for name in stored_fields),
            names=tuple(fields.items()),
            members=frozenset(f"{name}.{info.ext}" for name, info in self.manifest.fields.items()),
            batch_size=batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            shuffle_buffer=shuffle_buffer,
            rank_samples=per_rank[rank] if resampled else None,
            transform=transform,
            collate=collate,
            verdicts=torch.zeros((len(shards), 3), dtype=torch.int64).share_memory_() if num_workers else None,
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
            raise ValueError(f"start_batch={start_batch}: expected at most batches_per_epoch={self.batches_per_epoch}")
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
        """The workers' full batches; their tails (blocks, or samples with a transform) go to ``tails``."""
        for item in items:
            self._skipped.update(item.pop(_SKIPPED))
            if _TAIL in item:
                tails.extend(_unpack(item[_TAIL]) if self._per_sample else item[_TAIL])
            else:
                yield from map(_unpack if self._per_sample else _to_batch, item[_GROUP])

    def _tail_batches(self, tails: list[dict]) -> Iterator[dict]:
        """The pooled tails as further batches, the last one short unless dropped."""
        if self._per_sample:
            for start in range(0, len(tails), self.batch_size):
                samples = tails[start : start + self.batch_size]
                if len(samples) == self.batch_size or not self.drop_last:
                    yield _collate(samples, self._collate)
            return
        for batch in _batches(tails, self.batch_size):
            if _size(batch) == self.batch_size or not self.drop_last:
                yield _to_batch(batch)
