"""A GPIO line of the runner (libgpiod v2) driving the relay; it holds only while requested."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hil.power import PowerDriver, PowerError


@dataclass(frozen=True)
class GpiodOptions:
    chip: str  # e.g. /dev/gpiochip0
    line: int  # line offset on that chip
    active_low: bool = False
    consumer: str = "hil-power"


class GpiodPower(PowerDriver):
    """Requests the line as an output once at open and keeps the request until close."""

    Options = GpiodOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request: Any = None
        self._value: Any = None

    def open(self) -> None:
        try:
            import gpiod
            from gpiod.line import Direction, Value
        except ImportError:
            raise PowerError(
                "the gpiod power driver needs libgpiod's Python bindings: pip install 'hil[gpio]'"
            ) from None
        self._value = Value
        settings = gpiod.LineSettings(
            direction=Direction.OUTPUT,
            active_low=self.options.active_low,
            output_value=Value.ACTIVE if not self.normally_closed else Value.INACTIVE,
        )
        try:
            self._request = gpiod.request_lines(
                self.options.chip,
                consumer=self.options.consumer,
                config={self.options.line: settings},
            )
        except OSError as exc:
            raise PowerError(
                f"GPIO line {self.options.line} of {self.options.chip} cannot be requested "
                f"({exc}); check [power] chip/line and that no other program holds it"
            ) from None

    def close(self) -> None:
        if self._request is not None:
            self._request.release()
            self._request = None

    def _energize(self, energized: bool) -> None:
        if self._request is None:
            raise PowerError("gpiod power used before open()")
        value = self._value.ACTIVE if energized else self._value.INACTIVE
        self._request.set_value(self.options.line, value)

    def describe(self) -> str:
        return f"GPIO {self.options.chip} line {self.options.line}"
