"""Power control of the modem's supply: the interface suites and fixtures depend on.

A driver is one class in one file, registered in the `hil.power` entry-point group. It declares
an `Options` dataclass for its keys in the rig's `[power]` table and implements `_energize`.
Whether the relay is wired normally closed is handled here, once, for every driver.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class CommonPowerOptions:
    """Keys every power driver accepts besides its own."""

    normally_closed: bool = False
    off_s: float = 1.0  # how long a power cycle holds the supply off (a cold boot drains it)

    def __post_init__(self) -> None:
        if not 0 < self.off_s < float("inf"):
            raise ValueError(f"off_s must be a number of seconds above 0, got {self.off_s}")


class PowerError(RuntimeError):
    """The power switch could not be driven; the message names the device and the fix."""


class PowerDriver(ABC):
    """Switches the modem's supply on and off."""

    Options: ClassVar[type]

    def __init__(
        self, options: Any, common: CommonPowerOptions, rig_dir: Path, section: str = "power"
    ) -> None:
        self.options = options
        self.normally_closed = common.normally_closed
        self.rig_dir = rig_dir
        self.section = section  # the rig table it came from, for errors: power or board_power
        self.is_on: bool | None = None

    def open(self) -> None:
        """Acquire the device; the default driver needs nothing."""

    def close(self) -> None:
        """Release the device."""

    @abstractmethod
    def _energize(self, energized: bool) -> None:
        """Drive the relay coil (or line) to `energized`."""

    def set(self, on: bool) -> None:
        self._energize(on != self.normally_closed)
        self.is_on = on

    def on(self) -> None:
        self.set(True)

    def off(self) -> None:
        self.set(False)

    def cycle(self, seconds: float) -> None:
        """Cut power for `seconds` (the cut is the stimulus, so this one sleep is deliberate)."""
        self.off()
        try:
            time.sleep(seconds)
        finally:
            self.on()

    def describe(self) -> str:
        return type(self).__name__
