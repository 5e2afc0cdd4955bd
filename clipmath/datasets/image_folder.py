"""Captioned images from a folder or from img2dataset tar shards, as clipmath samples or arrays.

Two layouts, the two that img2dataset writes (``output_format="files"`` and ``"webdataset"``),
and what a user's own folder of captioned images usually looks like:

* **loose files**: a folder (searched recursively, in sorted order) of ``{key}.jpg`` (or
  ``.jpeg``, ``.png``, ``.webp``) beside ``{key}.txt`` (the caption, UTF-8) and optionally
  ``{key}.json`` (metadata: url, size, licence, ...);
* **tar shards**: ``00000.tar``, ``00001.tar``, ... whose members are ``{key}.jpg``,
  ``{key}.txt``, ``{key}.json`` (img2dataset also writes ``00000.parquet`` and
  ``00000_stats.json`` beside them; they are not read). A folder holding ``*.tar`` files is
  read as shards, in sorted order; a path to one ``.tar`` is read alone.

As in webdataset, the key is the path up to the first dot of the file name (relative to the
folder, or the member name in a tar), with ``/`` replaced by ``-`` so that it is a valid shard
key: ``00000/000000012.jpg`` in a files layout gives ``00000-000000012``, the member
``000000012.jpg`` of a tar gives ``000000012``. A key's files are grouped; members of a tar are
grouped while consecutive (img2dataset writes them so), so a tar is streamed, never held in
memory. A sample without a caption takes the ``"caption"`` string of its JSON, if any.

Each sample becomes ``{"__key__": key, "image": PNG or JPEG bytes, "caption": str, "meta":
dict}`` (``meta`` is ``{}`` without a JSON), for
:func:`~clipmath.datasets.shards.write_shards` (``{key}.image.jpg|png``, ``{key}.caption.txt``,
``{key}.meta.json``), which :class:`~clipmath.datasets.stream.ShardStream` then reads like any
shard set. Images are RGB: an RGB JPEG or PNG is passed on byte for byte when no ``size`` is
asked; any other image (grey, palette, alpha composited over white, CMYK, WebP) is converted,
and with ``size`` every image is resized (see :data:`RESIZE_MODES`), then written as JPEG
(quality 95) or PNG, as :data:`IMAGE_FORMATS` says (by default the first image's format, so that
a folder mixing JPEGs and PNGs still gives one ``image`` field).

A sample with no image, no caption (or an empty one), an image that does not decode or a JSON
that does not parse is skipped with a warning and counted (``skipped=`` collects them), or,
with ``strict=True``, raises a ``ValueError`` naming it.

* :func:`image_text_samples`: shard samples.
* :func:`load_image_text`: the images as one uint8 array (N, 3, H, W), with captions, keys and meta.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipmath.datasets.checks import check_int, check_name
from clipmath.datasets.png import encode_png

logger = logging.getLogger(__name__)

#: Image extensions read, in the order of preference when a key has more than one.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
#: How ``size`` is reached: ``center_crop`` scales the shorter side to ``size`` and crops the
#: centre (img2dataset's ``center_crop``); ``pad`` scales the longer side to ``size`` and pads
#: with white (img2dataset's ``border``); ``stretch`` resizes to ``size`` x ``size`` ignoring
#: the aspect ratio.
RESIZE_MODES = ("center_crop", "pad", "stretch")
#: How :func:`image_text_samples` stores images: ``auto`` keeps the first image's format (JPEG
#: -> ``jpg``, anything else -> ``png``) and converts any other image to it, since every sample
#: of a shard set stores a field alike; ``jpg`` or ``png`` sets it.
IMAGE_FORMATS = ("auto", "jpg", "png")
JPEG_QUALITY = 95

_CAPTION_EXT = "txt"
_META_EXT = "json"
_MAX_WARNINGS = 10
_MAX_SIZE = 8192


@dataclass(frozen=True)
class ImageTextArrays:
    """Captioned images read into memory.

    Attributes:
        images: uint8 (N, 3, H, W) RGB (the layout ShardStream delivers).
        captions: N captions.
        keys: N sample keys.
        meta: N metadata dicts (``{}`` where there was no JSON).
    """

    images: np.ndarray
    captions: tuple[str, ...]
    keys: tuple[str, ...]
    meta: tuple[dict, ...]

    def __len__(self) -> int:
        return len(self.captions)


@dataclass
class _Group:
    key: str
    where: str  # the file or tar member path, for messages
    files: dict[str, bytes | Path]  # lower-case extension -> bytes (tar) or path (folder)

    def read(self, ext: str) -> bytes:
        value = self.files[ext]
        return value.read_bytes() if isinstance(value, Path) else value


class _Skip(Exception):
    """A sample that cannot be used, with the reason."""


def _split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a relative path: up to the first dot of its last part, '/' -> '-'."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{head}/{stem}" if head else stem
    return key.strip("/").replace("/", "-"), ext.lower() if dot else ""


def _folder_groups(folder: Path) -> Iterator[_Group]:
    groups: dict[str, _Group] = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            relative = path.relative_to(folder).as_posix()
            key, ext = _split_name(relative)
            if ext in IMAGE_EXTENSIONS or ext in (_CAPTION_EXT, _META_EXT):
                group = groups.setdefault(key, _Group(key, str(path), {}))
                group.files.setdefault(ext, path)
    yield from (groups[key] for key in sorted(groups))


def _tar_groups(path: Path) -> Iterator[_Group]:
    try:
        with tarfile.open(path, "r|*") as archive:  # streamed: members in order, read once
            group = None
            for member in archive:
                if not member.isfile():
                    continue
                key, ext = _split_name(member.name)
                if not (ext in IMAGE_EXTENSIONS or ext in (_CAPTION_EXT, _META_EXT)):
                    continue
                if group is None or key != group.key:
                    if group is not None:
                        yield group
                    group = _Group(key, f"{path}:{member.name}", {})
                handle = archive.extractfile(member)
                group.files.setdefault(ext, handle.read())
            if group is not None:
                yield group
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable tar file ({err}); expected img2dataset shards") from None


def _sources(source: Any) -> list[Path]:
    paths = [source] if isinstance(source, (str, os.PathLike)) else source
    try:
        paths = [Path(p) for p in paths]
    except TypeError:
        raise ValueError(f"source={source!r}: expected a folder, a .tar file, or a sequence of them") from None
    if not paths:
        raise ValueError("source=[]: expected at least one folder or .tar file")
    for path in paths:
        if not (path.is_dir() or (path.is_file() and path.name.endswith(".tar"))):
            raise ValueError(f"source: {str(path)!r} is neither a folder nor a .tar file")
    return paths


def _groups(paths: list[Path]) -> Iterator[_Group]:
    for path in paths:
        if path.is_file():
            yield from _tar_groups(path)
            continue
        shards = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(".tar"))
        if shards:
            for shard in shards:
                yield from _tar_groups(shard)
        else:
            yield from _folder_groups(path)


def _over_white(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _resize(image: Image.Image, size: int, mode: str) -> Image.Image:
    width, height = image.size
    if mode == "stretch":
        return image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    if mode == "center_crop":
        scale = size / min(width, height)
    else:
        scale = size / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = image.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0)
    if mode == "center_crop":
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        return image.crop((left, top, left + size, top + size))
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(image, ((size - new[0]) // 2, (size - new[1]) // 2))
    return canvas


def _caption_and_meta(group: _Group) -> tuple[str, dict]:
    meta: dict = {}
    if _META_EXT in group.files:
        try:
            meta = json.loads(group.read(_META_EXT))
        except (UnicodeDecodeError, ValueError) as err:
            raise _Skip(f"its {_META_EXT} does not parse ({err})") from None
        if not isinstance(meta, dict):
            raise _Skip(f"its {_META_EXT} holds a {type(meta).__name__}; expected an object")
    if _CAPTION_EXT in group.files:
        try:
            caption = group.read(_CAPTION_EXT).decode("utf-8")
        except UnicodeDecodeError as err:
            raise _Skip(f"its caption is not UTF-8 ({err})") from None
    elif isinstance(meta.get("caption"), str):
        caption = meta["caption"]
    else:
        raise _Skip(f"no {{key}}.{_CAPTION_EXT} caption")
    caption = caption.strip()
    if not caption:
        raise _Skip("an empty caption")
    return caption, meta


def _image(group: _Group, size: int | None, mode: str) -> tuple[Image.Image, bytes | None, str]:
    """The image of one sample: (RGB image, source bytes or None, source format).

    The RGB image is resized; the source bytes are returned when they can be passed on
    unchanged, else None.
    """
    ext = next((e for e in IMAGE_EXTENSIONS if e in group.files), None)
    if ext is None:
        raise _Skip("no image")
    data = group.read(ext)
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format
            if size is not None and fmt == "JPEG":
                image.draft("RGB", (size, size))  # decode at a reduced scale, still >= size
            image.load()  # the whole file: a truncated or corrupt one fails here, not in training
            unchanged = size is None and fmt in ("JPEG", "PNG") and image.mode == "RGB"
            rgb = _over_white(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise _Skip(f"an image that does not decode ({type(err).__name__}: {err})") from None
    if size is not None:
        rgb = _resize(rgb, size, mode)
    return rgb, data if unchanged else None, fmt


def _encode(image: Image.Image, ext: str) -> bytes:
    if ext == "jpg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()
    return encode_png(np.asarray(image, dtype=np.uint8))


def _check_args(size: int | None, resize_mode: str, image_format: str = "auto") -> None:
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format={image_format!r}: expected one of {', '.join(IMAGE_FORMATS)}")
    check_int("size", size, 1, optional=True)
    if size is not None and size > _MAX_SIZE:
        raise ValueError(f"size={size!r}: expected an int in [1, {_MAX_SIZE}] or None")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode={resize_mode!r}: expected one of {', '.join(RESIZE_MODES)}")


def _records(
    source: Any, size: int | None, resize_mode: str, strict: bool, skipped: list | None
) -> Iterator[tuple[str, Image.Image, bytes | None, str, str, dict]]:
    paths = _sources(source)
    count = n_skipped = 0
    for group in _groups(paths):
        try:
            try:
                check_name("key", group.key)
            except ValueError:
                raise _Skip("a key that is not a valid shard key (empty, or a leading '_')") from None
            caption, meta = _caption_and_meta(group)
            image, data, fmt = _image(group, size, resize_mode)
        except _Skip as reason:
            message = f"{group.where}: sample {group.key!r} has {reason}"
            if strict:
                raise ValueError(f"{message}; expected an image and a caption per key (strict=True)") from None
            n_skipped += 1
            if skipped is not None:
                skipped.append((group.key, str(reason)))
            if n_skipped <= _MAX_WARNINGS:
                logger.warning("skipped: %s", message)
            continue
        count += 1
        yield group.key, image, data, fmt, caption, meta
    if n_skipped:
        logger.warning("read %d samples from %s, skipped %d", count, [str(p) for p in paths], n_skipped)


def image_text_samples(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    size: int | None = None,
    resize_mode: str = "center_crop",
    image_format: str = "auto",
    strict: bool = False,
    skipped: list | None = None,
) -> Iterator[dict]:
    """Shard samples of a captioned image folder or img2dataset shards (module docstring).

    Args:
        source: a folder of loose files, a folder of ``*.tar`` shards, one ``.tar``, or a
            sequence of these (read in order).
        size: resize every image to ``size`` x ``size`` (1 to 8192), or ``None`` to keep sizes.
        resize_mode: one of :data:`RESIZE_MODES`.
        image_format: one of :data:`IMAGE_FORMATS`.
        strict: raise on an unusable sample instead of skipping it.
        skipped: a list that receives ``(key, reason)`` for every skipped sample.

    Yields:
        ``{"__key__": key, "image": JPEG or PNG bytes (RGB), "caption": str, "meta": dict}``.

    Raises:
        ValueError: for a bad source, size, mode or format (before the first sample), a tar that
            does not read, or with ``strict`` an unusable sample (naming its file).
    """
    _check_args(size, resize_mode, image_format)
    _sources(source)
    return _samples(source, size, resize_mode, image_format, strict, skipped)


def _samples(source, size, resize_mode, image_format, strict, skipped) -> Iterator[dict]:
    ext = None if image_format == "auto" else image_format
    for key, image, data, fmt, caption, meta in _records(source, size, resize_mode, strict, skipped):
        own = "jpg" if fmt == "JPEG" else "png"
        ext = ext or own
        yield {
            "__key__": key,
            "image": data if data is not None and own == ext else _encode(image, ext),
            "caption": caption,
            "meta": meta,
        }


def load_image_text(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    size: int | None = None,
    resize_mode: str = "center_crop",
    strict: bool = False,
    skipped: list | None = None,
    limit: int | None = None,
) -> ImageTextArrays:
    """A captioned image folder or img2dataset shards read into arrays (for evaluation).

    Args:
        source: a folder of loose files, a folder of ``*.tar`` shards, one ``.tar``, or a
            sequence of these (read in order).
        size: resize every image to ``size`` x ``size`` (1 to 8192), or ``None`` to keep sizes;
            then every image must have the same size.
        resize_mode: one of :data:`RESIZE_MODES`.
        strict: raise on an unusable sample instead of skipping it.
        skipped: a list that receives ``(key, reason)`` for every skipped sample.
        limit: read at most this many samples (the first ones), or all.

    Returns:
        An :class:`ImageTextArrays`, images uint8 (N, 3, H, W).

    Raises:
        ValueError: as :func:`image_text_samples`; for no usable sample; without ``size``,
            for images of different sizes (naming the first that differs).
    """
    _check_args(size, resize_mode)
    check_int("limit", limit, 1, optional=True)
    images, captions, keys, metas = [], [], [], []
    for key, image, _, _, caption, meta in _records(source, size, resize_mode, strict, skipped):
        array = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
        if images and array.shape != images[0].shape:
            raise ValueError(
                f"sample {key!r}: image of shape {array.shape}, but {keys[0]!r} is {images[0].shape}; "
                "expected one size (pass size= to resize)"
            )
        images.append(array)
        captions.append(caption)
        keys.append(key)
        metas.append(meta)
        if limit is not None and len(images) == limit:
            break
    if not images:
        raise ValueError(f"source={source!r}: no usable sample (an image with a caption)")
    return ImageTextArrays(np.stack(images), tuple(captions), tuple(keys), tuple(metas))
