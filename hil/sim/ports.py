"""The twin's serial boundaries: ptys behind stable symlinks, as udev would name real ports.

The console pty disappears and comes back on every ESP32 restart when it models the
ESP32-S3's native USB (which re-enumerates), and carries what the host sends to the chip (the
ROM loader's requests in download mode); the relay pty takes LCUS frames like the CH340 relay
board, one channel on the modem's supply, one on the whole board's and one on the GPIO0 strap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pty
import select
import tty
from collections.abc import Callable
from pathlib import Path

from hil.power.lcus import START, decode_frame

log = logging.getLogger("hil.sim.ports")


class Pty:
    """A raw pty pair with its slave path published as `link`.

    With `hold_slave` the twin keeps the slave open itself (the relay: input never hangs up);
    without it, the master reports POLLHUP until a reader opens the port (the console).
    """

    def __init__(self, link: Path, hold_slave: bool) -> None:
        self.link = link
        self._hold_slave = hold_slave
        self.master = -1
        self._slave = -1

    def open(self, on_input: Callable[[bytes], None] | None = None) -> None:
        self.master, slave = pty.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes pass as on a UART
        os.set_blocking(self.master, False)
        path = os.ttyname(slave)
        if self._hold_slave:
            self._slave = slave
        else:
            os.close(slave)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self.link.symlink_to(path)
        if on_input is not None:
            asyncio.get_running_loop().add_reader(self.master, self._read, on_input)
        log.info("%s -> %s", self.link, path)

    def _read(self, on_input: Callable[[bytes], None]) -> None:
        data = self.read_nowait()
        if data:
            on_input(data)

    def read_nowait(self) -> bytes:
        """What the host wrote so far; nothing when it wrote nothing or has the port closed."""
        try:
            return os.read(self.master, 4096)
        except OSError:  # EAGAIN: nothing yet; EIO: no host has the slave open
            return b""

    async def readable(self) -> None:
        """Until the master has something to read (or a hang-up to report)."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self.master
        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            if self.master == fd:  # else close() already removed it
                loop.remove_reader(fd)

    def reader_attached(self) -> bool:
        """Whether someone has the slave open (the master stops reporting a hang-up)."""
        poller = select.poll()
        poller.register(self.master, select.POLLHUP)
        return not any(event & select.POLLHUP for _, event in poller.poll(0))

    def write(self, data: bytes) -> None:
        """Write without ever blocking: what nobody reads is dropped, as a full USB FIFO does."""
        if self.master < 0:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.master, data)

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        if self.master >= 0:
            asyncio.get_running_loop().remove_reader(self.master)
            os.close(self.master)
        if self._slave >= 0:
            os.close(self._slave)
        self.master = self._slave = -1


class ConsolePort:
    """The ESP32's console port as the host sees it.

    Nothing is held for the host: a line printed while no host has the port open is lost, as
    ESP-IDF's USB Serial/JTAG driver drops output nobody reads and as a closed tty drops what
    arrives. With `native_usb` (an ESP32-S3's own USB) the port also leaves on every reset or
    power-off and comes back as a new tty node; a UART bridge's port stays. What the host
    writes goes to `on_input` (the running firmware ignores it; the ROM loader reads it).
    """

    DRAIN_S = 0.1
    HOST_POLL_S = 0.05  # how often a port nobody has open is checked for a host

    def __init__(self, link: Path, native_usb: bool) -> None:
        self._pty = Pty(link, hold_slave=False)
        self.native_usb = native_usb
        self.present = False
        self.on_input: Callable[[bytes], None] | None = None
        self._pump: asyncio.Task[None] | None = None

    @property
    def link(self) -> Path:
        return self._pty.link

    def open(self) -> None:
        self._pty.open()
        self.present = True
        self._pump = asyncio.get_running_loop().create_task(self._read_host())

    async def _read_host(self) -> None:
        """Read while a host has the port open; a closed port only says it hung up."""
        while True:
            if not self._pty.reader_attached():
                await asyncio.sleep(self.HOST_POLL_S)
                continue
            await self._pty.readable()
            data = self._pty.read_nowait()
            if data and self.on_input is not None:
                self.on_input(data)

    def line(self, text: str) -> None:
        self.write(text.encode("utf-8", "replace") + b"\r\n")

    def write(self, data: bytes) -> None:
        if self.present and self._pty.reader_attached():
            self._pty.write(data)

    def close(self) -> None:
        self.present = False
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        self._pty.close()

    async def restart(self, gap_s: float) -> None:
        """The chip resets: a native USB port vanishes and a new one appears after `gap_s`."""
        if not self.native_usb:
            return
        await asyncio.sleep(self.DRAIN_S)  # esp_restart() flushes the console first
        self.close()
        await asyncio.sleep(gap_s)
        self.open()

    def power(self, on: bool) -> None:
        """The board's supply: a native USB port exists only while the chip is powered."""
        if not self.native_usb or on == self.present:
            return
        if on:
            self.open()
        else:
            self.close()


class RelayPort:
    """An LCUS relay board on a pty: `on_switch[channel](energized)` for each valid frame."""

    def __init__(self, link: Path, on_switch: dict[int, Callable[[bool], None]]) -> None:
        self._pty = Pty(link, hold_slave=True)
        self._on_switch = on_switch
        self._buffer = bytearray()

    @property
    def link(self) -> Path:
        return self._pty.link

    def open(self) -> None:
        self._pty.open(self._input)

    def _input(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 4:
            if self._buffer[0] != START:
                del self._buffer[0]  # resynchronise on the start byte
                continue
            frame = bytes(self._buffer[:4])
            try:
                channel, energized = decode_frame(frame)
            except ValueError as exc:
                log.warning("relay: %s", exc)
                del self._buffer[0]
                continue
            del self._buffer[:4]
            switch = self._on_switch.get(channel)
            if switch is not None:
                switch(energized)

    def close(self) -> None:
        # A frame the host wrote just before the twin was stopped has reached a real board and
        # switched it: apply what is still unread, so the twin ends on the host's last frame.
        while self._pty.master >= 0 and (data := self._pty.read_nowait()):
            self._input(data)
        self._pty.close()
