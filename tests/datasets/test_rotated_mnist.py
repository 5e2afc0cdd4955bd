"""Rotated MNIST: rotation direction and exactness at 0 and 90 degrees, the domain-major layout, bad input."""

import numpy as np
import pytest

from clipmath.datasets.rotated_mnist import ROTATED_MNIST_ANGLES, rotate_digits, rotated_mnist


@pytest.fixture(scope="module")
def digits():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), np.arange(5) % 3


def test_zero_is_the_identity_and_ninety_is_rot90(digits):
    images, _ = digits
    assert np.array_equal(rotate_digits(images, 0.0), images)
    # A quarter turn maps pixel centres onto pixel centres: bilinear interpolation is exact.
    assert np.array_equal(rotate_digits(images, 90.0), np.rot90(images, axes=(1, 2)))


def test_positive_angles_turn_counter_clockwise_on_screen():
    image = np.zeros((1, 9, 9), dtype=np.uint8)
    image[0, 4, 8] = 255  # a dot right of the centre
    turned = rotate_digits(image, 45.0)[0]
    top, left = np.unravel_index(turned.argmax(), turned.shape)
    assert top < 4 and left > 4  # up and to the right: counter-clockwise with rows pointing down


def test_every_image_at_every_angle_domain_major(digits):
    images, labels = digits
    turned, out_labels, domains = rotated_mnist(images, labels)
    n, d = len(images), len(ROTATED_MNIST_ANGLES)
    assert turned.shape == (n * d, 1, 28, 28) and turned.dtype == np.uint8
    assert np.array_equal(domains, np.repeat(np.arange(d), n)) and np.array_equal(out_labels, np.tile(labels, d))
    for k, angle in enumerate(ROTATED_MNIST_ANGLES):
        assert np.array_equal(turned[k * n : (k + 1) * n, 0], rotate_digits(images, angle))


@pytest.mark.parametrize(
    "args, named",
    [
        ((np.zeros((2, 28, 28), dtype=np.float32), np.zeros(2, dtype=np.int64)), "images"),
        ((np.zeros((2, 28, 28), dtype=np.uint8), np.zeros(3, dtype=np.int64)), "labels"),
        ((np.zeros((2, 28, 28), dtype=np.uint8), np.zeros(2, dtype=np.int64), [0.0, 0.0]), "angles"),
        ((np.zeros((2, 28, 28), dtype=np.uint8), np.zeros(2, dtype=np.int64), [float("nan")]), "angles"),
    ],
)
def test_bad_input_names_the_argument(args, named):
    with pytest.raises(ValueError, match=named):
        rotated_mnist(*args)
