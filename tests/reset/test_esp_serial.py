"""esp-serial reset: esptool's own DTR/RTS sequences on the console's port, judged by the pins.

The fake port records every change of the two lines with the time it happened. On an ESP32
board's reset circuit an asserted line pulls its pin low: RTS asserted holds EN low (the chip in
reset), DTR asserted holds GPIO0 low (the ROM starts its serial loader when EN rises with GPIO0
low). The fake console lends the port the way SerialConsole does, with its reader paused.
"""

from __future__ import annotations

import contextlib
import os
import pty
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import serial

from hil.console.serial import ConsoleError
from hil.reset import ResetError
from hil.reset.esp_serial import EspSerialOptions, EspSerialReset

BOOT_STRAP_S = 0.04  # GPIO0 must stay low a while after EN rises (esptool holds it 50 ms)
EN_PULSE_S = 0.09  # esptool holds EN low 100 ms (200 ms on USB-Serial/JTAG)


@dataclass(frozen=True)
class Pins:
    """The pin levels after one line change: low = held low by its asserted line."""

    at: float
    en_low: bool
    gpio0_low: bool


class FakePort:
    """The part of pyserial's Serial that esptool's reset strategies use."""

    name = "/dev/ttyFAKE0"

    def __init__(self, console: FakeConsole) -> None:
        self._console = console
        self._dtr = False
        self._rts = False
        self.is_open = True
        self.pins: list[Pins] = []

    def isOpen(self) -> bool:  # pyserial's old name, which esptool calls
        return self.is_open

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self.is_open = False

    @property
    def cts(self) -> bool:  # reading the modem-status lines (TIOCMGET) works on this port
        return False

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self.setDTR(value)

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self.setRTS(value)

    def setDTR(self, value: bool = True) -> None:
        self._dtr = bool(value)
        self._changed()

    def setRTS(self, value: bool = True) -> None:
        self._rts = bool(value)
        self._changed()

    def _changed(self) -> None:
        assert self._console.lent, "a line was driven while the console's reader had the port"
        self.pins.append(Pins(time.monotonic(), en_low=self._rts, gpio0_low=self._dtr))


class FakeConsole:
    """A console whose `lend_port` pauses its reader: counts the loans and whether one is on."""

    def __init__(self, port_factory=FakePort) -> None:  # type: ignore[no-untyped-def]
        self.port = port_factory(self)
        self.lent = False
        self.entered = 0
        self.exited = 0

    @contextlib.contextmanager
    def lend_port(self) -> Iterator[object]:
        self.entered += 1
        self.lent = True
        try:
            yield self.port
        finally:
            self.lent = False
            self.exited += 1


def driver(mode: str, console: object, tmp_path: Path) -> EspSerialReset:
    return EspSerialReset(EspSerialOptions(mode=mode), tmp_path, console)


def en_edges(pins: list[Pins]) -> list[tuple[str, Pins]]:
    """EN going low ("reset") and coming back up ("release"), in order."""
    edges, low = [], False
    for p in pins:
        if p.en_low != low:
            edges.append(("reset" if p.en_low else "release", p))
            low = p.en_low
    return edges


def assert_lent_once(console: FakeConsole) -> None:
    assert (console.entered, console.exited) == (1, 1), "the port was not lent exactly once"
    assert not console.lent


@pytest.mark.parametrize("mode", ["classic", "usb-jtag"])
def test_reset_pulses_en_and_leaves_gpio0_alone(mode: str, tmp_path: Path) -> None:
    """Run the app: EN low, then released, with GPIO0 high throughout (so the ROM boots the
    flash, not its loader), and nothing left asserted."""
    console = FakeConsole()
    driver(mode, console, tmp_path).reset()
    pins = console.port.pins
    edges = en_edges(pins)
    assert [kind for kind, _ in edges] == ["reset", "release"], pins
    (_, down), (_, up) = edges
    assert up.at - down.at >= EN_PULSE_S, "EN was not held low long enough to reset the chip"
    assert not any(p.gpio0_low for p in pins), "GPIO0 was pulled low: the chip would not run"
    assert pins[-1] == Pins(pins[-1].at, en_low=False, gpio0_low=False)
    assert_lent_once(console)


