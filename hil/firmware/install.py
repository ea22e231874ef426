"""Installing the firmware under test at bring-up, and proving the device runs it.

`method = "serial"`: the boot strap (`[boot_strap]`, whose "on" holds GPIO0 low) is held while
the board restarts (a `[board_power]` cycle, else `[reset]`), so the chip starts its ROM serial
loader; a rig without a strap uses its `[reset]` driver's loader sequence (esp-serial, for
boards with an auto-program circuit). esptool compares the flash with the image and writes it
unless it is already there (or `--reflash`); the strap is released whatever happened; then
bring-up's own restart boots what is in flash, and `STATUS:ONLINE` must name the image's
version within boot_s. Nothing of the old firmware is needed, so a device whose firmware no
longer boots is installed too.

`method = "ota"`: bring-up first (an update needs the device online), then the windowed sender
unless the device already reports the image's version, and the reboot into the new image.

A failure at any step is a rig error naming the firmware, the step and the fix: every rig test
errors with it, since nothing could be tested on the firmware the run was asked to test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import pytest

from hil.bringup import DeviceState, Online, RigDown
from hil.firmware import FIRMWARE_KEY, FirmwareFacts
from hil.firmware.options import FirmwareOptions
from hil.firmware.ota import OtaInstallError, fits, push
from hil.firmware.otadata import ENTRY, BootLayout, boot_layout
from hil.firmware.source import FirmwareSource
from hil.rig import Rig
from hil.session import RigSession

log = logging.getLogger("hil.firmware")

LOADER_WAIT_S = 10.0  # the loader's port back and answering, on a console without reappear_s


@dataclass(frozen=True)
class Plan:
    """What a run is to install: the verified firmware, the rig's way to write it, --reflash."""

    source: FirmwareSource
    options: FirmwareOptions
    reflash: bool

    @property
    def title(self) -> str:
        return f"firmware {self.source.version} (sha256 {self.source.sha256[:12]})"


@dataclass(frozen=True)
class Installed:
    """What the install did, for the terminal summary."""

    facts: FirmwareFacts
    how: str
    seconds: float


PLAN_KEY = pytest.StashKey[Plan]()
INSTALLED_KEY = pytest.StashKey[Installed]()


def unusable(rig: Rig, options: FirmwareOptions, source: FirmwareSource) -> str | None:
    """Why `rig` cannot install `source` the way its [firmware] method says, or None."""
    if options.method == "ota":
        return fits(source, rig.profile.ota.partition_size)
    if not hasattr(rig.console.cls, "lend_port"):
        return (
            f'[firmware] method = "serial" writes through the console port, but [console] driver '
            f'{rig.console.name!r} lends none; use driver = "serial", or method = "ota"'
        )
    if rig.boot_strap is not None:
        if not rig.reset_means:
            return (
                "[boot_strap] holds GPIO0 low, but the rig has no [board_power] or [reset] to "
                "restart the chip into its serial loader; add one of them"
            )
        return None
    if rig.reset is not None and rig.reset.cls.can_enter_bootloader:
        return None
    return (
        "the rig has no way to start the chip's serial loader: add [boot_strap] (a relay "
        "channel or GPIO line that holds GPIO0 low, in the form of [power]) or [reset] "
        'driver = "esp-serial" (a board with an auto-program circuit)'
    )


async def bring_up(state: DeviceState, config: pytest.Config) -> Online | None:
    """Bring-up, with the run's firmware installed first when it names one."""
    plan = config.stash.get(PLAN_KEY, None)
    if plan is None:
        return await state.bring_up()
    started = time.monotonic()
    log.info("installing %s from %s by %s", plan.title, plan.source.describe(), plan.options.method)
    try:
        if plan.options.method == "serial":
            online, written, how = await _by_serial(state, plan)
        else:
            online, written, how = await _by_ota(state, plan)
    except RigDown as exc:
        state.down = str(exc)
        raise
    facts = plan.source.facts(plan.options.method, written)
    config.stash[FIRMWARE_KEY] = facts
    config.stash[INSTALLED_KEY] = Installed(facts, how, time.monotonic() - started)
    return online


def _failure(plan: Plan, step: str, detail: str, fix: str) -> RigDown:
    return RigDown(
        f"{plan.title} from {plan.source.describe()} was not installed: {step}: {detail}\n"
        f"  fix: {fix}"
    )


def _require_version(plan: Plan, online: Online, written: bool) -> None:
    if online.version == plan.source.version:
        return
    done = "was written" if written else "is in flash"
    raise _failure(
        plan,
        "the device does not run it",
        f"the image {done}, but the device came up as {online.version}",
        "the bootloader started another app or the new one failed its start-up checks and "
        f"rolled back; the device's console says which (the app belongs at "
        f"0x{plan.source.app_offset:X})",
    )


