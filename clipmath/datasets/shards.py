"""Write samples into webdataset tar shards beside a ``manifest.json``; read and verify it.

Layout of a shard directory::

    shard-000000.tar   {key}.u.npy, {key}.v.npy, ... per sample (see :mod:`.fields`)
    shard-000001.tar
    manifest.json      format version, per-shard sample count / size / sha256, the total,
                       every field's extension, shape and dtype, and the source config

Shards and the manifest are written atomically (a hidden temporary file in the same
directory, fsync, then rename), and the manifest last, so an interrupted write never leaves a
half shard named like a good one nor a manifest that lists one.

:func:`check_shards` lists every disagreement of a directory with its manifest (unlisted,
missing, size, checksum, count); :func:`tar_members` reads a tar archive past damaged headers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import webdataset as wds

from clipmath._atomic import atomic_open, commit
from clipmath.datasets.checks import check_int, check_name
from clipmath.datasets.fields import FieldInfo, encode_field

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_PATTERN = "shard-{index:06d}.tar"

# Tar geometry (POSIX ustar, as Python's tarfile writes it): a 512-byte header per member, data
# padded to 512-byte blocks, two zero blocks at the end, the whole padded to 20-block records.
_BLOCK = 512
_RECORD = 20 * _BLOCK
_MAX_MEMBER_NAME = 100


@dataclass(frozen=True)
class ShardInfo:
    """One shard as the manifest records it.

    Attributes:
        name: file name inside the shard directory, e.g. ``shard-000000.tar``.
        count: number of samples in it.
        bytes: file size in bytes.
        sha256: hex digest of the file.
    """

    name: str
    count: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The contents of ``manifest.json``.

    Attributes:
        shards: the shards in write order.
        fields: field name -> :class:`FieldInfo`, the same for every sample but for the
            lengths of the axes recorded as ``None``.
        source: the config of the source the samples came from (any JSON value), or ``None``.
        format_version: version of this layout.
    """

    shards: tuple[ShardInfo, ...]
    fields: dict[str, FieldInfo]
    source: Any = None
    format_version: int = FORMAT_VERSION

    @property
    def total(self) -> int:
        """Number of samples over all shards."""
        return sum(shard.count for shard in self.shards)

    def to_json(self) -> str:
        """The manifest as JSON text (with the derived ``total`` for readers of the file)."""
        data = {
            "format_version": self.format_version,
            "total": self.total,
            "fields": {name: dataclasses.asdict(info) for name, info in self.fields.items()},
            "shards": [dataclasses.asdict(shard) for shard in self.shards],
            "source": self.source,
        }
        return json.dumps(data, indent=2) + "\n"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tar_bytes(payload: int) -> int:
    """Size of a tar file whose members (headers plus padded data) take ``payload`` bytes."""
    return math.ceil((payload + 2 * _BLOCK) / _RECORD) * _RECORD


def _member_bytes(members: dict[str, bytes]) -> int:
    """Bytes the members take inside a tar: a header each plus data padded to whole blocks."""
    return sum(_BLOCK + math.ceil(len(data) / _BLOCK) * _BLOCK for data in members.values())


def _encode_sample(sample: Any) -> tuple[str, dict[str, bytes], dict[str, FieldInfo]]:
    if not isinstance(sample, dict) or "__key__" not in sample:
        raise ValueError(f"sample={sample!r:.80}: expected a dict with a '__key__' entry")
    key = sample["__key__"]
    check_name("__key__", key)
    members, infos = {}, {}
    for name, value in sample.items():
        if name == "__key__":
            continue
        check_name(f"sample {key!r}: field name", name)
        data, info = encode_field(name, value)
        member = f"{name}.{info.ext}"
        if len(f"{key}.{member}") > _MAX_MEMBER_NAME:
            raise ValueError(
                f"sample {key!r}: member name {key}.{member!r} is longer than the "
                f"{_MAX_MEMBER_NAME} characters a ustar tar header holds"
            )
        members[member], infos[name] = data, info
    if not members:
        raise ValueError(f"sample {key!r}: has no fields besides '__key__'")
    return key, members, infos


