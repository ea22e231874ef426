"""Resetting the device's chip: the interface bring-up depends on, one driver per file.

A rig's `[reset]` table names a driver in the `hil.reset` entry-point group. Bring-up prefers a
board power cycle (`[board_power]`), then this; a rig with neither can only trust a retained
`STATUS:ONLINE`. A driver that can also start the chip's ROM serial loader says so with
`can_enter_bootloader`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar


class ResetError(RuntimeError):
    """The reset could not be driven; the message names the means and the fix."""


class ResetDriver(ABC):
    """Restarts the chip into its application."""

    Options: ClassVar[type]
    can_enter_bootloader: ClassVar[bool] = False

    def __init__(self, options: Any, rig_dir: Path, console: Any = None) -> None:
        self.options = options
        self.rig_dir = rig_dir
        self.console = console  # the rig's console, for drivers that use its port's lines

    @abstractmethod
    def reset(self) -> None:
        """Restart the chip; returns once the restart is under way."""

    def enter_bootloader(self) -> None:
        """Restart the chip into its ROM serial loader (download mode)."""
        raise ResetError(f"{self.describe()} cannot start the chip's serial loader")

    def describe(self) -> str:
        return type(self).__name__
