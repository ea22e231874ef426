"""A GPIO line of the runner (libgpiod v2) driving the relay; it holds only while requested."""

from __future__ import annotations

import errno
import glob
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hil import schema
from hil.power import PowerDriver, PowerError

if TYPE_CHECKING:
    from gpiod import LineRequest
    from gpiod.line import Value

INSTALL_HINT = 'pip install "hil[gpio]"'


@dataclass(frozen=True)
class GpiodOptions:
    chip: str  # e.g. /dev/gpiochip0
    line: int  # line offset on that chip
    active_low: bool = False  # the coil is energized by a low level; applied by libgpiod
    consumer: str = "hil-power"

    def __post_init__(self) -> None:
        with schema.Checks() as check:
            check(schema.nonempty, self.chip, "chip", "GPIO chip device, e.g. /dev/gpiochip0")
            check(schema.whole_range, self.line, "line", 0, what="a line offset")
            check(schema.nonempty, self.consumer, "consumer", "consumer label")


class GpiodPower(PowerDriver):
    """Requests the line as an output once at open and keeps the request until close.

    The line is requested already at the level that keeps the modem powered, so opening the
    driver never cuts the modem, whatever `active_low` and `normally_closed` are. The logical
    value is "coil energized"; libgpiod turns it into the physical level by `active_low`.
    """

    Options = GpiodOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request: LineRequest | None = None
        self._value: type[Value] | None = None

    def open(self) -> None:
        if self._request is not None:
            return  # a second request of our own line would only fail with EBUSY
        try:
            import gpiod
            from gpiod.line import Direction, Value
        except ImportError as exc:
            raise PowerError(
                "the gpiod power driver needs libgpiod v2's Python bindings (gpiod>=2.1), "
                f"which do not import here ({exc}): {INSTALL_HINT}"
            ) from None
        # Modem on means energized == (True != normally_closed): request the line already there.
        powered = self._level(Value, energized=not self.normally_closed)
        settings = gpiod.LineSettings(
            direction=Direction.OUTPUT, active_low=self.options.active_low, output_value=powered
        )
        try:
            request = gpiod.request_lines(
                self.options.chip,
                consumer=self.options.consumer,
                config={self.options.line: settings},
            )
        except OSError as exc:
            raise PowerError(self._request_error(exc)) from None
        except ValueError as exc:  # gpiod's check of the offset against the chip's lines
            raise PowerError(
                f"GPIO line {self.options.line} is not on {self.options.chip} ({exc}); "
                f"check {self._table} line in the rig file against `gpioinfo`"
            ) from None
        try:
            self._check_reads(request, powered)
        except BaseException:
            request.release()  # never keep a line we will not drive
            raise
        self._request, self._value = request, Value
        self.is_on = True

    def _check_reads(self, request: LineRequest, expected: Value) -> None:
        """A line that does not read back what it was given is not driving the relay."""
        try:
            got = request.get_value(self.options.line)
        except OSError:
            return  # output-only chips cannot read back; the request itself succeeded
        if got != expected:
            raise PowerError(
                f"GPIO line {self.options.line} of {self.options.chip} reads {got.name} right "
                f"after being driven {expected.name}; the pin is not driving (check pinmux, "
                f"open-drain wiring and {self._table} line)"
            )

    @property
    def _table(self) -> str:
        """The rig table the driver came from, [power] or [board_power], for error messages."""
        return f"[{self.section}]"

    def _request_error(self, exc: OSError) -> str:
        chip, line, table = self.options.chip, self.options.line, self._table
        if exc.errno == errno.ENOENT:
            present = ", ".join(sorted(glob.glob("/dev/gpiochip*"))) or "none"
            return (
                f"GPIO chip {chip} does not exist (chips here: {present}); set {table} chip in "
                "the rig file to one of them, or load the GPIO controller's driver"
            )
        if exc.errno in (errno.ENODEV, errno.ENOTTY):
            return f"{chip} is not a GPIO chip device; set {table} chip to a /dev/gpiochipN"
        if exc.errno == errno.EBUSY:
            return (
                f"GPIO line {line} of {chip} is held by another program; `gpioinfo` names it, "
                f"stop it or pick another {table} line"
            )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return (
                f"no permission to request GPIO line {line} of {chip} ({exc}); run as root or "
                "grant the runner access to the device (gpio group or a udev rule)"
            )
        return (
            f"GPIO line {line} of {chip} cannot be requested ({exc}); "
            f"check {table} chip and line in the rig file"
        )

    @staticmethod
    def _level(value: type[Value], energized: bool) -> Value:
        return value.ACTIVE if energized else value.INACTIVE

    def close(self) -> None:
        request, self._request = self._request, None
        if request is not None:
            self.is_on = None  # a released line is no longer driven by us
            request.release()

    def _energize(self, energized: bool) -> None:
        if self._request is None or self._value is None:
            raise PowerError("gpiod power used before open(); call open() first")
        try:
            self._request.set_value(self.options.line, self._level(self._value, energized))
        except OSError as exc:
            raise PowerError(
                f"GPIO line {self.options.line} of {self.options.chip} cannot be set ({exc}); "
                "check that the chip is still present"
            ) from None

    def describe(self) -> str:
        return f"GPIO {self.options.chip} line {self.options.line}"
