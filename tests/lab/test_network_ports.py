"""Console and relay on network serial ports (pyserial URLs), as a labgrid place serves them.

Loopback TCP servers stand in for ser2net in raw mode (`socket://`): the console must follow
its port to where the session says it is served now after the old one went away (an exporter
serves a port that came back on a new TCP port), and the relay must send the LCUS frames.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from hil.console.serial import SerialConsole, SerialOptions
from hil.power import CommonPowerOptions
from hil.power.lcus import LcusOptions, LcusRelay
from hil.profile import load_profile
from tests.waiting import until


class Served:
    """One TCP port that takes one connection and records what it is sent."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received = bytearray()
        self.connection: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self.connection, _ = self.listener.accept()
        except OSError:  # closed before anyone came
            return
        while chunk := self._recv():
            self.received += chunk

    def _recv(self) -> bytes:
        try:
            return self.connection.recv(1024) if self.connection else b""
        except OSError:
            return b""

    def say(self, line: str) -> None:
        """A line from the device, once the console is connected (what came before is lost,
        as on a serial port opened late)."""
        until(lambda: self.connection, 10, f"a connection to {self.url}")
        assert self.connection is not None
        self.connection.sendall(line.encode() + b"\r\n")

    def close(self) -> None:
        """Gone, as ser2net is when the exporter stops it."""
        if self.connection is not None:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            self.connection.close()
        self.listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def served() -> Iterator[list[Served]]:
    ports: list[Served] = []
    yield ports
    for port in ports:
        port.close()


def test_the_console_follows_its_port_to_where_it_is_served_now(served: list[Served]) -> None:
    first = Served()
    served.append(first)
    console = SerialConsole(SerialOptions(port=first.url, reappear_s=10.0), load_profile())
    where = [first.url]
    console.locate = lambda: where[0]
    console.start()
    try:
        first.say("before the reset")
        until(lambda: console.search("before the reset"), 10, "the line from the first port")
        second = Served()
        served.append(second)
        where[0] = second.url
        first.close()
        second.say("after the reset")
        until(lambda: console.search("after the reset"), 10, "the line from the new port")
        assert console.port_path == second.url
        assert console.reopened == 1
        assert console.vanished, "the port going away is noted as the chip restarting"
    finally:
        console.close()


def test_the_console_waits_while_its_port_is_served_nowhere(served: list[Served]) -> None:
    console = SerialConsole(
        SerialOptions(port="socket://127.0.0.1:1", reappear_s=10.0), load_profile()
    )
    where: list[str | None] = [None]
    console.locate = lambda: where[0]
    console.start()
    try:
        assert not console.is_open
        port = Served()
        served.append(port)
        where[0] = port.url
        port.say("hello")
        until(lambda: console.search("hello"), 10, "the line once the port is served")
    finally:
        console.close()


def test_the_relay_sends_lcus_frames_over_the_network(served: list[Served]) -> None:
    board = Served()
    served.append(board)
    relay = LcusRelay(LcusOptions(port=board.url, channel=2), CommonPowerOptions(), rig_dir=None)
    relay.open()
    try:
        relay.off()
        relay.on()
    finally:
        relay.close()
    # The LCUS command frames: A0, channel, state, and their sum modulo 256.
    expected = bytes.fromhex("A0 02 00 A2 A0 02 01 A3")
    until(lambda: bytes(board.received) == expected, 5, f"the frames {expected.hex(' ')}")
