"""The experiments ``clipmath run`` knows, one module each.

An experiment module defines a config dataclass (its defaults are the ``quick`` preset, with a
top-level ``seed: int``) and ``run(config, run_dir) -> Headline``, and exposes them as
``EXPERIMENT = Experiment(...)``. Add a new experiment by appending its module name below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: (name used on the command line, module under clipmath.experiments)
_MODULES: dict[str, str] = {
    "gaussian-2d": "gaussian_2d",
    "theory-check": "theory_check",
    "gaussian-train": "gaussian_train",
    "gaussian-process": "gaussian_process",
    "mnist-labels": "mnist_labels",
    "gca-views": "gca_views",
    "gca-domains": "gca_domains",
    "gca-bimodal": "gca_bimodal",
    "image-text": "image_text",
    "ocean": "ocean",
}


@dataclass(frozen=True)
class Headline:
    """The few figures a run prints at the end, each beside its reference value.

    Attributes:
        rows: (name, measured value, reference value or '' , what the reference is).
    """

    rows: list[tuple[str, Any, Any, str]]


@dataclass(frozen=True)
class Experiment:
    """An experiment: its name, one-line summary, config dataclass and run function."""

    name: str
    summary: str
    config_type: type
    run: Callable[[Any, Any], Headline]


def names() -> list[str]:
    """Every registered experiment name, in listing order."""
    return list(_MODULES)


def get(name: str) -> Experiment:
    """The experiment called ``name``.

    Raises:
        ValueError: if ``name`` is not registered.
    """
    if name not in _MODULES:
        raise ValueError(f"experiment {name!r} unknown; available: {', '.join(_MODULES)}")
    module = importlib.import_module(f"clipmath.experiments.{_MODULES[name]}")
    return module.EXPERIMENT
