"""Reset an ESP32 through its console port's DTR/RTS lines, with esptool's own sequences.

`mode = "classic"`: a UART bridge board (CP210x, CH340) whose DTR and RTS drive GPIO0 and EN
through the usual two-transistor circuit. `mode = "usb-jtag"`: the ESP32-S3's own USB
Serial/JTAG, whose virtual lines reset the chip and which vanishes from the bus while it
restarts. The sequences are esptool's (`esptool.reset`), not re-written here; the console lends
its open port for the pulse, so no line printed around the reset is lost to a second open.
"""

from __future__ import annotations

from dataclasses import dataclass

from hil.console.serial import ConsoleError
from hil.reset import ResetDriver, ResetError

MODES = ("classic", "usb-jtag")


@dataclass(frozen=True)
class EspSerialOptions:
    mode: str = "classic"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")


class EspSerialReset(ResetDriver):
    """Pulses EN (and GPIO0 for the loader) on the console port's modem-control lines."""

    Options = EspSerialOptions
    can_enter_bootloader = True

    def reset(self) -> None:
        from esptool.reset import HardReset

        self._pulse(lambda port: HardReset(port, uses_usb=self.options.mode == "usb-jtag"))

    def enter_bootloader(self) -> None:
        from esptool.reset import ClassicReset, USBJTAGSerialReset

        strategy = USBJTAGSerialReset if self.options.mode == "usb-jtag" else ClassicReset
        self._pulse(strategy)

    def _pulse(self, strategy) -> None:  # type: ignore[no-untyped-def]
        lend = getattr(self.console, "lend_port", None)
        if lend is None:
            raise ResetError(
                '[reset] driver esp-serial needs a serial console ([console] driver = "serial")'
            )
        try:
            with lend() as port:
                # esptool only warns when the lines cannot be driven; here that is an error,
                # found before the pulse by reading the lines (TIOCMGET) once.
                _ = port.cts
                strategy(port)()
        except ConsoleError as exc:  # the port is away (the chip is restarting, or off)
            raise ResetError(f"{self.describe()}: {exc}") from None
        except OSError as exc:
            raise ResetError(
                f"{self.describe()}: the console port's DTR/RTS lines cannot be driven ({exc}); "
                "a port without modem-control lines needs [board_power] or [reset] command"
            ) from None

    def describe(self) -> str:
        return f"esp-serial reset ({self.options.mode}) on the console port"