def _merge_fields(key: str, infos: dict[str, FieldInfo], seen: dict[str, FieldInfo]) -> dict[str, FieldInfo]:
    """The fields of the samples so far (``seen``) and of one more (``infos``) as one record.

    A field must have the same extension and dtype in every sample; an array or image field may
    vary in shape if its number of axes stays the same, and the axes that vary become ``None``.
    """
    if infos.keys() != seen.keys():
        raise ValueError(f"sample {key!r}: fields {sorted(infos)} differ from the first sample's {sorted(seen)}")
    merged = {}
    for name, info in infos.items():
        before = seen[name]
        if info != before and (
            info.ext != before.ext
            or info.dtype != before.dtype
            or info.shape is None
            or before.shape is None
            or len(info.shape) != len(before.shape)
        ):
            raise ValueError(
                f"sample {key!r}: field {name!r} is {info}, but the samples before it store {before}; "
                "every sample must store a field with the same extension and dtype, and arrays "
                "with the same number of axes"
            )
        if info.shape != before.shape:
            shape = tuple(a if a == b else None for a, b in zip(info.shape, before.shape, strict=True))
            before = dataclasses.replace(before, shape=shape)
        merged[name] = before
    return merged


class _ShardSink:
    """Opens, fills and closes shards in ``out_dir``, recording each closed one."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.done: list[ShardInfo] = []
        self.count = 0
        self.payload = 0
        self._handle: IO[bytes] | None = None
        self._writer: wds.TarWriter | None = None

    @property
    def is_open(self) -> bool:
        return self._handle is not None

    def _paths(self) -> tuple[Path, Path]:
        name = SHARD_PATTERN.format(index=len(self.done))
        return self.out_dir / f".{name}.tmp", self.out_dir / name

    def open(self) -> None:
        self._handle = open(self._paths()[0], "wb")
        # mtime=0 and fixed owner names make the shard bytes a function of the samples alone.
        self._writer = wds.TarWriter(self._handle, encoder=False, mtime=0, user="clipmath", group="clipmath")
        self.count = self.payload = 0

    def write(self, key: str, members: dict[str, bytes]) -> None:
        self._writer.write({"__key__": key, **members})
        self.count += 1
        self.payload += _member_bytes(members)

    def close(self) -> None:
        tmp, path = self._paths()
        self._writer.close()  # end-of-archive blocks; the handle stays open
        commit(self._handle, tmp, path)
        self._handle = None
        self.done.append(ShardInfo(path.name, self.count, path.stat().st_size, sha256_file(path)))

    def abort(self) -> None:
        """Drop the open shard's temporary file and every shard closed so far."""
        if self._handle is not None:
            # The writer may be mid-member after an error; closing it only pads a file we delete.
            with contextlib.suppress(Exception):
                self._writer.close()
            self._handle.close()
            self._paths()[0].unlink(missing_ok=True)
        for shard in self.done:
            (self.out_dir / shard.name).unlink(missing_ok=True)


