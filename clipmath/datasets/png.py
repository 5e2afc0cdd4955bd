"""PNG for uint8 pixel arrays: an unfiltered writer and a reader that decodes it without PIL.

A PNG file (ISO/IEC 15948) is the signature, an ``IHDR`` chunk (width, height, bit depth, colour
type, compression, filter and interlace methods), ``IDAT`` chunks holding one zlib stream, and
``IEND``; each chunk is ``length (4 bytes, big-endian) | type (4) | data | CRC-32 of type and data``.
The zlib stream decompresses to ``height`` scanlines, each a filter-type byte followed by
``width * channels`` bytes. :func:`encode_png` writes every scanline with filter type 0 (None),
so :func:`decode_png` turns such a file into pixels with one ``zlib.decompress`` and a reshape:
about 5 µs for a 28x28 digit, against about 30 µs through PIL, whose per-image overhead would
otherwise dominate the decoding of small images. Any other valid PNG (filtered scanlines,
palettes, 16-bit depth, interlacing) is decoded by PIL.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Colour type -> channels, for 8-bit images: grey, RGB, grey + alpha, RGBA.
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
_COLOUR_TYPE = {channels: colour for colour, channels in _CHANNELS.items()}
_IHDR = struct.Struct(">IIBBBBB")
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk with its CRC


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(pixels: np.ndarray, compress_level: int = 6) -> bytes:
    """The PNG bytes of an 8-bit image, every scanline unfiltered.

    Args:
        pixels: uint8 (H, W) grey or (H, W, C) with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
        compress_level: zlib level, 0-9.

    Raises:
        ValueError: for another dtype or shape.
    """
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(
            f"pixels: expected a uint8 array (H, W) or (H, W, C), got {getattr(pixels, 'dtype', type(pixels))} "
            f"{getattr(pixels, 'shape', '')}"
        )
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    if channels not in _COLOUR_TYPE or height == 0 or width == 0:
        raise ValueError(f"pixels: shape {pixels.shape}: expected H, W >= 1 and 1 to 4 channels")
    rows = np.zeros((height, 1 + width * channels), dtype=np.uint8)  # column 0: filter type 0
    rows[:, 1:] = pixels.reshape(height, width * channels)
    header = _IHDR.pack(width, height, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level))
        + _chunk(b"IEND", b"")
    )


def decode_png(data: bytes) -> np.ndarray:
    """The pixels of PNG bytes as uint8 (C, H, W), C = 1 for grey.

    Unfiltered 8-bit images (as :func:`encode_png` writes them) are decoded directly, with
    every chunk's CRC checked; anything else goes through PIL.

    Raises:
        ValueError (or PIL's error) for bytes that are not a valid PNG.
    """
    pixels = _decode_unfiltered(data)
    if pixels is not None:
        return pixels
    with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
        array = np.asarray(image, dtype=np.uint8)  # (H, W) or (H, W, C)
    # copy(): C order and memory torch may own (asarray may give a read-only view).
    return (array[None] if array.ndim == 2 else array.transpose(2, 0, 1)).copy()


def _decode_unfiltered(data: bytes) -> np.ndarray | None:
    """(C, H, W) pixels of an unfiltered, non-interlaced 8-bit PNG, or None for any other PNG."""
    if not data.startswith(SIGNATURE):
        raise ValueError("not PNG data (bad signature)")
    offset, header, idat = len(SIGNATURE), None, []
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if len(body) != length or struct.unpack_from(">I", data, offset + 8 + length)[0] != zlib.crc32(kind + body):
            raise ValueError(f"PNG chunk {kind!r} at byte {offset} is truncated or fails its CRC")
        if kind == b"IHDR":
            header = _IHDR.unpack(body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        elif kind[0] & 0x20 == 0:  # a critical chunk (e.g. PLTE) this path does not handle
            return None
        offset += 12 + length
    else:
        raise ValueError("PNG data ends before its IEND chunk")
    if header is None:
        raise ValueError("PNG data has no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _CHANNELS or interlace != 0:
        return None
    channels = _CHANNELS[colour]
    rows = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    if rows.size != height * (1 + width * channels):
        raise ValueError(f"PNG image data holds {rows.size} bytes, expected {height * (1 + width * channels)}")
    rows = rows.reshape(height, 1 + width * channels)
    if rows[:, 0].any():
        return None  # filtered scanlines: PIL undoes the filters
    return np.ascontiguousarray(rows[:, 1:].reshape(height, width, channels).transpose(2, 0, 1))


def decode_png_batch(members: list[bytes]) -> np.ndarray | None:
    """(N, C, H, W) pixels of PNGs as :func:`encode_png` writes them, sharing one image header.

    Each member must be the signature, the same ``IHDR`` chunk as the first, one ``IDAT`` chunk
    whose CRC holds, and ``IEND``, with unfiltered 8-bit scanlines. Then the only work per image
    is its ``zlib.decompress``. For anything else (another writer, a corrupt member) it returns
    None and the caller decodes member by member, which names what is wrong.

    Args:
        members: the PNG bytes of N >= 1 images.
    """
    head = members[0][:33]  # signature (8) and the IHDR chunk (25)
    if len(head) != 33 or not head.startswith(SIGNATURE) or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = _IHDR.unpack(head[16:29])
    if depth != 8 or colour not in _CHANNELS or interlace != 0:
        return None
    if struct.unpack(">I", head[29:33])[0] != zlib.crc32(head[12:29]):
        return None
    row_bytes = 1 + width * _CHANNELS[colour]
    pixels = []
    for data in members:
        length = int.from_bytes(data[33:37], "big")
        end = 41 + length
        if (
            data[:33] != head
            or data[37:41] != b"IDAT"
            or data[end + 4 :] != _IEND
            or int.from_bytes(data[end : end + 4], "big") != zlib.crc32(data[37:end])
        ):
            return None
        try:
            pixels.append(zlib.decompress(data[41:end]))
        except zlib.error:
            return None
        if len(pixels[-1]) != height * row_bytes:
            return None
    rows = np.frombuffer(b"".join(pixels), dtype=np.uint8).reshape(len(members), height, row_bytes)
    if rows[:, :, 0].any():
        return None
    channels = _CHANNELS[colour]
    return np.ascontiguousarray(rows[:, :, 1:].reshape(len(members), height, width, channels).transpose(0, 3, 1, 2))
