r"""The two random views of the GCA experiments, and the noisy-view corruptions (Chen et al. 2024, official code).

Shared by ``gca-views`` and ``gca-domains`` (a module of pieces, not an experiment).

**Views.** :class:`TwoViews` runs in the stream's workers (:class:`~clipmath.datasets.ShardStream`)
and draws every random number from the sample's generator, seeded by (seed, epoch, key):
random resized crop, horizontal flip (off for digits), small rotation, translation and shear
(composed into one bilinear warp, :func:`_warp`), brightness and contrast jitter (and saturation
and grey for colour images), Gaussian blur, random erasing, written with torch ops
(torchvision's random transforms draw from the global generator). A sample's views are thus the
same whatever the worker count, shuffle order or resume point.

**Noise.** With probability ``p`` (drawn from the sample's generator) one of the two views, u or
v at random, is replaced by a view of an unrelated image (``replace``: an image of a fixed
seeded pool of *training* images, never the sample itself) or by a heavy corruption of the
image (``corrupt``: a crop of 5-15 % of its area blown up, then half of it erased, in the spirit
of the ``strong_DA`` options ``strong_crop``/``large_erase`` of the official code of Chen et al. 2024).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F

from clipmath.experiments.config import check_values

_KEY = re.compile(r"-(\d+)$")


@dataclass
class AugmentConfig:
    """The random view of one image (SimCLR-style, sized for 28x28 digits by default).

    Attributes:
        crop_scale: (min, max) area fraction of the random resized crop.
        crop_ratio: (min, max) aspect ratio of the crop (log-uniform).
        flip_p: probability of a horizontal flip (0 for digits, 0.5 for CIFAR).
        rotation: rotation angle drawn from [-rotation, rotation] degrees.
        translate: shift in each axis drawn from [-translate, translate] times the side.
        shear: shear angle drawn from [-shear, shear] degrees.
        jitter_p: probability of the intensity jitter.
        brightness: brightness factor drawn from [1 - brightness, 1 + brightness].
        contrast: contrast factor drawn from [1 - contrast, 1 + contrast].
        saturation: saturation factor drawn from [1 - saturation, 1 + saturation] (colour only).
        grayscale_p: probability of turning a colour view grey.
        blur_p: probability of a 3x3 Gaussian blur.
        blur_sigma: (min, max) of its standard deviation in pixels.
        erase_p: probability of erasing a random rectangle.
        erase_scale: (min, max) area fraction of the erased rectangle.
    """

    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 4.0 / 3.0])
    flip_p: float = 0.0
    rotation: float = 15.0
    translate: float = 0.1
    shear: float = 10.0
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    grayscale_p: float = 0.2
    blur_p: float = 0.3
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 1.0])
    erase_p: float = 0.3
    erase_scale: list[float] = field(default_factory=lambda: [0.02, 0.15])

    def __post_init__(self) -> None:
        pairs = (
            ("crop_scale", self.crop_scale, 0, 1),
            ("crop_ratio", self.crop_ratio, 0, math.inf),
            ("blur_sigma", self.blur_sigma, 0, math.inf),
            ("erase_scale", self.erase_scale, 0, 1),
        )
        for name, value, low, high in pairs:
            check_values(
                (
                    f"augment.{name}",
                    value,
                    len(value) == 2 and low < value[0] <= value[1] <= high,
                    f"[min, max] with {low} < min <= max <= {high}",
                )
            )
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "erase_p"):
            value = getattr(self, name)
            check_values((f"augment.{name}", value, 0 <= value <= 1, "a probability in [0, 1]"))
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            check_values((f"augment.{name}", value, 0 <= value < 1, "a number in [0, 1)"))
        for name, high in (("rotation", 180), ("translate", 0.5), ("shear", 45)):
            value = getattr(self, name)
            check_values((f"augment.{name}", value, 0 <= value <= high, f"a number in [0, {high}]"))


#: Uniform numbers drawn per view: a fixed block, so a view's draws never depend on its branches.
#: Layout: 0-19 crop tries (area, log-aspect) x 10, 20-21 crop position, 22 flip, 23 angle,
#: 24-25 shift, 26 shear, 27 jitter?, 28-30 factors, 31-33 their order, 34 grey?, 35 blur?,
#: 36 sigma, 37 erase?, 38-39 erased area and aspect, 40-41 its position.
VIEW_DRAWS = 42
_CROP_TRIES = 10
#: ITU-R 601 luma weights, for saturation and grey.
_LUMA = (0.299, 0.587, 0.114)


def _lerp(u: float, low: float, high: float) -> float:
    return low + (high - low) * u


def _box(draws: list[float], height: int, width: int, scale, ratio) -> tuple[int, int, int, int] | None:
    """(top, left, h, w) of the first try that fits: area fraction in ``scale``, log-uniform aspect in ``ratio``.

    ``draws`` holds two uniforms per try and two for the position, as torchvision's
    ``RandomResizedCrop.get_params`` draws them (but from the sample's generator); None when no
    try fits.
    """
    *tries, u_top, u_left = draws
    for u_area, u_aspect in zip(tries[0::2], tries[1::2], strict=False):
        target = height * width * _lerp(u_area, *scale)
        aspect = math.exp(_lerp(u_aspect, math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(u_top * (height - h + 1)), int(u_left * (width - w + 1)), h, w
    return None


def _matmul(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    """The product of two 3x3 matrices (nested lists): cheaper than any array library at this size."""
    return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]


#: Normalised coordinates [x_n, y_n, 1] of the pixel centres, (H, W, 3), per (H, W).
_BASE_GRIDS: dict[tuple[int, int], Tensor] = {}


def _base_grid(height: int, width: int) -> Tensor:
    if (height, width) not in _BASE_GRIDS:
        ys = (2 * torch.arange(height, dtype=torch.float32) + 1) / height - 1
        xs = (2 * torch.arange(width, dtype=torch.float32) + 1) / width - 1
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        _BASE_GRIDS[(height, width)] = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    return _BASE_GRIDS[(height, width)]


def _warp(
    x: Tensor, box: tuple[int, int, int, int], flip: bool, angle: float, shift: tuple[float, float], shear: float
) -> Tensor:
    r"""Crop ``box`` and resize it to the full image, flip, then rotate, shear and shift: one bilinear warp.

    The rotation and shear are about the image centre.

    All five are affine, so they compose into one map of continuous pixel coordinates (origin
    at the top-left corner, pixel centres at half-integers); the view samples the image at the
    inverse map of every output pixel centre q (zeros outside) with one ``grid_sample``, instead
    of a resize and then an affine resampling. The inverse, applied to q right to left: undo the
    shift and the linear part :math:`L = RS` about the centre c, :math:`q \mapsto L^{-1}(q - c - t) + c`;
    undo the flip; map the full image back onto the crop box. The angle and shear follow
    torchvision's ``affine`` (positive turns the picture counter-clockwise on screen), and
    away from the borders the warp equals torchvision's ``resized_crop`` then ``affine`` on
    images that bilinear resampling reproduces exactly (tested).

    Args:
        x: (C, H, W) float image.
        box: (top, left, h, w) of the crop.
        flip: mirror left-right after the crop.
        angle: rotation in degrees.
        shift: (dx, dy) translation in pixels.
        shear: horizontal shear angle in degrees.
    """
    channels, height, width = x.shape
    top, left, h, w = box
    cx, cy = width / 2.0, height / 2.0
    theta, tan_phi = math.radians(angle), math.tan(math.radians(shear))
    cos, sin = math.cos(theta), math.sin(theta)
    # In these y-down coordinates a picture turning counter-clockwise on screen is the rotation
    # R = [[cos, -sin], [sin, cos]], after the shear S = [[1, -tan], [0, 1]]; L^{-1} = S^{-1} R^{-1}.
    inv = [[cos - tan_phi * sin, sin + tan_phi * cos], [-sin, cos]]
    ox, oy = cx + shift[0], cy + shift[1]
    undo_affine = [
        [inv[0][0], inv[0][1], cx - inv[0][0] * ox - inv[0][1] * oy],
        [inv[1][0], inv[1][1], cy - inv[1][0] * ox - inv[1][1] * oy],
        [0.0, 0.0, 1.0],
    ]
    undo_flip = [[-1.0, 0.0, width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] if flip else None
    undo_crop = [[w / width, 0.0, left], [0.0, h / height, top], [0.0, 0.0, 1.0]]
    # grid_sample reads normalised coordinates, x_n = 2 X / W - 1 (align_corners=False).
    to_norm = [[2.0 / width, 0.0, -1.0], [0.0, 2.0 / height, -1.0], [0.0, 0.0, 1.0]]
    from_norm = [[width / 2.0, 0.0, width / 2.0], [0.0, height / 2.0, height / 2.0], [0.0, 0.0, 1.0]]
    pixel = _matmul(undo_crop, _matmul(undo_flip, undo_affine) if flip else undo_affine)
    theta_n = torch.tensor(_matmul(_matmul(to_norm, pixel), from_norm)[:2], dtype=torch.float32)
    grid = (_base_grid(height, width) @ theta_n.T).to(x.dtype)
    return F.grid_sample(x[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def _grey(x: Tensor) -> Tensor:
    """(1, H, W) luma of a (3, H, W) image."""
    return (x * x.new_tensor(_LUMA).view(3, 1, 1)).sum(0, keepdim=True)


def _blur(x: Tensor, sigma: float) -> Tensor:
    """3x3 Gaussian blur of standard deviation ``sigma`` pixels, edges reflected."""
    k = torch.exp(-torch.tensor([1.0, 0.0, 1.0], dtype=x.dtype) / (2 * sigma * sigma))
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(x.shape[0], 1, 3, 3)
    return F.conv2d(F.pad(x[None], (1, 1, 1, 1), mode="reflect"), kernel, groups=x.shape[0])[0]


def augment_view(image: Tensor, config: AugmentConfig, generator: torch.Generator) -> Tensor:
    """One random view of an image; its :data:`VIEW_DRAWS` uniforms drawn at once from ``generator``.

    The steps, in order, as in the SimCLR recipe of the paper's runs (the official code's
    ``cl_models/modules/transformations/simclr.py``), sized for small images: random resized
    crop (area fraction ``crop_scale``, log-uniform aspect ``crop_ratio``, resized back),
    horizontal flip, rotation, shear and translation (the five composed into one bilinear warp,
    :func:`_warp`); with probability ``jitter_p`` brightness,
    contrast (and saturation, colour only) factors applied in a random order; grey (colour only);
    a 3x3 Gaussian blur; erasing a random rectangle (filled with 0). Written with torch ops so
    that every random number comes from the sample's generator (torchvision's random transforms
    draw from the global one).

    Args:
        image: (C, H, W) uint8 image, C = 1 or 3.
        config: the augmentation parameters.
        generator: the sample's generator.

    Returns:
        (C, H, W) uint8 view.
    """
    r = torch.rand(VIEW_DRAWS, generator=generator, dtype=torch.float64).tolist()
    x = image.float() / 255.0
    channels, height, width = x.shape
    box = _box(r[: 2 * _CROP_TRIES + 2], height, width, config.crop_scale, config.crop_ratio)
    if box is None:  # no try fits: the whole image (torchvision's fallback for a square image)
        box = (0, 0, height, width)
    shift = (_lerp(r[24], -1, 1) * config.translate * width, _lerp(r[25], -1, 1) * config.translate * height)
    x = _warp(
        x,
        box,
        r[22] < config.flip_p,
        _lerp(r[23], -config.rotation, config.rotation),
        shift,
        _lerp(r[26], -config.shear, config.shear),
    )
    if r[27] < config.jitter_p:
        factors = [
            _lerp(r[28], 1 - config.brightness, 1 + config.brightness),
            _lerp(r[29], 1 - config.contrast, 1 + config.contrast),
            _lerp(r[30], 1 - config.saturation, 1 + config.saturation),
        ]
        for step in sorted(range(3), key=lambda i: r[31 + i]):
            if step == 0:
                x = x * factors[0]
            elif step == 1:
                mean = (_grey(x) if channels == 3 else x).mean()
                x = (x - mean) * factors[1] + mean
            elif channels == 3:
                grey = _grey(x)
                x = (x - grey) * factors[2] + grey
            x = x.clamp(0, 1)
    if channels == 3 and r[34] < config.grayscale_p:
        x = _grey(x).expand(3, -1, -1)
    if r[35] < config.blur_p:
        x = _blur(x, _lerp(r[36], *config.blur_sigma))
    if r[37] < config.erase_p:
        erase = _box([r[38], r[39], r[40], r[41]], height, width, config.erase_scale, (0.3, 3.3))
        if erase is not None:
            top, left, h, w = erase
            x = x.clone()
            x[:, top : top + h, left : left + w] = 0.0
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


def corrupt_view(image: Tensor, generator: torch.Generator) -> Tensor:
    """A heavy corruption: a crop of 5-15 % of the area blown up to full size, then 40-60 % of it erased.

    In the spirit of the official code's ``strong_DA`` options ``strong_crop`` and ``large_erase``:
    little of the image's content survives.

    Args:
        image: (C, H, W) uint8.
        generator: the sample's generator (12 + 4 uniforms).

    Returns:
        (C, H, W) uint8.
    """
    r = torch.rand(2 * _CROP_TRIES + 2 + 4, generator=generator, dtype=torch.float64).tolist()
    x = image.float() / 255.0
    _, height, width = x.shape
    box = _box(r[: 2 * _CROP_TRIES + 2], height, width, (0.05, 0.15), (0.75, 4.0 / 3.0))
    x = _warp(x, box or (0, 0, height, width), False, 0.0, (0.0, 0.0), 0.0)
    erase = _box(r[2 * _CROP_TRIES + 2 :], height, width, (0.4, 0.6), (0.5, 2.0))
    if erase is not None:
        top, left, h, w = erase
        x[:, top : top + h, left : left + w] = 0.0
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


class TwoViews:
    """The stream transform: two random views of a sample's image, one replaced with probability p.

    Called in the stream's workers as ``transform(sample, generator)`` on ``{"image": uint8
    (C, H, W), "key": str, ...}``; returns ``{"u": view, "v": view, "noisy": int64 0 or 1}`` and
    the sample's other fields unchanged (e.g. ``domain_ids``, which a domain target plan reads). The
    draws, all from ``generator``: three uniforms (whether the pair is noisy, which view, u or
    v, is replaced, the pool image for ``replace``, redrawn in the rare case it is the sample's
    own image), then the two views (:func:`augment_view`), then the corruption (``corrupt``).

    Args:
        augment: the view parameters.
        noise_rate: p in [0, 1).
        noise_kind: ``replace`` or ``corrupt``.
        pool: (M, C, H, W) uint8 pool images for ``replace`` (None when p = 0 or ``corrupt``).
        pool_index: (M,) the pool images' indices in the training set (the number in a key).
    """

    def __init__(
        self,
        augment: AugmentConfig,
        noise_rate: float = 0.0,
        noise_kind: str = "replace",
        pool: Tensor | None = None,
        pool_index: list[int] | None = None,
    ):
        if not 0 <= noise_rate < 1:
            raise ValueError(f"noise_rate={noise_rate!r}: expected a number in [0, 1)")
        if noise_kind not in ("replace", "corrupt"):
            raise ValueError(f"noise_kind={noise_kind!r}: expected 'replace' or 'corrupt'")
        if noise_rate > 0 and noise_kind == "replace" and (pool is None or len(pool) < 2):
            raise ValueError("pool: expected at least two images for noise_kind='replace' with noise_rate > 0")
        self.augment, self.noise_rate, self.noise_kind = augment, noise_rate, noise_kind
        self.pool = pool
        self.pool_index = (
            list(pool_index) if pool_index is not None else list(range(len(pool) if pool is not None else 0))
        )

    def __call__(self, sample: dict, generator: torch.Generator) -> dict:
        """The two views of one sample (class docstring: the draws and the fields returned).

        Args:
            sample: ``{"image": uint8 (C, H, W), "key": str, ...}`` from the stream.
            generator: the sample's generator; every draw comes from it.

        Returns:
            ``{"u": view, "v": view, "noisy": int64 0 or 1}`` and the sample's other fields.
        """
        image = sample["image"]
        u_noisy, u_which, u_pick = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        noisy, replace_u = u_noisy < self.noise_rate, u_which < 0.5
        views = [image, image]
        if noisy and self.noise_kind == "replace":
            own = _KEY.search(sample["key"])
            own = int(own.group(1)) if own else -1
            pick = int(u_pick * len(self.pool))
            while self.pool_index[pick] == own:  # never the sample's own image (rare: redraw)
                pick = int(torch.randint(0, len(self.pool), (), generator=generator))
            views[0 if replace_u else 1] = self.pool[pick]
        u, v = (augment_view(view, self.augment, generator) for view in views)
        if noisy and self.noise_kind == "corrupt":
            if replace_u:
                u = corrupt_view(image, generator)
            else:
                v = corrupt_view(image, generator)
        others = {name: value for name, value in sample.items() if name not in ("image", "key")}
        return {**others, "u": u, "v": v, "noisy": torch.tensor(int(noisy), dtype=torch.int64)}

    def __repr__(self) -> str:
        return f"TwoViews(noise_rate={self.noise_rate}, noise_kind={self.noise_kind!r})"


def clean_views(images: Tensor, augment: AugmentConfig, seed: int) -> tuple[Tensor, Tensor]:
    """Two clean random views of each test image (for alignment), from generators seeded by (seed, i)."""
    u, v = [], []
    for i, image in enumerate(images):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + i)
        u.append(augment_view(image, augment, generator))
        v.append(augment_view(image, augment, generator))
    return torch.stack(u), torch.stack(v)