def write_shards(
    samples: Iterable[dict],
    out_dir: str | os.PathLike,
    *,
    max_count: int | None = None,
    max_bytes: int | None = None,
    source: Any = None,
) -> Manifest:
    """Write samples into ``shard-000000.tar``, ``shard-000001.tar``, ... and ``manifest.json``.

    A new shard starts when the current one holds ``max_count`` samples, or when adding the
    next sample would make the tar file larger than ``max_bytes`` (a sample larger than
    ``max_bytes`` on its own gets a shard to itself, with a warning). With neither limit every
    sample goes into one shard.

    Args:
        samples: iterable of dicts ``{"__key__": str, "u": value, "v": value, **extras}``; keys
            and field names are non-empty and dot-free, every sample has the same fields, each
            stored alike (see :mod:`clipmath.datasets.fields` for the value types: arrays of any
            shape (n_u,) / (n_v,) / (C, H, W) ..., PIL images, PNG/JPEG bytes, int, str, JSON).
            An array or image may vary in shape between samples (sequences of different
            lengths) if its dtype and number of axes stay the same; the manifest then records
            ``None`` at the axes that vary.
        out_dir: directory to write into; created if absent, must not already hold shards.
        max_count: most samples per shard, or ``None``.
        max_bytes: most bytes per shard file, or ``None``.
        source: JSON-serializable config of the data source, stored in the manifest.

    Returns:
        The :class:`Manifest` written beside the shards.

    Raises:
        ValueError: for a bad limit, an unserializable ``source``, an ``out_dir`` that already
            holds shards, no samples, or a malformed sample (naming its key and field); the
            shards written by this call are removed again.
    """
    check_int("max_count", max_count, 1, optional=True)
    check_int("max_bytes", max_bytes, 1, optional=True)
    try:
        json.dumps(source)
    except (TypeError, ValueError) as err:
        raise ValueError(f"source={source!r:.80}: expected a JSON-serializable value ({err})") from None
    out_dir = Path(out_dir)
    if (out_dir / MANIFEST_NAME).exists() or any(out_dir.glob("shard-*.tar")):
        raise ValueError(f"out_dir={str(out_dir)!r}: already holds shards; expected a new or empty directory")
    out_dir.mkdir(parents=True, exist_ok=True)

    sink = _ShardSink(out_dir)
    fields: dict[str, FieldInfo] | None = None
    previous_key = None
    try:
        for sample in samples:
            key, members, infos = _encode_sample(sample)
            # Fields as stored so far: an axis whose length varies becomes None.
            fields = _merge_fields(key, infos, infos if fields is None else fields)
            if key == previous_key:
                # Consecutive equal keys would merge into one sample when read back.
                raise ValueError(f"sample {key!r}: same __key__ as the sample before it")
            previous_key = key
            size = _member_bytes(members)
            if sink.is_open and (
                sink.count == max_count or (max_bytes is not None and _tar_bytes(sink.payload + size) > max_bytes)
            ):
                sink.close()
            if not sink.is_open:
                sink.open()
                if max_bytes is not None and _tar_bytes(size) > max_bytes:
                    logger.warning("sample %r alone takes %d bytes > max_bytes=%d", key, _tar_bytes(size), max_bytes)
            sink.write(key, members)
        if fields is None:
            raise ValueError("samples: empty; expected at least one sample")
        sink.close()
        manifest = Manifest(tuple(sink.done), fields, source)
        path = out_dir / MANIFEST_NAME
        with atomic_open(path) as handle:
            handle.write(manifest.to_json().encode("utf-8"))
    except BaseException:
        sink.abort()
        raise
    logger.info("wrote %d samples in %d shards to %s", manifest.total, len(manifest.shards), out_dir)
    return manifest


