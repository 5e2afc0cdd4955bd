"""Nested-dataclass configs: strict loading from mappings, YAML presets, dotted overrides.

Every experiment declares its configuration as a tree of dataclasses whose defaults are the
``quick`` preset. A preset file ``presets/<experiment>.yaml`` maps preset names to partial
overrides of those defaults; ``--set a.b=value`` overrides single leaves on top. Unknown keys
and values of the wrong type raise :class:`ConfigError` naming the dotted key and what was
expected, before anything runs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A configuration key or value that does not fit the experiment's config dataclass."""


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
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
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
        if isinstance(value, (int, float)) and not isinstance(value, bool):
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


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from ``data``, defaults filling what is absent.

    Raises:
        ConfigError: for a key ``cls`` does not define or a value of the wrong type.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            key = f"{prefix}.{name}" if prefix else name
            raise ConfigError(
                f"unknown config key {key!r}; {cls.__name__} has: {', '.join(sorted(fields))}"
            )
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
    """Split ``'a.b=value'`` into the key path and the YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected the form key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    return key.split("."), yaml.safe_load(raw) if raw else ""


def preset_names(experiment: str) -> list[str]:
    """Names of the presets an experiment ships (``quick`` always exists: the defaults)."""
    path = PRESET_DIR / f"{experiment.replace('-', '_')}.yaml"
    names = ["quick"]
    if path.exists():
        names += [n for n in (yaml.safe_load(path.read_text()) or {}) if n != "quick"]
    return names


def resolve(cls: type, experiment: str, preset: str = "quick", overrides: list[str] = ()) -> Any:
    """Config for ``experiment``: dataclass defaults, then the preset, then ``--set`` overrides."""
    path = PRESET_DIR / f"{experiment.replace('-', '_')}.yaml"
    presets = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
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
        if keys[-1] not in node:
            raise ConfigError(f"unknown config key {'.'.join(keys)!r} in override {text!r}")
        node[keys[-1]] = value
    return from_dict(cls, data)


def dump_yaml(config: Any) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
