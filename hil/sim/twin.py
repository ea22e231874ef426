"""The virtual rig assembled: ESP32 firmware model, UART, SIM7600, link, console and relay ptys.

At each reset the chip samples its GPIO0 strap (LCUS channel `strap_channel`, energized = held
low): high, it boots the app the bootloader picks from flash; low, it stays in the ROM's serial
download mode, where the console port speaks the ROM loader protocol and the modem is left
idle, until the host's FLASH_END or the board losing power. With `[sim] flash` the flash is
kept in a file and outlives the twin (`hil.sim.flash`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from hil.profile import DeviceProfile
from hil.sim.firmware import Credentials, Firmware
from hil.sim.firmware_rawtcp import RawTcpFirmware
from hil.sim.flash import Flash
from hil.sim.link import Link
from hil.sim.modem import Sim7600
from hil.sim.options import SimOptions
from hil.sim.ports import ConsolePort, RelayPort
from hil.sim.reset import Reset, banner
from hil.sim.rom_loader import Exit, RomLoader
from hil.sim.s3_memory import S3Memory
from hil.sim.tcpip import TcpModem
from hil.sim.uart import uart_pair

log = logging.getLogger("hil.sim")

REENUMERATE_S = 2.0  # USB gone-and-back on an ESP32-S3 reset, before time scaling
MIN_REENUMERATE_S = 0.05
UART_BAUD = 115200


class Twin:
    """Runs until cancelled; `start()` publishes the ports, `run()` drives the chip."""

    def __init__(
        self,
        directory: Path,
        broker: tuple[str, int],
        profile: DeviceProfile,
        options: SimOptions,
        username: str | None = None,
        password: str | None = None,
        tls: Credentials | None = None,
    ) -> None:
        self._profile = profile
        self._tls = tls
        self._options = options
        self._broker = broker
        self._username = username
        self._password = password
        self._esp_uart, modem_uart = uart_pair(UART_BAUD)
        link = Link(options.rtt_ms, options.loss, options.seed)
        modem = TcpModem if options.transport == "raw-tcp" else Sim7600
        self.modem = modem(modem_uart, link, options.time_scale)
        self.flash = Flash(options.firmware_version, options.flash)
        self.console = ConsolePort(directory / "console", options.console == "native-usb")
        self.relay = RelayPort(
            directory / "relay",
            {
                options.relay_channel: self._modem_relay,
                options.board_channel: self._board_relay,
                options.strap_channel: self._strap_relay,
            },
        )
        # Both supply channels are wired normally closed: an energized coil cuts that supply.
        # The strap channel pulls GPIO0 to ground while energized.
        self._gpio0_low = False
        self._modem_supply = True
        self._board_on = asyncio.Event()
        self._board_off = asyncio.Event()
        self._board_on.set()
        self._supply_changed: asyncio.Queue[None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def _modem_relay(self, energized: bool) -> None:
        log.info("modem relay %s", "energized (modem off)" if energized else "released (modem on)")
        self._modem_supply = not energized
        self._supply_changed.put_nowait(None)

    def _board_relay(self, energized: bool) -> None:
        log.info("board relay %s", "energized (board off)" if energized else "released (board on)")
        if energized:
            self._board_on.clear()
            self._board_off.set()
        else:
            self._board_off.clear()
            self._board_on.set()
        self._supply_changed.put_nowait(None)

    def _strap_relay(self, energized: bool) -> None:
        log.info(
            "strap relay %s", "energized (GPIO0 low)" if energized else "released (GPIO0 high)"
        )
        self._gpio0_low = energized

    async def start(self) -> None:
        self.console.open()
        self.relay.open()
        await self.modem.set_power(True)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.modem.run()),
            loop.create_task(self._power()),
            loop.create_task(self._chip()),
        ]

    async def wait(self) -> None:
        """Until a part of the twin fails (its exception propagates) or the twin is cancelled."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()

    async def _power(self) -> None:
        """The modem has power while both its own channel and the board's are closed."""
        while True:
            await self._supply_changed.get()
            await self.modem.set_power(self._modem_supply and self._board_on.is_set())

    async def _chip(self) -> None:
        """Run the chip from each reset to the next one or to the board losing power."""
        reset = Reset.POWERON
        gap = max(MIN_REENUMERATE_S, REENUMERATE_S * self._options.time_scale)
        while True:
            await self._board_on.wait()
            self.console.power(True)
            if self._gpio0_low and reset is not Reset.NONE:
                running = asyncio.ensure_future(self._download(reset))
            else:
                running = asyncio.ensure_future(self._firmware(reset).run())
            cut = asyncio.ensure_future(self._board_off.wait())
            await asyncio.wait({running, cut}, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                cut.cancel()
                reset = running.result()
                if reset is not Reset.NONE:
                    await self.console.restart(gap)
                continue
            log.info("board power cut: the chip stops where it was")
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            self.console.power(False)
            reset = Reset.POWERON

    def _firmware(self, reset: Reset) -> Firmware:
        firmware = RawTcpFirmware if self._options.transport == "raw-tcp" else Firmware
        return firmware(
            profile=self._profile,
            options=self._options,
            uart=self._esp_uart,
            flash=self.flash,
            console=self.console.line,
            broker=self._broker,
            username=self._username,
            password=self._password,
            reset=reset,
            tls=self._tls,
        )

    async def _download(self, reset: Reset) -> Reset:
        """The ROM's download mode: the console port carries the loader protocol until the
        host ends it with FLASH_END (reboot: a reset that samples the strap again; run: the
        app starts from flash without a reset)."""
        for line in banner(reset, download=True):
            log.info("console: %s", line)
            self.console.line(line)
        loader = RomLoader(self.flash.chip, S3Memory(self.flash.chip, download=True))
        done = asyncio.Event()

        def received(data: bytes) -> None:
            reply = loader.receive(data)
            if reply:
                self.console.write(reply)
            if loader.exit is not None:
                done.set()

        self.console.on_input = received
        try:
            await done.wait()
        finally:
            self.console.on_input = None
            self.flash.keep()  # what the host wrote, also when the board loses power meanwhile
        log.info("ROM loader: FLASH_END, %s", loader.exit)
        await asyncio.sleep(ConsolePort.DRAIN_S)  # the reply leaves before the chip moves on
        return Reset.NONE if loader.exit is Exit.RUN_APP else Reset.SW_SYS

    async def close(self) -> None:
        """Stop everything and give the ports back; safe to call more than once."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.modem.close()
        self.console.close()
        self.relay.close()
        self.flash.close()
