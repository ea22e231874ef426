"""HTTP OTA messages (seed 003) and the version rule the device applies before it downloads.

The profile keeps each message as a template with `{name}` placeholders, so one string serves
both sides: the twin fills it in, the harness matches a device's text against it and reads the
fields back. A placeholder matches any text but a line break; literal text matches itself.
"""

from __future__ import annotations

import re
import string

_FIELDS = string.Formatter()


def placeholders(template: str) -> tuple[str, ...]:
    """The `{name}` fields of `template`, in order; ValueError for a malformed one."""
    names = []
    for _literal, name, spec, conversion in _FIELDS.parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"{{{name}}} is not a plain {{name}} placeholder")
        names.append(name)
    return tuple(names)


def fill(template: str, **fields: object) -> str:
    """The message `template` says, with its placeholders filled in."""
    return template.format(**fields)


def pattern(template: str) -> re.Pattern[str]:
    """A regular expression that matches exactly what `fill(template, ...)` can produce."""
    parts = []
    for literal, name, _spec, _conversion in _FIELDS.parse(template):
        parts.append(re.escape(literal))
        if name is not None:
            parts.append(f"(?P<{name}>[^\\r\\n]+?)")
    return re.compile("".join(parts))


def match(template: str, text: str) -> dict[str, str] | None:
    """The fields of `text` when it is `template`'s message, else None."""
    m = pattern(template).fullmatch(text.strip())
    return m.groupdict() if m else None


def release(version: str) -> tuple[int, ...] | None:
    """The numeric release of a version: `2.10.0-rc1` is (2, 10, 0); None when it has none.

    Only the dot-separated decimal numbers before the first `-` or `+` count; what follows
    (a build tag, a pre-release name) never makes a version newer.
    """
    head = re.split(r"[-+]", version.strip(), maxsplit=1)[0]
    fields = head.split(".")
    if not all(f.isascii() and f.isdigit() and len(f) <= 9 for f in fields):
        return None
    return tuple(int(f) for f in fields)


def is_newer(offered: str, running: str) -> bool:
    """Whether the device takes `offered` over `running`: its release is strictly greater.

    Releases of different lengths compare as if padded with zeros (1.2 is 1.2.0). A version
    without a numeric release is never newer.
    """
    new, old = release(offered), release(running)
    if new is None:
        return False
    if old is None:
        return True
    width = max(len(new), len(old))
    return new + (0,) * (width - len(new)) > old + (0,) * (width - len(old))