def read_manifest(shard_dir: str | os.PathLike) -> Manifest:
    """Load the manifest of a shard directory written by :func:`write_shards`.

    Args:
        shard_dir: the directory holding ``manifest.json``.

    Raises:
        ValueError: if there is no manifest, or its format version is not one this code reads.
    """
    path = Path(shard_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(
            f"shard_dir={str(shard_dir)!r}: no {MANIFEST_NAME}; expected a directory written by write_shards"
        )
    data = json.loads(path.read_text())
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version={data.get('format_version')!r}; expected {FORMAT_VERSION}")
    fields = {
        name: FieldInfo(info["ext"], None if info["shape"] is None else tuple(info["shape"]), info["dtype"])
        for name, info in data["fields"].items()
    }
    shards = tuple(ShardInfo(**shard) for shard in data["shards"])
    return Manifest(shards, fields, data["source"], data["format_version"])


def verify_shards(shard_dir: str | os.PathLike) -> dict[str, str]:
    """Check every shard the manifest lists against its recorded sha256.

    Args:
        shard_dir: the directory holding ``manifest.json`` and the shards.

    Returns:
        shard name -> ``"ok"``, ``"mismatch"`` (the bytes changed) or ``"missing"``, in manifest order.
    """
    shard_dir = Path(shard_dir)
    status = {}
    for shard in read_manifest(shard_dir).shards:
        path = shard_dir / shard.name
        if not path.is_file():
            status[shard.name] = "missing"
        else:
            status[shard.name] = "ok" if sha256_file(path) == shard.sha256 else "mismatch"
    return status


@dataclass(frozen=True)
class TarDamage:
    """Where a tar archive stopped parsing before its end, and where reading resumed.

    Attributes:
        offset: byte offset of the block that did not parse (a header with a bad checksum, a
            zeroed header with members after it, or a header whose data is cut short).
        resumed_at: offset of the next block after it that parses as a ustar header with a correct
            checksum, where reading went on; ``None`` if there is none (the rest is lost).
        reason: what tarfile said, or why the stop was not the end of the archive.
    """

    offset: int
    resumed_at: int | None
    reason: str


def _next_header(data: bytes, after: int) -> int | None:
    """The first offset >= ``after``, a multiple of 512, whose block parses as a ustar header."""
    at = after + 257  # the ustar magic sits at byte 257 of a header
    while (found := data.find(b"ustar", at)) >= 0:
        offset = found - 257
        if offset % _BLOCK == 0:
            try:
                tarfile.TarInfo.frombuf(data[offset : offset + _BLOCK], "utf-8", "surrogateescape")
                return offset
            except tarfile.HeaderError:
                pass
        at = found + 1
    return None


def _header_error(block: bytes) -> str:
    """Why tarfile rejects ``block`` as a member header (it stops quietly past the first one)."""
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as err:
        if isinstance(err, tarfile.EOFHeaderError):
            return "a zero block, with more data after it"
        return f"header: {err}"
    return "a header that does not parse with the one before it"


def tar_members(data: bytes) -> Iterator[tuple[str, bytes] | TarDamage]:
    """The regular-file members of a tar archive held in memory, read past damage.

    Python's tarfile parses the members (ustar, pax and GNU headers alike). Where it stops
    before the end of the archive (a header whose checksum fails, say after a few flipped
    bytes; member data cut short; a zeroed header with more members after it; or bytes other
    than zeros after the end-of-archive blocks), a :class:`TarDamage` is yielded and reading
    resumes at the next 512-byte block that parses as a ustar header with a correct checksum
    (tar members always start on a multiple of 512 bytes). So damage to one header loses that
    member only, not the rest of the archive.

    Args:
        data: the whole archive.

    Yields:
        ``(member name, member bytes)`` for each regular file, in archive order, and a
        :class:`TarDamage` at each place reading stopped early.
    """
    handle = io.BytesIO(data)  # shares the bytes object's buffer: no copy
    start = 0
    while True:
        tar, reading, error = None, None, None
        try:
            handle.seek(start)
            # Member offsets are absolute: a TarFile starts at its file object's position.
            tar = tarfile.TarFile(fileobj=handle, mode="r")
            for info in tar:
                if info.isreg():
                    reading = info.offset
                    content = tar.extractfile(info).read()
                    reading = None
                    yield info.name, content
        except tarfile.TarError as err:  # ReadError and its kin: bad first header, data cut short
            error = err
        if reading is not None:  # this member's header parsed, its data did not
            stop = reading
        else:
            stop = start if tar is None else tar.offset
            if error is None:
                rest = len(data) - stop
                if rest <= 0 or data.count(0, stop) == rest:
                    return  # the end-of-archive blocks and zero padding: a clean end
                error = _header_error(data[stop : stop + _BLOCK])
        resume = _next_header(data, stop + _BLOCK)
        yield TarDamage(stop, resume, str(error))
        if resume is None:
            return
        start = resume


@dataclass(frozen=True)
class ShardProblem:
    """One disagreement between a shard directory and its manifest.

    Attributes:
        name: the shard file's name.
        kind: ``"unlisted"`` (a ``.tar`` file on disk that the manifest does not list: its
            samples are never streamed), ``"missing"`` (listed but not on disk), ``"size"``,
            ``"checksum"`` or ``"count"`` (differs from what the manifest records; ``count`` also
            reports tar damage and samples that lack one of the manifest's fields).
        detail: what was found, against what the manifest says.
    """

    name: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {self.kind}: {self.detail}"


def count_samples(data: bytes, members: frozenset[str] = frozenset()) -> tuple[int, int, list[TarDamage]]:
    """The samples in a shard's bytes, as the stream groups them (runs of members with one key).

    Args:
        data: the shard file's bytes.
        members: the member suffixes ``"{field}.{ext}"`` every sample should hold.

    Returns:
        (samples, of them those lacking one of ``members``, the tar damage met).
    """
    count, incomplete, key, held, damage = 0, 0, None, set(), []
    for member in tar_members(data):
        if isinstance(member, TarDamage):
            damage.append(member)
            continue
        this_key, _, suffix = member[0].partition(".")
        if this_key != key:
            count += 1
            incomplete += key is not None and not members <= held
            key, held = this_key, set()
        held.add(suffix)
    incomplete += key is not None and not members <= held
    return count, incomplete, damage


def check_shards(shard_dir: str | os.PathLike, *, deep: bool = True) -> list[ShardProblem]:
    """Every disagreement between a shard directory and its manifest.

    Always (cheap: a directory listing and a ``stat`` per shard): ``.tar`` files on disk that
    the manifest does not list (hidden files, such as a writer's temporary ones, are not
    shards), listed shards missing on disk, and sizes other than the manifest's. With
    ``deep``, also (reading every shard): sha256 digests and sample counts other than the
    manifest's, and tar damage.

    Args:
        shard_dir: the directory holding ``manifest.json`` and the shards.
        deep: also hash every shard and count its samples.

    Returns:
        The problems, listed shards in manifest order, then unlisted files by name.

    Raises:
        ValueError: if there is no readable manifest (see :func:`read_manifest`).
    """
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir)
    members = frozenset(f"{name}.{info.ext}" for name, info in manifest.fields.items())
    problems = []
    for shard in manifest.shards:
        path = shard_dir / shard.name
        if not path.is_file():
            detail = f"not on disk; the manifest lists {shard.count} samples"
            problems.append(ShardProblem(shard.name, "missing", detail))
            continue
        size = path.stat().st_size
        if size != shard.bytes:
            problems.append(ShardProblem(shard.name, "size", f"{size} bytes; the manifest says {shard.bytes}"))
        if not deep:
            continue
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != shard.sha256:
            detail = f"sha256 {digest[:12]}...; the manifest says {shard.sha256[:12]}..."
            problems.append(ShardProblem(shard.name, "checksum", detail))
        count, incomplete, damage = count_samples(data, members)
        if count != shard.count or incomplete or damage:
            lacking = f", {incomplete} of them lacking members" if incomplete else ""
            where = "".join(
                f"; unreadable from byte {d.offset} to {'the end' if d.resumed_at is None else d.resumed_at}"
                for d in damage
            )
            problems.append(
                ShardProblem(
                    shard.name, "count", f"{count} samples found{lacking}; the manifest says {shard.count}{where}"
                )
            )
    listed = {shard.name for shard in manifest.shards}
    for path in sorted(shard_dir.glob("*.tar")):
        if path.name not in listed and not path.name.startswith("."):
            detail = "a shard file the manifest does not list; its samples are not streamed"
            problems.append(ShardProblem(path.name, "unlisted", detail))
    return problems
