"""The unfiltered PNG writer and its PIL-free reader, against PIL, and on damaged bytes."""

import io

import numpy as np
import pytest
from PIL import Image

from clipmath.datasets.png import decode_png, encode_png

MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_round_trip_and_pil_reads_the_same_pixels(channels):
    pixels = np.random.default_rng(channels).integers(0, 256, (7, 5, channels), dtype=np.uint8)
    data = encode_png(pixels)
    np.testing.assert_array_equal(decode_png(data), pixels.transpose(2, 0, 1))
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == MODES[channels]
        seen = np.asarray(image)
    np.testing.assert_array_equal(seen.reshape(7, 5, channels), pixels)


def test_grey_two_dimensional_input():
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(decode_png(encode_png(pixels)), pixels[None])


@pytest.mark.parametrize("mode", ["L", "RGB", "P"])
def test_filtered_and_palette_pngs_from_pil_decode_through_pil(mode):
    # A smooth gradient makes PIL choose filtered scanlines; mode P has a palette chunk.
    ramp = np.add.outer(np.arange(16), np.arange(16)).astype(np.uint8) * 7
    image = Image.fromarray(ramp).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    expected = np.asarray(image.convert("RGB" if mode == "P" else mode))
    got = decode_png(buffer.getvalue())
    if mode == "P":
        got = np.asarray(Image.open(buffer).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(got, expected[None] if expected.ndim == 2 else expected.transpose(2, 0, 1))


def test_damaged_bytes_are_refused():
    data = bytearray(encode_png(np.full((4, 4), 9, dtype=np.uint8)))
    with pytest.raises(ValueError, match="signature"):
        decode_png(b"GIF89a" + bytes(data[6:]))
    flipped = bytearray(data)
    flipped[40] ^= 0xFF  # inside the IDAT chunk: its CRC no longer matches
    with pytest.raises(ValueError, match="CRC"):
        decode_png(bytes(flipped))
    with pytest.raises(ValueError, match="truncated|IEND"):
        decode_png(bytes(data[:-20]))


def test_bad_pixels_are_named():
    with pytest.raises(ValueError, match="pixels"):
        encode_png(np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="pixels"):
        encode_png(np.zeros((3, 3, 5), dtype=np.uint8))
