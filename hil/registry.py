"""Drivers by entry-point group: a rig says `driver = "name"`, the registry finds the class.

Third parties add a driver by declaring an entry point in `hil.console`, `hil.power` or
`hil.broker`; nothing in the harness changes.
"""

from __future__ import annotations

from importlib.metadata import entry_points


class UnknownDriver(LookupError):
    def __init__(self, group: str, name: str, known: list[str]) -> None:
        self.group, self.name, self.known = group, name, known
        super().__init__(
            f"unknown {group} driver {name!r}; installed: {', '.join(known) or 'none'}"
        )


def driver_names(group: str) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=f"hil.{group}"))


def resolve(group: str, name: str) -> type:
    """The driver class registered as `name` in `hil.<group>`."""
    for ep in entry_points(group=f"hil.{group}"):
        if ep.name == name:
            return ep.load()
    raise UnknownDriver(group, name, driver_names(group))
