"""`hil reset --rig R`: restart the device's chip through the rig's [reset] (or board power)."""

from __future__ import annotations

from hil.cli import power


def main(argv: list[str]) -> int:
    return power.main(argv, "reset")
