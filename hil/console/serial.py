"""The device's serial console through pyserial, surviving USB re-enumeration.

An ESP32-S3's native USB port vanishes on every reset and may come back under another
/dev/ttyACM number. The reader thread notices the port going (a read error, or the rig's path
now pointing at another device node), finds it again (same path, or the same udev identity
when the rig gives `match`), reopens it and carries on; a device that stays away longer than
`reappear_s` fails whatever test is waiting on it. What the chip prints while the port is away
is lost, as on the hardware: only `survives_reset = true` (a UART bridge board, whose port
stays) lets bring-up and the suites rely on boot banners.

A port may also be a pyserial URL (`rfc2217://host:port`, `socket://host:port`): a console
served over the network, such as a labgrid place's. Its session sets `locate` to look up where
the port is served now, since an exporter serves a port that came back on a new TCP port.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import serial

from hil import schema
from hil.console import ConsoleBuffer
from hil.profile import DeviceProfile


class ConsoleError(RuntimeError):
    """The console cannot be opened; the message names the port and the fix."""


@dataclass(frozen=True)
class SerialOptions:
    port: str | None = None
    match: dict[str, str] = field(default_factory=dict)  # vendor_id, product_id, serial, interface
    baud: int = 115200
    reappear_s: float = 30.0  # how long the port may stay away (reset, OTA reboot)
    survives_reset: bool = False  # a UART bridge keeps its port (and boot banners) across resets

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(schema.whole_range, self.baud, "baud", 1, what="a baud rate")
            check(schema.positive, self.reappear_s, "reappear_s")
        if bool(self.port) == bool(self.match):
            raise ValueError("give exactly one of port (a path) or match (a udev identity)")
        unknown = set(self.match) - {"vendor_id", "product_id", "serial", "interface"}
        if unknown:
            raise ValueError(
                f"unknown match key {sorted(unknown)[0]!r}; "
                "use vendor_id, product_id, serial, interface"
            )

    def describe(self) -> str:
        if self.port:
            return self.port
        return "udev " + " ".join(f"{k}={v}" for k, v in sorted(self.match.items()))


def _is_url(port: str) -> bool:
    """A pyserial URL (`rfc2217://`, `socket://`) rather than a device path."""
    return "://" in port


class SerialConsole(ConsoleBuffer):
    """Reads lines in a thread; everything else (expect, incidents, log) is ConsoleBuffer's."""

    Options = SerialOptions
    POLL_S = 0.05

    def __init__(self, options: SerialOptions, profile: DeviceProfile) -> None:
        super().__init__(panic=profile.console.panic or None, boot=profile.console.boot or None)
        self.options = options
        self._serial: serial.Serial | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._partial = bytearray()
        self._io = threading.Lock()  # held by the reader around each read; lend_port takes it
        self._node: str | None = None  # the device node the rig's path pointed at when opened
        self.port_path: str | None = None
        self.reopened = 0
        self.locate: Callable[[], str | None] | None = None  # where a network port is served now

    def _find_port(self) -> str | None:
        if self.locate is not None:
            return self.locate()
        if self.options.port and _is_url(self.options.port):
            return self.options.port
        if self.options.port:
            return self.options.port if Path(self.options.port).exists() else None
        from hil.discovery import UdevMatch, find_port

        # Two boards answering to the rig's match raise AmbiguousMatch rather than a guess.
        found = find_port(UdevMatch(**self.options.match))
        return found.node if found else None

    def _try_open(self) -> bool:
        path = self._find_port()
        if path is None:
            return False
        node = path if _is_url(path) else os.path.realpath(path)
        try:
            # exclusive: a second reader (a terminal left open) would steal lines from the run
            self._serial = serial.serial_for_url(
                path, self.options.baud, timeout=self.POLL_S, exclusive=True
            )
        except (serial.SerialException, OSError):
            return False
        self.port_path, self._node = path, node
        return True

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def _moved(self) -> bool:
        """The rig's path now names another device node (a symlink re-made on re-enumeration)."""
        port = self.options.port
        return port is not None and not _is_url(port) and os.path.realpath(port) != self._node

    def open(self, timeout: float | None = None) -> None:
        """Open the port (waiting up to `timeout`, default reappear_s) and start reading."""
        limit = self.options.reappear_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        while not self._try_open():
            if time.monotonic() >= deadline:
                raise ConsoleError(
                    f"console port {self.options.describe()} not found or not openable within "
                    f"{limit:g} s; check [console] in the rig file and the cable "
                    "(`hil discover` lists the serial devices plugged in)"
                )
            time.sleep(self.POLL_S)
        self._start_reader()

    def start(self) -> None:
        """Start reading without waiting for the port: the device may be off or booting, and
        a native USB port exists only while the chip runs. The reader opens it when it comes."""
        if not self._try_open():
            self.note(f"console port {self.options.describe()} not there yet; waiting for it")
        self._start_reader()

    def _start_reader(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hil-console", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None
        self._close_port()

    def _close_port(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self._serial.close()
            self._serial = None

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._serial is None:
                self._wait_for_port()
                continue
            try:
                with self._io:
                    data = self._serial.read(max(1, self._serial.in_waiting))
                gone = self._moved()
            except (serial.SerialException, OSError, TypeError):
                data, gone = b"", True
            if data:
                self._take(data)
            if gone:
                self._flush_partial()
                self._close_port()
                self.port_vanished(
                    f"console port {self.port_path} vanished; waiting for it to come back"
                )

    @contextlib.contextmanager
    def lend_port(self) -> Iterator[serial.Serial]:
        """The open pyserial port, with the reader paused, for a reset pulse or a flasher."""
        with self._io:
            if self._serial is None:
                raise ConsoleError(
                    f"console port {self.options.describe()} is not open (the device is away)"
                )
            yield self._serial

    def _wait_for_port(self) -> None:
        """Until the port is back; a port that was open once may be away only reappear_s."""
        first = self.port_path is None
        deadline = math.inf if first else time.monotonic() + self.options.reappear_s
        while not self._stop.is_set():
            try:
                back = self._try_open()
            except RuntimeError as exc:  # several boards match the rig: never guess
                self.lose(str(exc))
                self._stop.wait()
                return
            if back:
                self.reopened += not first
                self.note(f"console port {'open' if first else 'back'} as {self.port_path}")
                return
            if time.monotonic() >= deadline:
                self.lose(
                    f"console port {self.options.describe()} vanished and did not come back "
                    f"within {self.options.reappear_s:g} s (the rig's console reappear_s)"
                )
                self._stop.wait()
                return
            self._stop.wait(self.POLL_S)

    def _take(self, data: bytes) -> None:
        """Split what came into lines, looking only at the new bytes (never the whole line so
        far); a line that grows past MAX_LINE is passed on in MAX_LINE pieces, so memory stays
        bounded and nothing is dropped."""
        *complete, rest = data.split(b"\n")
        for raw in complete:
            self._partial += raw
            self._emit_pieces()  # a long line ending in this read is pieced too, not cut
            self._emit(bytes(self._partial))
            self._partial.clear()
        self._partial += rest
        self._emit_pieces()

    def _emit_pieces(self) -> None:
        while len(self._partial) >= self.MAX_LINE:
            self._emit(bytes(self._partial[: self.MAX_LINE]))
            del self._partial[: self.MAX_LINE]

    def _emit(self, raw: bytes) -> None:
        self.feed(raw.rstrip(b"\r").decode("utf-8", "replace"))

    def _flush_partial(self) -> None:
        if self._partial.strip():
            self._emit(bytes(self._partial))
        self._partial.clear()

    def describe(self) -> str:
        return f"serial console {self.options.describe()} at {self.options.baud} baud"

    def __enter__(self) -> SerialConsole:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
