"""Nested-dataclass configs: strict loading from mappings, YAML presets, dotted overrides.

Every experiment declares its configuration as a tree of dataclasses whose defaults are the
``quick`` preset. A preset file ``presets/<experiment>.yaml`` maps preset names to partial
overrides of those defaults; ``--set a.b=value`` overrides single leaves on top. Unknown keys
and values of the wrong type raise :class:`ConfigError` naming the dotted key and what was
expected, before anything runs.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A configuration key or value that does not fit the experiment's config dataclass."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, which follows YAML 1.1, plus YAML 1.2's floats without a dot.

    YAML 1.1 reads ``1e-3`` and ``5E+2`` as strings (its floats need a dot: ``1.0e-3``), so the
    ``--set train.lr=1e-3`` users type would be refused as "expected float, got '1e-3'". The
    pattern is anchored: ``1e3abc`` stays a string.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` (with :class:`_Loader`).

    Args:
        text: the YAML.
        source: what the text is, named in the error (e.g. ``"override 'a=[1,'"``).

    Raises:
        ConfigError: naming ``source`` for malformed YAML.
    """
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{source}: not valid YAML ({problem}{at})") from None


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` checked against (and minimally converted to) the annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"config key {key!r}: expected {_describe(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key {key!r}: expected null, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"config key {key!r}: expected {_describe(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list ({_describe(tp)}), got {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"config key {key!r}: expected {len(args)} items, got {value!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r}: expected bool, got {value!r}")
    if tp is float:
        # NaN compares false with every bound an experiment checks, so it is refused here.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
            return float(value)
        raise ConfigError(f"config key {key!r}: expected float, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key {key!r}: expected int, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key {key!r}: expected str, got {value!r}")
    raise ConfigError(f"config key {key!r}: unsupported annotation {_describe(tp)}")


def check_values(*rules: tuple[str, Any, bool, str]) -> None:
    """Raise for the first ``(key, value, ok, expected)`` rule whose ``ok`` is false.

    For a config dataclass's ``__post_init__``, which :func:`from_dict` runs at load time, before
    anything is written: e.g. ``("figures.grid_points", 0, 0 >= 2, "an integer >= 2")``.

    Raises:
        ConfigError: ``key=value: expected ...``.
    """
    for key, value, ok, expected in rules:
        if not ok:
            raise ConfigError(f"{key}={value!r}: expected {expected}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from ``data``, defaults filling what is absent.

    Raises:
        ConfigError: for data that is not a mapping, a key ``cls`` does not define or a value of
            the wrong type.
        ValueError: from the dataclass's own checks (its ``__post_init__``), which name the key.
    """
    if not isinstance(data, dict):
        where = f"config key {prefix!r}" if prefix else f"the {cls.__name__} config"
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            key = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"unknown config key {key!r}; {cls.__name__} has: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        default = getattr(cls(), name) if dataclasses.is_dataclass(hints[name]) else None
        if default is not None and isinstance(value, dict):
            value = {**to_dict(default), **value}
        kwargs[name] = _coerce(value, hints[name], key)
    return cls(**kwargs)


def to_dict(config: Any) -> dict:
    """The config as plain nested dicts and lists (YAML-ready)."""
    out = dataclasses.asdict(config)
    return _plain(out)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``'a.b=value'`` into the key path and the YAML-parsed value (``1e-3`` is a float).

    Raises:
        ConfigError: naming the override when it has no ``=``, an empty key or malformed YAML.
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected the form key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    return key.split("."), load_yaml(raw, f"override {text!r}") if raw else ""


def _presets(experiment: str) -> dict:
    """The preset file of ``experiment`` as a mapping (empty when it has none)."""
    path = PRESET_DIR / f"{experiment.replace('-', '_')}.yaml"
    return (load_yaml(path.read_text(), str(path)) or {}) if path.exists() else {}


def preset_names(experiment: str) -> list[str]:
    """Names of the presets an experiment ships (``quick`` always exists: the defaults)."""
    return ["quick"] + [n for n in _presets(experiment) if n != "quick"]


def resolve(cls: type, experiment: str, preset: str = "quick", overrides: list[str] = ()) -> Any:
    """Config for ``experiment``: dataclass defaults, then the preset, then ``--set`` overrides."""
    presets = _presets(experiment)
    if preset != "quick" and preset not in presets:
        raise ConfigError(
            f"preset {preset!r} unknown for {experiment!r}; available: {', '.join(preset_names(experiment))}"
        )
    data = _merge(to_dict(cls()), presets.get(preset) or {})
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for depth, part in enumerate(keys[:-1]):
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config key {'.'.join(keys[: depth + 1])!r} in override {text!r}")
            node = node[part]
        if keys[-1] not in node and not _is_open_mapping(cls, keys[:-1]):
            raise ConfigError(f"unknown config key {'.'.join(keys)!r} in override {text!r}")
        node[keys[-1]] = value
    return from_dict(cls, data)


def _is_open_mapping(cls: type, keys: list[str]) -> bool:
    """Whether the field at ``keys`` of dataclass ``cls`` is a ``dict`` (free keys, e.g. ``loss.params``)."""
    for key in keys:
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if key not in hints:
            return False
        cls = hints[key]
    return (typing.get_origin(cls) or cls) is dict


def dump_yaml(config: Any) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
