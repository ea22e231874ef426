"""The firmware's AT link to a modem with SIM7000-style TCP commands (hil.sim.tcpip).

Those commands end in results other than OK: `SHUT OK`, `CLOSE OK`, `DATA ACCEPT:<n>` or
`SEND OK` (`SEND FAIL` fails), and AT+CIFSR's bare address. `+CIPRXGET: 2,<n>,<left>` is
followed by n raw bytes, which go to `on_data`. `CLOSED` and `+CIPRXGET: 1` are unsolicited
wherever they fall, even between a command and its answer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from hil.sim.atclient import AtClient
from hil.sim.uart import UartEnd

URCS = ("CLOSED", "+CIPRXGET: 1")
READ_ANSWER = "+CIPRXGET: 2,"


def _is_address(line: str) -> bool:
    try:
        ipaddress.ip_address(line)
    except ValueError:
        return False
    return True


def verdict(command: str, line: str) -> bool | None:
    """True or False when `line` ends `command` with success or failure; None otherwise."""
    name = command.split("=", 1)[0].upper()
    if name == "AT+CIPSHUT":
        return True if line == "SHUT OK" else None
    if name == "AT+CIPCLOSE":
        return True if line == "CLOSE OK" else None
    if name == "AT+CIFSR":
        return True if _is_address(line) else None
    if name == "AT+CIPSEND":
        if line == "SEND OK" or line.startswith("DATA ACCEPT:"):
            return True
        return False if line == "SEND FAIL" else None
    return None


class TcpAtClient(AtClient):
    """An AtClient that knows the TCP toolkit's answers; read data goes to `on_data`."""

    def __init__(
        self,
        uart: UartEnd,
        on_urc: Callable[[str], None],
        on_data: Callable[[bytes], None],
    ) -> None:
        super().__init__(uart, on_urc, lambda topic, payload: None)
        self._on_data = on_data

    def _line(self, line: str) -> None:
        if line in URCS:
            self._on_urc(line)
            return
        pending = self._pending
        if pending is None or pending.final.done():
            super()._line(line)
            return
        if line.startswith(READ_ANSWER):
            size = line[len(READ_ANSWER) :].split(",")[0].strip()
            if size.isascii() and size.isdigit() and int(size):
                self._raw = (int(size), self._on_data)
            pending.lines.append(line)
            return
        ended = verdict(pending.command, line)
        if ended is None:
            super()._line(line)
            return
        pending.lines.append(line)
        pending.final.set_result(ended)
