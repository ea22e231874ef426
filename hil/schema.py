"""Typed loading of nested dicts (TOML, JSON) into dataclasses, with errors that name the key.

Rig files and device profiles are written by people; a typo must stop the run before any test
with the file, the dotted key and what is expected, never surface later as an AttributeError.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
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

    @property
    def errors(self) -> list[ConfigError]:
        """Every problem this error stands for: one here, several in ConfigErrors."""
        return [self]

    def in_file(self, source: str | Path) -> ConfigError:
        return ConfigError(self.key, self.reason, source)

    def under(self, prefix: str) -> ConfigError:
        """The same error with its key inside table `prefix`."""
        if not prefix:
            return self
        return ConfigError(f"{prefix}.{self.key}" if self.key else prefix, self.reason, self.source)

    @staticmethod
    def combine(errors: list[ConfigError]) -> ConfigError:
        """One error for all of `errors` (flattened): itself when alone, else ConfigErrors."""
        flat = [e for error in errors for e in error.errors]
        return flat[0] if len(flat) == 1 else ConfigErrors(flat)


class ConfigErrors(ConfigError):
    """Several problems found in one pass, so a file is fixed in one round, not one per run.

    It is a ConfigError whose key and reason are the first problem's; `str()` gives one line
    per problem.
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        self._errors = [e for error in errors for e in error.errors]
        first = self._errors[0]
        super().__init__(first.key, first.reason, first.source)
        self.args = ("\n".join(str(e) for e in self._errors),)

    @property
    def errors(self) -> list[ConfigError]:
        return list(self._errors)

    def in_file(self, source: str | Path) -> ConfigError:
        return ConfigErrors([e.in_file(source) for e in self._errors])

    def under(self, prefix: str) -> ConfigError:
        return ConfigErrors([e.under(prefix) for e in self._errors])


# Range and pattern checks for dataclass fields, called from `__post_init__`. Each raises a
# ConfigError keyed by the field's name (`load` puts it under the table's key) saying what the
# value is and what is expected; `Checks` runs several and reports every failure at once.


def _refuse(value: Any, name: str, expected: str) -> ConfigError:
    return ConfigError(name, f"got {value!r}, expected {expected}")


def finite_range(
    value: float,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    above: bool = False,
    what: str = "a number",
) -> None:
    """`value` is finite and from `low` (or above it, with `above=True`) up to `high`."""
    bounds = ["finite"]
    if low is not None:
        bounds.append(f"{'>' if above else '>='} {low:g}")
    if high is not None:
        bounds.append(f"<= {high:g}")
    too_low = low is not None and (value <= low if above else value < low)
    if not math.isfinite(value) or too_low or (high is not None and value > high):
        raise _refuse(value, name, f"{what}, {' and '.join(bounds)}")


def positive(value: float, name: str, what: str = "a time in seconds") -> None:
    """A time limit or a scale: 0, a negative, nan or inf never works."""
    finite_range(value, name, 0, above=True, what=what)


def whole_range(
    value: int, name: str, low: int, high: int | None = None, what: str = "an integer"
) -> None:
    """An integer count, size or number from `low` up to `high` (no bound when None)."""
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise _refuse(value, name, f"{what} {span}")


def port(value: int, name: str, free: bool = False) -> None:
    """A TCP port; `free=True` also allows 0 for "a free port chosen at start"."""
    whole_range(value, name, 0 if free else 1, 65535, "a TCP port")


