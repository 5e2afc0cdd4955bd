"""How one field of a sample is stored in a shard and read back.

A sample ``{"__key__": "sample-0000000", "u": ..., "v": ..., "label": 3}`` is stored as one tar
member per field, named ``{key}.{field}.{ext}`` (webdataset's extension-per-field convention,
which keeps the img2dataset extensions while letting both modalities be arrays). Keys and field
names carry no dots, so webdataset splits every member name at its first dot into the key and
``{field}.{ext}``. The extension follows the value's type:

* ``np.ndarray`` of a real numeric dtype -> ``npy``; read back as a ``torch.float32`` tensor
  of the same shape;
* ``PIL.Image.Image`` (mode L, LA, RGB or RGBA) -> ``png`` (unfiltered, :mod:`.png`); PNG or JPEG ``bytes`` ->
  ``png`` or ``jpg`` as they are; read back as a ``torch.uint8`` tensor (C, H, W) of the stored pixel
  values (C = 1 for grayscale). Images stay uint8 through the stream's worker queues, 4 times
  fewer bytes than float32; models convert them (e.g. ``image.float() / 255``) themselves;
* ``int`` (or NumPy integer) -> ``cls``; read back as a ``torch.int64`` scalar tensor;
* ``str`` -> ``txt``; read back as ``str``;
* ``dict``, ``list`` or ``float`` -> ``json``; read back as the parsed JSON value.
"""

from __future__ import annotations

import functools
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipmath.datasets.png import decode_png, encode_png

_NPY_V1_MAGIC = b"\x93NUMPY\x01\x00"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_IMAGE_MODES = ("L", "LA", "RGB", "RGBA")


@dataclass(frozen=True)
class FieldInfo:
    """What a field holds in every sample of a shard set (recorded in the manifest).

    Attributes:
        ext: the member extension, one of ``npy``, ``png``, ``jpg``, ``cls``, ``txt``, ``json``.
        shape: the stored array shape (``npy``), the decoded (C, H, W) of an image, ``()`` for
            ``cls``, ``None`` for ``txt`` and ``json``. An axis whose length varies between
            samples (sequences of different lengths, images of different sizes) is ``None``
            (``null`` in ``manifest.json``), e.g. ``(None, 64)``.
        dtype: the stored dtype name (``float32``, ``uint8`` for images, ``int64`` for ``cls``),
            ``str`` for ``txt``, ``json`` for ``json``.
    """

    ext: str
    shape: tuple[int | None, ...] | None
    dtype: str


def _image_info(name: str, image: Image.Image, ext: str) -> FieldInfo:
    if image.mode not in _IMAGE_MODES:
        raise ValueError(f"field {name!r}: image mode={image.mode!r}: expected one of {', '.join(_IMAGE_MODES)}")
    width, height = image.size
    return FieldInfo(ext, (len(image.getbands()), height, width), "uint8")


def encode_field(name: str, value: Any) -> tuple[bytes, FieldInfo]:
    """Serialize one field value to the bytes of its tar member.

    Args:
        name: the field name (for error messages).
        value: an array of any shape, a PIL image, PNG/JPEG bytes, an int, a str, or a
            JSON-serializable dict, list or float (see the module table).

    Returns:
        (member bytes, the field's :class:`FieldInfo`).

    Raises:
        ValueError: for a value of any other type, an object/complex array, or an image mode
            other than L, LA, RGB, RGBA.
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise ValueError(f"field {name!r}: array dtype={value.dtype}: expected a real numeric dtype")
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return buffer.getvalue(), FieldInfo("npy", tuple(value.shape), value.dtype.name)
    if isinstance(value, Image.Image):
        info = _image_info(name, value, "png")
        return encode_png(np.asarray(value, dtype=np.uint8)), info
    if isinstance(value, (bytes, bytearray)):
        ext = "png" if value.startswith(_PNG_MAGIC) else "jpg" if value.startswith(_JPEG_MAGIC) else None
        if ext is None:
            raise ValueError(f"field {name!r}: bytes value: expected PNG or JPEG data (magic number)")
        with Image.open(io.BytesIO(value)) as image:
            return bytes(value), _image_info(name, image, ext)
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return str(int(value)).encode("ascii"), FieldInfo("cls", (), "int64")
    if isinstance(value, str):
        return value.encode("utf-8"), FieldInfo("txt", None, "str")
    if isinstance(value, (dict, list, float)):
        return json.dumps(value).encode("utf-8"), FieldInfo("json", None, "json")
    raise ValueError(
        f"field {name!r}: value of type {type(value).__name__}: expected np.ndarray, PIL image, "
        "PNG/JPEG bytes, int, str, or a dict/list/float for JSON"
    )


@functools.lru_cache(maxsize=64)
def _npy_layout(header: bytes) -> tuple[np.dtype, tuple[int, ...], str]:
    stream = io.BytesIO(header)
    np.lib.format.read_magic(stream)
    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    return dtype, shape, "F" if fortran_order else "C"


def read_npy_header(data: bytes) -> tuple[int, np.dtype, tuple[int, ...], str] | None:
    """Parse the header of ``.npy`` bytes in format version 1.0.

    Every sample of a field shares one header, so its parse is cached: np.load parses the
    header text anew per call, which costs about 20 times the rest of the decode.

    Args:
        data: the member bytes (at least the header).

    Returns:
        (offset of the array data, dtype, shape, order ``"C"`` or ``"F"``), or ``None`` for
        another format version.

    Raises:
        ValueError: when the header does not parse.
    """
    if not data.startswith(_NPY_V1_MAGIC):
        return None
    offset = len(_NPY_V1_MAGIC) + 2 + int.from_bytes(data[8:10], "little")
    return (offset, *_npy_layout(data[:offset]))


def _load_npy(data: bytes) -> np.ndarray:
    """The array in ``.npy`` bytes, as a read-only view."""
    header = read_npy_header(data)
    if header is None:
        return np.load(io.BytesIO(data), allow_pickle=False)
    offset, dtype, shape, order = header
    # frombuffer refuses object dtypes and data shorter than the header promises.
    return np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape, order=order)


def decode_field(ext: str, data: bytes) -> Any:
    """Turn a tar member's bytes back into the value the stream delivers (module table).

    Args:
        ext: the member extension.
        data: the member bytes.

    Returns:
        a float32 tensor (``npy``), a uint8 tensor (C, H, W) (``png``, ``jpg``), an int64
        scalar tensor (``cls``), a str (``txt``) or the parsed JSON value (``json``).

    Raises:
        ValueError (or the decoder's own error) when the bytes do not decode.
    """
    if ext == "npy":
        # np.array copies: the array is a read-only view of ``data`` that torch cannot own.
        return torch.from_numpy(np.array(_load_npy(data), dtype=np.float32))
    if ext == "png":
        return torch.from_numpy(decode_png(data))
    if ext == "jpg":
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
            array = np.asarray(image, dtype=np.uint8)  # (H, W) or (H, W, C)
        # copy() gives C order and memory torch may own (asarray may give a read-only view).
        return torch.from_numpy((array[None] if array.ndim == 2 else array.transpose(2, 0, 1)).copy())
    if ext == "cls":
        return torch.tensor(int(data), dtype=torch.int64)
    if ext == "txt":
        return data.decode("utf-8")
    if ext == "json":
        return json.loads(data)
    raise ValueError(f"ext={ext!r}: expected one of npy, png, jpg, cls, txt, json")
