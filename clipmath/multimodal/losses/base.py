"""The loss contract shared by every bimodal loss, and the registry behind ``losses.build``.

Each loss is a pure function plus a thin ``nn.Module`` registered by name. The module is built
as ``losses.build(name, metric="cosine", **hyperparameters)`` and called as
``loss(z_u, z_v, logit_scale=..., logit_bias=None, **extras)``:

- ``z_u (B, n_e)``, ``z_v (B, n_e)``: the two embedding batches, row i of each a positive pair;
- ``logit_scale``: scalar tensor, ``log(1/tau)`` (the model clamps it to ``log 100``);
- ``logit_bias``: optional scalar tensor added to every logit;
- ``extras``: loss-specific keyword inputs (documented by the loss), e.g. domain ids.

It returns a :class:`LossOutput` whose ``.loss`` is the scalar; the other fields are diagnostics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class LossOutput:
    """A loss value and its diagnostics.

    Attributes:
        loss: scalar tensor to back-propagate.
        logits: (B, B) score matrix ``sim(z_u_i, z_v_j) / tau (+ bias)`` the loss was computed on,
            or None for losses that never form it (the tiled loss).
        plan: (B, B) transport plan for OT-based losses, else None.
        n_iter: Sinkhorn iterations run, else None.
        converged: whether Sinkhorn met its tolerance, else None.
    """

    loss: Tensor
    logits: Tensor | None = None
    plan: Tensor | None = None
    n_iter: int | None = None
    converged: bool | None = None


_REGISTRY: dict[str, type[nn.Module]] = {}


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a loss module to the registry under ``name``."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"loss name {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls

    return decorate


def names() -> list[str]:
    """Every registered loss name, sorted."""
    return sorted(_REGISTRY)


def loss_class(name: str) -> type[nn.Module]:
    """The loss module class registered as ``name`` (its constructor signature is its hyperparameters).

    Raises:
        ValueError: for an unknown ``name``.
    """
    if name not in _REGISTRY:
        raise ValueError(f"loss name={name!r} unknown; expected one of {', '.join(names())}")
    return _REGISTRY[name]


def build(name: str, metric: str = "cosine", **hyperparameters) -> nn.Module:
    """Build the loss module registered as ``name``.

    Args:
        name: one of :func:`names`.
        metric: alignment metric, one of ``clipmath.multimodal.similarity.names()``.
        **hyperparameters: the loss's own hyperparameters (see its docstring).

    Raises:
        ValueError: for an unknown ``name``, or a hyperparameter the loss does not take.
    """
    cls = loss_class(name)
    try:
        return cls(metric=metric, **hyperparameters)
    except TypeError as err:
        raise ValueError(f"loss {name!r}: bad hyperparameters {sorted(hyperparameters)}: {err}") from None