def one_of(value: Any, name: str, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        *rest, last = map(str, choices)
        raise _refuse(value, name, f"{', '.join(rest)} or {last}" if rest else last)


def nonempty(value: str, name: str, what: str) -> None:
    """A string that says something: an empty or blank one cannot name a host or a command."""
    if not value.strip():
        raise _refuse(value, name, f"a non-empty {what}")


def pattern(value: str, name: str, groups: tuple[str, ...] = ()) -> None:
    """A regular expression that compiles and has the named groups the harness reads."""
    try:
        compiled = re.compile(value)
    except re.error as exc:
        raise _refuse(value, name, f"a valid regular expression ({exc})") from None
    missing = [g for g in groups if g not in compiled.groupindex]
    if missing:
        needed = " and ".join(f"(?P<{g}>...)" for g in missing)
        raise _refuse(value, name, f"a regular expression with the group {needed}")


class Checks:
    """Runs a dataclass's field checks and raises one error listing every failure.

    with schema.Checks() as check:
        check(schema.positive, self.timeout_s, "timeout_s")
        check(schema.port, self.port, "port")
    """

    def __init__(self) -> None:
        self.failed: list[ConfigError] = []

    def __call__(self, rule: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        try:
            rule(*args, **kwargs)
        except ConfigError as exc:
            self.failed.append(exc)

    def __enter__(self) -> Checks:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if isinstance(exc, ConfigError):  # a check written as a plain raise joins the others
            raise ConfigError.combine([*self.failed, exc]) from None
        if kind is None and self.failed:
            raise ConfigError.combine(self.failed)


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
        return load(tp, value, key)  # type: ignore[arg-type]
    if origin is list or origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (typing.Any,)
        items = _each([(f"{key}[{i}]", v) for i, v in enumerate(value)], item)
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a table, got {value!r}")
        _, vt = typing.get_args(tp) or (str, typing.Any)
        items = _each([(f"{key}.{k}", v) for k, v in value.items()], vt)
        return dict(zip(map(str, value), items, strict=True))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and math.isnan(value):
        # nan compares false with every bound, so it would slip through any range check.
        raise ConfigError(key, f"got {value!r}, expected a finite number")
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


def _each(items: list[tuple[str, Any]], tp: Any) -> list[Any]:
    """Convert every (key, value) of a list or table; all the failures are raised together."""
    out: list[Any] = []
    errors: list[ConfigError] = []
    for key, value in items:
        try:
            out.append(_convert(tp, value, key))
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise ConfigError.combine(errors)
    return out


def load(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from `data`; unknown keys, wrong types and missing keys raise.

    Every problem is collected, in the order of the keys in `data`, and raised as one
    ConfigError (ConfigErrors when there are several): a file is fixed in one round.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    errors: list[tuple[str, ConfigError]] = []  # (the key in `data`, its error)
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            known = ", ".join(sorted(fields))
            errors.append((name, ConfigError(key, f"unknown key; known keys here: {known}")))
            continue
        try:
            kwargs[name] = _convert(hints[name], value, key)
        except ConfigError as exc:
            errors.append((name, exc))
    missing = [n for n, f in fields.items() if n not in data and not _has_default(f)]
    for name in missing:
        key = f"{prefix}.{name}" if prefix else name
        errors.append((name, ConfigError(key, f"missing; expected {_describe(hints[name])}")))
    if errors:
        if not missing:
            errors += _checks_of_the_rest(cls, kwargs, data, prefix)
        order = {name: i for i, name in enumerate(data)}
        errors.sort(key=lambda item: order.get(item[0], len(order)))
        raise ConfigError.combine([error for _, error in errors])
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise exc.under(prefix) from None
    except ValueError as exc:
        raise ConfigError(prefix, str(exc)) from None


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _checks_of_the_rest(
    cls: type, good: dict[str, Any], data: dict[str, Any], prefix: str
) -> list[tuple[str, ConfigError]]:
    """The field checks of the keys that did convert, when others did not.

    The dataclass is built with defaults in place of the wrong values; only its errors about
    keys given right are kept (a check across keys would judge a default the file never set).
    """
    wrong = [n for n in data if n not in good]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if any(n in fields and not _has_default(fields[n]) for n in wrong):
        return []
    try:
        cls(**good)
    except ConfigError as exc:
        named = [(e.key.split(".")[0], e) for e in exc.errors]
        return [(name, e.under(prefix)) for name, e in named if name in good]
    except ValueError:
        return []
    return []


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
