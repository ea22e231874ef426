"""Putting the firmware on the device over MQTT, with the sender the OTA suite proves.

It is `hil ota push`'s path (`hil.cli.ota.deliver`): the windowed sender, then the wait for the
device's `STATUS:ONLINE` after its reboot into the new image. A running device tells only its
version, never its image, so an OTA install is skipped when that version is the image's.
"""

from __future__ import annotations

import logging

from hil.bringup import DeviceState
from hil.cli.ota import Delivery, Refusal, deliver
from hil.dut import Dut
from hil.firmware.source import FirmwareSource
from hil.measurements import Measurements
from hil.ota import DEFAULT_WINDOW, OtaError

log = logging.getLogger("hil.firmware")


class OtaInstallError(RuntimeError):
    """The update did not complete or the device did not come back with it."""


def fits(source: FirmwareSource, partition_size: int) -> str | None:
    """Why the device would refuse the app (OTA:ERROR:size), or None when it fits."""
    if len(source.app) > partition_size:
        return (
            f"its app is {len(source.app)} bytes, larger than the OTA partition "
            f"({partition_size} bytes, profile ota.partition_size)"
        )
    return None


class _Progress:
    """Push progress on the log, every tenth."""

    def __init__(self) -> None:
        self.shown = -1

    def __call__(self, acked: int, total: int, retransmissions: int) -> None:
        tenth = acked * 10 // total if total else 10
        if tenth > self.shown:
            self.shown = tenth
            log.info(
                "OTA: %d/%d bytes acknowledged, %d retransmissions", acked, total, retransmissions
            )


async def push(state: DeviceState, source: FirmwareSource) -> Delivery:
    """Send the app to the online device and wait for it to report a version after rebooting."""
    session = state.session
    dut = Dut(
        session.rig.profile,
        session.console,
        state.mqtt,
        session.power,
        Measurements(),
        state=state,
    )
    log.info("OTA: pushing %s (%d bytes, version %s)", source.path, len(source.app), source.version)
    try:
        return await deliver(dut, source.app, window=DEFAULT_WINDOW, on_progress=_Progress())
    except (Refusal, OtaError) as exc:
        raise OtaInstallError(str(exc)) from None
