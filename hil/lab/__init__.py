"""Shared lab hardware through labgrid: a rig that names a place instead of local ports.

The lab's labgrid coordinator decides who has which bench; the harness only asks it. A rig's
`[labgrid]` table names the coordinator and the place, and `{labgrid:NAME}` in a port stands
for the place's resource NAME (a `NetworkSerialPort`, served by ser2net on the exporter's
host). The run waits in the place's queue, acquires it, opens the ports the exporter serves,
and releases it on every way out. labgrid is an optional extra: nothing here imports it until
a place is used, so rig files load and check without it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from hil import schema

COORDINATOR_ENV = "LG_COORDINATOR"
PLACEHOLDER = re.compile(r"\{labgrid:([^{}]*)\}")
LABGRID_MISSING = 'labgrid is not installed: pip install "hil[labgrid]"'
DEFAULT_WAIT_S = 3600.0


class LabError(RuntimeError):
    """The place cannot be had or used; the message names the place and the fix."""


class LabgridMissing(LabError):
    """labgrid's client library is not importable here."""

    def __init__(self) -> None:
        super().__init__(LABGRID_MISSING)


def require_labgrid() -> None:
    """LabgridMissing, naming the extra to install, unless labgrid's client can be imported."""
    try:
        import labgrid.remote.client  # noqa: F401
    except ImportError:
        raise LabgridMissing() from None


@dataclass(frozen=True)
class LabgridOptions:
    """The rig's `[labgrid]` table."""

    place: str
    coordinator: str = ""  # host:port; empty takes $LG_COORDINATOR when the rig is loaded
    wait_s: float = DEFAULT_WAIT_S  # the longest wait in the place's queue

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(schema.nonempty, self.place, "place", "place name")
            check(schema.positive, self.wait_s, "wait_s")
            if not self.coordinator.strip():
                raise schema.ConfigError(
                    "coordinator",
                    f"missing; give the lab's coordinator as host:port or set {COORDINATOR_ENV}",
                )


def load_options(table: dict[str, object]) -> LabgridOptions:
    """`[labgrid]` validated, the coordinator defaulting to $LG_COORDINATOR."""
    table = dict(table)
    if not table.get("coordinator") and os.environ.get(COORDINATOR_ENV):
        table["coordinator"] = os.environ[COORDINATOR_ENV]
    return schema.load(LabgridOptions, table, "labgrid")


def resource_names(text: str) -> list[str]:
    """The place's resources a rig option names with `{labgrid:NAME}`."""
    return PLACEHOLDER.findall(text)
