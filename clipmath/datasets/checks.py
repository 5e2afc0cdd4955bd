"""Argument checks shared by the datasets modules: each raises a ``ValueError`` naming the argument."""

from __future__ import annotations

from typing import Any


def check_int(name: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    """Require an int (not a bool) ``>= minimum``, or ``None`` when ``optional``.

    Raises:
        ValueError: naming ``name``, the value and the expectation.
    """
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        expected = f"an int >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"{name}={value!r}: expected {expected}")


def check_name(kind: str, name: Any) -> None:
    """Require a sample key or field name webdataset can split back: non-empty, no '.', '/' or leading '_'.

    Raises:
        ValueError: naming ``kind`` and the offending value.
    """
    if not isinstance(name, str) or not name or "." in name or "/" in name or name.startswith("_"):
        raise ValueError(f"{kind}={name!r}: expected a non-empty string without '.', '/' or a leading '_'")
