r"""Named data sources for ``clipmath shards write``: ``sources()`` and ``build_source(name, **params)``.

Every source has ``.sample(n, seed) -> (u (n, n_u), v (n, n_v))``, so
:func:`~clipmath.datasets.gaussian.gaussian_samples` turns any of them into shard samples.

* ``gaussian``: a :class:`~clipmath.theory.gaussian.GaussianPair`. Parameters, one of
    - none: the 2-D example of Section 5.4, :math:`\mathcal C = [[1.5, 1], [1, 1.5]]`, n_u = n_v = 1;
    - ``cov`` (nested lists, the joint covariance) and ``n_u`` (the dimension of u in it);
    - ``n_u``, ``n_v`` and optionally ``cov_seed`` (default 0): a random well-conditioned
      covariance (:func:`~clipmath.theory.gaussian.random_gaussian_pair`).
* ``gaussian-process``: :class:`~clipmath.datasets.gaussian_process.GaussianProcessSource`
  (Section 6.1), parameters ``tau``, ``alpha``, ``n_modes``, ``n_u``, ``n_v``, ``sigma``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from clipmath.datasets.gaussian import PairSampler
from clipmath.datasets.gaussian_process import GaussianProcessSource
from clipmath.theory.gaussian import GaussianPair, random_gaussian_pair

#: Joint covariance of the 2-D illustration, Section 5.4.
EXAMPLE_2D_COV = ((1.5, 1.0), (1.0, 1.5))


def _gaussian(
    cov: Any = None, n_u: int | None = None, n_v: int | None = None, cov_seed: int | None = None
) -> GaussianPair:
    if cov is not None:
        if n_v is not None or cov_seed is not None:
            raise ValueError("gaussian source: with cov give only n_u; n_v and cov_seed are for a random covariance")
        if n_u is None:
            raise ValueError("gaussian source: n_u=None: expected the dimension of u in cov")
        return GaussianPair.from_joint(cov, n_u)
    if n_u is None and n_v is None:
        if cov_seed is not None:
            raise ValueError("gaussian source: cov_seed needs n_u and n_v (a random covariance)")
        return GaussianPair.from_joint(EXAMPLE_2D_COV, 1)
    if n_u is None or n_v is None:
        raise ValueError(f"gaussian source: n_u={n_u!r}, n_v={n_v!r}: a random covariance needs both")
    return random_gaussian_pair(n_u, n_v, 0 if cov_seed is None else cov_seed)


_SOURCES: dict[str, Callable[..., PairSampler]] = {
    "gaussian": _gaussian,
    "gaussian-process": GaussianProcessSource,
}


def sources() -> list[str]:
    """Names of every registered source."""
    return list(_SOURCES)


def source_parameters(name: str) -> tuple[str, ...]:
    """The parameter names the source ``name`` accepts.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in _SOURCES:
        raise ValueError(f"source {name!r} unknown; available: {', '.join(_SOURCES)}")
    return tuple(inspect.signature(_SOURCES[name]).parameters)


def build_source(name: str, **params: Any) -> PairSampler:
    """The source called ``name``, built from ``params`` (see the module docstring).

    Raises:
        ValueError: for an unknown name, an unknown parameter (naming it), or a bad value.
    """
    known = source_parameters(name)
    for key in params:
        if key not in known:
            raise ValueError(f"source {name!r}: unknown parameter {key!r}; it takes {', '.join(known)}")
    return _SOURCES[name](**params)
