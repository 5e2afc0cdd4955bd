"""The encoder contract and the registry behind ``encoders.build``.

An encoder is an ``nn.Module`` mapping a batch ``(B, ...)`` of one modality to ``(B, n_e)``
embeddings, :math:`g_u` or :math:`g_v` of Section 2 of Baptista, Stuart & Tran (2025). Every
encoder

- exposes its embedding dimension as the int attribute ``n_e``;
- validates its constructor arguments, raising ``ValueError`` naming the argument;
- is registered by name with :func:`register` and built with :func:`build`, which stores the
  full constructor arguments on the module as ``config = {"name": ..., **params}`` (defaults
  filled in), so ``build(**encoder.config)`` rebuilds the same architecture and the original's
  ``state_dict`` loads into it. An encoder constructed directly from its class has no
  ``config``; build through the registry whenever the model is to be saved and rebuilt.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from typing import Any

from torch import nn

_REGISTRY: dict[str, type[nn.Module]] = {}


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding an encoder module to the registry under ``name``."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"encoder name {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls

    return decorate


def names() -> list[str]:
    """Every registered encoder name, sorted."""
    return sorted(_REGISTRY)


def build(name: str, **params: Any) -> nn.Module:
    """Build the encoder registered as ``name`` and record its config.

    Args:
        name: one of :func:`names`.
        **params: the encoder's constructor arguments (see its docstring).

    Returns:
        The encoder, with ``encoder.config == {"name": name, **all_params}`` where
        ``all_params`` are ``params`` with the constructor's defaults filled in (so a later change
        of a default does not change what a stored config rebuilds) and tuples turned into
        lists (so the config dumps to plain YAML).

    Raises:
        ValueError: for an unknown ``name``, an unknown or missing parameter, or a bad value
            (the encoder's own validation).
    """
    if name not in _REGISTRY:
        raise ValueError(f"encoder name={name!r} unknown; expected one of {', '.join(names())}")
    cls = _REGISTRY[name]
    signature = inspect.signature(cls)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    if not takes_any:
        unknown = sorted(set(params) - set(signature.parameters))
        if unknown:
            raise ValueError(
                f"encoder {name!r}: unknown parameter(s) {unknown}; expected some of {sorted(signature.parameters)}"
            )
    try:
        bound = signature.bind(**params)
    except TypeError as err:
        raise ValueError(f"encoder {name!r}: bad parameters {sorted(params)}: {err}") from None
    bound.apply_defaults()
    config: dict[str, Any] = {"name": name}
    for key, value in bound.arguments.items():
        if signature.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
            config.update(value)
        else:
            config[key] = value
    config = _plain(copy.deepcopy(config))
    try:
        encoder = cls(**params)
    except TypeError as err:
        raise ValueError(f"encoder {name!r}: bad parameters {sorted(params)}: {err}") from None
    encoder.config = config
    return encoder


def _plain(value: Any) -> Any:
    """``value`` with tuples turned into lists, recursively, so configs dump to plain YAML."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --- argument checks shared by the encoders ---------------------------------------------------


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum`` (bools refused), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name}={value!r}: expected {what}")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def check_finite(name: str, value: Any, positive: bool = False) -> float:
    """Return ``value`` as a float if it is a finite (and, if asked, positive) number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: expected a finite number")
    if positive and not value > 0:
        raise ValueError(f"{name}={value!r}: expected a positive number")
    return float(value)


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def activation(name: str, value: Any) -> nn.Module:
    """A fresh activation module for ``value`` in :data:`ACTIVATIONS` (argument ``name``)."""
    return ACTIVATIONS[check_choice(name, value, tuple(ACTIVATIONS))]()
