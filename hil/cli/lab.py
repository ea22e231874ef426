"""`hil lab places`: the places of the lab's labgrid coordinator, with who has them.

Each place's tags, owner (who acquired it, as labgrid's `host/user`), the reservation it is
allocated to and how many reservations wait for it: what a run that names the place would
wait for. Only looking; nothing is reserved or acquired.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hil.lab import COORDINATOR_ENV, LabError
from hil.lab.client import LabClient
from hil.rig import load_rig
from hil.schema import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hil lab", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    places = verbs.add_parser("places", help="list the places: tags, owner, reservation")
    where = places.add_mutually_exclusive_group()
    where.add_argument("--coordinator", metavar="HOST:PORT", help=f"default ${COORDINATOR_ENV}")
    where.add_argument("--rig", type=Path, help="the coordinator of this rig's [labgrid] table")
    args = parser.parse_args(argv)
    try:
        address = _coordinator(args)
        with LabClient(address) as client:
            rows = _rows(client)
    except (ConfigError, LabError) as exc:
        print(f"hil lab: {exc}", file=sys.stderr)
        return 1
    print(f"places on the labgrid coordinator {address}:")
    print(_table(rows) if rows else "  none")
    return 0


def _coordinator(args: argparse.Namespace) -> str:
    if args.coordinator:
        return args.coordinator
    if args.rig:
        rig = load_rig(args.rig)
        if rig.labgrid is None:
            raise ConfigError("", "has no [labgrid] table naming a coordinator", rig.path)
        return rig.labgrid.coordinator
    if os.environ.get(COORDINATOR_ENV):
        return os.environ[COORDINATOR_ENV]
    raise LabError(
        f"no coordinator: pass --coordinator HOST:PORT or --rig RIG, or set {COORDINATOR_ENV}"
    )


def _rows(client: LabClient) -> list[tuple[str, str, str, str]]:
    places = client.places()
    reservations = client.reservations()
    by_token = {r.token: r for r in reservations}
    rows = []
    for name, place in sorted(places.items()):
        tags = {*place.tags.items(), ("name", name)}
        waiting = sum(
            r.state.name == "waiting" and set(r.filters.get("main", {}).items()) <= tags
            for r in reservations
        )
        rows.append(
            (
                name,
                " ".join(f"{k}={v}" for k, v in sorted(place.tags.items())) or "-",
                _owner(place),
                _reservation(by_token.get(place.reservation), waiting),
            )
        )
    return rows


def _owner(place: Any) -> str:
    if not place.acquired:
        return "-"
    since = datetime.fromtimestamp(place.changed).isoformat(sep=" ", timespec="seconds")
    return f"{place.acquired} since {since}"


def _reservation(reservation: Any, waiting: int) -> str:
    parts = []
    if reservation is not None:
        parts.append(f"{reservation.token} ({reservation.state.name}, {reservation.owner})")
    if waiting:
        parts.append(f"{waiting} waiting")
    return "; ".join(parts) or "-"


def _table(rows: list[tuple[str, str, str, str]]) -> str:
    header = ("place", "tags", "owner", "reservation")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append(("  " + "  ".join(cells)).rstrip())
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
