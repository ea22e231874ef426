"""The twin's serial boundaries: ptys behind stable symlinks, as udev would name real ports.

The console pty disappears and comes back on every ESP32 restart (native USB re-enumerates);
the relay pty takes LCUS frames like the CH340 relay board.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pty
import tty
from collections.abc import Callable
from pathlib import Path

from hil.power.lcus import START, decode_frame

log = logging.getLogger("hil.sim.ports")


class Pty:
    """A raw pty pair with its slave path published as `link`."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self._master = -1
        self._slave = -1

    def open(self, on_input: Callable[[bytes], None]) -> None:
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation: bytes pass as on a UART
        os.set_blocking(self._master, False)
        path = os.ttyname(self._slave)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self.link.symlink_to(path)
        asyncio.get_running_loop().add_reader(self._master, self._read, on_input)
        log.info("%s -> %s", self.link, path)

    def _read(self, on_input: Callable[[bytes], None]) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            on_input(data)

    def write(self, data: bytes) -> None:
        """Write without ever blocking: what nobody reads is dropped, as a full USB FIFO does."""
        if self._master < 0:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._master, data)

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
        if self._slave >= 0:
            os.close(self._slave)
        self._master = self._slave = -1


class ConsolePort:
    """The ESP32-S3's USB serial console: lines out, gone during a restart."""

    def __init__(self, link: Path) -> None:
        self._pty = Pty(link)
        self._open = False

    @property
    def link(self) -> Path:
        return self._pty.link

    def open(self) -> None:
        self._pty.open(lambda _data: None)  # input is read and ignored so writers never block
        self._open = True

    def line(self, text: str) -> None:
        if self._open:
            self._pty.write(text.encode("utf-8", "replace") + b"\r\n")

    def close(self) -> None:
        self._open = False
        self._pty.close()

    async def reenumerate(self, gap_s: float) -> None:
        """The port vanishes on reset and a new one appears after `gap_s`."""
        self.close()
        await asyncio.sleep(gap_s)
        self.open()


class RelayPort:
    """An LCUS relay board on a pty: `on_switch(energized)` for each valid frame on `channel`."""

    def __init__(self, link: Path, channel: int, on_switch: Callable[[bool], None]) -> None:
        self._pty = Pty(link)
        self._channel = channel
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
            if channel == self._channel:
                self._on_switch(energized)

    def close(self) -> None:
        self._pty.close()
