"""clipmath: bimodal contrastive learning, from exact Gaussian theory to real training.

Subpackages: ``theory`` (closed forms, numpy/scipy only), ``multimodal`` (metrics, losses,
optimal transport, models, training, inference), ``datasets`` (sources and webdataset shards)
and ``experiments`` (the paper's experiments and the ``clipmath`` command).
"""

__version__ = "0.1.0"
