"""Typed loading of nested dicts (TOML, JSON) into dataclasses, with errors that name the key.

Rig files and device profiles are written by people; a typo must stop the run before any test
with the file, the dotted key and what is expected, never surface later as an AttributeError.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is wrong; `key` is its dotted path, `source` the file it came from."""

    def __init__(self, key: str, message: str, source: str | Path | None = None) -> None:
        self.key = key
        self.source = str(source) if source else None
        self.reason = message
        where = f"{self.source}: " if self.source else ""
        at = f"[{key}] " if key else ""
        super().__init__(f"{where}{at}{message}")

    def in_file(self, source: str | Path) -> ConfigError:
        return ConfigError(self.key, self.reason, source)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _describe(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if tp is typing.Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a table, got {value!r}")
        return load(tp, value, key)
    if origin is list or origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (typing.Any,)
        items = [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a table, got {value!r}")
        _, vt = typing.get_args(tp) or (str, typing.Any)
        return {str(k): _convert(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a path string, got {value!r}")
        return Path(value)
    if isinstance(tp, type):
        if tp in (int, float) and isinstance(value, bool):
            raise ConfigError(key, f"expected {_describe(tp)}, got {value!r}")
        if not isinstance(value, tp):
            raise ConfigError(key, f"expected {_describe(tp)}, got {value!r}")
    return value


def load(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from `data`; unknown keys, wrong types and missing keys raise."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(key, f"unknown key; known keys here: {known}")
        kwargs[name] = _convert(hints[name], value, key)
    for name, f in fields.items():
        if (
            name not in kwargs
            and f.default is dataclasses.MISSING
            and (f.default_factory is dataclasses.MISSING)
        ):
            key = f"{prefix}.{name}" if prefix else name
            raise ConfigError(key, f"missing; expected {_describe(hints[name])}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc.key}" if prefix else exc.key, exc.reason) from None
    except ValueError as exc:
        raise ConfigError(prefix, str(exc)) from None


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` into a copy of `base` (tables merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def dump(obj: Any) -> Any:
    """A dataclass tree as plain JSON-able data (the inverse of `load`)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: dump(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [dump(v) for v in obj]
    if isinstance(obj, dict):
        return {k: dump(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj
