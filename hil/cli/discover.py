"""`hil discover`: what USB serial ports are plugged in, and the rig snippet that selects each."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from hil.discovery import SerialDevice, list_serial_devices


def _table(devices: list[SerialDevice]) -> str:
    header = ("NODE", "BY-ID", "VID:PID", "SERIAL", "KIND")
    rows = [header] + [
        (d.node, d.by_id or "-", d.vid_pid, d.serial or "-", d.kind) for d in devices
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    )


def main(argv: list[str]) -> int:
    """`hil discover`: what USB serial ports are plugged in, and how a rig file selects each."""
    parser = argparse.ArgumentParser(
        prog="hil discover", description="List USB serial ports and the rig snippet for each."
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    devices = list_serial_devices()
    if args.json:
        entries = [{**asdict(d), "kind": d.kind, "rig_snippet": d.rig_snippet()} for d in devices]
        print(json.dumps(entries, indent=2))
        return 0
    if not devices:
        print("no USB serial devices found (is the board plugged in and powered?)")
        return 0
    print(_table(devices))
    for device in devices:
        print()
        print(device.rig_snippet())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