# -- serial --------------------------------------------------------------------------------
async def _by_serial(state: DeviceState, plan: Plan) -> tuple[Online, bool, str]:
    session = state.session
    with session.console.reboot_expected():
        try:
            written = await asyncio.to_thread(_write_in_loader, session, plan)
        except Exception as exc:  # relay, reset line, port or esptool: a rig error all the same
            raise _failure(
                plan,
                "writing it with esptool over the console port failed",
                f"{type(exc).__name__}: {exc}",
                "check [boot_strap], [board_power]/[reset] and the console cable; "
                f"`hil doctor --rig {session.rig.path}` checks each part",
            ) from None
    try:
        online = await state.bring_up()
    except RigDown as exc:
        done = "writing" if written else "finding it already in flash, not writing"
        raise RigDown(f"after {done} {plan.title}, {exc}") from None
    assert online is not None  # a rig that can write it by serial has the means to restart
    _require_version(plan, online, written)
    return online, written, "esptool over the console port"


def _write_in_loader(session: RigSession, plan: Plan) -> bool:
    """In the chip's serial loader: compare, write unless already there; False if not written.

    "There" includes otadata selecting the app's slot; a firmware without otadata of its own
    gets the erased partition written with it, as `idf.py flash` writes ota_data_initial.bin.
    """
    from hil.firmware import serial as flasher

    regions = list(plan.source.regions)
    boot = boot_layout(plan.source)
    compared = boot.outside(regions) if boot is not None else regions
    erase = boot is not None and not boot.covered_by(regions)
    if erase:
        regions = sorted([*regions, boot.erased()], key=lambda r: r.offset)
    within = getattr(session.rig.console.options, "reappear_s", LOADER_WAIT_S)
    with contextlib.ExitStack() as stack:
        _enter_loader(session, stack)
        esp = stack.enter_context(flasher.connected(session.console, plan.options, within))
        if not plan.reflash and flasher.already_written(esp, compared) and _boots(esp, boot):
            log.info("%s already in flash: not written", plan.title)
            return False
        if erase:
            log.info(
                "%s brings no otadata: erasing otadata at 0x%X (0x%X bytes) with it, as idf.py "
                "flash writes ota_data_initial.bin, so that the bootloader starts the app at 0x%X",
                plan.source.describe(),
                boot.offset,
                boot.size,
                plan.source.app_offset,
            )
        log.info("writing %s", ", ".join(r.describe() for r in regions))
        flasher.write(esp, regions)
        log.info("wrote %s", plan.title)
        return True


def _boots(esp: Any, boot: BootLayout | None) -> bool:
    """Whether the device's otadata makes its bootloader start the app in flash."""
    from hil.firmware import serial as flasher

    if boot is None:
        return True
    entries = [flasher.read(esp, offset, ENTRY.size) for offset in boot.entry_offsets]
    if boot.boots_app(entries):
        return True
    log.info(
        "otadata at 0x%X is %s, which does not start the app in flash",
        boot.offset,
        boot.describe(entries),
    )
    return False


def _enter_loader(session: RigSession, stack: contextlib.ExitStack) -> None:
    """Restart the chip into its ROM serial loader; a held strap is released on `stack`'s exit."""
    rig = session.rig
    strap_config = rig.boot_strap
    if strap_config is None:
        assert session.reset is not None  # `unusable` refused the rig otherwise
        log.info("starting the serial loader with %s", session.reset.describe())
        session.reset.enter_bootloader()
        return
    strap = strap_config.cls(
        strap_config.options, rig.boot_strap_common, rig.directory, section="boot_strap"
    )
    strap.open()
    stack.callback(strap.close)
    stack.callback(strap.off)  # always released: a held strap would keep the chip in its loader
    strap.on()
    if session.board_power is not None:
        log.info("GPIO0 held low by %s; cycling the board's power", strap.describe())
        session.board_power.cycle(rig.board_power_common.off_s)
    else:
        assert session.reset is not None
        log.info("GPIO0 held low by %s; resetting", strap.describe())
        session.reset.reset()


# -- OTA -----------------------------------------------------------------------------------
async def _by_ota(state: DeviceState, plan: Plan) -> tuple[Online, bool, str]:
    online = await state.bring_up()
    if online is not None and online.version == plan.source.version and not plan.reflash:
        log.info("the device reports version %s already: not pushed", online.version)
        return online, False, "OTA"
    started = time.time()
    try:
        delivery = await push(state, plan.source)
    except OtaInstallError as exc:
        raise _failure(
            plan,
            "the OTA update failed",
            str(exc),
            "check the device's console and the broker; `hil ota push` repeats it by hand",
        ) from None
    online = Online(
        delivery.version,
        "OTA update",
        "OTA update (the device rebooted into the new image)",
        time.time() - started,
        time.time(),
    )
    state.online = online
    _require_version(plan, online, written=True)
    return online, True, "the OTA sender"
