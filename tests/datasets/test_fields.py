"""encode_field / decode_field: the extension per value type and what the stream delivers."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from clipmath.datasets.fields import FieldInfo, decode_field, encode_field


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint8])
def test_arrays_are_npy_and_come_back_as_float32_of_the_same_values(dtype):
    value = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype) if dtype != np.uint8 else np.arange(24, dtype=dtype)
    data, info = encode_field("u", value)
    assert info == FieldInfo("npy", value.shape, np.dtype(dtype).name)
    decoded = decode_field("npy", data)
    assert decoded.dtype == torch.float32
    # Every value here is an integer below 2**24, exact in float32.
    assert np.array_equal(decoded.numpy(), value.astype(np.float32))


def test_float32_arrays_come_back_bitwise():
    value = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    value[0, 0] = -0.0
    data, _ = encode_field("u", value)
    assert decode_field("npy", data).numpy().tobytes() == value.tobytes()


def test_npy_in_fortran_order_or_another_format_version_decodes_too():
    value = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    data, _ = encode_field("u", value)
    assert np.array_equal(decode_field("npy", data).numpy(), value)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(value), version=(2, 0))
    assert np.array_equal(decode_field("npy", buffer.getvalue()).numpy(), value)


@pytest.mark.parametrize("cut", [5, 60, -4])
def test_cut_npy_bytes_fail_to_decode(cut):
    data, _ = encode_field("u", np.arange(6, dtype=np.float32))
    with pytest.raises(ValueError):
        decode_field("npy", data[:cut])


@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
def test_images_are_png_and_come_back_as_uint8_chw_of_the_same_pixels(mode, channels):
    pixels = np.random.default_rng(1).integers(0, 256, (5, 6, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)
    data, info = encode_field("u", image)
    assert info == FieldInfo("png", (channels, 5, 6), "uint8")
    decoded = decode_field("png", data)
    assert decoded.shape == (channels, 5, 6) and decoded.dtype == torch.uint8
    assert decoded.is_contiguous()
    assert np.array_equal(decoded.numpy(), pixels.transpose(2, 0, 1))


def test_encoded_image_bytes_keep_their_format_and_decode_to_uint8():
    pixels = np.full((4, 4, 3), (10, 128, 250), np.uint8)  # flat colours: JPEG keeps them within a few levels
    image = Image.fromarray(pixels)
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg")):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, quality=95)
        data, info = encode_field("u", buffer.getvalue())
        assert data == buffer.getvalue() and info == FieldInfo(ext, (3, 4, 4), "uint8")
        decoded = decode_field(ext, data)
        assert decoded.shape == (3, 4, 4) and decoded.dtype == torch.uint8
        error = np.abs(decoded.numpy().astype(int) - pixels.transpose(2, 0, 1))
        assert error.max() <= (0 if ext == "png" else 3)


def test_labels_text_and_json():
    data, info = encode_field("v", np.int64(7))
    assert info == FieldInfo("cls", (), "int64") and data == b"7"
    assert decode_field("cls", data).item() == 7 and decode_field("cls", data).dtype == torch.int64
    data, info = encode_field("v", "a photo of a 7")
    assert info == FieldInfo("txt", None, "str") and decode_field("txt", data) == "a photo of a 7"
    data, info = encode_field("meta", {"lat": 1.5, "ids": [1, 2]})
    assert info.ext == "json" and decode_field("json", data) == {"lat": 1.5, "ids": [1, 2]}


@pytest.mark.parametrize(
    "value",
    [True, None, b"GIF89a", np.array(["a"]), np.array([1 + 2j]), Image.new("I;16", (2, 2)), object()],
)
def test_unsupported_values_raise_naming_the_field(value):
    with pytest.raises(ValueError, match="field 'label'"):
        encode_field("label", value)


def test_unknown_extension_is_an_error():
    with pytest.raises(ValueError, match="ext='gif'"):
        decode_field("gif", b"")
