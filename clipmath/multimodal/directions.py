r"""Conditional directions by name and their weights :math:`(\lambda_u, \lambda_v)`.

Problem 3.4 of Baptista et al. (2025) weighs the u|v term by :math:`\lambda_u` and the v|u term by
:math:`\lambda_v`; the package names a conditional by its direction (``u_given_v``, ``v_given_u``,
``two_sided``), never by a λ-pair, because Section 6.2 of the paper swaps the labels.
"""

from __future__ import annotations

import math

#: direction name -> (lambda_u, lambda_v). One-sided losses carry weight 2 so that they are
#: the full cross-entropy -E log rho, the scaling of Section 5.2's L(theta; 2, 0).
DIRECTIONS: dict[str, tuple[float, float]] = {
    "two_sided": (1.0, 1.0),
    "u_given_v": (2.0, 0.0),
    "v_given_u": (0.0, 2.0),
}


def resolve_weights(direction: str | None, weights: tuple[float, float] | None) -> tuple[float, float]:
    r"""The weights :math:`(\lambda_u, \lambda_v)` from a direction name or an explicit pair.

    Args:
        direction: one of ``two_sided``, ``u_given_v``, ``v_given_u``, or None.
        weights: ``(lambda_u, lambda_v)``, finite and non-negative, not both zero, or None.
            ``lambda_u`` weights the u|v term (Problem 3.4).

    Returns:
        ``(lambda_u, lambda_v)``; ``two_sided`` when both arguments are None.

    Raises:
        ValueError: when both are given, the direction is unknown, or the weights are invalid.
    """
    if direction is not None and weights is not None:
        raise ValueError(f"direction={direction!r} and weights={weights!r}: give one of the two, not both")
    if weights is None:
        direction = "two_sided" if direction is None else direction
        if direction not in DIRECTIONS:
            raise ValueError(f"direction={direction!r} unknown; expected one of {', '.join(DIRECTIONS)}")
        return DIRECTIONS[direction]
    try:
        lambda_u, lambda_v = (float(w) for w in weights)
    except (TypeError, ValueError):
        raise ValueError(f"weights={weights!r}: expected a pair (lambda_u, lambda_v) of numbers") from None
    if not all(math.isfinite(w) and w >= 0 for w in (lambda_u, lambda_v)) or lambda_u + lambda_v == 0:
        raise ValueError(f"weights={weights!r}: expected finite, non-negative (lambda_u, lambda_v), not both zero")
    return lambda_u, lambda_v
