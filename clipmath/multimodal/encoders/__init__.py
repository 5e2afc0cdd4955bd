"""Encoders :math:`g_u`, :math:`g_v` built by name from config (Section 2 of Baptista, Stuart & Tran (2025)).

>>> from clipmath.multimodal import encoders
>>> g_u = encoders.build("lenet", n_e=10)
>>> g_v = encoders.build("fixed", kind="one_hot", n_classes=10)
>>> g_u.config
{'name': 'lenet', 'n_e': 10, 'in_channels': 1, 'activation': 'relu', 'pool': 'max', 'normalize': None}
>>> rebuilt = encoders.build(**g_u.config)  # the same architecture; load_state_dict works

Every encoder maps a batch (B, ...) to (B, n_e) embeddings and has an int attribute ``n_e``;
image encoders take float images in [0, 1] or uint8 images (scaled by 1/255). Registered:

- ``linear`` (:class:`LinearEncoder`): :math:`g(x) = Gx`, eq. 38 (Gaussian experiments);
- ``mlp`` (:class:`MLPEncoder`): an MLP on flattened inputs;
- ``lenet`` (:class:`LeNet`): LeNet-5 for 28x28 images (labelled MNIST, Section 6.2);
- ``small_resnet`` (:class:`SmallResNet`): a three-stage ResNet for 32x32 or 28x28 images;
- ``sequence_transformer`` (:class:`SequenceTransformer`): the trajectory encoder of Section 6.3;
- ``fixed`` (:class:`FixedEncoder`): one-hot labels or the identity, no parameters;
- ``open_clip_vision`` (:class:`OpenClipVision`): open_clip's image tower (a named architecture
  or a small ViT config; optional local weights), uint8 images normalised as open_clip does;
- ``open_clip_text`` (:class:`OpenClipText`): open_clip's text tower on token ids
  (:class:`clipmath.datasets.tokens.TokenizeCaptions`); see also
  :mod:`~clipmath.multimodal.encoders.open_clip_adapter` (logit-scale convention, weights);
- ``bag_of_words`` (:class:`BagOfWords`): the mean of token vectors, projected; the same token
  ids as ``open_clip_text``, the baseline text tower.

Adding an encoder is one file plus one import line below: write a module here whose class
is decorated with ``@register("my_name")``, validates its arguments (``ValueError`` naming the
argument), sets ``self.n_e`` and documents its shapes; then import the module below. Its
constructor's keyword arguments are its config. The open_clip towers go in that way as
``open_clip_vision.py`` and ``open_clip_text.py`` (registered ``open_clip_vision`` and
``open_clip_text``); they should import ``open_clip`` inside the constructor so that importing
this package stays light.
"""

# Importing an encoder module (all below but _inputs and base) registers its encoder.
from clipmath.multimodal.encoders._inputs import MNIST_MEAN_STD
from clipmath.multimodal.encoders.bag_of_words import BagOfWords
from clipmath.multimodal.encoders.base import build, names, register
from clipmath.multimodal.encoders.fixed import FixedEncoder
from clipmath.multimodal.encoders.lenet import LeNet
from clipmath.multimodal.encoders.linear import LinearEncoder
from clipmath.multimodal.encoders.mlp import MLPEncoder
from clipmath.multimodal.encoders.open_clip_text import OpenClipText
from clipmath.multimodal.encoders.open_clip_vision import OpenClipVision
from clipmath.multimodal.encoders.projected import ProjectedEncoder
from clipmath.multimodal.encoders.sequence_transformer import SequenceTransformer
from clipmath.multimodal.encoders.small_resnet import SmallResNet

__all__ = [
    "MNIST_MEAN_STD",
    "BagOfWords",
    "FixedEncoder",
    "LeNet",
    "LinearEncoder",
    "MLPEncoder",
    "OpenClipText",
    "OpenClipVision",
    "ProjectedEncoder",
    "SequenceTransformer",
    "SmallResNet",
    "build",
    "names",
    "register",
]
