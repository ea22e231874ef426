"""What a rig's place looks like now, for `hil rigs check`: there, its ports exported, its holder.

Only looking: nothing is reserved or acquired. A place held by someone else is no problem (a
run waits its turn); a missing place, a port the place does not have or the exporter does not
see is, and so is a machine without labgrid or a coordinator out of reach.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from hil.lab import LabError, LabgridOptions
from hil.lab.client import LabClient, PlaceResource
from hil.lab.place import CLASSES


def check_place(
    options: LabgridOptions, names: Iterable[str] | Mapping[str, str]
) -> tuple[list[str], int]:
    """Lines describing the place and its ports `names` (a mapping: with the class each must
    be), and how many problems they show."""
    classes = dict(names) if isinstance(names, Mapping) else dict.fromkeys(names)
    client = LabClient(options.coordinator)
    try:
        client.start()
        place = client.place(options.place)
        resources = client.resources(place)
        waiting = [
            r
            for r in client.reservations()
            if r.state.name == "waiting" and r.filters.get("main") == {"name": options.place}
        ]
    except LabError as exc:
        return [f"  place {options.place}: {exc}"], 1
    finally:
        client.close()
    lines = [f"  place {options.place} on {options.coordinator}: {_holder(place)}"]
    if place.tags:
        tags = " ".join(f"{k}={v}" for k, v in sorted(place.tags.items()))
        lines.append(f"    tags: {tags}")
    if waiting:
        lines.append(f"    {len(waiting)} run(s) waiting for it")
    problems = 0
    for name, wanted in sorted(classes.items()):
        ok, state = _port_state([r for r in resources if r.name == name], wanted)
        problems += not ok
        lines.append(f"  port {{labgrid:{name}}}: {state}")
    return lines, problems


def _port_state(found: list[PlaceResource], wanted: str | None) -> tuple[bool, str]:
    """Whether the resources of one name are one port of the wanted class (else a serial or
    power port) there now, and what they are."""
    if len(found) != 1:
        return False, f"{len(found)} resources have this name" if found else "NOT IN THE PLACE"
    where = "/".join(found[0].path)
    kinds = (wanted,) if wanted else CLASSES
    if found[0].cls not in kinds:
        return False, f"{where} is a {found[0].cls}, not a {' or '.join(kinds)}"
    if not found[0].avail:
        return False, f"{where} NOT AVAILABLE now (is the device plugged in at the exporter?)"
    return True, f"exported as {where}"


def _holder(place: Any) -> str:
    if not place.acquired:
        return "free"
    since = datetime.fromtimestamp(place.changed).isoformat(sep=" ", timespec="seconds")
    return f"held by {place.acquired} since {since} (a run waits its turn)"