def test_classic_enter_bootloader_holds_gpio0_low_while_en_rises(tmp_path: Path) -> None:
    """Download mode: GPIO0 is low at the moment EN is released, and stays low a while after
    (the ROM samples it as it starts), then is released."""
    console = FakeConsole()
    driver("classic", console, tmp_path).enter_bootloader()
    pins = console.port.pins
    edges = en_edges(pins)
    assert [kind for kind, _ in edges] == ["reset", "release"], pins
    (_, down), (_, up) = edges
    assert not down.gpio0_low, "GPIO0 must be high while the chip goes into reset"
    assert up.gpio0_low, "EN rose with GPIO0 high: the ROM would boot the app, not its loader"
    gpio0_up = next(p for p in pins if p.at >= up.at and not p.gpio0_low)
    assert gpio0_up.at - up.at >= BOOT_STRAP_S, "GPIO0 let go before the ROM sampled it"
    assert pins[-1] == Pins(pins[-1].at, en_low=False, gpio0_low=False), "lines left asserted"
    assert_lent_once(console)


def test_usb_jtag_enter_bootloader_asserts_gpio0_before_the_reset(tmp_path: Path) -> None:
    """The USB-Serial/JTAG peripheral latches download mode from DTR set before RTS resets."""
    console = FakeConsole()
    driver("usb-jtag", console, tmp_path).enter_bootloader()
    pins = console.port.pins
    first_reset = next(p for p in pins if p.en_low)
    assert first_reset.gpio0_low, "RTS reset the chip before DTR asked for the loader"
    assert pins[-1] == Pins(pins[-1].at, en_low=False, gpio0_low=False), "lines left asserted"
    assert_lent_once(console)


@pytest.fixture
def pty_console() -> Iterator[FakeConsole]:
    """A console lending a real pyserial port on a pty, which has no modem-control lines."""
    master, slave = pty.openpty()
    port = serial.Serial(os.ttyname(slave), 115200, timeout=0.1)
    console = FakeConsole(lambda _console: port)
    try:
        yield console
    finally:
        port.close()
        os.close(slave)
        os.close(master)


@pytest.mark.parametrize("action", ["reset", "enter_bootloader"])
def test_a_port_without_modem_lines_is_one_reset_error_naming_the_fix(
    pty_console: FakeConsole, tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    reset = driver("classic", pty_console, tmp_path)
    with pytest.raises(ResetError) as info:
        getattr(reset, action)()
    message = str(info.value)
    assert "DTR/RTS" in message, message
    assert "[board_power]" in message and "[reset] command" in message, message
    assert info.value.__suppress_context__, "the OSError should not be chained into the report"
    assert_lent_once(pty_console)
    out = capsys.readouterr()
    assert "NOT reset" not in out.out + out.err, "esptool's warning went out as well"


@pytest.mark.parametrize("console", [None, object()], ids=["no console", "not serial"])
def test_a_console_that_cannot_lend_its_port_is_a_reset_error(
    console: object, tmp_path: Path
) -> None:
    with pytest.raises(ResetError, match=r"serial console \(\[console\] driver = \"serial\"\)"):
        driver("classic", console, tmp_path).reset()


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match=r"classic, usb-jtag.*'bogus'"):
        EspSerialOptions(mode="bogus")


def test_esp_serial_can_start_the_loader() -> None:
    assert EspSerialReset.can_enter_bootloader


class AwayConsole:
    """A console whose port is away (the chip restarting or unpowered)."""

    @contextlib.contextmanager
    def lend_port(self):
        raise ConsoleError("console port /dev/ttyACM0 is not open (the device is away)")
        yield


def test_a_console_whose_port_is_away_is_a_reset_error(tmp_path: Path) -> None:
    driver = EspSerialReset(EspSerialOptions(mode="usb-jtag"), tmp_path, AwayConsole())
    with pytest.raises(ResetError, match=r"usb-jtag.*not open \(the device is away\)"):
        driver.reset()
